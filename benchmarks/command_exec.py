#!/usr/bin/env python3
"""command/exec benchmarks over stdio, ours against a reference in one run.

Measurements (each server in a fresh sandbox, one server at a time):

1. stream through a pipe: ``head -c SIZE /dev/zero`` with ``streamStdoutStderr``
   (``disableOutputCap``, ``disableTimeout``); wall time from the request to the final
   response, every ``command/exec/outputDelta`` counted; MiB/s (median of ``--runs``);
2. stream through a tty: the same with ``tty: true``;
3. buffered: ``head -c SIZE /dev/zero | tr '\\0' a`` answered in one response
   (``disableOutputCap``); MiB/s;
4. shutdown: ``--sleepers`` × ``sleep 60`` running as ``command/exec``, then SIGTERM;
   time from the signal to the server's exit, and how many of the sleeps are still alive
   0.5 s after the exit (they are killed afterwards either way).

The delta counter reads only the length of each ``deltaBase64`` (no JSON parse, no
decode), so the client costs the same little for both servers. Reuses the process and
sandbox helpers of ``servers.py``.

Usage::

    python benchmarks/command_exec.py --server "python -m codex_trio" \\
        --reference "/work/scratch/ref/node_modules/.bin/codex app-server" --reference-native
"""  # noqa: RUF002

from __future__ import annotations

import argparse
import json
import os
import shlex
import signal
import statistics
import sys
import time
from contextlib import suppress
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import trio

sys.path.insert(0, str(Path(__file__).resolve().parent))

from report import fmt, fmt_ratio, guarded, log, publish, ratio, verdict, write_file
from servers import ServerSpec, add_server_options, server_specs
from stdio_client import Connection, initialize, running_server

from codex_trio.procfs import is_alive, process_name, process_tree

MIB = 1024 * 1024
FULL_ACCESS = {"type": "dangerFullAccess"}
DELTA_PREFIX = b'{"method":"command/exec/outputDelta"'
DELTA_FIELD = b'"deltaBase64":"'
PHASE_TIMEOUT = 300.0
EXEC_ID = 77


class DeltaCounter:
    """Counts decoded bytes of streamed deltas from raw lines, then hands on the rest."""

    def __init__(self, conn: Connection) -> None:
        self.bytes = 0
        self.deltas = 0
        self._forward = conn._dispatch
        conn._dispatch = self.dispatch  # type: ignore[method-assign]

    def dispatch(self, line: bytes) -> None:
        if line.startswith(DELTA_PREFIX):
            start = line.find(DELTA_FIELD) + len(DELTA_FIELD)
            end = line.find(b'"', start)
            text = line[start:end]
            self.bytes += len(text) // 4 * 3 - text[-2:].count(b"=")
            self.deltas += 1
            return
        self._forward(line)


@dataclass
class StreamRun:
    seconds: float
    deltas: int
    mib_per_s: float


@dataclass
class Shutdown:
    exit_seconds: float
    exit_code: int | None
    sleepers: int
    left_running: int


@dataclass
class ServerResult:
    label: str
    argv: list[str]
    pipe: list[StreamRun] = field(default_factory=list)
    tty: list[StreamRun] = field(default_factory=list)
    buffered: list[StreamRun] = field(default_factory=list)
    shutdown: list[Shutdown] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)


def median_rate(runs: list[StreamRun]) -> float | None:
    return statistics.median(r.mib_per_s for r in runs) if runs else None


async def stream_once(conn: Connection, size: int, tty: bool) -> StreamRun:
    counter = DeltaCounter(conn)
    params = {
        "command": ["head", "-c", str(size), "/dev/zero"],
        "processId": f"bench-{time.monotonic_ns()}",
        "streamStdoutStderr": True,
        "tty": tty,
        "disableOutputCap": True,
        "disableTimeout": True,
        "sandboxPolicy": FULL_ACCESS,
    }
    began = time.perf_counter()
    reply = await conn.request("command/exec", params)
    elapsed = time.perf_counter() - began
    conn._dispatch = counter._forward  # type: ignore[method-assign]
    if reply.get("result", {}).get("exitCode") != 0:
        raise RuntimeError(f"stream failed: {reply}")
    if counter.bytes != size:
        raise RuntimeError(f"streamed {counter.bytes} bytes, expected {size}")
    return StreamRun(elapsed, counter.deltas, size / MIB / elapsed)


async def buffered_once(conn: Connection, size: int) -> StreamRun:
    params = {
        "command": ["sh", "-c", f"head -c {size} /dev/zero | tr '\\0' a"],
        "disableOutputCap": True,
        "disableTimeout": True,
        "sandboxPolicy": FULL_ACCESS,
    }
    began = time.perf_counter()
    reply = await conn.request("command/exec", params)
    elapsed = time.perf_counter() - began
    stdout = reply.get("result", {}).get("stdout", "")
    if len(stdout) != size:
        raise RuntimeError(f"buffered {len(stdout)} bytes, expected {size}")
    return StreamRun(elapsed, 0, size / MIB / elapsed)


def live_sleepers(pids: list[int]) -> int:
    return sum(is_alive(pid) for pid in pids)


async def shutdown_once(spec: ServerSpec, sleepers: int) -> Shutdown:
    async with running_server(spec, connection=Connection) as conn:
        await initialize(conn)
        for index in range(sleepers):
            request = {
                "id": f"sleep-{index}",
                "method": "command/exec",
                "params": {
                    "command": ["sleep", "60"],
                    "processId": f"s{index}",
                    "disableTimeout": True,
                    "sandboxPolicy": FULL_ACCESS,
                },
            }
            await conn.send(json.dumps(request).encode() + b"\n")
        pids: list[int] = []
        with trio.fail_after(30):
            while len(pids) < sleepers:
                pids = [p for p in process_tree(conn.process.pid) if process_name(p, "") == "sleep"]
                await trio.sleep(0.01)
        began = time.perf_counter()
        conn.process.send_signal(signal.SIGTERM)
        with trio.fail_after(60):
            code = await conn.process.wait()
        elapsed = time.perf_counter() - began
        await trio.sleep(0.5)
        left = live_sleepers(pids)
        for pid in pids:
            with suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        return Shutdown(elapsed, code, len(pids), left)


@dataclass
class Options:
    runs: int
    stream_size: int
    buffered_size: int
    sleepers: int


async def run_all(specs: list[ServerSpec], opts: Options) -> list[ServerResult]:
    results = [ServerResult(spec.label, spec.argv) for spec in specs]

    for run in range(opts.runs):
        for spec, result in zip(specs, results, strict=True):

            async def streams(spec: ServerSpec = spec, result: ServerResult = result, run: int = run) -> None:
                async with running_server(spec, connection=Connection) as conn:
                    await initialize(conn)
                    log(f"run {run + 1}/{opts.runs} [{spec.label}] pipe")
                    result.pipe.append(await stream_once(conn, opts.stream_size, tty=False))
                    log(f"run {run + 1}/{opts.runs} [{spec.label}] tty")
                    result.tty.append(await stream_once(conn, opts.stream_size, tty=True))
                    log(f"run {run + 1}/{opts.runs} [{spec.label}] buffered")
                    result.buffered.append(await buffered_once(conn, opts.buffered_size))

            async def shutdown(
                spec: ServerSpec = spec, result: ServerResult = result, run: int = run
            ) -> None:
                log(f"run {run + 1}/{opts.runs} [{spec.label}] shutdown")
                result.shutdown.append(await shutdown_once(spec, opts.sleepers))

            await guarded(result, "streams", streams, PHASE_TIMEOUT)
            await guarded(result, "shutdown", shutdown, PHASE_TIMEOUT)
    return results


def markdown(results: list[ServerResult], opts: Options) -> str:
    ours = results[0]
    ref = results[1] if len(results) > 1 else None

    def rate(r: ServerResult | None, what: str) -> float | None:
        return None if r is None else median_rate(getattr(r, what))

    def exit_time(r: ServerResult | None) -> float | None:
        if r is None or not r.shutdown:
            return None
        return statistics.median(s.exit_seconds for s in r.shutdown) * 1000

    def left(r: ServerResult | None) -> str:
        return "—" if r is None or not r.shutdown else str(max(s.left_running for s in r.shutdown))

    size = opts.stream_size / MIB
    rows = [
        "| measurement | ours | reference | ours / reference | target | verdict |",
        "|---|---|---|---|---|---|",
    ]
    for what, label in (("pipe", f"stream {size:g} MiB, pipe"), ("tty", f"stream {size:g} MiB, tty")):
        value = ratio(rate(ours, what), rate(ref, what))
        rows.append(
            f"| {label} | {fmt(rate(ours, what), 'MiB/s')} | {fmt(rate(ref, what), 'MiB/s')} | "
            f"{fmt_ratio(value)} | ≥ 1.0× | {verdict(value, 1.0, True)} |"  # noqa: RUF001
        )
    value = ratio(rate(ours, "buffered"), rate(ref, "buffered"))
    rows.append(
        f"| buffered {opts.buffered_size / MIB:g} MiB | {fmt(rate(ours, 'buffered'), 'MiB/s')} | "
        f"{fmt(rate(ref, 'buffered'), 'MiB/s')} | {fmt_ratio(value)} | — | — |"
    )
    value = ratio(exit_time(ours), exit_time(ref))
    rows.append(
        f"| SIGTERM with {opts.sleepers} × `sleep 60`: exit time | {fmt(exit_time(ours), 'ms')} | "  # noqa: RUF001
        f"{fmt(exit_time(ref), 'ms')} | {fmt_ratio(value)} | ≤ 1.0× | {verdict(value, 1.0, False)} |"  # noqa: RUF001
    )
    rows.append(
        f"| … sleeps still running 0.5 s after exit (worst run) | {left(ours)} | {left(ref)} | — | 0 | "
        f"{'pass' if left(ours) == '0' else 'FAIL'} |"
    )
    deltas = [
        f"{r.label}: {statistics.median(x.deltas for x in r.pipe):,.0f} (pipe) / "
        f"{statistics.median(x.deltas for x in r.tty):,.0f} (tty)"
        for r in results
        if r.pipe and r.tty
    ]
    notes = [
        "",
        f"Medians of {opts.runs} runs. Deltas per stream: " + "; ".join(deltas) + ".",
    ]
    for r in results:
        notes.append(f"`{r.label}`: `{shlex.join(r.argv)}`")
        notes.extend(f"* failure: {f}" for f in r.failures)
    return "\n".join(rows + notes) + "\n"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    add_server_options(p, server_default="python -m codex_trio")
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--stream-mib", type=float, default=50)
    p.add_argument("--buffered-mib", type=float, default=10)
    p.add_argument("--sleepers", type=int, default=20)
    p.add_argument("--json", type=Path, help="write raw results here")
    p.add_argument("--markdown", type=Path, help="write the markdown report here")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    specs = server_specs(args)
    opts = Options(args.runs, int(args.stream_mib * MIB), int(args.buffered_mib * MIB), args.sleepers)
    results = trio.run(run_all, specs, opts)
    report = markdown(results, opts)
    publish(report, args.markdown)
    if args.json:
        raw: dict[str, Any] = {"options": asdict(opts), "results": [asdict(r) for r in results]}
        write_file(args.json, json.dumps(raw, indent=2) + "\n")
    return 1 if any(r.failures for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
