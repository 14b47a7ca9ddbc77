"""Websocket clients for the transport tests: trio-websocket on the client side, wrapped in the
project's `ClientConnection`, plus raw HTTP exchanges on the websocket port."""

from __future__ import annotations

import base64
import os
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

import attrs
import trio
import trio_websocket

from codex_trio.client import ClientConnection

#: the largest message the test client accepts (the server may send up to 64 MiB).
CLIENT_MAX_MESSAGE = 128 * 1024 * 1024


class WsClientStream:
    """A `MessageStream` over a client-side websocket."""

    transport_name = "websocket"

    def __init__(self, ws: trio_websocket.WebSocketConnection) -> None:
        self.ws = ws

    async def receive_message(self) -> bytes:
        try:
            message = await self.ws.get_message()
        except trio_websocket.ConnectionClosed:
            raise trio.EndOfChannel from None
        return message.encode() if isinstance(message, str) else message

    async def send_message(self, data: bytes) -> None:
        try:
            await self.ws.send_message(data.decode())
        except trio_websocket.ConnectionClosed:
            raise trio.BrokenResourceError from None

    async def send_messages(self, batch: Sequence[bytes]) -> None:
        for data in batch:
            await self.send_message(data)

    async def aclose(self) -> None:
        with trio.move_on_after(2):
            await self.ws.aclose()


@attrs.define
class WsClient:
    """A connected JSON-RPC client, its websocket and its raw socket."""

    rpc: ClientConnection
    ws: trio_websocket.WebSocketConnection
    socket: trio.abc.Stream


@asynccontextmanager
async def connect(
    port: int | None = None,
    *,
    unix_path: str | None = None,
    headers: list[tuple[bytes, bytes]] | None = None,
    resource: str = "/",
    read: bool = True,
) -> AsyncIterator[WsClient]:
    """Open a websocket to the server; with `read=False` nothing is read (a stalled client)."""
    if unix_path is not None:
        stream: trio.abc.Stream = await trio.open_unix_socket(unix_path)
    else:
        assert port is not None
        stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream, trio.open_nursery() as nursery:
        ws = await trio_websocket.wrap_client_stream(
            nursery, stream, "127.0.0.1", resource, extra_headers=headers, max_message_size=CLIENT_MAX_MESSAGE
        )
        rpc = ClientConnection(WsClientStream(ws))
        if read:
            nursery.start_soon(rpc.run)
        yield WsClient(rpc, ws, stream)
        nursery.cancel_scope.cancel()


async def http(port: int, raw: bytes) -> bytes:
    """Send raw bytes to the websocket port; return one whole response (b"" if none came)."""
    async with await trio.open_tcp_stream("127.0.0.1", port) as stream:
        await stream.send_all(raw)
        received = bytearray()
        with trio.fail_after(5):
            while True:
                end = received.find(b"\r\n\r\n")
                if end >= 0:
                    length = 0
                    for line in received[:end].split(b"\r\n")[1:]:
                        name, _, value = line.partition(b":")
                        if name.strip().lower() == b"content-length":
                            length = int(value)
                    if len(received) >= end + 4 + length:
                        return bytes(received[: end + 4 + length])
                chunk = await stream.receive_some(65536)
                if not chunk:
                    return bytes(received)
                received += chunk


def request_head(path: str = "/", *, method: str = "GET", upgrade: bool = True, **headers: str) -> bytes:
    """An HTTP/1.1 request head; with `upgrade`, a valid websocket upgrade request."""
    lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1"]
    if upgrade:
        key = base64.b64encode(os.urandom(16)).decode()
        lines += [
            "Connection: Upgrade",
            "Upgrade: websocket",
            "Sec-WebSocket-Version: 13",
            f"Sec-WebSocket-Key: {key}",
        ]
    lines += [f"{name.replace('_', '-')}: {value}" for name, value in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def status_of(response: bytes) -> int:
    return int(response.split(b" ", 2)[1])


def body_of(response: bytes) -> bytes:
    return response.split(b"\r\n\r\n", 1)[1]


def client_frame(payload: bytes, *, opcode: int = 0x1, fin: bool = True, length: int | None = None) -> bytes:
    """One masked client frame (the mask key is zero, so the payload goes as is).

    `length` overrides the announced payload length (to announce more than is sent).
    """
    size = len(payload) if length is None else length
    header = bytes([(0x80 if fin else 0) | opcode])
    if size < 126:
        header += bytes([0x80 | size])
    elif size < 65536:
        header += bytes([0x80 | 126]) + size.to_bytes(2, "big")
    else:
        header += bytes([0x80 | 127]) + size.to_bytes(8, "big")
    return header + b"\0\0\0\0" + payload


async def raw_upgrade(port: int, **headers: str) -> tuple[trio.SocketStream, bytes]:
    """Upgrade a raw TCP connection by hand; returns it and the bytes after the 101 head."""
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    await stream.send_all(request_head(**headers))
    received = bytearray()
    with trio.fail_after(5):
        while b"\r\n\r\n" not in received:
            chunk = await stream.receive_some(65536)
            assert chunk, f"closed during the handshake: {bytes(received)!r}"
            received += chunk
    head, _, rest = bytes(received).partition(b"\r\n\r\n")
    assert status_of(head) == 101, head
    return stream, rest


async def read_until_closed(stream: trio.abc.ReceiveStream, limit: float = 5) -> bytes:
    """Everything the peer sends until it closes the connection (fails after `limit` s)."""
    received = bytearray()
    with trio.fail_after(limit):
        try:
            while chunk := await stream.receive_some(1 << 20):
                received += chunk
        except trio.BrokenResourceError:
            pass
    return bytes(received)
