#!/usr/bin/env python3
"""Websocket transport benchmarks for a Codex app-server, ours against a reference.

Each server is started with ``--listen ws://127.0.0.1:PORT`` in a fresh sandbox (see servers.py)
and measured over websocket text frames, with a lean client (raw RFC 6455 frames, zero mask
key) so the client costs little next to the server:

1. latency: p50/p99 round trip of ``fs/getMetadata``, one request at a time;
2. throughput: ``fs/getMetadata`` with 64 requests in flight on one connection;
3. memory per idle connection: RSS of the server's process tree with 200 more initialized,
   idle connections, minus the RSS before them, divided by 200;
4. broadcast latency: with those 200 connections open, ``thread/name/set`` on a control
   connection, timed until every one of the 200 has received its ``thread/name/updated``.

Usage::

    python benchmarks/transports.py --server "python -m codex_trio" \\
        --reference "/work/scratch/ref/node_modules/.bin/codex app-server"
"""

from __future__ import annotations

import argparse
import shlex
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import trio

sys.path.insert(0, str(Path(__file__).resolve().parent))
from report import fmt_ratio, log, percentile, publish, ratio, verdict
from servers import Sandbox, ServerSpec, add_server_options, reap, server_specs, spawn, tree_rss
from stdio_client import JSON

from codex_trio.procfs import process_tree

INIT_PARAMS: JSON = {"clientInfo": {"name": "bench", "version": "1"}}
START_TIMEOUT = 30.0
PHASE_TIMEOUT = 180.0
HANDSHAKE = (
    "GET / HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
    "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
)


# --------------------------------------------------------------------------- a lean ws client
def client_frame(message: Any) -> bytes:
    """One masked client text frame carrying `message` as JSON (mask key zero: no XOR needed)."""
    payload = orjson.dumps(message)
    size = len(payload)
    if size < 126:
        header = bytes([0x81, 0x80 | size])
    elif size < 65536:
        header = bytes([0x81, 0x80 | 126]) + size.to_bytes(2, "big")
    else:
        header = bytes([0x81, 0x80 | 127]) + size.to_bytes(8, "big")
    return header + b"\0\0\0\0" + payload


class RawWs:
    """A websocket client speaking raw frames: text out (zero mask), text in, nothing else."""

    def __init__(self, stream: trio.SocketStream, leftover: bytes) -> None:
        self.stream = stream
        self.buffer = bytearray(leftover)
        self.send_lock = trio.Lock()

    @classmethod
    async def connect(cls, port: int) -> RawWs:
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        await stream.send_all(HANDSHAKE.format(port=port).encode())
        received = bytearray()
        while b"\r\n\r\n" not in received:
            chunk = await stream.receive_some(65536)
            if not chunk:
                raise ConnectionError(f"closed during handshake: {bytes(received)!r}")
            received += chunk
        head, _, rest = bytes(received).partition(b"\r\n\r\n")
        if not head.startswith(b"HTTP/1.1 101"):
            raise ConnectionError(f"upgrade refused: {head!r}")
        return cls(stream, rest)

    async def send(self, message: JSON) -> None:
        async with self.send_lock:
            await self.stream.send_all(client_frame(message))

    async def _fill(self, size: int) -> None:
        while len(self.buffer) < size:
            chunk = await self.stream.receive_some(1 << 16)
            if not chunk:
                raise ConnectionError("server closed the connection")
            self.buffer += chunk

    async def receive(self) -> JSON:
        """The next text message, decoded."""
        return orjson.loads(await self.receive_text())  # type: ignore[no-any-return]

    async def receive_text(self) -> bytes:
        """The next text message (pings, pongs and binary frames are skipped)."""
        parts: list[bytes] = []
        while True:
            await self._fill(2)
            first, second = self.buffer[0], self.buffer[1]
            size, offset = second & 0x7F, 2
            if size == 126:
                await self._fill(4)
                size, offset = int.from_bytes(self.buffer[2:4], "big"), 4
            elif size == 127:
                await self._fill(10)
                size, offset = int.from_bytes(self.buffer[2:10], "big"), 10
            await self._fill(offset + size)
            payload = bytes(self.buffer[offset : offset + size])
            del self.buffer[: offset + size]
            opcode = first & 0x0F
            if opcode == 0x8:
                raise ConnectionError("server sent Close")
            if opcode in (0x1, 0x0):
                parts.append(payload)
                if first & 0x80:
                    return b"".join(parts)

    async def call(self, request_id: int, method: str, params: Any) -> JSON:
        await self.send({"id": request_id, "method": method, "params": params})
        while True:
            message = await self.receive()
            if message.get("id") == request_id and "method" not in message:
                return message

    async def initialize(self, name: str) -> None:
        reply = await self.call(
            0, "initialize", {**INIT_PARAMS, "clientInfo": {"name": name, "version": "1"}}
        )
        if "result" not in reply:
            raise RuntimeError(f"initialize failed: {reply}")

    async def aclose(self) -> None:
        await self.stream.aclose()


# --------------------------------------------------------------------------- the server
def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class WsServer:
    process: trio.Process
    port: int
    sandbox: Sandbox

    def rss(self) -> int:
        return tree_rss(self.process.pid)[0]


@asynccontextmanager
async def running_ws_server(spec: ServerSpec) -> AsyncIterator[WsServer]:
    sandbox = Sandbox()
    port = free_port()
    try:
        process, _ = await spawn(
            spec, sandbox, extra_args=["--listen", f"ws://127.0.0.1:{port}"], stdio=subprocess.DEVNULL
        )
        try:
            with trio.fail_after(START_TIMEOUT):
                while True:
                    try:
                        probe = await trio.open_tcp_stream("127.0.0.1", port)
                    except OSError:
                        if process.poll() is not None:
                            raise RuntimeError(f"server exited: {sandbox.stderr_tail()}") from None
                        await trio.sleep(0.05)
                        continue
                    await probe.aclose()
                    break
            yield WsServer(process, port, sandbox)
        finally:
            with trio.CancelScope(shield=True):
                tree = process_tree(process.pid)
                process.terminate()  # a graceful stop first (profilers flush)
                with trio.move_on_after(5):
                    await process.wait()
                await reap(process, tree)
    finally:
        sandbox.remove()


# --------------------------------------------------------------------------- measurements
@dataclass
class Result:
    label: str
    latency_p50: float | None = None
    echo_p50: float | None = None
    echo_p99: float | None = None
    latency_p99: float | None = None
    throughput: float | None = None
    rss_before_kib: int | None = None
    rss_after_kib: int | None = None
    broadcast_p50: float | None = None
    broadcast_p99: float | None = None
    errors: list[str] = field(default_factory=list)

    @property
    def per_connection_kib(self) -> float | None:
        if self.rss_before_kib is None or self.rss_after_kib is None:
            return None
        return (self.rss_after_kib - self.rss_before_kib) / OPTIONS.connections


async def measure_latency(
    ws: RawWs, count: int, warmup: int, method: str, params: Any, expect: str
) -> tuple[float, float]:
    """p50/p99 round trip of `method`, one request at a time; `expect` is result or error."""
    samples = []
    for n in range(warmup + count):
        start = time.perf_counter()
        reply = await ws.call(1000 + n, method, params)
        elapsed = time.perf_counter() - start
        if expect not in reply:
            raise RuntimeError(f"{method}: unexpected reply {reply}")
        if n >= warmup:
            samples.append(elapsed)
    samples.sort()
    return percentile(samples, 0.5), percentile(samples, 0.99)


async def measure_throughput(ws: RawWs, count: int, window: int) -> float:
    slots = trio.Semaphore(window)
    done = trio.Event()
    answered = 0

    async def read() -> None:
        nonlocal answered
        while answered < count:
            message = await ws.receive()
            if "id" in message and "method" not in message:
                if "result" not in message:
                    raise RuntimeError(f"request failed: {message}")
                answered += 1
                slots.release()
        done.set()

    start = time.perf_counter()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(read)
        for n in range(count):
            await slots.acquire()
            await ws.send({"id": 100_000 + n, "method": "fs/getMetadata", "params": {"path": "/"}})
        await done.wait()
    return count / (time.perf_counter() - start)


class Listener:
    """One idle connection's reader: notes when its copy of a broadcast arrives."""

    def __init__(self, ws: RawWs, board: Board) -> None:
        self.ws = ws
        self.board = board

    async def run(self) -> None:
        # No JSON decoding here: the client's own cost should not dominate the measurement.
        while True:
            frame = await self.ws.receive_text()
            if b'"thread/name/updated"' in frame:
                self.board.arrived(frame)


class Board:
    """Counts arrivals of the current round's broadcast."""

    def __init__(self, expected: int) -> None:
        self.expected = expected
        self.marker: bytes | None = None
        self.count = 0
        self.all_arrived = trio.Event()

    def start(self, name: str) -> None:
        self.marker, self.count, self.all_arrived = f'"{name}"'.encode(), 0, trio.Event()

    def arrived(self, frame: bytes) -> None:
        if self.marker is not None and self.marker in frame:
            self.count += 1
            if self.count == self.expected:
                self.all_arrived.set()


async def measure_connections(server: WsServer, control: RawWs, result: Result) -> None:
    """Open the idle connections, read RSS, then time broadcasts to all of them."""
    thread = await control.call(2, "thread/start", {})
    if "result" not in thread:
        raise RuntimeError(f"thread/start failed: {thread}")
    thread_id = thread["result"]["thread"]["id"]
    await trio.sleep(OPTIONS.idle)
    result.rss_before_kib = server.rss()
    board = Board(OPTIONS.connections)
    clients: list[RawWs] = []
    try:
        async with trio.open_nursery() as nursery:
            for n in range(OPTIONS.connections):
                ws = await RawWs.connect(server.port)
                clients.append(ws)
                await ws.initialize(f"idle-{n}")
                nursery.start_soon(Listener(ws, board).run)
            await trio.sleep(OPTIONS.idle)
            result.rss_after_kib = server.rss()
            samples = []
            for n in range(OPTIONS.warmup_broadcasts + OPTIONS.broadcasts):
                name = f"round-{n}"
                board.start(name)
                start = time.perf_counter()
                await control.send(
                    {
                        "id": 10_000 + n,
                        "method": "thread/name/set",
                        "params": {"threadId": thread_id, "name": name},
                    }
                )
                await board.all_arrived.wait()
                if n >= OPTIONS.warmup_broadcasts:
                    samples.append(time.perf_counter() - start)
            samples.sort()
            result.broadcast_p50 = percentile(samples, 0.5)
            result.broadcast_p99 = percentile(samples, 0.99)
            nursery.cancel_scope.cancel()
    finally:
        for ws in clients:
            await ws.aclose()


async def measure(spec: ServerSpec) -> Result:
    result = Result(spec.label)
    log(f"[{spec.label}] starting {shlex.join(spec.argv)}")
    async with running_ws_server(spec) as server:
        control = await RawWs.connect(server.port)
        try:
            with trio.fail_after(PHASE_TIMEOUT):
                await control.initialize("bench")
                log(f"[{spec.label}] latency")
                result.latency_p50, result.latency_p99 = await measure_latency(
                    control, OPTIONS.seq_requests, OPTIONS.warmup, "fs/getMetadata", {"path": "/"}, "result"
                )
                # a second `initialize` is refused at once, with no I/O: the bare round trip
                result.echo_p50, result.echo_p99 = await measure_latency(
                    control, OPTIONS.seq_requests, OPTIONS.warmup, "initialize", INIT_PARAMS, "error"
                )
                log(f"[{spec.label}] throughput")
                result.throughput = await measure_throughput(
                    control, OPTIONS.throughput_requests, OPTIONS.window
                )
            with trio.fail_after(PHASE_TIMEOUT):
                # The control connection is not read during the rounds: its replies are small
                # and fit in the socket buffers.
                log(f"[{spec.label}] {OPTIONS.connections} idle connections + broadcasts")
                await measure_connections(server, control, result)
        except Exception as exc:
            result.errors.append(f"{type(exc).__name__}: {exc}")
            log(f"[{spec.label}] failed: {exc!r}\n{server.sandbox.stderr_tail()}")
        finally:
            await control.aclose()
    return result


# --------------------------------------------------------------------------- report
def ms(value: float | None) -> str:
    return "—" if value is None else f"{value * 1000:.2f} ms"


def markdown(ours: Result, ref: Result | None) -> str:
    def row(name: str, a: str, b: str, r: float | None, limit: float, higher: bool) -> str:
        target = f"{'≥' if higher else '≤'} {limit:g}×"  # noqa: RUF001
        return f"| {name} | {a} | {b} | {fmt_ratio(r)} | {target} | {verdict(r, limit, higher)} |"

    def kib(value: float | None) -> str:
        return "—" if value is None else f"{value:,.1f} KiB"

    def rate(value: float | None) -> str:
        return "—" if value is None else f"{value:,.0f} req/s"

    r = ref or Result("reference")
    lines = [
        f"| measurement ({OPTIONS.connections} connections, window {OPTIONS.window}) | ours | reference "
        "| ours/ref | target | |",
        "|---|---|---|---|---|---|",
        row(
            "memory per idle ws connection",
            kib(ours.per_connection_kib),
            kib(r.per_connection_kib),
            ratio(ours.per_connection_kib, r.per_connection_kib),
            0.33,
            False,
        ),
        row(
            f"broadcast to {OPTIONS.connections} connections, p50",
            ms(ours.broadcast_p50),
            ms(r.broadcast_p50),
            ratio(ours.broadcast_p50, r.broadcast_p50),
            1.0,
            False,
        ),
        row(
            f"broadcast to {OPTIONS.connections} connections, p99",
            ms(ours.broadcast_p99),
            ms(r.broadcast_p99),
            ratio(ours.broadcast_p99, r.broadcast_p99),
            1.0,
            False,
        ),
        row(
            "ws round trip `fs/getMetadata`, p50",
            ms(ours.latency_p50),
            ms(r.latency_p50),
            ratio(ours.latency_p50, r.latency_p50),
            1.0,
            False,
        ),
        row(
            "ws round trip `fs/getMetadata`, p99",
            ms(ours.latency_p99),
            ms(r.latency_p99),
            ratio(ours.latency_p99, r.latency_p99),
            1.0,
            False,
        ),
        row(
            "ws round trip, refused `initialize` (no I/O), p50",
            ms(ours.echo_p50),
            ms(r.echo_p50),
            ratio(ours.echo_p50, r.echo_p50),
            1.0,
            False,
        ),
        row(
            "ws round trip, refused `initialize` (no I/O), p99",
            ms(ours.echo_p99),
            ms(r.echo_p99),
            ratio(ours.echo_p99, r.echo_p99),
            1.0,
            False,
        ),
        row(
            f"ws throughput, {OPTIONS.window} in flight",
            rate(ours.throughput),
            rate(r.throughput),
            ratio(ours.throughput, r.throughput),
            1.0,
            True,
        ),
    ]
    for result in (ours, r):
        if result.rss_before_kib is not None and result.rss_after_kib is not None:
            lines.append("")
            lines.append(
                f"{result.label}: tree RSS {result.rss_before_kib / 1024:.1f} MiB with one connection, "
                f"{result.rss_after_kib / 1024:.1f} MiB with {OPTIONS.connections + 1}."
            )
        for error in result.errors:
            lines.append(f"{result.label} error: {error}")
    return "\n".join(lines) + "\n"


@dataclass
class Options:
    connections: int = 200
    idle: float = 1.0
    seq_requests: int = 2000
    warmup: int = 200
    throughput_requests: int = 20000
    window: int = 64
    broadcasts: int = 50
    warmup_broadcasts: int = 5


OPTIONS = Options()


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="Websocket transport benchmarks, ours vs a reference.")
    add_server_options(p, native_help="run the native codex binary, not node")
    p.add_argument("--connections", type=int, default=200)
    p.add_argument("--broadcasts", type=int, default=50)
    p.add_argument("--seq-requests", type=int, default=2000)
    p.add_argument("--throughput-requests", type=int, default=20000)
    p.add_argument("--window", type=int, default=64)
    p.add_argument("--markdown", type=Path, help="also write the table here")
    return p.parse_args(argv)


async def run(specs: list[ServerSpec]) -> list[Result]:
    return [await measure(spec) for spec in specs]


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    OPTIONS.connections = args.connections
    OPTIONS.broadcasts = args.broadcasts
    OPTIONS.seq_requests = args.seq_requests
    OPTIONS.throughput_requests = args.throughput_requests
    OPTIONS.window = args.window
    specs = server_specs(args)
    results = trio.run(run, specs)
    table = markdown(results[0], results[1] if len(results) > 1 else None)
    publish(table, args.markdown)
    return 1 if any(r.errors for r in results) else 0


if __name__ == "__main__":
    raise SystemExit(main())
