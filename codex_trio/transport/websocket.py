"""Websocket transport: `ws://IP:PORT` (with health probes and auth) and the framing it shares
with the unix control socket.

One JSON-RPC message per text frame. Binary frames are dropped with a warning, pings are
answered, a client Close ends the connection, and a frame over 16 MiB or a message over 64 MiB
drops it, as the reference does.

Task tree of one listener (`serve_websocket`, a task of the server's connections nursery):

    serve_websocket
    └── listener scope       the server's `_listeners_scope`, cancelled when the drain starts
        └── accepting        accept loop + one handler per new TCP connection: reads the HTTP
                             head, answers plain HTTP itself, upgrades and `adopt`s the rest

The upgrade is answered here (`ws_frames.switching_protocols`); the `Connection` then runs in
the server's connections nursery (`adopt`), and its reader task reads the frames itself
(`WebSocketMessageStream.receive_message`): no frame-reader task per connection. Stopping the
listener never cuts a connection.
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

from codex_trio.records import by_value
from codex_trio.transport import http_head, ws_frames
from codex_trio.transport.auth import WebSocketAuth, authorizer, require_auth_off_loopback
from codex_trio.transport.base import MessageStream, NowaitResult, ServerClosed
from codex_trio.transport.http_head import Decision, Drop, RequestHead, Respond, Upgrade
from codex_trio.transport.listen import WebSocketListen

log = logging.getLogger(__name__)

#: bytes in one frame; a longer frame drops the connection (the reference's limit).
MAX_FRAME_BYTES = 16 * 1024 * 1024
#: bytes (characters for text) in one fragmented message; more drops the connection.
MAX_MESSAGE_BYTES = 64 * 1024 * 1024
#: bytes asked of the socket per read: large messages arrive in few reads, idle costs nothing.
RECEIVE_CHUNK = 64 * 1024
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


def text_frame(payload: bytes) -> bytes:
    """One unfragmented, unmasked server text frame (RFC 6455 section 5.2)."""
    return ws_frames.frame(ws_frames.OP_TEXT, payload)


class WebSocketMessageStream:
    """A `MessageStream` over an upgraded socket: one message per text frame.

    Frames are read by the connection's own reader task (`receive_message` parses them with
    `ws_frames.FrameReader`), so a connection has no frame-reader task of its own: a ping is
    answered and a Close echoed from there. Every frame is one write and writes are
    serialized here, so a pong or a Close never cuts into a message. Closing the stream
    closes the socket without a Close frame, which is how the reference ends connections it
    drops or drains. A client that breaks the framing rules is dropped the same way.
    """

    def __init__(self, stream: trio.abc.Stream, transport_name: str, received: bytes = b"") -> None:
        self.transport_name = transport_name
        self._stream = stream
        self._frames = ws_frames.FrameReader(MAX_FRAME_BYTES, MAX_MESSAGE_BYTES)
        self._frames.feed(received)
        #: set once no frame may be written any more (Close sent, peer gone, stream closed).
        self._done = False
        self._sending = False
        self._turn = trio.lowlevel.ParkingLot()
        self._tail: memoryview | None = None
        self._quickack = True

    # ------------------------------------------------------------------ receiving
    async def receive_message(self) -> bytes:
        """The next text message; binary messages are dropped like the reference does.

        Raises `trio.EndOfChannel` when the client closed (a Close frame or the end of the
        stream) or was dropped for breaking the framing rules.
        """
        frames = self._frames
        while True:
            try:
                event = frames.next_event()
            except ws_frames.FrameTooLarge as exc:
                log.warning("websocket receive error: %s", exc)
                await self._drop()
                raise trio.BrokenResourceError(str(exc)) from None
            except ws_frames.MessageTooLarge as exc:
                await self._send_close(ws_frames.MESSAGE_TOO_BIG.to_bytes(2, "big") + str(exc).encode())
                raise trio.EndOfChannel from None
            except ws_frames.ProtocolError as exc:
                log.debug("websocket protocol error: %s", exc)
                await self._drop()
                raise trio.EndOfChannel from None
            if event is None:
                if self._done:
                    raise trio.EndOfChannel
                data = await self._stream.receive_some(RECEIVE_CHUNK)
                if not data:
                    self._done = True
                    raise trio.EndOfChannel
                self._ack_now()
                frames.feed(data)
            elif isinstance(event, ws_frames.Message):
                if event.text:
                    return event.data
                log.warning("dropping unsupported binary websocket message")
            elif isinstance(event, ws_frames.Ping):
                await self._send_frame(ws_frames.frame(ws_frames.OP_PONG, event.payload))
            elif isinstance(event, ws_frames.Close):
                await self._send_close(event.payload)
                raise trio.EndOfChannel

    async def _send_close(self, payload: bytes) -> None:
        """Answer (or send) a Close, then close the socket, as a server should (RFC 6455 7.1.1)."""
        try:
            # A client that does not read must not keep the connection (and its reader) open.
            with trio.move_on_after(RESPONSE_TIMEOUT):
                await self._send_frame(ws_frames.frame(ws_frames.OP_CLOSE, payload))
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        finally:
            await self._drop()

    async def _drop(self) -> None:
        self._done = True
        await trio.aclose_forcefully(self._stream)

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

    # ------------------------------------------------------------------ sending
    async def send_message(self, data: bytes) -> None:
        """Write `data` as one text frame (the payload is already UTF-8 JSON from our encoder)."""
        await self._send_frame(text_frame(data))

    async def send_messages(self, batch: Sequence[bytes]) -> None:
        """Several text frames in one write."""
        await self._send_frame(b"".join(text_frame(data) for data in batch))

    def send_messages_nowait(self, batch: Sequence[bytes]) -> NowaitResult:
        """Text frames written in one write from the caller's task if the socket takes it now.

        On a partial write this stream stays busy until `finish_send` has written the rest,
        so no other frame can cut in.
        """
        if self._done or self._sending:
            return "refused"
        frames = text_frame(batch[0]) if len(batch) == 1 else b"".join(text_frame(data) for data in batch)
        written = self._write_now(frames)
        if written == len(frames):
            return "sent"
        if written == 0:
            return "refused"
        self._sending = True
        self._tail = memoryview(frames)[written:]
        return "partial"

    async def finish_send(self) -> None:
        """Write what `send_messages_nowait` left over, then let waiting writers go."""
        try:
            tail, self._tail = self._tail, None
            if tail is not None:
                await self._stream.send_all(tail)
        finally:
            self._sending = False
            self._turn.unpark()

    async def _send_frame(self, data: bytes | bytearray | memoryview) -> None:
        """Write whole frames; frames from concurrent callers are written one after the other.

        Hot path of every broadcast: when nobody else is writing and the kernel takes the
        whole frame at once, it is written without a trip through the scheduler.
        """
        while self._sending:
            await self._turn.park()
        if self._done:
            raise trio.BrokenResourceError("websocket closed")
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

    async def aclose(self) -> None:
        """Close the socket, without a Close frame (as the reference on drain and drop)."""
        self._done = True
        await self._stream.aclose()


@by_value
@attrs.frozen(repr=False, eq=False)
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
        decide: Callable[[RequestHead], Decision],
        malformed: Decision,
        transport_name: str,
        accept_headers: list[tuple[bytes, bytes]],
    ) -> None:
        self._adopt = adopt
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
                return await self._upgrade(stream, head, bytes(buffer))
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
        return decision, head, rest

    async def _upgrade(self, stream: trio.abc.Stream, head: RequestHead, received: bytes) -> bool:
        """Answer the upgrade (101) and hand the connection to the server; `received` are the
        bytes that followed the head (already frames)."""
        refusal = http_head.handshake_refusal(head)
        with trio.fail_after(RESPONSE_TIMEOUT):
            if refusal is not None:
                await stream.send_all(refusal)
                return False
            key = head.get("sec-websocket-key")
            assert key is not None  # `decide` refuses an upgrade without one
            await stream.send_all(ws_frames.switching_protocols(key, self._accept_headers))
        ws = WebSocketMessageStream(stream, self._transport_name, received)
        try:
            self._adopt(ws, "reject")
        except ServerClosed as exc:  # the server started draining during the handshake
            log.info("not adopting a websocket connection: %s", exc)
            return False
        log.info("websocket client connected (%s)", self._transport_name)
        return True


async def serve_acceptor(
    listeners: list[trio.abc.Listener[trio.abc.Stream]],
    acceptor: WebSocketAcceptor,
    listener_scope: trio.CancelScope,
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Accept on `listeners` inside `listener_scope` until it is cancelled.

    `task_status.started()` fires once every listener accepts. Upgraded connections live in
    the server's connections nursery (`adopt`), so stopping the listener never cuts one.
    """
    try:
        with listener_scope:
            async with trio.open_nursery() as accepting:
                for listener in listeners:
                    accepting.start_soon(_accept_loop, listener, acceptor, accepting)
                task_status.started()
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

    acceptor = WebSocketAcceptor(
        adopt=adopt,
        decide=lambda head: http_head.decide_tcp(head, check),
        malformed=http_head.BAD_REQUEST,
        transport_name="websocket",
        accept_headers=[],
    )

    async with trio.open_nursery() as nursery:
        await nursery.start(serve_acceptor, list(listeners), acceptor, listener_scope)
        log.info("app-server websocket listening on %s", endpoint.url)
        task_status.started(endpoint)


def write_banner(endpoint: WebSocketEndpoint, auth: WebSocketAuth | None) -> None:
    """Print the banner to stderr (stdout may be a protocol stream)."""
    sys.stderr.write(banner(endpoint, auth))
    sys.stderr.flush()
