#!/usr/bin/env python3
"""`fs/readFile` benchmarks over stdio, ours against a reference, in one run.

For each file size (default 1 KiB and 8 MiB; the same random bytes for both servers, in each
server's own working directory), on a fresh initialized server:

1. sequential latency: untimed warm-up reads, then reads one at a time, each timed from the
   write of the request to the end of its reply line; p50 and p99 (nearest rank);
2. throughput: reads with a fixed number in flight (each reply frees a slot); replies per
   second and MiB of file content per second.

Every reply is checked: the first of each phase is decoded and compared with the file, the
others must be results of the expected length. Replies are read with a linear line splitter
(an 8 MiB file is an 11 MiB line), so the client's cost stays small and equal for both.
Prints a markdown table with the ratio ours / reference. Uses the process helpers of `servers.py`.

Usage::

    python benchmarks/fs.py --server "python -m codex_trio" \\
        --reference "/work/scratch/ref/node_modules/.bin/codex app-server"
"""

from __future__ import annotations

import argparse
import base64
import json
import random
import re
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import trio

sys.path.insert(0, str(Path(__file__).resolve().parent))

from report import fmt, fmt_ratio, log, percentile, publish, ratio, report_header, verdict, write_file
from servers import Sandbox, ServerSpec, add_server_options, server_specs
from stdio_client import INIT_LINE, INIT_TIMEOUT, INITIALIZED_LINE, Connection, Pending, running_server

KIB = 1024
MIB = 1024 * 1024
PHASE_TIMEOUT = 300.0
_ID = re.compile(rb'^\{"id":(\d+),')


@dataclass(frozen=True)
class SizePlan:
    """How much to measure for one file size."""

    size: int
    sequential: int
    warmup: int
    throughput: int
    window: int

    @property
    def label(self) -> str:
        return f"{self.size // MIB} MiB" if self.size >= MIB else f"{self.size // KIB} KiB"


class Reader(Connection):
    """A server's stdio link: requests by id, replies as raw lines (no JSON parse).

    An 8 MiB file is an 11 MiB reply line; parsing it would make the client, not the
    server, the measured cost.
    """

    def __init__(self, process: trio.Process, sandbox: Sandbox, spawned_at: float) -> None:
        super().__init__(process, sandbox, spawned_at)
        self._send_lock = trio.Lock()  # the throughput phase sends from many tasks

    def _dispatch(self, line: bytes) -> None:
        match = _ID.match(line)
        if match is not None:
            request_id = int(match.group(1))
        elif line.startswith(b'{"method"') or not line.strip():
            return  # a notification
        else:
            request_id = json.loads(line).get("id")
        pending = self._pending.pop(request_id, None)
        if pending is not None:
            pending.raw = line
            pending.event.set()

    async def send(self, data: bytes) -> None:
        async with self._send_lock:
            await super().send(data)

    async def call_line(self, request_id: int, line: bytes) -> bytes:
        pending = Pending()
        self._pending[request_id] = pending
        await self.send(line)
        await pending.event.wait()
        if pending.raw is None:
            raise RuntimeError("the server exited before replying")
        return pending.raw


@asynccontextmanager
async def running(spec: ServerSpec) -> AsyncIterator[tuple[Reader, Sandbox]]:
    """Start `spec` in a fresh sandbox, initialized; kill its whole tree afterwards."""
    async with running_server(spec, connection=Reader) as reader:
        assert isinstance(reader, Reader)
        with trio.fail_after(INIT_TIMEOUT):
            reply = await reader.call_line(1, INIT_LINE)
        if b'"result"' not in reply:
            raise RuntimeError(f"initialize failed: {reply[:300]!r}")
        await reader.send(INITIALIZED_LINE)
        yield reader, reader.sandbox


def read_line(request_id: int, path: Path) -> bytes:
    params = json.dumps({"path": str(path)})
    return b'{"id":%d,"method":"fs/readFile","params":%s}\n' % (request_id, params.encode())


def check_reply(reply: bytes, data: bytes, *, decode: bool) -> None:
    """The reply must be a result carrying exactly `data`."""
    encoded_length = 4 * ((len(data) + 2) // 3)
    if b'"result"' not in reply[:64] or len(reply) < encoded_length:
        raise RuntimeError(f"not a readFile result: {reply[:300]!r}")
    if decode:
        if base64.b64decode(json.loads(reply)["result"]["dataBase64"]) != data:
            raise RuntimeError("readFile returned other bytes than the file holds")
    elif reply.find(b'"dataBase64":"') < 0:
        raise RuntimeError(f"readFile result without dataBase64: {reply[:300]!r}")


@dataclass
class SizeResult:
    """Measurements for one file size on one server."""

    size: int
    latencies: list[float] = field(default_factory=list)
    throughput_count: int = 0
    throughput_seconds: float = 0.0

    @property
    def p50(self) -> float:
        return percentile(sorted(self.latencies), 0.50)

    @property
    def p99(self) -> float:
        return percentile(sorted(self.latencies), 0.99)

    @property
    def per_second(self) -> float:
        return self.throughput_count / self.throughput_seconds

    @property
    def mib_per_second(self) -> float:
        return self.per_second * self.size / MIB


async def measure(reader: Reader, path: Path, data: bytes, plan: SizePlan) -> SizeResult:
    result = SizeResult(plan.size)
    for i in range(plan.warmup + plan.sequential):
        request_id = reader.new_id()
        line = read_line(request_id, path)
        began = time.perf_counter()
        reply = await reader.call_line(request_id, line)
        elapsed = time.perf_counter() - began
        check_reply(reply, data, decode=i == 0)
        if i >= plan.warmup:
            result.latencies.append(elapsed)

    done = trio.Event()
    remaining = plan.throughput
    checked = False

    async def one(slots: trio.Semaphore) -> None:
        nonlocal remaining, checked
        async with slots:
            request_id = reader.new_id()
            reply = await reader.call_line(request_id, read_line(request_id, path))
        check_reply(reply, data, decode=not checked)
        checked = True
        remaining -= 1
        if remaining == 0:
            done.set()

    slots = trio.Semaphore(plan.window)
    began = time.perf_counter()
    async with trio.open_nursery() as nursery:
        for _ in range(plan.throughput):
            nursery.start_soon(one, slots)
        await done.wait()
    result.throughput_seconds = time.perf_counter() - began
    result.throughput_count = plan.throughput
    return result


@dataclass
class ServerResult:
    label: str
    argv: list[str]
    sizes: dict[int, SizeResult] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)


async def run_server(spec: ServerSpec, plans: list[SizePlan], files: dict[int, bytes]) -> ServerResult:
    result = ServerResult(spec.label, spec.argv)
    for plan in plans:
        log(f"readFile {plan.label} [{spec.label}]")
        try:
            with trio.fail_after(PHASE_TIMEOUT):
                async with running(spec) as (reader, sandbox):
                    path = sandbox.cwd / f"bench-{plan.size}.bin"
                    path.write_bytes(files[plan.size])
                    result.sizes[plan.size] = await measure(reader, path, files[plan.size], plan)
        except Exception as exc:  # one failing server must not stop the comparison
            leaf: BaseException = exc
            while isinstance(leaf, BaseExceptionGroup):
                leaf = leaf.exceptions[0]
            result.failures.append(f"{plan.label}: {type(leaf).__name__}: {leaf}")
            log(f"  [{spec.label}] {plan.label} FAILED: {leaf!r}")
    return result


def markdown(results: list[ServerResult], plans: list[SizePlan]) -> str:
    ours = results[0]
    ref = results[1] if len(results) > 1 else None
    lines = report_header("fs/readFile benchmark", ours.argv, ref.argv if ref is not None else None)
    lines += [
        "",
        "| metric | ours | reference | ours / ref | target |",
        "|---|---|---|---|---|",
    ]

    def row(
        metric: str, mine: float | None, theirs: float | None, unit: str, higher_is_better: bool | None
    ) -> None:
        value = ratio(mine, theirs)
        if value is None or higher_is_better is None:
            target = "—"
        else:
            outcome = verdict(value, 1.0, higher_is_better)
            target = f"{'≥' if higher_is_better else '≤'} 1.0× ({outcome})"  # noqa: RUF001
        digits = 0 if unit in ("µs", "req/s") else 1
        cells = [fmt(v, unit, digits) for v in (mine, theirs)]
        lines.append(f"| {metric} | {cells[0]} | {cells[1]} | {fmt_ratio(value)} | {target} |")

    def get(result: ServerResult | None, size: int, attr: str, scale: float = 1.0) -> float | None:
        if result is None or size not in result.sizes:
            return None
        return float(getattr(result.sizes[size], attr)) * scale

    for plan in plans:
        s = plan.size
        row(
            f"readFile {plan.label} p50 (sequential)",
            get(ours, s, "p50", 1e6),
            get(ref, s, "p50", 1e6),
            "µs",
            False,
        )
        row(
            f"readFile {plan.label} p99 (sequential)",
            get(ours, s, "p99", 1e6),
            get(ref, s, "p99", 1e6),
            "µs",
            None,
        )
        row(
            f"readFile {plan.label} throughput (window {plan.window})",
            get(ours, s, "per_second"),
            get(ref, s, "per_second"),
            "req/s",
            True,
        )
        row(
            f"readFile {plan.label} content throughput",
            get(ours, s, "mib_per_second"),
            get(ref, s, "mib_per_second"),
            "MiB/s",
            True,
        )
    lines += [
        "",
        "Samples: "
        + "; ".join(
            f"{p.label}: {p.sequential} sequential (+{p.warmup} warm-up), {p.throughput} windowed"
            for p in plans
        )
        + ". p99 is informational.",
    ]
    for result in results:
        for failure in result.failures:
            lines.append(f"- **{result.label} failed**: {failure}")
    return "\n".join(lines) + "\n"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    add_server_options(p, native_help="run the native codex binary, not the launcher")
    p.add_argument("--small-requests", type=int, default=2000, help="sequential 1 KiB reads")
    p.add_argument("--large-requests", type=int, default=60, help="sequential 8 MiB reads")
    p.add_argument("--json", type=Path, help="write raw samples here")
    p.add_argument("--markdown", type=Path, help="write the markdown table here")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    specs = server_specs(args)
    plans = [
        SizePlan(KIB, args.small_requests, 200, args.small_requests * 5, 16),
        SizePlan(8 * MIB, args.large_requests, 5, args.large_requests * 2, 4),
    ]
    rng = random.Random(2024)
    files = {plan.size: rng.randbytes(plan.size) for plan in plans}

    async def run() -> list[ServerResult]:
        return [await run_server(spec, plans, files) for spec in specs]

    results = trio.run(run)
    report = markdown(results, plans)
    publish(report, args.markdown)
    if args.json:
        raw: dict[str, Any] = {
            r.label: {
                "argv": r.argv,
                "failures": r.failures,
                "sizes": {str(k): asdict(v) for k, v in r.sizes.items()},
            }
            for r in results
        }
        write_file(args.json, json.dumps(raw, indent=1))
    return 1 if any(r.failures for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
