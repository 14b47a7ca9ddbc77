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
import math
import os
import platform
import re
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager, suppress
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, TypedDict

import trio

CONFIG_TOML = """\
model = "gpt-5.5"
model_provider = "mock"
[features]
plugins=false
apps=false
[model_providers.mock]
name="mock"
base_url="http://127.0.0.1:9/v1"
wire_api="responses"
supports_websockets=false
request_max_retries=0
stream_max_retries=0
"""

INIT_LINE = b'{"id":1,"method":"initialize","params":{"clientInfo":{"name":"bench","version":"1"}}}\n'
INITIALIZED_LINE = b'{"method":"initialized"}\n'
OVERLOADED = -32001
INIT_TIMEOUT = 30.0
PHASE_TIMEOUT = 120.0
FIRST_BULK_ID = 1000

JSON = dict[str, Any]


def metadata_line(request_id: int) -> bytes:
    """Encode one ``fs/getMetadata {"path":"/"}`` request line."""
    return b'{"id":%d,"method":"fs/getMetadata","params":{"path":"/"}}\n' % request_id


# --------------------------------------------------------------------------- processes


@dataclass(frozen=True)
class ServerSpec:
    """How to start one server: a label, an argv and extra environment."""

    label: str
    argv: list[str]
    extra_env: dict[str, str] = field(default_factory=dict)


class ServerGone(Exception):
    """The server closed stdout (exited) while a reply was still expected."""


def process_table() -> dict[int, int]:
    """Map every pid in /proc to its parent pid."""
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        # The command name may contain spaces and parentheses; fields follow the last ')'.
        fields = stat[stat.rindex(")") + 2 :].split()
        parents[int(entry)] = int(fields[1])
    return parents


def process_tree(root: int) -> list[int]:
    """Return ``root`` and all of its live descendants."""
    children: dict[int, list[int]] = {}
    for pid, ppid in process_table().items():
        children.setdefault(ppid, []).append(pid)
    tree, todo = [], [root]
    while todo:
        pid = todo.pop()
        tree.append(pid)
        todo.extend(children.get(pid, []))
    return tree


def rss_kib(pid: int) -> int:
    """VmRSS of one process in KiB (0 if it is gone or has no memory)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def process_name(pid: int) -> str:
    """Short command name of a process."""
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return "?"


class ProcessRss(TypedDict):
    """Resident memory of one process of a server's tree."""

    pid: int
    name: str
    rss_kib: int


class Sandbox:
    """Fresh temporary HOME, CODEX_HOME (with config.toml) and cwd for one server."""

    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="codex-bench-"))
        self.home = self.root / "home"
        self.codex_home = self.root / "codex_home"
        self.cwd = self.root / "cwd"
        for path in (self.home, self.codex_home, self.cwd):
            path.mkdir()
        (self.codex_home / "config.toml").write_text(CONFIG_TOML)
        self.stderr_path = self.root / "stderr.log"

    def env(self, extra: dict[str, str]) -> dict[str, str]:
        """Environment for the server: ours, with HOME and CODEX_HOME replaced."""
        env = dict(os.environ)
        env.update(extra)
        env["HOME"] = str(self.home)
        env["CODEX_HOME"] = str(self.codex_home)
        return env

    def stderr_tail(self, limit: int = 2000) -> str:
        """Last bytes of the server's stderr, for error messages."""
        try:
            return self.stderr_path.read_bytes()[-limit:].decode(errors="replace")
        except OSError:
            return ""

    def remove(self) -> None:
        """Delete the temporary tree."""
        shutil.rmtree(self.root, ignore_errors=True)


class Pending:
    """One request waiting for its response."""

    __slots__ = ("event", "reply")

    def __init__(self) -> None:
        self.event = trio.Event()
        self.reply: JSON | None = None


class Connection:
    """A running server process and its line-delimited JSON-RPC stdio link.

    A background task reads stdout continuously (so the server never blocks on
    a full pipe) and hands every response to ``on_response``. The default
    handler completes requests made with :meth:`request`; bulk phases install
    their own counting handler instead.
    """

    def __init__(self, process: trio.Process, sandbox: Sandbox, spawned_at: float) -> None:
        assert process.stdin is not None and process.stdout is not None
        self.process = process
        self.sandbox = sandbox
        self.spawned_at = spawned_at
        self.stdin = process.stdin
        self.stdout = process.stdout
        self.on_response: Callable[[JSON], None] = self._complete
        self.last_rx = spawned_at
        self.closed = trio.Event()
        self.notifications = 0
        self.server_requests = 0
        self.garbage_lines = 0
        self._pending: dict[Any, Pending] = {}
        self._next_id = FIRST_BULK_ID

    def new_id(self) -> int:
        """A request id not used before on this connection."""
        self._next_id += 1
        return self._next_id

    async def send(self, data: bytes) -> None:
        """Write raw bytes (one or more complete lines) to stdin."""
        try:
            await self.stdin.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            raise ServerGone(f"stdin closed: {exc!r}") from exc

    async def request_line(self, request_id: Any, line: bytes) -> JSON:
        """Send a pre-encoded request and wait for the response with that id."""
        pending = Pending()
        self._pending[request_id] = pending
        await self.send(line)
        await pending.event.wait()
        if pending.reply is None:
            raise ServerGone("server exited before replying\n" + self.sandbox.stderr_tail())
        return pending.reply

    async def request(self, method: str, params: Any) -> JSON:
        """Send one request and return its response message."""
        request_id = self.new_id()
        line = json.dumps({"id": request_id, "method": method, "params": params}, separators=(",", ":"))
        return await self.request_line(request_id, line.encode() + b"\n")

    def _complete(self, message: JSON) -> None:
        pending = self._pending.pop(message.get("id"), None)
        if pending is not None:
            pending.reply = message
            pending.event.set()

    def _dispatch(self, line: bytes) -> None:
        try:
            message = json.loads(line)
        except ValueError:
            self.garbage_lines += 1
            return
        if not isinstance(message, dict):
            self.garbage_lines += 1
        elif "method" in message:
            if "id" in message:
                self.server_requests += 1
            else:
                self.notifications += 1
        elif "id" in message and ("result" in message or "error" in message):
            self.on_response(message)
        else:
            self.garbage_lines += 1

    async def read_loop(self) -> None:
        """Read stdout until EOF, dispatching each complete line."""
        buffer = b""
        try:
            while True:
                chunk = await self.stdout.receive_some(1 << 16)
                if not chunk:
                    break
                self.last_rx = time.perf_counter()
                buffer += chunk
                if b"\n" not in chunk:
                    continue
                *lines, buffer = buffer.split(b"\n")
                for line in lines:
                    if line.strip():
                        self._dispatch(line)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        finally:
            self.closed.set()
            for pending in self._pending.values():
                pending.event.set()
            self._pending.clear()

    def rss(self) -> tuple[int, list[ProcessRss]]:
        """Summed VmRSS (KiB) of the server tree and a per-process breakdown."""
        parts = [
            ProcessRss(pid=pid, name=process_name(pid), rss_kib=rss_kib(pid))
            for pid in process_tree(self.process.pid)
        ]
        return sum(p["rss_kib"] for p in parts), parts

    def kill(self) -> None:
        """SIGKILL the server's process group and every descendant."""
        pids = process_tree(self.process.pid)
        with suppress(OSError):
            os.killpg(self.process.pid, signal.SIGKILL)
        for pid in pids:
            with suppress(OSError):
                os.kill(pid, signal.SIGKILL)


@asynccontextmanager
async def running_server(spec: ServerSpec) -> AsyncIterator[Connection]:
    """Start ``spec`` in a fresh sandbox; kill its process group on exit."""
    sandbox = Sandbox()
    try:
        with sandbox.stderr_path.open("wb") as stderr:
            spawned_at = time.perf_counter()
            process = await trio.lowlevel.open_process(
                spec.argv,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=stderr,
                cwd=str(sandbox.cwd),
                env=sandbox.env(spec.extra_env),
                start_new_session=True,
            )
        conn = Connection(process, sandbox, spawned_at)
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(conn.read_loop)
                try:
                    yield conn
                finally:
                    conn.kill()
                    nursery.cancel_scope.cancel()
        finally:
            with trio.CancelScope(shield=True):
                conn.kill()
                await process.wait()
                for stream in (process.stdin, process.stdout):
                    if stream is not None:
                        await stream.aclose()
    finally:
        sandbox.remove()


async def initialize(conn: Connection) -> float:
    """Send ``initialize`` + ``initialized``; return seconds from spawn to the response."""
    with trio.fail_after(INIT_TIMEOUT):
        reply = await conn.request_line(1, INIT_LINE)
    elapsed = time.perf_counter() - conn.spawned_at
    if "result" not in reply:
        raise RuntimeError(f"initialize failed: {reply}")
    await conn.send(INITIALIZED_LINE)
    return elapsed


# --------------------------------------------------------------------------- measurements


def percentile(sorted_values: list[float], fraction: float) -> float:
    """Nearest-rank percentile of an already sorted list."""
    rank = max(1, math.ceil(fraction * len(sorted_values)))
    return sorted_values[rank - 1]


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


def log(message: str) -> None:
    """Progress output on stderr."""
    print(message, file=sys.stderr, flush=True)


async def run_all(specs: list[ServerSpec], opts: Options) -> list[ServerResult]:
    """Run every measurement for every server (cold starts interleaved)."""
    results = [ServerResult(spec.label, spec.argv) for spec in specs]

    async def guarded(result: ServerResult, what: str, job: Callable[[], Awaitable[None]]) -> None:
        try:
            with trio.fail_after(PHASE_TIMEOUT):
                await job()
        except Exception as exc:  # a failing server must not stop the other one
            result.failures.append(f"{what}: {type(exc).__name__}: {exc}")
            log(f"  [{result.label}] {what} FAILED: {exc}")

    for run in range(opts.runs):
        for spec, result in zip(specs, results, strict=True):
            log(f"cold start {run + 1}/{opts.runs} [{spec.label}]")
            await guarded(result, "cold start", partial(measure_cold_start, spec, opts.idle, result.cold))

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

        await guarded(result, "latency/throughput", steady)
        await guarded(result, "burst", burst)
    return results


# --------------------------------------------------------------------------- reporting


def ratio(ours: float | None, ref: float | None) -> float | None:
    """ours / reference, or None when either is missing or the reference is 0."""
    if ours is None or ref is None or ref == 0:
        return None
    return ours / ref


def verdict(value: float | None, limit: float, higher_is_better: bool) -> str:
    """'pass'/'FAIL' for a ratio against its limit."""
    if value is None:
        return "n/a"
    ok = value >= limit if higher_is_better else value <= limit
    return "pass" if ok else "FAIL"


def fmt(value: float | None, unit: str, digits: int = 1) -> str:
    """Format a number with a unit, or an em dash when missing."""
    return "—" if value is None else f"{value:,.{digits}f} {unit}"


def fmt_ratio(value: float | None) -> str:
    return "—" if value is None else f"{value:.2f}×"  # noqa: RUF001


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
    lines = [
        "# codex-trio core benchmarks",
        "",
        f"- date: {time.strftime('%Y-%m-%d %H:%M:%S %Z')}",
        f"- machine: {platform.platform()}, {os.cpu_count()} CPUs, Python {platform.python_version()}, "
        f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())} at the end",
        f"- ours: `{shlex.join(ours.argv)}`",
    ]
    if ref is not None:
        lines.append(f"- reference: `{shlex.join(ref.argv)}`")
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

PYTHON_NAME = re.compile(r"python[0-9.]*$")


def resolve_python(argv: list[str]) -> list[str]:
    """Replace a ``python`` launcher (e.g. a pyenv shim) by the real interpreter path."""
    if not argv or not PYTHON_NAME.match(os.path.basename(argv[0])):
        return argv
    try:
        real = subprocess.run(
            [argv[0], "-c", "import sys; print(sys.executable)"],
            capture_output=True,
            text=True,
            check=True,
            timeout=30,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return argv
    return [real, *argv[1:]] if real else argv


def native_reference(argv: list[str]) -> tuple[list[str], dict[str, str]]:
    """Swap the npm ``codex`` node launcher for the native binary it would run."""
    launcher = shutil.which(argv[0]) or argv[0]
    package_root = Path(os.path.realpath(launcher)).parent.parent  # .../@openai/codex
    candidates = sorted(package_root.parent.glob("codex-*/vendor/*/bin/codex")) + sorted(
        package_root.glob("vendor/*/bin/codex")
    )
    if not candidates:
        raise SystemExit(f"--reference-native: no native codex binary found near {package_root}")
    env = {"CODEX_MANAGED_PACKAGE_ROOT": str(package_root), "CODEX_MANAGED_BY_NPM": "1"}
    return [str(candidates[0]), *argv[1:]], env


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--server", required=True, help="our server command (shell-split)")
    p.add_argument("--reference", help="reference server command (shell-split)")
    p.add_argument(
        "--reference-native",
        action="store_true",
        help="run the native codex binary instead of the npm node launcher",
    )
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
    # `python -m pkg` from a checkout: the server runs in an empty cwd, so export ours.
    pythonpath = os.pathsep.join(filter(None, [os.getcwd(), os.environ.get("PYTHONPATH")]))
    ours_argv = shlex.split(args.server)
    if not args.keep_launchers:
        ours_argv = resolve_python(ours_argv)
    specs = [ServerSpec("ours", ours_argv, {"PYTHONPATH": pythonpath})]
    if args.reference:
        ref_argv, ref_env = shlex.split(args.reference), dict[str, str]()
        if args.reference_native:
            ref_argv, ref_env = native_reference(ref_argv)
        elif not args.keep_launchers:
            ref_argv = resolve_python(ref_argv)
        specs.append(ServerSpec("reference", ref_argv, {"PYTHONPATH": pythonpath, **ref_env}))
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
    print(report)
    if args.markdown:
        args.markdown.parent.mkdir(parents=True, exist_ok=True)
        args.markdown.write_text(report)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(to_json(results, opts), indent=2) + "\n")
    return 1 if any(r.failures for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
