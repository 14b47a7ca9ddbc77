#!/usr/bin/env python3
"""What the sandbox costs: `command/exec` of `true` with and without confinement.

For each server (ours and, with ``--reference``, the reference with its sandbox helper
``codex-linux-sandbox`` put on PATH, as the npm package needs), runs ``true`` through
``command/exec`` under ``dangerFullAccess`` (no sandbox), ``readOnly`` and ``workspaceWrite``
(network off: bubblewrap + seccomp), one request at a time, the policies interleaved so a
load change on the machine hits all of them alike. Reports the median and p90 round trip of
each, the sandbox's overhead over the unconfined run, and ours/reference ratios.

Usage::

    python benchmarks/sandbox.py --reference "/work/ref/node_modules/.bin/codex app-server"
"""

from __future__ import annotations

import argparse
import itertools
import os
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import trio

sys.path.insert(0, str(Path(__file__).resolve().parent))

from report import fmt_ratio, log, percentile, publish, ratio, report_header
from servers import ServerSpec, add_server_options, server_specs
from stdio_client import initialize, running_server

POLICIES = {
    "dangerFullAccess": {"type": "dangerFullAccess"},
    "readOnly": {"type": "readOnly"},
    "workspaceWrite": {"type": "workspaceWrite"},
}
#: the reference's native binary, which acts as its sandbox helper under this name.
HELPER_NAME = "codex-linux-sandbox"
NATIVE = "node_modules/@openai/codex-linux-x64/vendor/x86_64-unknown-linux-musl/bin/codex"


@dataclass
class ServerResult:
    label: str
    samples: dict[str, list[float]] = field(default_factory=lambda: {p: [] for p in POLICIES})
    failures: list[str] = field(default_factory=list)

    def median(self, policy: str) -> float | None:
        values = self.samples[policy]
        return statistics.median(values) if values else None

    def p90(self, policy: str) -> float | None:
        values = sorted(self.samples[policy])
        return percentile(values, 0.9) if values else None


async def measure(spec: ServerSpec, runs: int, warmup: int) -> ServerResult:
    result = ServerResult(spec.label)
    try:
        async with running_server(spec) as conn:
            await initialize(conn)
            order = itertools.cycle(POLICIES)
            for i in range(warmup + runs * len(POLICIES)):
                policy = next(order)
                began = time.perf_counter()
                params = {"command": ["true"], "sandboxPolicy": POLICIES[policy]}
                reply = await conn.request("command/exec", params)
                elapsed = time.perf_counter() - began
                if reply.get("result", {}).get("exitCode") != 0:
                    raise RuntimeError(f"{policy}: {reply}")
                if i >= warmup:
                    result.samples[policy].append(elapsed * 1000)
    except Exception as exc:  # a failed server is reported, not fatal for the other one
        result.failures.append(repr(exc))
        log(f"{spec.label}: {exc!r}")
    return result


def with_helper(spec: ServerSpec, helper_dir: Path, reference_root: Path) -> ServerSpec:
    """The reference with `codex-linux-sandbox` (its own native binary) first on PATH."""
    link = helper_dir / HELPER_NAME
    if not link.exists():
        link.symlink_to(reference_root / NATIVE)
    path = f"{helper_dir}{os.pathsep}{os.environ.get('PATH', '')}"
    return ServerSpec(spec.label, spec.argv, {**spec.extra_env, "PATH": path})


def _cell(result: ServerResult | None, policy: str) -> str:
    median = None if result is None else result.median(policy)
    if result is None or median is None:
        return "-"
    return f"{median:.1f} / {result.p90(policy) or 0:.1f}"


def overhead(value: float | None, base: float | None) -> str:
    return "-" if value is None or base is None else f"+{value - base:.1f}"


def markdown(results: list[ServerResult], runs: int, argv: dict[str, list[str]]) -> str:
    ours = results[0]
    ref = results[1] if len(results) > 1 else None
    lines = report_header("Sandbox overhead: command/exec of `true`", argv["ours"], argv.get("reference"))
    lines += [
        "",
        f"{runs} runs per policy, interleaved; round trip of one request in ms (median / p90).",
        "",
        "| policy | ours | reference | ours/ref (median) | ours overhead | reference overhead |",
        "|---|---|---|---|---|---|",
    ]
    base_ours, base_ref = ours.median("dangerFullAccess"), ref.median("dangerFullAccess") if ref else None
    for policy in POLICIES:
        mine, theirs = ours.median(policy), ref.median(policy) if ref else None

        lines.append(
            f"| {policy} | {_cell(ours, policy)} | {_cell(ref, policy)} | {fmt_ratio(ratio(mine, theirs))} "
            f"| {overhead(mine, base_ours)} | {overhead(theirs, base_ref)} |"
        )
    for r in results:
        for failure in r.failures:
            lines.append(f"\n{r.label} failed: {failure}")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    add_server_options(parser, server_default="python -m codex_trio")
    parser.add_argument("--runs", type=int, default=40)
    parser.add_argument("--warmup", type=int, default=6)
    parser.add_argument("--markdown", type=Path, help="write the markdown report here")
    args = parser.parse_args(argv)
    specs = server_specs(args)
    with tempfile.TemporaryDirectory(prefix="sandbox-bench-") as helper_dir:
        if len(specs) > 1:
            # .../node_modules/.bin/codex -> the directory holding node_modules
            reference_root = Path(args.reference.split()[0]).absolute().parents[2]
            specs[1] = with_helper(specs[1], Path(helper_dir), reference_root)

        async def run_all() -> list[ServerResult]:
            return [await measure(spec, args.runs, args.warmup) for spec in specs]

        results = trio.run(run_all)
    publish(markdown(results, args.runs, {s.label: s.argv for s in specs}), args.markdown)
    return 1 if any(r.failures for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
