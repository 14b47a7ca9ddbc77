#!/usr/bin/env python3
"""Scale curves: how a Codex app-server's cost grows with load, ours beside a reference.

Every point of every curve is measured on both servers in the same run and reported as the
ratio ours / reference. Four curves (``--only`` picks some):

``connections``  idle websocket connections, grown 100 → 1,000 → 5,000 → 10,000 on one server:
                 memory per connection (tree RSS growth / connections), accept time (connect +
                 upgrade + ``initialize`` answered, per connection, p50 and the whole step), and
                 ``fs/getMetadata`` p50/p99 on one extra connection at each size. Where the size
                 is also a broadcast size, the broadcast curve is measured on the same connections:
``broadcast``    ``thread/name/set`` (→ ``thread/name/updated``) and ``thread/start``
                 (→ ``thread/started``) on a control connection, timed until the last of N
                 connections has its copy: p50/p99 over ``--rounds`` rounds;
``history``      one thread grown to 10 → 100 → 1,000 turns against a scripted Responses server
                 (tests/responses_server.py); at each size a fresh server process on the same
                 CODEX_HOME answers ``thread/resume`` (cold), ``thread/read`` with turns and
                 ``thread/list`` (medians of ``--repeat``);
``concurrency``  1 → 8 → 32 threads whose turns stream model deltas at once: the time from the
                 scripted model writing an SSE delta to the client reading the matching
                 ``item/agentMessage/delta``, p50/p99.

The websocket client is plain blocking sockets and one ``epoll`` (no per-connection task), so
10,000 connections cost the client little next to the server. The fd limit is raised to the
hard limit for this process and the servers it starts.

Default sizes are small (a smoke run of about a minute); ``--full`` uses the sizes above.

    python benchmarks/scale.py --server "python -m codex_trio" \\
        --reference "$REF/node_modules/.bin/codex app-server" --reference-native [--full]
"""

from __future__ import annotations

import argparse
import json
import resource
import select
import socket
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import trio

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from report import fmt_ratio, log, percentile, publish, ratio, write_file
from servers import Sandbox, ServerSpec, add_server_options, server_specs
from transports import HANDSHAKE, running_ws_server
from transports import client_frame as frame
from turns import API_KEYS, Server

from tests.responses_server import Paced, ResponsesServer, Text

INIT = {"clientInfo": {"name": "bench", "version": "1"}}
TIMEOUT = 120.0

SMOKE = {"connections": [100, 500], "broadcast": [100, 500], "history": [5, 20], "concurrency": [1, 4]}
FULL = {
    "connections": [100, 1000, 5000, 10000],
    "broadcast": [100, 1000, 5000],
    "history": [10, 100, 1000],
    "concurrency": [1, 8, 32],
}


def raise_fd_limit() -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


# --------------------------------------------------------------------------- a blocking ws client
class Ws:
    """One blocking websocket client connection: text frames out, whole messages in."""

    def __init__(self, port: int) -> None:
        # Nagle stays on, as in most clients: a reply split in segments would show as a stall.
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)
        self.sock.sendall(HANDSHAKE.format(port=port).encode())
        received = b""
        while b"\r\n\r\n" not in received:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("closed during the handshake")
            received += chunk
        head, _, rest = received.partition(b"\r\n\r\n")
        if not head.startswith(b"HTTP/1.1 101"):
            raise ConnectionError(f"upgrade refused: {head[:200]!r}")
        self.buffer = bytearray(rest)

    def fileno(self) -> int:
        return self.sock.fileno()

    def _fill(self, size: int) -> None:
        while len(self.buffer) < size:
            chunk = self.sock.recv(1 << 16)
            if not chunk:
                raise ConnectionError("server closed the connection")
            self.buffer += chunk

    def receive(self) -> dict[str, Any]:
        while True:
            self._fill(2)
            first, size, offset = self.buffer[0], self.buffer[1] & 0x7F, 2
            if size == 126:
                self._fill(4)
                size, offset = int.from_bytes(self.buffer[2:4], "big"), 4
            elif size == 127:
                self._fill(10)
                size, offset = int.from_bytes(self.buffer[2:10], "big"), 10
            self._fill(offset + size)
            payload = bytes(self.buffer[offset : offset + size])
            del self.buffer[: offset + size]
            if first & 0x0F == 0x1:
                return orjson.loads(payload)  # type: ignore[no-any-return]

    def call(self, request_id: int, method: str, params: Any) -> dict[str, Any]:
        self.sock.sendall(frame({"id": request_id, "method": method, "params": params}))
        while True:
            message = self.receive()
            if message.get("id") == request_id and "method" not in message:
                return message

    def close(self) -> None:
        self.sock.close()


def timed_calls(ws: Ws, count: int, method: str, params: Any) -> list[float]:
    samples = []
    for n in range(count):
        start = time.perf_counter()
        reply = ws.call(1_000_000 + n, method, params)
        samples.append(time.perf_counter() - start)
        if "result" not in reply:
            raise RuntimeError(f"{method}: {reply}")
    return sorted(samples)


class Fleet:
    """The idle connections, watched by one epoll for broadcast arrivals."""

    def __init__(self) -> None:
        self.conns: dict[int, Ws] = {}
        self.epoll = select.epoll()

    def add(self, ws: Ws) -> None:
        ws.sock.setblocking(False)
        self.conns[ws.fileno()] = ws
        self.epoll.register(ws.fileno(), select.EPOLLIN)

    def drain(self) -> None:
        for fd, _ in self.epoll.poll(0.2):
            self._read(fd)

    def _read(self, fd: int) -> bytes:
        data = b""
        try:
            while chunk := self.conns[fd].sock.recv(1 << 16):
                data += chunk
        except BlockingIOError:
            pass
        return data

    def wait_all(self, marker: bytes, deadline: float) -> float:
        """Seconds until every connection has read a frame containing `marker`."""
        start = time.perf_counter()
        waiting = set(self.conns)
        partial: dict[int, bytes] = {}
        while waiting:
            if time.perf_counter() - start > deadline:
                raise TimeoutError(f"{len(waiting)} of {len(self.conns)} connections got no {marker!r}")
            for fd, _ in self.epoll.poll(1.0):
                data = partial.pop(fd, b"") + self._read(fd)
                if fd in waiting:
                    if marker in data:
                        waiting.discard(fd)
                    else:
                        partial[fd] = data[-len(marker) :]
        return time.perf_counter() - start

    def close(self) -> None:
        for ws in self.conns.values():
            ws.close()
        self.epoll.close()


# --------------------------------------------------------------------------- results
@dataclass
class Point:
    """One measurement at one size for one server; `values` by metric name (seconds, KiB)."""

    size: int
    values: dict[str, float] = field(default_factory=dict)


@dataclass
class Curves:
    label: str
    points: dict[str, list[Point]] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)

    def point(self, curve: str, size: int) -> Point:
        point = Point(size)
        self.points.setdefault(curve, []).append(point)
        return point


# --------------------------------------------------------------------------- connections + broadcast
def broadcast_rounds(fleet: Fleet, control: Ws, state: dict[str, Any], rounds: int, point: Point) -> None:
    """`thread/start` rounds (→ `thread/started`), then `thread/name/set` rounds on the first
    thread (→ `thread/name/updated`). The server's very first `thread/start` (it builds the
    thread code paths) is kept apart as `started_cold`; the other first rounds as `*_first`."""
    base = len(fleet.conns)
    for name, method, marker in (
        ("started", "thread/start", b'"thread/started"'),
        ("name_updated", "thread/name/set", None),
    ):
        samples = []
        for n in range(rounds + 1):
            fleet.drain()
            request_id = 2_000_000 + base * 1000 + n
            params = {"threadId": state.get("thread_id"), "name": f"r{base}-{n}"} if marker is None else {}
            control.sock.sendall(frame({"id": request_id, "method": method, "params": params}))
            elapsed = fleet.wait_all(marker or f'"r{base}-{n}"'.encode(), TIMEOUT)
            if n:
                samples.append(elapsed)
            elif marker is not None and "thread_id" not in state:
                point.values["started_cold"] = elapsed
            else:
                point.values[f"{name}_first"] = elapsed
            control.sock.settimeout(TIMEOUT)
            while True:  # the control connection's own reply (and notifications)
                message = control.receive()
                if message.get("id") == request_id and "method" not in message:
                    if "result" not in message:
                        raise RuntimeError(f"{method}: {message}")
                    if marker is not None:
                        state.setdefault("thread_id", message["result"]["thread"]["id"])
                    break
        samples.sort()
        point.values[f"{name}_p50"] = percentile(samples, 0.5)
        point.values[f"{name}_p99"] = percentile(samples, 0.99)


async def measure_connections(
    spec: ServerSpec, sizes: list[int], broadcast_sizes: list[int], opts: Any, out: Curves
) -> None:
    async with running_ws_server(spec) as server:
        fleet = Fleet()
        control = Ws(server.port)
        probe = Ws(server.port)
        try:
            for ws, name in ((control, "control"), (probe, "probe")):
                if "result" not in ws.call(0, "initialize", {"clientInfo": {"name": name, "version": "1"}}):
                    raise RuntimeError("initialize failed")
            state: dict[str, Any] = {}  # the first thread, once a broadcast round made it
            timed_calls(probe, 200, "fs/getMetadata", {"path": "/"})
            await trio.sleep(opts.idle)
            rss0 = server.rss()
            for size in sizes:
                accepts = []
                firsts: list[float] = []
                step = time.perf_counter()
                while len(fleet.conns) < size:
                    start = time.perf_counter()
                    ws = Ws(server.port)
                    if "result" not in ws.call(
                        0, "initialize", {"clientInfo": {"name": "idle", "version": "1"}}
                    ):
                        raise RuntimeError("initialize failed")
                    accepts.append(time.perf_counter() - start)
                    if len(firsts) < opts.first_requests:
                        start = time.perf_counter()
                        ws.call(1, "fs/getMetadata", {"path": "/"})
                        firsts.append(time.perf_counter() - start)
                    fleet.add(ws)
                step_time = time.perf_counter() - step
                await trio.sleep(opts.idle)
                fleet.drain()
                point = out.point("connections", size)
                point.values["kib_per_conn"] = (server.rss() - rss0) / size
                accepts.sort()
                point.values["accept_p50"] = percentile(accepts, 0.5)
                point.values["accept_p99"] = percentile(accepts, 0.99)
                point.values["accept_step_per_conn"] = step_time / max(1, len(accepts))
                if firsts:
                    firsts.sort()
                    point.values["first_p50"] = percentile(firsts, 0.5)
                    point.values["first_p99"] = percentile(firsts, 0.99)
                samples = timed_calls(probe, opts.requests, "fs/getMetadata", {"path": "/"})
                point.values["meta_p50"] = percentile(samples, 0.5)
                point.values["meta_p99"] = percentile(samples, 0.99)
                log(f"[{spec.label}] {size} connections: {point.values['kib_per_conn']:.1f} KiB each")
                if size in broadcast_sizes:
                    bpoint = out.point("broadcast", size)
                    broadcast_rounds(fleet, control, state, opts.rounds, bpoint)
                    log(f"[{spec.label}] broadcast to {size}: {bpoint.values}")
        finally:
            fleet.close()
            control.close()
            probe.close()


# --------------------------------------------------------------------------- history + concurrency
MODEL_FEATURES = "\n[features]\nplugins = false\napps = false\n"


async def stdio_server(spec: ServerSpec, sandbox: Sandbox) -> Server:
    from servers import spawn

    process, _ = await spawn(spec, sandbox, drop_env=API_KEYS)
    server = Server(process)
    await server.call("initialize", INIT)
    return server


async def stop(server: Server) -> None:
    from servers import reap

    with trio.move_on_after(10):
        assert server.process.stdin is not None
        await server.process.stdin.aclose()
        await server.process.wait()
    await reap(server.process)


async def run_turn(server: Server, thread_id: str) -> None:
    await server.send(
        {
            "id": f"turn-{time.perf_counter_ns()}",
            "method": "turn/start",
            "params": {"threadId": thread_id, "input": [{"type": "text", "text": "go", "text_elements": []}]},
        }
    )
    while True:
        message, _ = await server.receive()
        if message.get("method") == "turn/completed":
            return
        if "error" in message:
            raise RuntimeError(f"turn/start: {message['error']}")


async def timed_call(server: Server, method: str, params: Any) -> tuple[float, Any]:
    start = time.perf_counter()
    result = await server.call(method, params)
    return time.perf_counter() - start, result


async def measure_history(spec: ServerSpec, sizes: list[int], opts: Any, out: Curves) -> None:
    model = ResponsesServer()
    async with trio.open_nursery() as nursery:
        await nursery.start(model.run)
        sandbox = Sandbox(model.config_toml() + MODEL_FEATURES)
        try:
            server = await stdio_server(spec, sandbox)
            thread = await server.call(
                "thread/start",
                {"cwd": str(sandbox.cwd), "approvalPolicy": "never", "sandbox": "danger-full-access"},
            )
            thread_id = thread["thread"]["id"]
            done = 0
            for size in sizes:
                with trio.fail_after(max(TIMEOUT, size * 1.0)):
                    while done < size:
                        model.enqueue(Text(f"answer {done}", pieces=2))
                        await run_turn(server, thread_id)
                        done += 1
                await stop(server)
                server = await stdio_server(spec, sandbox)
                point = out.point("history", size)
                with trio.fail_after(TIMEOUT):
                    point.values["resume"], resumed = await timed_call(
                        server, "thread/resume", {"threadId": thread_id}
                    )
                    turns = len(resumed["thread"].get("turns") or [])
                    reads, lists = [], []
                    for _ in range(opts.repeat):
                        elapsed, read = await timed_call(
                            server, "thread/read", {"threadId": thread_id, "includeTurns": True}
                        )
                        reads.append(elapsed)
                        lists.append((await timed_call(server, "thread/list", {}))[0])
                    if len(read["thread"]["turns"]) != size:
                        raise RuntimeError(
                            f"thread/read has {len(read['thread']['turns'])} turns, not {size}"
                        )
                point.values["read"] = statistics.median(reads)
                point.values["list"] = statistics.median(lists)
                log(f"[{spec.label}] {size} turns (resume returned {turns}): {point.values}")
            await stop(server)
        finally:
            sandbox.remove()
        nursery.cancel_scope.cancel()


async def measure_concurrency(spec: ServerSpec, sizes: list[int], opts: Any, out: Curves) -> None:
    model = ResponsesServer()
    async with trio.open_nursery() as nursery:
        await nursery.start(model.run)
        sandbox = Sandbox(model.config_toml() + MODEL_FEATURES)
        try:
            server = await stdio_server(spec, sandbox)
            threads: list[str] = []
            for size in sizes:
                while len(threads) < size:
                    thread = await server.call(
                        "thread/start",
                        {"cwd": str(sandbox.cwd), "approvalPolicy": "never", "sandbox": "danger-full-access"},
                    )
                    threads.append(thread["thread"]["id"])
                samples: list[float] = []
                for round_number in range(opts.turn_rounds + 1):
                    replies = [
                        Paced([f"c{k}r{round_number}w{i} " for i in range(opts.deltas)], gap=opts.gap / 1000)
                        for k in range(size)
                    ]
                    sent = {piece: (reply, i) for reply in replies for i, piece in enumerate(reply.pieces)}
                    model.enqueue(*replies)
                    received: dict[str, float] = {}
                    with trio.fail_after(TIMEOUT):
                        for n, thread_id in enumerate(threads[:size]):
                            await server.send(
                                {
                                    "id": f"c{round_number}-{n}",
                                    "method": "turn/start",
                                    "params": {
                                        "threadId": thread_id,
                                        "input": [{"type": "text", "text": "go", "text_elements": []}],
                                    },
                                }
                            )
                        completed = 0
                        while completed < size:
                            message, at = await server.receive()
                            method = message.get("method")
                            if method == "item/agentMessage/delta":
                                received[message["params"]["delta"]] = at
                            elif method == "turn/completed":
                                completed += 1
                    if round_number == 0:
                        continue
                    for piece, at in received.items():
                        reply, i = sent[piece]
                        samples.append(at - reply.sent_at[i])
                    if len(received) != len(sent):
                        raise RuntimeError(f"{len(received)} of {len(sent)} deltas arrived")
                samples.sort()
                point = out.point("concurrency", size)
                point.values["delta_p50"] = percentile(samples, 0.5)
                point.values["delta_p99"] = percentile(samples, 0.99)
                log(f"[{spec.label}] {size} concurrent turns: {point.values}")
            await stop(server)
        finally:
            sandbox.remove()
        nursery.cancel_scope.cancel()


# --------------------------------------------------------------------------- report
COLUMNS = {
    "connections": [
        ("kib_per_conn", "memory / connection", "kib"),
        ("accept_p50", "accept p50", "s"),
        ("accept_step_per_conn", "accept, whole step / conn", "s"),
        ("first_p50", "first request after `initialize` on a new connection, p50", "s"),
        ("first_p99", "… p99", "s"),
        ("meta_p50", "getMetadata p50", "s"),
        ("meta_p99", "getMetadata p99", "s"),
    ],
    "broadcast": [
        ("name_updated_p50", "`thread/name/updated` last p50", "s"),
        ("name_updated_p99", "… p99", "s"),
        ("started_cold", "the server's first `thread/start` → last `thread/started`", "s"),
        ("started_p50", "`thread/start` → last `thread/started` p50", "s"),
        ("started_p99", "… p99", "s"),
    ],
    "history": [
        ("resume", "`thread/resume` (cold)", "s"),
        ("read", "`thread/read` with turns", "s"),
        ("list", "`thread/list`", "s"),
    ],
    "concurrency": [("delta_p50", "delta latency p50", "s"), ("delta_p99", "delta latency p99", "s")],
}
SIZE_NAME = {
    "connections": "connections",
    "broadcast": "connections",
    "history": "turns",
    "concurrency": "turns at once",
}


def cell(value: float | None, unit: str) -> str:
    if value is None:
        return "—"
    if unit == "kib":
        return f"{value:.1f} KiB"
    return f"{value * 1000:.2f} ms" if value < 10 else f"{value:.1f} s"


def markdown(results: list[Curves]) -> str:
    ours = results[0]
    ref = results[1] if len(results) > 1 else None
    lines: list[str] = []
    for curve, columns in COLUMNS.items():
        if curve not in ours.points:
            continue
        lines += [
            f"### {curve}",
            "",
            f"| {SIZE_NAME[curve]} | metric | ours | reference | ratio |",
            "|---|---|---|---|---|",
        ]
        ref_points = {p.size: p for p in (ref.points.get(curve, []) if ref else [])}
        for point in ours.points[curve]:
            other = ref_points.get(point.size)
            for key, title, unit in columns:
                mine = point.values.get(key)
                theirs = other.values.get(key) if other else None
                shown = fmt_ratio(ratio(mine, theirs))
                row = [f"{point.size:,}", title, cell(mine, unit), cell(theirs, unit), shown]
                lines.append("| " + " | ".join(row) + " |")
        lines.append("")
    for result in results:
        for error in result.errors:
            lines.append(f"- {result.label}: {error}")
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_server_options(parser, server_default="python -m codex_trio")
    parser.add_argument("--full", action="store_true", help="the full sizes (default: a smoke run)")
    parser.add_argument("--only", nargs="*", choices=list(FULL), default=list(FULL))
    parser.add_argument("--rounds", type=int, default=10, help="broadcast rounds per size")
    parser.add_argument("--requests", type=int, default=300, help="getMetadata requests per size")
    parser.add_argument(
        "--first-requests", type=int, default=50, help="new connections per size timed on their first request"
    )
    parser.add_argument("--idle", type=float, default=1.0, help="seconds idle before reading RSS")
    parser.add_argument("--repeat", type=int, default=5, help="thread/read and thread/list per size")
    parser.add_argument("--turn-rounds", type=int, default=3, help="rounds of concurrent turns per size")
    parser.add_argument("--deltas", type=int, default=20)
    parser.add_argument("--gap", type=float, default=20.0, help="ms between deltas")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--markdown", type=Path)
    return parser.parse_args(argv)


async def run(specs: list[ServerSpec], opts: argparse.Namespace) -> list[Curves]:
    sizes = FULL if opts.full else SMOKE
    results = [Curves(spec.label) for spec in specs]
    jobs = []
    if "connections" in opts.only or "broadcast" in opts.only:
        conn_sizes = sorted(
            set(sizes["connections"] if "connections" in opts.only else [])
            | set(sizes["broadcast"] if "broadcast" in opts.only else [])
        )
        bsizes = sizes["broadcast"] if "broadcast" in opts.only else []
        jobs.append(lambda spec, out: measure_connections(spec, conn_sizes, bsizes, opts, out))
    if "history" in opts.only:
        jobs.append(lambda spec, out: measure_history(spec, sizes["history"], opts, out))
    if "concurrency" in opts.only:
        jobs.append(lambda spec, out: measure_concurrency(spec, sizes["concurrency"], opts, out))
    for job in jobs:
        for spec, out in zip(specs, results, strict=True):
            try:
                await job(spec, out)
            except Exception as exc:
                out.errors.append(f"{type(exc).__name__}: {exc}")
                log(f"[{spec.label}] failed: {exc!r}")
    return results


def main(argv: list[str] | None = None) -> int:
    opts = parse_args(argv)
    limit = raise_fd_limit()
    log(f"fd limit {limit}")
    specs = server_specs(opts)
    results = trio.run(run, specs, opts)
    report = markdown(results)
    publish(report, opts.markdown)
    if opts.json:
        write_file(
            opts.json,
            json.dumps(
                [
                    {
                        "label": r.label,
                        "points": {c: [vars(p) for p in ps] for c, ps in r.points.items()},
                        "errors": r.errors,
                    }
                    for r in results
                ],
                indent=1,
            ),
        )
    return 1 if any(r.errors for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
