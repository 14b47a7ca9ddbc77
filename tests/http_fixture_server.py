"""A small HTTP/1.1 server on 127.0.0.1 for the plugin tests: static files (a git repository
served over git's "dumb" HTTP protocol) and JSON routes (the remote plugin catalog).

One request per connection (`Connection: close`); every request is recorded.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from contextlib import suppress
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import attrs
import trio

MAX_HEAD = 64 * 1024


@attrs.frozen
class Hit:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]


Handler = Callable[[Hit], tuple[int, Any]]


class HttpFixtureServer:
    """`routes[(method, path)]` answers JSON; other GETs are files below `static` (if set); a
    request for one of `stall_paths` is never answered: `stalled` is set when one arrives,
    `released` once its client has closed the connection."""

    def __init__(self, static: Path | None = None) -> None:
        self.static = static
        self.routes: dict[tuple[str, str], Handler] = {}
        self.hits: list[Hit] = []
        self.port: int | None = None
        self.stall_paths: set[str] = set()
        self.stalled = trio.Event()
        self.released = trio.Event()

    @property
    def base_url(self) -> str:
        assert self.port is not None, "server not started"
        return f"http://127.0.0.1:{self.port}"

    def paths(self, method: str = "GET") -> list[str]:
        return [h.path for h in self.hits if h.method == method]

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        self.port = listeners[0].socket.getsockname()[1]
        task_status.started()
        await trio.serve_listeners(self._serve, listeners)

    async def _serve(self, stream: trio.SocketStream) -> None:
        async with stream:
            head = b""
            while b"\r\n\r\n" not in head:
                chunk = await stream.receive_some(4096)
                if not chunk or len(head) > MAX_HEAD:
                    return
                head += chunk
            text, _, body = head.partition(b"\r\n\r\n")
            lines = text.decode("latin-1").split("\r\n")
            method, target, _version = lines[0].split(" ", 2)
            headers = {
                k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])
            }
            length = int(headers.get("content-length", "0"))
            while len(body) < length:
                chunk = await stream.receive_some(length - len(body))
                if not chunk:
                    return
                body += chunk
            url = urlsplit(target)
            hit = Hit(method, url.path, parse_qs(url.query), headers)
            self.hits.append(hit)
            if hit.path in self.stall_paths:
                self.stalled.set()
                with suppress(trio.BrokenResourceError):
                    while await stream.receive_some(4096):
                        pass
                self.released.set()
                return
            status, payload, ctype = self._answer(hit)
            reason = {200: "OK", 404: "Not Found"}.get(status, "Status")
            await stream.send_all(
                f"HTTP/1.1 {status} {reason}\r\nContent-Type: {ctype}\r\nContent-Length: {len(payload)}\r\n"
                f"Connection: close\r\n\r\n".encode()
                + payload
            )

    def _answer(self, hit: Hit) -> tuple[int, bytes, str]:
        handler = self.routes.get((hit.method, hit.path))
        if handler is not None:
            status, value = handler(hit)
            if isinstance(value, bytes):
                return status, value, "application/octet-stream"
            return status, json.dumps(value).encode(), "application/json"
        if hit.method == "GET" and self.static is not None:
            path = (self.static / hit.path.lstrip("/")).resolve()
            if self.static.resolve() in path.parents and path.is_file():
                return 200, path.read_bytes(), "application/octet-stream"
        return 404, b"not found", "text/plain"
