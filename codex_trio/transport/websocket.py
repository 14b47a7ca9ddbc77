"""Websocket transport: `ws://IP:PORT` (with health probes and auth) and the framing it shares
with the unix control socket.

One JSON-RPC message per text frame. Binary frames are dropped with a warning, pings are
answered, a client Close ends the connection, and a frame over 16 MiB or a message over 64 MiB
drops it, as the reference does.

Task tree of one listener (`serve_websocket`, a task of the server's connections nursery):

    serve_websocket
    ├── frames nursery       one trio-websocket frame reader per live connection; outside the
    │                        listener scope, so stopping the listener never cuts a connection
    └── listener scope       the server's `_listeners_scope`, cancelled when the drain starts
        └── accepting        accept loop + one handler per new TCP connection: reads the HTTP
                             head, answers plain HTTP itself, upgrades and `adopt`s the rest

The `Connection` itself runs in the server's connections nursery (`adopt`); it ends by closing
the stream, which ends the frame reader.
"""

from __future__ import annotations

import errno
import ipaddress
import logging
import os
import socket
import sys
from collections.abc import Callable, Sequence
from typing import Literal

import attrs
import trio
import trio_websocket

from codex_trio.transport import http_head
from codex_trio.transport.auth import WebSocketAuth, authorizer, require_auth_off_loopback
from codex_trio.transport.base import MessageStream, ServerClosed
from codex_trio.transport.http_head import Decision, Drop, RequestHead, Respond, Upgrade
from codex_trio.transport.listen import WebSocketListen

log = logging.getLogger(__name__)

#: bytes in one frame; a longer frame drops the connection (the reference's limit).
MAX_FRAME_BYTES = 16 * 1024 * 1024
#: bytes (characters for text) in one fragmented message; more drops the connection.
MAX_MESSAGE_BYTES = 64 * 1024 * 1024
#: bytes asked of the socket per read: large messages arrive in few reads, idle costs nothing.
RECEIVE_CHUNK = 64 * 1024
#: whole messages trio-websocket holds between its frame reader and our connection reader; the
#: connection reader takes each at once, so one is enough and bounds inbound memory.
MESSAGE_QUEUE_SIZE = 1
#: seconds a new connection may take to send a complete HTTP request head (or the next one on
#: a kept-alive health-probe connection) before it is closed.
HEAD_TIMEOUT = 30.0
#: seconds to answer a plain HTTP request before giving up on the client.
RESPONSE_TIMEOUT = 10.0

#: Linux's TCP_QUICKACK (None where the platform has no such option).
TCP_QUICKACK: int | None = getattr(socket, "TCP_QUICKACK", None)
#: accept() errors meaning "out of descriptors or memory": wait and retry, as trio's own loop.
ACCEPT_CAPACITY_ERRNOS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ENOBUFS})
#: seconds to wait after such an error before accepting again.
ACCEPT_RETRY_DELAY = 0.1

Adopt = Callable[[MessageStream, Literal["reject"]], None]


class FrameTooLarge(Exception):
    """A client frame announced a payload above MAX_FRAME_BYTES."""


class FrameSizeGuard:
    """Reads client frame headers as the bytes go by and refuses oversized frames.

    trio-websocket limits whole messages only; the reference also limits single frames, so
    this walks the frame boundaries (header, then skip the payload) without copying payloads.
    """

    def __init__(self, limit: int = MAX_FRAME_BYTES) -> None:
        self._limit = limit
        self._header = bytearray()
        self._skip = 0

    def _header_size(self) -> int | None:
        if len(self._header) < 2:
            return None
        short = self._header[1] & 0x7F
        extended = 2 if short == 126 else 8 if short == 127 else 0
        mask = 4 if self._header[1] & 0x80 else 0
        return 2 + extended + mask

    def _payload_size(self) -> int:
        short = self._header[1] & 0x7F
        if short == 126:
            return int.from_bytes(self._header[2:4], "big")
        if short == 127:
            return int.from_bytes(self._header[2:10], "big")
        return short

    def feed(self, data: bytes | bytearray) -> None:
        """Account for `data`; raises FrameTooLarge when a frame header announces too much."""
        position, end = 0, len(data)
        while position < end:
            if self._skip:
                step = min(self._skip, end - position)
                self._skip -= step
                position += step
                continue
            self._header.append(data[position])
            position += 1
            size = self._header_size()
            if size is not None and len(self._header) == size:
                payload = self._payload_size()
                self._header.clear()
                if payload > self._limit:
                    raise FrameTooLarge(f"Space limit exceeded: Message too long: {payload} > {self._limit}")
                self._skip = payload


def text_frame(payload: bytes) -> bytes:
    """One unfragmented, unmasked server text frame (RFC 6455 section 5.2)."""
    size = len(payload)
    if size < 126:
        return bytes((0x81, size)) + payload
    if size < 65536:
        return bytes((0x81, 126)) + size.to_bytes(2, "big") + payload
    return bytes((0x81, 127)) + size.to_bytes(8, "big") + payload


class ReplayStream(trio.abc.Stream):
    """A byte stream that first replays bytes already read (the request head), then the socket.

    Bytes after the head pass through a FrameSizeGuard; an oversized frame closes the socket.
    Every `send_all` is one whole frame and they are serialized here, so frames written by
    trio-websocket (pongs, Close replies) and by `WebSocketMessageStream` never interleave.
    Closing this stream closes the socket without a websocket Close frame, which is how the
    reference ends connections it drops or drains.
    """

    def __init__(self, stream: trio.abc.Stream, replay: bytes, frames: bytes) -> None:
        self._stream = stream
        self._replay = replay
        self._guard = FrameSizeGuard()
        self._guard.feed(frames)
        self._sending = False
        self._turn = trio.lowlevel.ParkingLot()
        self._quickack = True

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        if self._replay:
            size = len(self._replay) if max_bytes is None else max_bytes
            replayed, self._replay = self._replay[:size], self._replay[size:]
            return replayed
        data = await self._stream.receive_some(max_bytes)
        if data:
            self._ack_now()
        try:
            self._guard.feed(data)
        except FrameTooLarge as exc:
            log.warning("websocket receive error: %s", exc)
            await trio.aclose_forcefully(self._stream)
            raise trio.BrokenResourceError(str(exc)) from None
        return data

    def _ack_now(self) -> None:
        """Acknowledge what was just read at once instead of after the delayed-ACK timer.

        A client message that needs no reply (`initialized`, a response to an approval)
        would otherwise stay unacknowledged for ~40 ms, and a client with Nagle's algorithm
        on holds its next request until then. Linux clears the flag on its own, so it is set
        after every read; elsewhere there is no such option and nothing is done.
        """
        if TCP_QUICKACK is not None and self._quickack and isinstance(self._stream, trio.SocketStream):
            try:
                self._stream.setsockopt(socket.IPPROTO_TCP, TCP_QUICKACK, 1)
            except OSError:
                self._quickack = False  # not TCP (a unix socket): nothing to acknowledge

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        """Write one frame; frames from concurrent callers are written one after the other.

        Hot path of every broadcast: when nobody else is writing and the kernel takes the
        whole frame at once, it is written without a trip through the scheduler.
        """
        while self._sending:
            await self._turn.park()
        self._sending = True
        try:
            written = self._write_now(data)
            if written < len(data):
                await self._stream.send_all(memoryview(data)[written:])
        finally:
            self._sending = False
            self._turn.unpark()

    def _write_now(self, data: bytes | bytearray | memoryview) -> int:
        """Write what the socket's buffer takes without blocking; 0 if it cannot be tried."""
        if not isinstance(self._stream, trio.SocketStream):
            return 0
        fd = self._stream.socket.fileno()
        if fd < 0:
            return 0  # closed: let the stream raise ClosedResourceError
        try:
            return os.write(fd, data)
        except BlockingIOError:
            return 0
        except OSError as exc:
            raise trio.BrokenResourceError(f"socket send failed: {exc}") from exc

    async def wait_send_all_might_not_block(self) -> None:
        await self._stream.wait_send_all_might_not_block()

    async def aclose(self) -> None:
        await self._stream.aclose()


class WebSocketMessageStream:
    """A `MessageStream` over an open websocket: one message per text frame."""

    def __init__(
        self,
        ws: trio_websocket.WebSocketConnection,
        stream: ReplayStream,
        transport_name: str,
        frames_scope: trio.CancelScope | None = None,
    ) -> None:
        self.transport_name = transport_name
        self._ws = ws
        self._stream = stream
        self._frames_scope = frames_scope

    async def receive_message(self) -> bytes:
        """The next text message; binary messages are dropped like the reference does."""
        while True:
            try:
                message = await self._ws.get_message()
            except trio_websocket.ConnectionClosed:
                raise trio.EndOfChannel from None
            if isinstance(message, str):
                return message.encode()
            log.warning("dropping unsupported binary websocket message")

    async def send_message(self, data: bytes) -> None:
        """Write `data` as one text frame.

        The frame is built here rather than by wsproto: the payload is already UTF-8 JSON from
        our encoder, and skipping the str round trip and wsproto's serializer roughly halves
        the cost of a broadcast to many connections.
        """
        if self._ws.closed is not None:
            raise trio.BrokenResourceError("websocket closed")
        await self._stream.send_all(text_frame(data))

    async def send_messages(self, batch: Sequence[bytes]) -> None:
        """Several text frames in one write."""
        if self._ws.closed is not None:
            raise trio.BrokenResourceError("websocket closed")
        await self._stream.send_all(b"".join(text_frame(data) for data in batch))

    async def aclose(self) -> None:
        """Close the socket, without a Close frame (as the reference on drain and drop), and
        end the frame reader: it may be parked handing a message to a queue nobody reads any
        more, where closing the socket alone never reaches it."""
        try:
            await self._stream.aclose()
        finally:
            if self._frames_scope is not None:
                self._frames_scope.cancel()


@attrs.frozen
class WebSocketEndpoint:
    """Where a websocket listener listens; `url` is what clients connect to."""

    host: str
    port: int

    @property
    def authority(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    @property
    def url(self) -> str:
        return f"ws://{self.authority}"


def banner(endpoint: WebSocketEndpoint, auth: WebSocketAuth | None) -> str:
    """The start-up banner for stderr: where to connect, where to probe, whether auth is on."""
    loopback = ipaddress.ip_address(endpoint.host).is_loopback
    lines = [
        "codex app-server (WebSockets)",
        f"  listening on: {endpoint.url}",
        f"  readyz: http://{endpoint.authority}/readyz",
        f"  healthz: http://{endpoint.authority}/healthz",
        f"  auth: {auth.mode if auth is not None else 'off'}",
    ]
    if loopback:
        lines.append("  note: binds localhost only (use SSH port-forwarding for remote access)")
    else:
        lines.append("  note: websocket auth is required for non-localhost listeners")
    return "\n".join(lines) + "\n"


class WebSocketAcceptor:
    """Turns accepted byte streams into adopted websocket connections.

    Shared by the TCP listener and the unix control socket; they differ in how a request head
    is judged (`decide`), what a malformed head gets, and the extra 101 headers.
    """

    def __init__(
        self,
        *,
        adopt: Adopt,
        frames: trio.Nursery,
        decide: Callable[[RequestHead], Decision],
        malformed: Decision,
        transport_name: str,
        accept_headers: list[tuple[bytes, bytes]],
    ) -> None:
        self._adopt = adopt
        self._frames = frames
        self._decide = decide
        self._malformed = malformed
        self._transport_name = transport_name
        self._accept_headers = accept_headers

    async def handle(self, stream: trio.abc.Stream) -> None:
        """Serve one accepted stream until it is upgraded and adopted, or answered and closed.

        Runs in the listener's handler nursery, so connection-level errors must not escape
        (they would stop the listener); they are logged here.
        """
        handed_on = False
        try:
            handed_on = await self._serve_http(stream)
        except (
            trio.BrokenResourceError,
            trio.ClosedResourceError,
            trio.TooSlowError,
            trio_websocket.HandshakeError,
            trio_websocket.ConnectionClosed,
        ) as exc:
            log.debug("websocket handshake failed: %r", exc)
        except Exception:
            # Anything else is still this client's trouble only: the listener keeps accepting.
            log.exception("websocket handshake failed")
        finally:
            if not handed_on:
                await trio.aclose_forcefully(stream)

    async def _serve_http(self, stream: trio.abc.Stream) -> bool:
        """Answer requests until one upgrades (True: the stream was handed on) or the end."""
        buffer = bytearray()
        while True:
            with trio.move_on_after(HEAD_TIMEOUT) as waiting:
                decision, head, buffer = await self._read_request(stream, buffer)
            if waiting.cancelled_caught:
                return False
            if isinstance(decision, Upgrade):
                assert head is not None
                return await self._upgrade(stream, bytes(buffer))
            if isinstance(decision, Drop):
                return False
            with trio.fail_after(RESPONSE_TIMEOUT):
                await stream.send_all(http_head.encode_response(decision, head.version if head else "1.1"))
            if decision.close or head is None or not head.keep_alive:
                return False

    async def _read_request(
        self, stream: trio.abc.Stream, buffer: bytearray
    ) -> tuple[Decision, RequestHead | None, bytearray]:
        """Read one head; returns the decision, the head, and the bytes that followed it."""
        while (end := http_head.head_end(buffer)) < 0:
            try:
                http_head.check_prefix(buffer)
            except http_head.MalformedHead:
                return self._malformed, None, bytearray()
            if len(buffer) > http_head.MAX_HEAD_BYTES:
                return http_head.HEAD_TOO_LARGE, None, bytearray()
            chunk = await stream.receive_some(RECEIVE_CHUNK)
            if not chunk:
                return Drop(), None, bytearray()
            buffer += chunk
        raw, rest = bytes(buffer[:end]), buffer[end:]
        try:
            head = http_head.parse_head(raw)
        except http_head.MalformedHead:
            return self._malformed, None, bytearray()
        decision = self._decide(head)
        if isinstance(decision, Respond) and decision.status == 403:
            log.warning(
                "rejecting websocket listener request with Origin header method=%s uri=%s",
                head.method,
                head.target,
            )
        elif isinstance(decision, Respond) and decision.status == 401:
            log.warning("rejecting websocket client during upgrade: %s", decision.body.decode())
        if isinstance(decision, Upgrade):
            # The handshake re-reads the head; the bytes after it are already frames.
            return decision, head, bytearray(raw) + rest
        return decision, head, rest

    async def _upgrade(self, stream: trio.abc.Stream, replay: bytes) -> bool:
        """Complete the handshake and hand the connection to the server."""
        wrapped = ReplayStream(stream, replay, replay[http_head.head_end(replay) :])
        try:
            with trio.fail_after(RESPONSE_TIMEOUT):
                request, frames_scope = await self._frames.start(_run_frames, wrapped)
                ws = await request.accept(extra_headers=list(self._accept_headers))
        except BaseException:
            await trio.aclose_forcefully(wrapped)
            raise
        try:
            self._adopt(WebSocketMessageStream(ws, wrapped, self._transport_name, frames_scope), "reject")
        except ServerClosed as exc:  # the server started draining during the handshake
            log.info("not adopting a websocket connection: %s", exc)
            frames_scope.cancel()
            await trio.aclose_forcefully(wrapped)
            return True
        log.info("websocket client connected (%s)", self._transport_name)
        return True


async def _run_frames(
    stream: trio.abc.Stream,
    *,
    task_status: trio.TaskStatus[tuple[trio_websocket.WebSocketRequest, trio.CancelScope]] = (
        trio.TASK_STATUS_IGNORED
    ),
) -> None:
    """Own one connection's trio-websocket frame reader, for as long as the connection lives.

    A failure here ends this connection only: it is logged and the socket is closed, which the
    connection's reader sees as the end of the stream. The connection's stream cancels the
    scope handed out with the request when it closes.
    """
    started = False
    try:
        async with trio.open_nursery() as nursery:
            request = await trio_websocket.wrap_server_stream(
                nursery,
                stream,
                message_queue_size=MESSAGE_QUEUE_SIZE,
                max_message_size=MAX_MESSAGE_BYTES,
                receive_buffer_size=RECEIVE_CHUNK,
            )
            started = True
            task_status.started((request, nursery.cancel_scope))
    except Exception as exc:
        if not started:
            raise trio_websocket.HandshakeError(repr(exc)) from exc
        log.warning("websocket connection failed: %r", exc)
    finally:
        await trio.aclose_forcefully(stream)


async def serve_acceptor(
    listeners: list[trio.abc.Listener[trio.abc.Stream]],
    make_acceptor: Callable[[trio.Nursery], WebSocketAcceptor],
    listener_scope: trio.CancelScope,
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Accept on `listeners` inside `listener_scope`; own the frame readers outside it.

    `task_status.started()` fires once every listener accepts. Returns when the listener scope
    is cancelled and every connection accepted here has closed.
    """
    try:
        async with trio.open_nursery() as frames:
            acceptor = make_acceptor(frames)
            with listener_scope:
                async with trio.open_nursery() as accepting:
                    for listener in listeners:
                        accepting.start_soon(_accept_loop, listener, acceptor, accepting)
                    task_status.started()
            # Stop accepting now; live connections end on their own (the drain closes them).
            for listener in listeners:
                await trio.aclose_forcefully(listener)
            log.info("websocket acceptor shutting down")
    finally:
        for listener in listeners:
            await trio.aclose_forcefully(listener)


async def _accept_loop(
    listener: trio.abc.Listener[trio.abc.Stream], acceptor: WebSocketAcceptor, handlers: trio.Nursery
) -> None:
    """Accept forever; each stream gets a handler task in `handlers` (inside the listener scope).

    Not `trio.serve_listeners`: it closes a stream when its handler returns, but an upgraded
    stream lives on in the connection the handler hands it to.
    """
    while True:
        try:
            stream = await listener.accept()
        except OSError as exc:
            if exc.errno not in ACCEPT_CAPACITY_ERRNOS:
                raise
            log.error("accept failed (%s); retrying in %.2fs", exc, ACCEPT_RETRY_DELAY)
            await trio.sleep(ACCEPT_RETRY_DELAY)
            continue
        handlers.start_soon(acceptor.handle, stream)


async def serve_websocket(
    listen: WebSocketListen,
    auth: WebSocketAuth | None,
    adopt: Adopt,
    listener_scope: trio.CancelScope,
    *,
    task_status: trio.TaskStatus[WebSocketEndpoint] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve `ws://IP:PORT` until the listener scope is cancelled and its connections closed.

    Raises AuthConfigError for a non-loopback address without auth and OSError when the
    address cannot be bound, before `task_status.started(endpoint)`.
    """
    require_auth_off_loopback(listen.host, listen.port, auth)
    listeners = await trio.open_tcp_listeners(listen.port, host=listen.host)
    port = listeners[0].socket.getsockname()[1]
    endpoint = WebSocketEndpoint(listen.host, port)
    check = authorizer(auth)

    def make_acceptor(frames: trio.Nursery) -> WebSocketAcceptor:
        return WebSocketAcceptor(
            adopt=adopt,
            frames=frames,
            decide=lambda head: http_head.decide_tcp(head, check),
            malformed=http_head.BAD_REQUEST,
            transport_name="websocket",
            accept_headers=[],
        )

    async with trio.open_nursery() as nursery:
        await nursery.start(serve_acceptor, list(listeners), make_acceptor, listener_scope)
        log.info("app-server websocket listening on %s", endpoint.url)
        task_status.started(endpoint)


def write_banner(endpoint: WebSocketEndpoint, auth: WebSocketAuth | None) -> None:
    """Print the banner to stderr (stdout may be a protocol stream)."""
    sys.stderr.write(banner(endpoint, auth))
    sys.stderr.flush()
