#!/usr/bin/env python3
"""Per-request overhead of tracing: sequential latency with tracing off and on, ours and the reference.

For each server, every round starts two fresh instances side by side, one with tracing off
and one with it on, and asks them in turns (one request at a time, alternating which goes
first), so both see the same machine load at the same moments. "On" configures `[otel]`
with an OTLP/HTTP trace exporter pointing at a receiver in this process
(`tests/http_receiver.py`, which only counts bytes during the measurement);
"off" uses the same config without `[otel]`. Every request is the same line in both modes:
`fs/getMetadata {"path":"/"}` carrying a W3C `trace` member, so the only difference is
whether the server records and exports spans. Per round: `--warmup` untimed requests, then
`--requests` timed one at a time (write to reply). Reported: the median over rounds of each
round's p50 (and p99), the on/off ratio per server as the median of the rounds' paired ratios
(target: ours ≤ 1.10), and ours/reference.

Usage::

    python benchmarks/tracing.py --reference "/path/to/node_modules/.bin/codex app-server" \\
        --markdown benchmarks/.results/tracing.md
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import trio

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from report import fmt_ratio, log, percentile, publish, ratio, report_header, verdict, write_file
from servers import CONFIG_TOML, Sandbox, ServerSpec, add_server_options, server_specs
from stdio_client import initialize, running_server

from tests.http_receiver import HttpReceiver

TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
ROUND_TIMEOUT = 300.0
#: seconds the server gets after its stdin closes, to export its last spans.
EXPORT_GRACE = 5.0


def traced_line(request_id: int) -> bytes:
    return b'{"id":%d,"method":"fs/getMetadata","params":{"path":"/"},"trace":{"traceparent":"%s"}}\n' % (
        request_id,
        TRACEPARENT.encode(),
    )


def otel_toml(endpoint: str) -> str:
    return (
        f'\n[otel]\nenvironment = "bench"\n[otel.trace_exporter.otlp-http]\n'
        f'endpoint = "{endpoint}"\nprotocol = "binary"\n'
    )


@dataclass
class Mode:
    p50: list[float] = field(default_factory=list)
    p99: list[float] = field(default_factory=list)
    errors: int = 0
    exported_bytes: int = 0
    export_posts: int = 0

    def median(self, which: str) -> float | None:
        values = getattr(self, which)
        return statistics.median(values) if values else None


@dataclass
class Result:
    label: str
    argv: list[str]
    off: Mode = field(default_factory=Mode)
    on: Mode = field(default_factory=Mode)
    failures: list[str] = field(default_factory=list)


async def one_round(spec: ServerSpec, requests: int, warmup: int, result: Result) -> None:
    """A fresh pair of servers, tracing off and on, asked in turns (paired samples)."""
    receiver = HttpReceiver(decode=False)
    async with trio.open_nursery() as nursery:
        await nursery.start(receiver.run)
        boxes = [Sandbox(CONFIG_TOML), Sandbox(CONFIG_TOML + otel_toml(receiver.url("/v1/traces")))]
        try:
            async with (
                running_server(spec, sandbox=boxes[0]) as off,
                running_server(spec, sandbox=boxes[1]) as on,
            ):
                pair = [(off, result.off, []), (on, result.on, [])]
                for conn, _, _ in pair:
                    await initialize(conn)
                for i in range(warmup + requests):
                    # alternate which server goes first, so neither always follows the other
                    for conn, mode, samples in pair if i % 2 else pair[::-1]:
                        request_id = conn.new_id()
                        start = time.perf_counter()
                        reply = await conn.request_line(request_id, traced_line(request_id))
                        elapsed = time.perf_counter() - start
                        if i >= warmup:
                            samples.append(elapsed)
                            mode.errors += "result" not in reply
                # let each server drain and flush its spans before it is killed
                for conn, _, _ in pair:
                    await conn.stdin.aclose()
                with trio.move_on_after(EXPORT_GRACE):
                    for conn, _, _ in pair:
                        await conn.process.wait()
        finally:
            for box in boxes:
                box.remove()
        for _, mode, samples in pair:
            samples.sort()
            mode.p50.append(percentile(samples, 0.5))
            mode.p99.append(percentile(samples, 0.99))
        result.on.export_posts += len(receiver.posts)
        result.on.exported_bytes += sum(len(p.body) for p in receiver.posts)
        nursery.cancel_scope.cancel()


async def run_all(specs: list[ServerSpec], rounds: int, requests: int, warmup: int) -> list[Result]:
    results = []
    for spec in specs:
        result = Result(spec.label, spec.argv)
        results.append(result)
        for n in range(rounds):
            log(f"[{spec.label}] round {n + 1}/{rounds}")
            try:
                with trio.fail_after(ROUND_TIMEOUT):
                    await one_round(spec, requests, warmup, result)
            except Exception as exc:
                result.failures.append(f"round {n + 1}: {type(exc).__name__}: {exc}")
                log(f"  FAILED: {exc}")
    return results


def paired_ratio(r: Result) -> float | None:
    """The median over rounds of each round's p50 on / p50 off (the pair saw the same load)."""
    ratios = [on / off for off, on in zip(r.off.p50, r.on.p50, strict=False) if off]
    return statistics.median(ratios) if ratios else None


def us(value: float | None) -> str:
    return "—" if value is None else f"{value * 1e6:.0f} µs"


def markdown(results: list[Result], rounds: int, requests: int, warmup: int) -> str:
    ours = results[0]
    ref = results[1] if len(results) > 1 else None
    lines = report_header("codex-trio tracing overhead", ours.argv, ref.argv if ref else None)
    lines += [
        f"- {rounds} rounds per server; each round a fresh pair (tracing off, tracing on) asked in turns, "
        f"{requests} sequential `fs/getMetadata` with a `trace` carrier each (+{warmup} warmup)",
        "- tracing on: `[otel]` OTLP/HTTP (protobuf) exporter to a receiver on 127.0.0.1",
        "",
        "| server | p50 off | p50 on | p50 on/off (paired) | p99 off | p99 on | exported bytes | target |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        on_off = paired_ratio(r)
        target = verdict(on_off, 1.10, False) if r is ours else "—"
        lines.append(
            f"| {r.label} | {us(r.off.median('p50'))} | {us(r.on.median('p50'))} | {fmt_ratio(on_off)} | "
            f"{us(r.off.median('p99'))} | {us(r.on.median('p99'))} | {r.on.exported_bytes} | {target} |"
        )
    if ref is not None:
        lines += [
            "",
            "| ours / reference | p50 | p99 |",
            "|---|---|---|",
            f"| tracing off | {fmt_ratio(ratio(ours.off.median('p50'), ref.off.median('p50')))} | "
            f"{fmt_ratio(ratio(ours.off.median('p99'), ref.off.median('p99')))} |",
            f"| tracing on | {fmt_ratio(ratio(ours.on.median('p50'), ref.on.median('p50')))} | "
            f"{fmt_ratio(ratio(ours.on.median('p99'), ref.on.median('p99')))} |",
        ]
    notes = []
    for r in results:
        pairs = zip(r.off.p50, r.on.p50, strict=False)
        rounds_text = ", ".join(f"{a * 1e6:.0f}/{b * 1e6:.0f}" for a, b in pairs)
        notes.append(f"- {r.label} p50 off/on per round (µs): {rounds_text}")
        if r.off.errors or r.on.errors:
            notes.append(f"- {r.label}: {r.off.errors + r.on.errors} error replies")
        for failure in r.failures:
            notes.append(f"- {r.label} FAILED {failure.splitlines()[0]}")
    return "\n".join([*lines, "", *notes]) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    add_server_options(p, server_default="python -m codex_trio")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--requests", type=int, default=2000)
    p.add_argument("--warmup", type=int, default=200)
    p.add_argument("--json", type=Path)
    p.add_argument("--markdown", type=Path)
    args = p.parse_args(argv)
    specs = server_specs(args, resolve_reference=False)
    started = time.perf_counter()
    results = trio.run(run_all, specs, args.rounds, args.requests, args.warmup)
    log(f"done in {time.perf_counter() - started:.1f} s")
    publish(markdown(results, args.rounds, args.requests, args.warmup), args.markdown)
    if args.json:
        write_file(args.json, json.dumps([asdict(r) for r in results], indent=2) + "\n")
    return 1 if any(r.failures for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
