"""One client connection: its nursery, its tasks, its session state and its outbound queue.

Task tree of a connection (all owned by `Connection.run`):

    run                   outer nursery; once the work is over its deadline bounds the flush
    ├── writer            drains the outbound channel into the transport; outlives the work
    │                     scope so queued messages are flushed after a disconnect
    └── work nursery      inside `disconnect` (the disconnect token); its body is the reader,
        │                 which reads, classifies and dispatches messages
        ├── request tasks one per request, at most MAX_IN_FLIGHT at once; a running
        │                 `command/exec` is one, and its handler owns (and kills) the process
        ├── scoped tasks  work a request leaves to the connection: fs watch readers,
        │                 fuzzy file search sessions, account discovery after a login
        └── backlog       `_flush_backlog`, while broadcasts wait for a full queue

Cancelling `disconnect` ends exactly this connection's work and nothing else.

Imports `transport` and `protocol` only; the router is reached through `RequestRouter`.
"""

from __future__ import annotations

import itertools
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any, Literal, Protocol

import attrs
import trio

from codex_trio.protocol import envelope
from codex_trio.protocol.envelope import Invalid, Notification, Request, RequestId, Response
from codex_trio.protocol.errors import OVERLOADED_MESSAGE, SERVER_OVERLOADED, RpcError
from codex_trio.transport.base import MessageStream

log = logging.getLogger(__name__)

#: messages queued for the writer; a full queue makes request tasks wait (backpressure).
OUTBOUND_CAPACITY = 256
#: requests of one connection running at once; like the reference's inbound queue of 128.
MAX_IN_FLIGHT = 128
#: broadcast messages held for a connection whose outbound queue is full.
BROADCAST_BACKLOG = 1024
#: seconds a full outbound queue may stay full under broadcasts before the client is dropped.
SLOW_CONSUMER_GRACE = 10.0
#: seconds the writer may take to flush what is queued once the connection closes.
FLUSH_TIMEOUT = 2.0
#: bytes the writer gathers from the queue into one transport write.
WRITE_BATCH_BYTES = 256 * 1024
#: default deadline for server->client requests (approvals are answered by a person).
SERVER_REQUEST_TIMEOUT = 30 * 60.0

OverloadPolicy = Literal["backpressure", "reject"]


@attrs.define
class Session:
    """What `initialize` established for this connection."""

    initialized: bool = False
    client_name: str = ""
    client_version: str = ""
    experimental_api: bool = False
    opted_out: frozenset[str] = frozenset()


class RequestRouter(Protocol):
    """What a connection's reader needs from the router (`dispatch.Router` is one)."""

    def handles_inline(self, method: str) -> bool:
        """True if the reader itself runs this method, so later requests see its effect."""
        ...

    async def prepare(self, method: str, session: Session) -> None:
        """Called in the reader before a request's task starts (keeps pipelined order)."""
        ...

    async def dispatch(self, connection: Connection, request: Request) -> None:
        """Run one request and send its response; never raises for a handler's failure."""
        ...


class ConnectionClosed(Exception):
    """The connection went away while a server->client request waited for its answer."""


@attrs.define(eq=False)
class _PendingRequest:
    done: trio.Event = attrs.Factory(trio.Event)
    result: Any = None
    error: Any = None


class Connection:
    """A connection's state and tasks; see the module docstring for its task tree."""

    def __init__(
        self,
        connection_id: int,
        stream: MessageStream,
        router: RequestRouter,
        *,
        request_ids: itertools.count[int],
        overload: OverloadPolicy = "backpressure",
        on_closed: Callable[[Connection], Awaitable[None]] | None = None,
    ) -> None:
        self.id = connection_id
        self.stream = stream
        self.session = Session()
        #: the disconnect token: cancelling it ends this connection's work.
        self.disconnect = trio.CancelScope()
        self.closed = trio.Event()
        self._router = router
        self._overload = overload
        self._request_ids = request_ids
        self._on_closed = on_closed
        self._out_send, self._out_receive = trio.open_memory_channel[bytes](OUTBOUND_CAPACITY)
        self._slots = trio.Semaphore(MAX_IN_FLIGHT)
        self._pending: dict[RequestId, _PendingRequest] = {}
        self._backlog: deque[bytes] = deque()
        self._backlog_flusher = False
        self._nursery: trio.Nursery | None = None

    @property
    def transport_name(self) -> str:
        return self.stream.transport_name

    @property
    def nursery(self) -> trio.Nursery:
        """The work nursery: tasks started here die with the connection."""
        assert self._nursery is not None, "connection is not running"
        return self._nursery

    # ------------------------------------------------------------------ lifecycle
    async def run(self) -> None:
        """Serve until the peer leaves, the transport breaks or `disconnect` is cancelled."""
        log.debug("connection %d opened (%s)", self.id, self.transport_name)
        try:
            async with trio.open_nursery() as outer:
                outer.start_soon(self._write_loop)
                with self.disconnect:
                    async with trio.open_nursery() as work:
                        self._nursery = work
                        # The reader is the body of the work nursery: one task fewer per connection.
                        await self._read_loop()
                self._fail_pending()
                self._out_send.close()
                # Only the writer is left in `outer`: this bounds the time it may flush.
                outer.cancel_scope.deadline = trio.current_time() + FLUSH_TIMEOUT
        finally:
            self.closed.set()
            with trio.CancelScope(shield=True), trio.move_on_after(FLUSH_TIMEOUT):
                await self.stream.aclose()
            log.debug("connection %d closed", self.id)
            if self._on_closed is not None:
                with trio.CancelScope(shield=True):
                    await self._on_closed(self)

    def close(self) -> None:
        """Disconnect: cancel this connection's work; queued output is still flushed."""
        self.disconnect.cancel()

    async def _read_loop(self) -> None:
        try:
            while True:
                if self._overload == "backpressure":
                    await self._slots.acquire()
                    try:
                        data = await self.stream.receive_message()
                    except BaseException:
                        self._slots.release()
                        raise
                    await self._handle(data, slot_held=True)
                else:
                    data = await self.stream.receive_message()
                    await self._handle(data, slot_held=False)
        except (trio.EndOfChannel, trio.BrokenResourceError, trio.ClosedResourceError):
            log.debug("connection %d: peer closed its side", self.id)
        self.close()

    async def _handle(self, data: bytes, *, slot_held: bool) -> None:
        message = envelope.parse(data)
        match message:
            case Request():
                if not slot_held:
                    try:
                        self._slots.acquire_nowait()
                    except trio.WouldBlock:
                        await self.send(
                            envelope.encode_error(message.id, SERVER_OVERLOADED, OVERLOADED_MESSAGE)
                        )
                        return
                if self._router.handles_inline(message.method):
                    try:
                        await self._router.dispatch(self, message)
                    finally:
                        self._slots.release()
                    return
                await self._router.prepare(message.method, self.session)
                self.nursery.start_soon(self._run_request, message, name=f"request {message.method}")
                return
            case Notification():
                log.debug("<- notification %s", message.method)
            case Response():
                self._route_response(message)
            case Invalid():
                log.error("connection %d: %s", self.id, message.reason)
        if slot_held:
            self._slots.release()

    async def _run_request(self, request: Request) -> None:
        try:
            await self._router.dispatch(self, request)
        finally:
            self._slots.release()

    async def _write_loop(self) -> None:
        try:
            with self._out_receive:
                async for data in self._out_receive:
                    batch = self._take_ready(data)
                    if len(batch) == 1:
                        await self.stream.send_message(data)
                    else:
                        await self.stream.send_messages(batch)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            log.debug("connection %d: writer stopped, peer gone", self.id)
            self.close()

    def _take_ready(self, first: bytes) -> list[bytes]:
        """`first` plus whatever else is already queued, up to WRITE_BATCH_BYTES: one write
        for many messages is what keeps a pipelined client's throughput up."""
        batch = [first]
        size = len(first)
        while size < WRITE_BATCH_BYTES:
            try:
                data = self._out_receive.receive_nowait()
            except (trio.WouldBlock, trio.EndOfChannel):
                break
            batch.append(data)
            size += len(data)
        return batch

    # ------------------------------------------------------------------ outbound
    async def send(self, data: bytes) -> None:
        """Queue one encoded message, waiting while the outbound queue is full."""
        await self._out_send.send(data)

    async def notify(self, method: str, params: Any) -> None:
        """Send a notification meant for this connection (skipped if the client opted out)."""
        if method in self.session.opted_out:
            return
        await self.send(envelope.encode_notification(method, params))

    def broadcast_nowait(self, method: str, encoded: bytes) -> None:
        """Queue a broadcast without waiting; a client that stays full is dropped.

        One slow client must never stall the others, so broadcasts do not wait on a full
        queue. They go to a bounded backlog, flushed in order by a task of this connection;
        if the backlog overflows or does not move for SLOW_CONSUMER_GRACE, the connection is
        closed. Memory per connection is thus bounded by OUTBOUND_CAPACITY + BROADCAST_BACKLOG.
        """
        if method in self.session.opted_out or self.disconnect.cancel_called:
            return
        if not self._backlog:
            try:
                self._out_send.send_nowait(encoded)
                return
            except trio.WouldBlock:
                pass
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                return
        if len(self._backlog) >= BROADCAST_BACKLOG:
            log.warning("connection %d is not reading; disconnecting a slow consumer", self.id)
            self._backlog.clear()
            self.close()
            return
        self._backlog.append(encoded)
        if not self._backlog_flusher and self._nursery is not None:
            self._backlog_flusher = True
            self._nursery.start_soon(self._flush_backlog)

    async def _flush_backlog(self) -> None:
        try:
            while self._backlog:
                with trio.move_on_after(SLOW_CONSUMER_GRACE) as waited:
                    await self._out_send.send(self._backlog[0])
                if waited.cancelled_caught:
                    log.warning(
                        "connection %d stalled for %.0fs; disconnecting", self.id, SLOW_CONSUMER_GRACE
                    )
                    self._backlog.clear()
                    self.close()
                    return
                self._backlog.popleft()
        finally:
            self._backlog_flusher = False

    # ------------------------------------------------------------------ server -> client requests
    async def request(
        self,
        method: str,
        params: Any,
        *,
        timeout: float = SERVER_REQUEST_TIMEOUT,
        on_id: Callable[[RequestId], None] | None = None,
    ) -> Any:
        """Ask the client something and wait for its answer, with a deadline.

        `on_id` learns the request's id before it is sent (for `serverRequest/resolved`).
        Raises RpcError with the client's error, trio.TooSlowError at the deadline, and
        ConnectionClosed if the connection goes away first.
        """
        request_id = next(self._request_ids)
        if on_id is not None:
            on_id(request_id)
        pending = _PendingRequest()
        self._pending[request_id] = pending
        try:
            await self.send(envelope.encode_request(request_id, method, params))
            with trio.fail_after(timeout):
                await pending.done.wait()
        finally:
            self._pending.pop(request_id, None)
        if pending.error is ConnectionClosed:
            raise ConnectionClosed(f"connection {self.id} closed")
        if pending.error is not None:
            error = pending.error if isinstance(pending.error, dict) else {}
            raise RpcError(int(error.get("code", -32603)), str(error.get("message", "")), error.get("data"))
        return pending.result

    def _route_response(self, response: Response) -> None:
        pending = self._pending.get(response.id)
        if pending is None:
            log.warning("could not find callback for %r", response.id)
            return
        pending.result = response.result
        pending.error = response.error
        pending.done.set()

    def _fail_pending(self) -> None:
        for pending in self._pending.values():
            pending.error = ConnectionClosed
            pending.done.set()
