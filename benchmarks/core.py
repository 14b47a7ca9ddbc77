#!/usr/bin/env python3
"""Core stdio benchmarks for a Codex app-server, ours against a reference.

Runs the same five measurements against two server commands and prints a
markdown table with the ratio ours/reference for each:

1. cold start: spawn -> ``initialize`` response (median of ``--runs``);
2. idle RSS: summed VmRSS of the server and its descendants, 1 s after init;
3. sequential latency (p50/p99) of ``fs/getMetadata``, one request at a time;
4. throughput of ``fs/getMetadata`` with a fixed window of requests in flight;
5. burst: many requests pipelined at once, counting answered/rejected/lost.

Every server process gets a fresh temporary HOME, CODEX_HOME (holding a
mock-provider ``config.toml``) and working directory. See README.md.

Usage::

    python benchmarks/core.py --server "python -m codex_trio" \\
        --reference "/work/scratch/ref/node_modules/.bin/codex app-server"
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import trio

sys.path.insert(0, str(Path(__file__).resolve().parent))

from report import (
    fmt,
    fmt_ratio,
    guarded,
    log,
    percentile,
    publish,
    ratio,
    report_header,
    verdict,
    write_file,
)
from servers import ProcessRss, ServerSpec, add_server_options, server_specs
from stdio_client import JSON, OVERLOADED, Connection, ServerGone, initialize, running_server

PHASE_TIMEOUT = 120.0


def metadata_line(request_id: int) -> bytes:
    """Encode one ``fs/getMetadata {"path":"/"}`` request line."""
    return b'{"id":%d,"method":"fs/getMetadata","params":{"path":"/"}}\n' % request_id


# --------------------------------------------------------------------------- measurements


@dataclass
class ColdStart:
    """Cold start times and idle RSS, one entry per run."""

    seconds: list[float] = field(default_factory=list)
    rss_kib: list[int] = field(default_factory=list)
    rss_breakdown: list[list[ProcessRss]] = field(default_factory=list)

    @property
    def median_seconds(self) -> float:
        return statistics.median(self.seconds)

    @property
    def median_rss_kib(self) -> float:
        return statistics.median(self.rss_kib)


async def measure_cold_start(spec: ServerSpec, idle: float, result: ColdStart) -> None:
    """One cold start: spawn, initialize, idle ``idle`` seconds, read RSS, kill."""
    async with running_server(spec) as conn:
        result.seconds.append(await initialize(conn))
        await trio.sleep(idle)
        total, parts = conn.rss()
        result.rss_kib.append(total)
        result.rss_breakdown.append(parts)


@dataclass
class Latency:
    """Round-trip times of sequential requests (seconds)."""

    count: int
    errors: int
    p50: float
    p90: float
    p99: float
    max: float
    mean: float


async def measure_latency(conn: Connection, count: int, warmup: int) -> Latency:
    """Issue ``warmup + count`` requests one at a time; time the last ``count``."""
    samples: list[float] = []
    errors = 0
    for i in range(warmup + count):
        request_id = conn.new_id()
        line = metadata_line(request_id)
        start = time.perf_counter()
        reply = await conn.request_line(request_id, line)
        elapsed = time.perf_counter() - start
        if i >= warmup:
            samples.append(elapsed)
            errors += "result" not in reply
    samples.sort()
    return Latency(
        count=count,
        errors=errors,
        p50=percentile(samples, 0.50),
        p90=percentile(samples, 0.90),
        p99=percentile(samples, 0.99),
        max=samples[-1],
        mean=statistics.fmean(samples),
    )


@dataclass
class Throughput:
    """Windowed throughput result."""

    count: int
    window: int
    ok: int
    errors: int
    rejected: int
    seconds: float

    @property
    def per_second(self) -> float:
        return self.count / self.seconds if self.seconds else 0.0


async def measure_throughput(conn: Connection, count: int, window: int) -> Throughput:
    """Send ``count`` requests keeping at most ``window`` in flight."""
    state = {"in_flight": 0, "ok": 0, "errors": 0, "rejected": 0, "done": 0}
    wake = trio.Event()

    def on_response(message: JSON) -> None:
        nonlocal wake
        state["in_flight"] -= 1
        state["done"] += 1
        if "result" in message:
            state["ok"] += 1
        elif message.get("error", {}).get("code") == OVERLOADED:
            state["rejected"] += 1
        else:
            state["errors"] += 1
        wake.set()

    lines = [metadata_line(conn.new_id()) for _ in range(count)]
    conn.on_response = on_response
    try:
        start = time.perf_counter()
        sent = 0
        while state["done"] < count:
            if conn.closed.is_set():
                raise ServerGone("server exited during throughput\n" + conn.sandbox.stderr_tail())
            free = min(window - state["in_flight"], count - sent)
            if free > 0:
                # Responses are only dispatched at checkpoints, so re-check before waiting.
                state["in_flight"] += free
                await conn.send(b"".join(lines[sent : sent + free]))
                sent += free
                continue
            wake = trio.Event()
            with trio.move_on_after(1.0):  # also notices a server that exited
                await wake.wait()
        seconds = time.perf_counter() - start
    finally:
        conn.on_response = conn._complete
    return Throughput(count, window, state["ok"], state["errors"], state["rejected"], seconds)


@dataclass
class Burst:
    """Outcome of a pipelined burst: every request is answered, rejected or lost."""

    sent: int
    chunk: int
    ok: int = 0
    errors: int = 0
    rejected: int = 0
    duplicates: int = 0
    unexpected: int = 0
    write_seconds: float = 0.0
    last_reply_seconds: float = 0.0
    server_exited: bool = False
    alive_after: bool = False

    @property
    def answered(self) -> int:
        """Requests that got any reply (result or error, -32001 included)."""
        return self.ok + self.errors + self.rejected

    @property
    def lost(self) -> int:
        return self.sent - self.answered


async def measure_burst(conn: Connection, count: int, chunk: int, silence: float) -> Burst:
    """Write ``count`` requests in ``chunk``-sized writes, then wait for ``silence`` s of quiet."""
    burst = Burst(sent=count, chunk=chunk)
    first = conn.new_id()
    for _ in range(count - 1):
        conn.new_id()
    outstanding = set(range(first, first + count))
    seen: set[Any] = set()
    start = time.perf_counter()

    def on_response(message: JSON) -> None:
        request_id = message.get("id")
        if request_id not in outstanding:
            if request_id in seen:
                burst.duplicates += 1
            else:
                burst.unexpected += 1
            return
        outstanding.discard(request_id)
        seen.add(request_id)
        burst.last_reply_seconds = time.perf_counter() - start
        if "result" in message:
            burst.ok += 1
        elif message.get("error", {}).get("code") == OVERLOADED:
            burst.rejected += 1
        else:
            burst.errors += 1

    chunks = [
        b"".join(metadata_line(i) for i in range(lo, min(lo + chunk, first + count)))
        for lo in range(first, first + count, chunk)
    ]
    conn.on_response = on_response
    try:
        with trio.move_on_after(PHASE_TIMEOUT):
            try:
                for data in chunks:
                    await conn.send(data)
            except ServerGone:
                pass
            burst.write_seconds = time.perf_counter() - start
            while outstanding and not conn.closed.is_set():
                quiet_for = time.perf_counter() - max(conn.last_rx, start + burst.write_seconds)
                if quiet_for >= silence:
                    break
                with trio.move_on_after(silence - quiet_for):
                    await conn.closed.wait()
    finally:
        conn.on_response = conn._complete
    burst.server_exited = conn.closed.is_set()
    if not burst.server_exited:
        with trio.move_on_after(5.0):
            try:
                await conn.request("fs/getMetadata", {"path": "/"})
                burst.alive_after = True
            except ServerGone:
                pass
    return burst


@dataclass
class ServerResult:
    """Everything measured for one server."""

    label: str
    argv: list[str]
    cold: ColdStart = field(default_factory=ColdStart)
    latency: Latency | None = None
    throughput: Throughput | None = None
    burst: Burst | None = None
    failures: list[str] = field(default_factory=list)


@dataclass
class Options:
    """Benchmark sizes."""

    runs: int
    idle: float
    seq_requests: int
    warmup: int
    throughput_requests: int
    window: int
    burst_requests: int
    burst_chunk: int
    silence: float


async def run_all(specs: list[ServerSpec], opts: Options) -> list[ServerResult]:
    """Run every measurement for every server (cold starts interleaved)."""
    results = [ServerResult(spec.label, spec.argv) for spec in specs]

    for run in range(opts.runs):
        for spec, result in zip(specs, results, strict=True):
            log(f"cold start {run + 1}/{opts.runs} [{spec.label}]")
            await guarded(
                result, "cold start", partial(measure_cold_start, spec, opts.idle, result.cold), PHASE_TIMEOUT
            )

    for spec, result in zip(specs, results, strict=True):

        async def steady(spec: ServerSpec = spec, result: ServerResult = result) -> None:
            async with running_server(spec) as conn:
                await initialize(conn)
                log(f"sequential latency [{spec.label}]")
                result.latency = await measure_latency(conn, opts.seq_requests, opts.warmup)
                log(f"throughput [{spec.label}]")
                result.throughput = await measure_throughput(conn, opts.throughput_requests, opts.window)

        async def burst(spec: ServerSpec = spec, result: ServerResult = result) -> None:
            async with running_server(spec) as conn:
                await initialize(conn)
                log(f"burst [{spec.label}]")
                result.burst = await measure_burst(conn, opts.burst_requests, opts.burst_chunk, opts.silence)

        await guarded(result, "latency/throughput", steady, PHASE_TIMEOUT)
        await guarded(result, "burst", burst, PHASE_TIMEOUT)
    return results


# --------------------------------------------------------------------------- reporting


def burst_cell(burst: Burst | None, which: str) -> str:
    """A burst count as 'n (p%)'."""
    if burst is None:
        return "—"
    value = {"answered": burst.answered, "rejected": burst.rejected, "lost": burst.lost}[which]
    return f"{value:,} ({100.0 * value / burst.sent:.1f}%)"


def summary_rows(ours: ServerResult, ref: ServerResult | None) -> list[tuple[str, str, str, str, str]]:
    """Rows of the markdown table: metric, ours, reference, ratio, target."""
    rows: list[tuple[str, str, str, str, str]] = []

    def numeric(
        metric: str,
        get: Callable[[ServerResult], float | None],
        unit: str,
        digits: int,
        target: tuple[float, bool] | None,
        error_replies: int = 0,
    ) -> None:
        mine = get(ours)
        theirs = get(ref) if ref is not None else None
        r = ratio(mine, theirs)
        if target is None:
            target_text = "—"
        else:
            limit, higher = target
            outcome = f"FAIL: {error_replies:,} error replies" if error_replies else verdict(r, limit, higher)
            target_text = f"{'≥' if higher else '≤'} {limit:.1f}× ({outcome})"  # noqa: RUF001
        rows.append((metric, fmt(mine, unit, digits), fmt(theirs, unit, digits), fmt_ratio(r), target_text))

    def cold_ms(r: ServerResult) -> float | None:
        return r.cold.median_seconds * 1e3 if r.cold.seconds else None

    def rss_mib(r: ServerResult) -> float | None:
        return r.cold.median_rss_kib / 1024 if r.cold.rss_kib else None

    def lat(r: ServerResult, attr: str) -> float | None:
        return getattr(r.latency, attr) * 1e6 if r.latency else None

    def rps(r: ServerResult) -> float | None:
        return r.throughput.per_second if r.throughput else None

    numeric("cold start (spawn → initialize reply, median)", cold_ms, "ms", 1, (1.0, False))
    numeric("idle RSS (process tree, 1 s after init, median)", rss_mib, "MiB", 1, (0.5, False))
    seq_errors = ours.latency.errors if ours.latency else 0
    tp = ours.throughput
    tp_errors = tp.errors + tp.rejected if tp else 0
    window = f"window {tp.window}" if tp else "windowed"
    numeric(
        "getMetadata latency p50 (sequential)", lambda r: lat(r, "p50"), "µs", 0, (1.0, False), seq_errors
    )
    numeric("getMetadata latency p99 (sequential)", lambda r: lat(r, "p99"), "µs", 0, None)
    numeric(f"getMetadata throughput ({window})", rps, "req/s", 0, (1.0, True), tp_errors)

    ob, rb = ours.burst, ref.burst if ref is not None else None
    answered_ok = ob is not None and ob.lost == 0
    rows.append(
        (
            f"burst {ob.sent if ob else ''}: answered (result or error)",
            burst_cell(ob, "answered"),
            burst_cell(rb, "answered"),
            "—",
            f"100% ({'pass' if answered_ok else 'FAIL'})",
        )
    )
    rows.append(("burst: rejected -32001", burst_cell(ob, "rejected"), burst_cell(rb, "rejected"), "—", "—"))
    rows.append(("burst: lost (no reply)", burst_cell(ob, "lost"), burst_cell(rb, "lost"), "—", "0"))

    def last_reply(r: ServerResult) -> float | None:
        return r.burst.last_reply_seconds if r.burst and r.burst.answered else None

    numeric("burst: time to last reply", last_reply, "s", 2, None)
    return rows


def markdown(results: list[ServerResult], opts: Options) -> str:
    """The full markdown report: header, table and notes."""
    ours = results[0]
    ref = results[1] if len(results) > 1 else None
    lines = report_header("codex-trio core benchmarks", ours.argv, ref.argv if ref is not None else None)
    lines += [
        f"- cold start runs: {opts.runs}; sequential: {opts.seq_requests} (+{opts.warmup} warmup); "
        f"throughput: {opts.throughput_requests} @ window {opts.window}; "
        f"burst: {opts.burst_requests} in {opts.burst_chunk}-request writes, {opts.silence:g} s silence",
        "",
        "| metric | ours | reference | ratio | target |",
        "|---|---|---|---|---|",
    ]
    for row in summary_rows(ours, ref):
        lines.append("| " + " | ".join(row) + " |")
    notes = []
    for r in results:
        if r.cold.seconds:
            runs = ", ".join(f"{t * 1e3:.0f}" for t in r.cold.seconds)
            notes.append(f"- {r.label} cold starts (ms, in run order): {runs}")
        if r.cold.rss_breakdown:
            last = r.cold.rss_breakdown[-1]
            procs = ", ".join(f"{p['name']} {p['rss_kib'] / 1024:.1f} MiB" for p in last)
            notes.append(f"- {r.label} process tree (last run): {procs}")
        if r.throughput and (r.throughput.errors or r.throughput.rejected):
            notes.append(
                f"- {r.label} throughput: {r.throughput.errors} errors, {r.throughput.rejected} rejected"
            )
        if r.latency and r.latency.errors:
            notes.append(f"- {r.label} sequential: {r.latency.errors} error replies")
        if r.burst:
            b = r.burst
            notes.append(
                f"- {r.label} burst: {b.ok} results, {b.errors} other errors, {b.rejected} -32001, "
                f"{b.lost} lost, {b.duplicates} duplicate replies; server "
                + ("exited" if b.server_exited else "answering" if b.alive_after else "unresponsive")
                + " afterwards"
            )
        for failure in r.failures:
            notes.append(f"- {r.label} FAILED {failure.splitlines()[0]}")
    if notes:
        lines += ["", *notes]
    return "\n".join(lines) + "\n"


def to_json(results: list[ServerResult], opts: Options) -> JSON:
    """Raw results for ``--json``."""
    out: JSON = {"options": asdict(opts), "servers": {}}
    for r in results:
        data = asdict(r)
        data["cold"]["median_seconds"] = r.cold.median_seconds if r.cold.seconds else None
        data["cold"]["median_rss_kib"] = r.cold.median_rss_kib if r.cold.rss_kib else None
        if r.throughput:
            data["throughput"]["per_second"] = r.throughput.per_second
        if r.burst:
            data["burst"]["answered"] = r.burst.answered
            data["burst"]["lost"] = r.burst.lost
        out["servers"][r.label] = data
    return out


# --------------------------------------------------------------------------- command line


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    add_server_options(p)
    p.add_argument(
        "--keep-launchers",
        action="store_true",
        help="do not resolve a leading 'python' (pyenv shim etc.) to the real interpreter",
    )
    p.add_argument("--json", type=Path, help="write raw results here")
    p.add_argument("--markdown", type=Path, help="write the markdown report here")
    p.add_argument("--runs", type=int, default=5, help="cold start runs per server")
    p.add_argument("--idle", type=float, default=1.0, help="idle seconds before reading RSS")
    p.add_argument("--seq-requests", type=int, default=2000)
    p.add_argument("--warmup", type=int, default=200, help="untimed requests before the latency run")
    p.add_argument("--throughput-requests", type=int, default=20000)
    p.add_argument("--window", type=int, default=64)
    p.add_argument("--burst-requests", type=int, default=20000)
    p.add_argument("--burst-chunk", type=int, default=500)
    p.add_argument("--silence", type=float, default=5.0, help="burst ends after this much stdout silence")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Entry point."""
    args = parse_args(argv)
    specs = server_specs(
        args,
        resolve_ours=not args.keep_launchers,
        resolve_reference=not args.keep_launchers,
        reference_pythonpath=True,
    )
    opts = Options(
        runs=args.runs,
        idle=args.idle,
        seq_requests=args.seq_requests,
        warmup=args.warmup,
        throughput_requests=args.throughput_requests,
        window=args.window,
        burst_requests=args.burst_requests,
        burst_chunk=args.burst_chunk,
        silence=args.silence,
    )
    started = time.perf_counter()
    results = trio.run(run_all, specs, opts)
    log(f"done in {time.perf_counter() - started:.1f} s")
    report = markdown(results, opts)
    publish(report, args.markdown)
    if args.json:
        write_file(args.json, json.dumps(to_json(results, opts), indent=2) + "\n")
    return 1 if any(r.failures for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
