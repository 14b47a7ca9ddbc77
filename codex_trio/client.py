"""A JSON-RPC client of the app-server protocol, over any `MessageStream`.

Used for in-process connections (`AppServer.connect`) and by the test plugin. Responses are
routed to their callers by id; notifications and server->client requests arrive, in order, on a
bounded channel read with `receive()` (a client that stops reading pushes back on the server).
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable
from typing import Any

import orjson
import trio

from codex_trio.protocol.envelope import MISSING
from codex_trio.protocol.errors import RpcError
from codex_trio.transport.base import MessageStream

log = logging.getLogger(__name__)

#: notifications and server requests held for `receive()`.
INBOX_CAPACITY = 1024

Message = dict[str, Any]


class ClientConnection:
    """One client's view of a connection: calls, notifications, answers to server requests."""

    def __init__(self, stream: MessageStream) -> None:
        self._stream = stream
        self._ids = itertools.count(1)
        self._waiters: dict[Any, trio.MemorySendChannel[Message]] = {}
        self._inbox_send, self._inbox = trio.open_memory_channel[Message](INBOX_CAPACITY)
        self.closed = trio.Event()

    async def run(self) -> None:
        """Read until the server closes the connection (owned by whoever started the client)."""
        try:
            async with self._inbox_send:
                while True:
                    try:
                        data = await self._stream.receive_message()
                    except (trio.EndOfChannel, trio.BrokenResourceError, trio.ClosedResourceError):
                        break
                    message = orjson.loads(data)
                    if "method" not in message and "id" in message:
                        waiter = self._waiters.pop(message["id"], None)
                        if waiter is not None:
                            waiter.send_nowait(message)
                            continue
                    await self._inbox_send.send(message)
        finally:
            self.closed.set()
            for waiter in self._waiters.values():
                waiter.close()

    async def request(self, method: str, params: Any = MISSING, *, id: Any = None) -> Message:
        """Send a request and return the raw response envelope."""
        request_id = next(self._ids) if id is None else id
        send, receive = trio.open_memory_channel[Message](1)
        self._waiters[request_id] = send
        message: Message = {"id": request_id, "method": method}
        if params is not MISSING:
            message["params"] = params
        try:
            await self._stream.send_message(orjson.dumps(message))
            try:
                return await receive.receive()
            except trio.EndOfChannel:
                raise trio.BrokenResourceError("connection closed before the response") from None
        finally:
            self._waiters.pop(request_id, None)

    async def call(self, method: str, params: Any = MISSING) -> Any:
        """Send a request; return its result or raise RpcError."""
        response = await self.request(method, params)
        if "error" in response:
            error = response["error"]
            raise RpcError(error["code"], error["message"], error.get("data"))
        return response["result"]

    async def initialize(self, name: str = "codex-trio-client", **capabilities: Any) -> Any:
        params: dict[str, Any] = {"clientInfo": {"name": name, "version": "0.0.0"}}
        if capabilities:
            params["capabilities"] = capabilities
        return await self.call("initialize", params)

    async def notify(self, method: str, params: Any = None) -> None:
        await self._stream.send_message(orjson.dumps({"method": method, "params": params}))

    async def respond(self, request_id: Any, result: Any) -> None:
        """Answer a server->client request."""
        await self._stream.send_message(orjson.dumps({"id": request_id, "result": result}))

    async def send_raw(self, data: bytes) -> None:
        await self._stream.send_message(data)

    async def receive(self) -> Message:
        """The next notification or server->client request."""
        return await self._inbox.receive()

    async def wait_for(self, method: str, predicate: Callable[[Any], bool] = lambda _: True) -> Message:
        """Skip messages until one of `method` whose params match arrives."""
        while True:
            message = await self.receive()
            if message.get("method") == method and predicate(message.get("params")):
                return message

    async def aclose(self) -> None:
        await self._stream.aclose()
