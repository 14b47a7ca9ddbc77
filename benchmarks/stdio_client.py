"""A line-delimited JSON-RPC client on a benchmarked server's stdio.

One reader task per server (`Connection.read_loop`) keeps stdout drained so the server never
blocks on a full pipe, and completes requests by id; bulk phases install their own response
handler. Scripts import this as a sibling module.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import trio
from servers import ProcessRss, Sandbox, ServerSpec, kill_tree, reap, spawn, tree_rss

INIT_LINE = b'{"id":1,"method":"initialize","params":{"clientInfo":{"name":"bench","version":"1"}}}\n'
INITIALIZED_LINE = b'{"method":"initialized"}\n'
OVERLOADED = -32001
INIT_TIMEOUT = 30.0
FIRST_BULK_ID = 1000
JSON = dict[str, Any]


class ServerGone(Exception):
    """The server closed stdout (exited) while a reply was still expected."""


class Pending:
    """One request waiting for its response (parsed in ``reply`` or raw in ``raw``)."""

    __slots__ = ("event", "raw", "reply")

    def __init__(self) -> None:
        self.event = trio.Event()
        self.reply: JSON | None = None
        self.raw: bytes | None = None


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

    def _finish(self) -> None:
        """stdout ended: wake every waiter (they see no reply and raise)."""
        self.closed.set()
        for pending in self._pending.values():
            pending.event.set()
        self._pending.clear()

    async def read_loop(self) -> None:
        """Read stdout until EOF, dispatching each complete line.

        Linear in the line length: a line is assembled from its pieces once (appending each
        read to one growing bytes object would be quadratic on multi-megabyte responses and
        make the client, not the server, the bottleneck).
        """
        parts: list[bytes] = []
        try:
            while True:
                chunk = bytes(await self.stdout.receive_some(1 << 20))
                if not chunk:
                    break
                self.last_rx = time.perf_counter()
                start = 0
                while (newline := chunk.find(b"\n", start)) >= 0:
                    parts.append(chunk[start:newline])
                    line = b"".join(parts)
                    parts.clear()
                    if line.strip():
                        self._dispatch(line)
                    start = newline + 1
                if start < len(chunk):
                    parts.append(chunk[start:])
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        finally:
            self._finish()

    def rss(self) -> tuple[int, list[ProcessRss]]:
        """Summed VmRSS (KiB) of the server tree and a per-process breakdown."""
        return tree_rss(self.process.pid)

    def kill(self) -> None:
        """SIGKILL the server's process group and every descendant."""
        kill_tree(self.process.pid)


@asynccontextmanager
async def running_server(
    spec: ServerSpec, *, sandbox: Sandbox | None = None, connection: type[Connection] = Connection
) -> AsyncIterator[Connection]:
    """Start ``spec`` with a reader task; kill its process group on exit.

    Without ``sandbox`` a fresh one is made and deleted afterwards; a given one is kept
    (so a restarted server sees the same CODEX_HOME).
    """
    own = sandbox is None
    box = Sandbox() if sandbox is None else sandbox
    try:
        process, spawned_at = await spawn(spec, box)
        conn = connection(process, box, spawned_at)
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(conn.read_loop)
                try:
                    yield conn
                finally:
                    conn.kill()
                    nursery.cancel_scope.cancel()
        finally:
            await reap(process)
    finally:
        if own:
            box.remove()


async def initialize(conn: Connection) -> float:
    """Send ``initialize`` + ``initialized``; return seconds from spawn to the response."""
    with trio.fail_after(INIT_TIMEOUT):
        reply = await conn.request_line(1, INIT_LINE)
    elapsed = time.perf_counter() - conn.spawned_at
    if "result" not in reply:
        raise RuntimeError(f"initialize failed: {reply}")
    await conn.send(INITIALIZED_LINE)
    return elapsed
