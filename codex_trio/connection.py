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
import math
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any, Literal, Protocol

import attrs
import trio

from codex_trio.protocol import envelope
from codex_trio.protocol.envelope import Invalid, Notification, Request, RequestId, Response
from codex_trio.protocol.errors import OVERLOADED_MESSAGE, SERVER_OVERLOADED, RpcError
from codex_trio.transport.base import MessageStream, NowaitSender

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
#: seconds the families may take to release what they hold for a closed connection.
CLOSED_CALLBACK_TIMEOUT = 5.0
#: seconds each cleanup step of a closed connection gets even past its close deadline.
CLEANUP_FLOOR = 0.1
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


class ServerRequestTimeout(trio.TooSlowError):
    """The client did not answer a server->client request by its deadline.

    A TooSlowError (callers that wait on a person treat both alike), but its own type, so
    the dispatcher can tell it from a handler's own deadline and answer without calling it
    an internal failure.
    """

    def __init__(self, method: str, timeout: float) -> None:
        super().__init__(f"the client did not answer {method} within {timeout:g}s")
        self.method = method


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
        self._outer: trio.CancelScope | None = None
        #: trio time by which a closing connection must be gone (see `close`).
        self._close_deadline = math.inf
        #: the nursery of the writer, which also finishes a partial direct write.
        self._outer_nursery: trio.Nursery | None = None
        #: messages may be written straight to the transport (see `send`, `broadcast_nowait`).
        self._direct: NowaitSender | None = stream if isinstance(stream, NowaitSender) else None
        #: the writer waits on an empty queue: nothing is queued or being written.
        self._writer_idle = False

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
        """Serve until the peer leaves, the transport breaks or `disconnect` is cancelled.

        This is the connection's firewall: whatever this connection raises (a transport
        error, a client's misbehaviour, a handler bug) is logged with its id and ends this
        connection only; nothing but cancellation leaves `run`.
        """
        log.debug("connection %d opened (%s)", self.id, self.transport_name)
        try:
            async with trio.open_nursery() as outer:
                self._outer = outer.cancel_scope
                self._outer_nursery = outer
                outer.start_soon(self._write_loop)
                with self.disconnect:
                    async with trio.open_nursery() as work:
                        self._nursery = work
                        # The reader is the body of the work nursery: one task fewer per connection.
                        await self._read_loop()
                self._fail_pending()
                self._out_send.close()
                # Only the writer is left in `outer`: this bounds the time it may flush.
                outer.cancel_scope.deadline = min(trio.current_time() + FLUSH_TIMEOUT, self._close_deadline)
        except* Exception as failure:
            log.error("connection %d failed; closing it", self.id, exc_info=_first_leaf(failure))
        finally:
            self._fail_pending()
            self._out_send.close()
            self.closed.set()
            with trio.CancelScope(shield=True, deadline=self._cleanup_deadline(FLUSH_TIMEOUT)):
                await self.stream.aclose()
            log.debug("connection %d closed", self.id)
            if self._on_closed is not None:
                with trio.CancelScope(shield=True, deadline=self._cleanup_deadline(CLOSED_CALLBACK_TIMEOUT)):
                    try:
                        await self._on_closed(self)
                    except Exception:
                        log.exception("connection %d: closing its resources failed", self.id)

    def _cleanup_deadline(self, limit: float) -> float:
        """When a shielded cleanup step must end: within `limit`, and within the close
        deadline except for a short floor (closing a socket or dropping a connection's
        state is quick and must not be skipped because the flush used the time up)."""
        now = trio.current_time()
        return min(now + limit, max(self._close_deadline, now + CLEANUP_FLOOR))

    def close(self, *, deadline: float = math.inf) -> None:
        """Disconnect: cancel this connection's work; queued output is still flushed.

        `deadline` (trio time) caps everything the closing connection may still wait for
        (flushing queued output, closing the transport, releasing what families hold for it):
        the server's shutdown budget.
        """
        if deadline < self._close_deadline:
            self._close_deadline = deadline
            if self._outer is not None and self.disconnect.cancel_called:
                self._outer.deadline = min(self._outer.deadline, deadline)
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
            while True:
                try:
                    data: bytes | None = self._out_receive.receive_nowait()
                except trio.WouldBlock:
                    data = None
                if data is None:
                    # Idle only while parked on an empty queue (every producer clears it):
                    # `receive` also yields once after taking a queued message. Parked
                    # outside the `except`: a handled exception (and its traceback) would
                    # stay alive in every idle connection's writer.
                    self._writer_idle = True
                    try:
                        data = await self._out_receive.receive()
                    finally:
                        self._writer_idle = False
                batch = self._take_ready(data)
                if len(batch) == 1:
                    await self.stream.send_message(data)
                else:
                    await self.stream.send_messages(batch)
        except trio.EndOfChannel:
            pass
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            log.debug("connection %d: writer stopped, peer gone", self.id)
        except Exception:
            log.exception("connection %d: writer failed", self.id)
        finally:
            # Disconnect first: tasks blocked in `send` are then cancelled through the
            # disconnect scope before closing the queue could wake them with an error.
            self.close()
            self._out_receive.close()

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
        """Queue one encoded message, waiting while the outbound queue is full.

        Never raises because the peer is gone: if the writer has stopped, the connection is
        disconnected and a task inside its disconnect scope is cancelled here (it ends like
        every other task of a closed connection); a task outside it (a turn that outlives the
        connection) returns and the message is dropped.

        With the writer idle, nothing queued and no other request running, the message is
        written from this task (a reply reaches the client without waking the writer); the
        order is the same. With requests in flight, replies are left to the writer, which
        gathers those that are ready into one write.
        """
        if self._writer_idle and self._alone() and self._send_direct([data]):
            await trio.lowlevel.checkpoint()
            return
        self._writer_idle = False
        try:
            await self._out_send.send(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            self.close()
            await trio.lowlevel.checkpoint()

    async def send_many(self, messages: list[bytes]) -> None:
        """Queue messages back to back, without yielding in between while there is room.

        The writer then finds them together and sends them in one write: a reply and the
        notifications that follow it (`initialize` and `remoteControl/status/changed`) reach
        the client in one segment, so a client with Nagle's algorithm on never waits for a
        delayed ACK before its next request. With the writer idle they are written from
        this task, in one write as well.
        """
        if self._writer_idle and self._alone() and self._send_direct(messages):
            await trio.lowlevel.checkpoint()
            return
        self._writer_idle = False
        for index, data in enumerate(messages):
            try:
                self._out_send.send_nowait(data)
            except trio.WouldBlock:
                for rest in messages[index:]:
                    await self.send(rest)
                return
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                self.close()
                break
        await trio.lowlevel.checkpoint()

    def notification(self, method: str, params: Any) -> bytes | None:
        """A notification for this connection, encoded; None if the client opted out of it."""
        if method in self.session.opted_out:
            return None
        return envelope.encode_notification(method, params)

    async def notify(self, method: str, params: Any) -> None:
        """Send a notification meant for this connection (skipped if the client opted out)."""
        encoded = self.notification(method, params)
        if encoded is not None:
            await self.send(encoded)

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
            if self._writer_idle and self._send_direct([encoded]):
                return
            try:
                self._out_send.send_nowait(encoded)
                self._writer_idle = False
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

    def _alone(self) -> bool:
        """No broadcast backlog and at most one request running (the sender's own). On
        stdio the reader holds a slot of its own while it waits for the next line."""
        reader = 1 if self._overload == "backpressure" else 0
        return not self._backlog and self._slots.value >= MAX_IN_FLIGHT - 1 - reader

    def _send_direct(self, batch: list[bytes]) -> bool:
        """Write from the sending task itself, sparing the writer a wake-up (per connection,
        for a broadcast); only called while the writer is idle, so order is kept."""
        if self._direct is None or self._outer_nursery is None:
            return False
        try:
            done = self._direct.send_messages_nowait(batch)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            self.close()
            return True
        if done == "partial":
            self._writer_idle = False
            self._outer_nursery.start_soon(self._finish_direct, self._direct)
        return done != "refused"

    async def _finish_direct(self, direct: NowaitSender) -> None:
        try:
            await direct.finish_send()
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            self.close()

    async def _flush_backlog(self) -> None:
        try:
            while self._backlog:
                with trio.move_on_after(SLOW_CONSUMER_GRACE) as waited:
                    await self.send(self._backlog[0])
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
    def new_request_id(self) -> int:
        """An id from the server-wide counter, for a request asked of several connections."""
        return next(self._request_ids)

    async def request(
        self,
        method: str,
        params: Any,
        *,
        timeout: float = SERVER_REQUEST_TIMEOUT,
        on_id: Callable[[RequestId], None] | None = None,
        request_id: RequestId | None = None,
    ) -> Any:
        """Ask the client something and wait for its answer, with a deadline.

        `on_id` learns the request's id before it is sent (for `serverRequest/resolved`);
        `request_id` re-sends a request another connection was already asked under that id.
        Only this connection's own pending table routes answers, so a connection can answer
        only what it was sent. Raises RpcError with the client's error, ServerRequestTimeout at
        the deadline, and ConnectionClosed if the connection goes away first.
        """
        if request_id is None:
            request_id = next(self._request_ids)
        if on_id is not None:
            on_id(request_id)
        pending = _PendingRequest()
        self._pending[request_id] = pending
        try:
            await self.send(envelope.encode_request(request_id, method, params))
            with trio.move_on_after(timeout) as waited:
                await pending.done.wait()
        finally:
            self._pending.pop(request_id, None)
        if waited.cancelled_caught:
            raise ServerRequestTimeout(method, timeout)
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


def _first_leaf(group: BaseException) -> BaseException:
    while isinstance(group, BaseExceptionGroup):
        group = group.exceptions[0]
    return group
