"""One connection's trouble ends that connection only: the writer race, handler bugs,
transport failures, server->client request deadlines."""

from __future__ import annotations

import itertools
import logging
import math
from collections.abc import Sequence
from typing import Any

import orjson
import pytest
import trio
import trio.testing

from codex_trio.connection import OUTBOUND_CAPACITY, Connection, ServerRequestTimeout
from codex_trio.dispatch import Router
from codex_trio.protocol import envelope
from codex_trio.routing import RequestContext, route
from codex_trio.server import AppServer
from codex_trio.settings import ServerSettings
from codex_trio.transport.listen import NoListen

#: notifications each request sends before its reply: enough requests fill the queue.
CHUNKS = 4


class StallingStream:
    """A transport whose peer stops reading: the first write blocks until `peer_gone`, then
    every write fails as a socket whose peer vanished does."""

    transport_name = "memory"

    def __init__(self) -> None:
        self.inbound, self._incoming = trio.open_memory_channel[bytes](math.inf)
        self.peer_gone = trio.Event()
        self.writer_blocked = trio.Event()
        self.closed = False

    async def receive_message(self) -> bytes:
        return await self._incoming.receive()

    async def send_message(self, data: bytes) -> None:
        self.writer_blocked.set()
        await self.peer_gone.wait()
        raise trio.BrokenResourceError("peer gone")

    async def send_messages(self, batch: Sequence[bytes]) -> None:
        await self.send_message(batch[0])

    async def aclose(self) -> None:
        self.closed = True
        self._incoming.close()
        await trio.lowlevel.checkpoint()


def chatty_router(finished: list[int]) -> Router:
    async def chatty(ctx: RequestContext, params: None) -> dict[str, bool]:
        for index in range(CHUNKS):
            await ctx.connection.notify("test/chunk", {"index": index})
        finished.append(1)
        return {"ok": True}

    async def boom(ctx: RequestContext, params: None) -> None:
        raise RuntimeError("handler bug")

    return Router(
        [
            route("test/chatty", None, chatty, before_initialize=True),
            route("test/boom", None, boom, before_initialize=True),
        ]
    )


def request(request_id: int, method: str = "test/chatty") -> bytes:
    return envelope.encode_request(request_id, method, None)


async def test_writer_stopping_while_request_tasks_and_the_backlog_flusher_wait() -> None:
    """The race of issue 11: the writer fails while request tasks and the broadcast backlog
    flusher are blocked on a full outbound queue. They must end through the disconnect
    scope, and `run` must return normally (nothing reaches the server's nursery)."""
    stream = StallingStream()
    finished: list[int] = []
    connection = Connection(0, stream, chatty_router(finished), request_ids=itertools.count())
    requests = OUTBOUND_CAPACITY // CHUNKS + 8
    for request_id in range(requests):
        stream.inbound.send_nowait(request(request_id))
    async with trio.open_nursery() as nursery:
        nursery.start_soon(connection.run)
        await stream.writer_blocked.wait()
        await trio.testing.wait_all_tasks_blocked()
        # The queue is full: request tasks are parked in `send`; broadcasts go to the backlog
        # and its flusher parks in `send` too.
        assert connection._out_send.statistics().current_buffer_used == OUTBOUND_CAPACITY
        assert connection._out_send.statistics().tasks_waiting_send > 0
        for index in range(5):
            connection.broadcast_nowait("test/broadcast", envelope.encode_notification("test/b", index))
        await trio.testing.wait_all_tasks_blocked()
        assert connection._backlog_flusher
        waiting = connection._out_send.statistics().tasks_waiting_send
        stream.peer_gone.set()
        with trio.fail_after(5):
            await connection.closed.wait()
    assert waiting > 1
    assert connection.disconnect.cancel_called
    assert stream.closed
    assert len(finished) < requests
    assert not connection._backlog_flusher


async def test_sending_after_the_writer_stopped_cancels_only_tasks_of_that_connection() -> None:
    """A task inside the disconnect scope is cancelled; a task outside it (a turn that
    outlives its connection) gets its message dropped and goes on."""
    stream = StallingStream()
    connection = Connection(0, stream, chatty_router([]), request_ids=itertools.count())
    outside_went_on = False
    inside_cancelled = False
    async with trio.open_nursery() as nursery:
        nursery.start_soon(connection.run)
        await trio.testing.wait_all_tasks_blocked()

        async def inside() -> None:
            nonlocal inside_cancelled
            try:
                while True:
                    await connection.send(b"{}")
            except trio.Cancelled:
                inside_cancelled = True
                raise

        connection.nursery.start_soon(inside)
        await trio.testing.wait_all_tasks_blocked()
        stream.peer_gone.set()
        await connection.closed.wait()
        await connection.notify("test/late", {})
        await connection.send(b"{}")
        outside_went_on = True
    assert inside_cancelled
    assert outside_went_on


class FailingStream(StallingStream):
    """A transport whose writes fail with an error no transport is documented to raise."""

    async def send_message(self, data: bytes) -> None:
        raise OSError("unexpected transport failure")


async def test_an_unexpected_transport_error_closes_the_connection_and_is_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    stream = FailingStream()
    connection = Connection(7, stream, chatty_router([]), request_ids=itertools.count())
    stream.inbound.send_nowait(request(1))
    with caplog.at_level(logging.ERROR, logger="codex_trio.connection"), trio.fail_after(5):
        await connection.run()
    assert stream.closed
    assert any("connection 7" in record.getMessage() for record in caplog.records)


class BrokenReadStream(StallingStream):
    async def receive_message(self) -> bytes:
        raise ValueError("transport bug")


async def test_a_reader_failure_ends_that_connection_only(caplog: pytest.LogCaptureFixture) -> None:
    closed: list[int] = []

    async def on_closed(connection: Connection) -> None:
        closed.append(connection.id)
        raise RuntimeError("a family failed to release the connection")

    stream = BrokenReadStream()
    connection = Connection(3, stream, chatty_router([]), request_ids=itertools.count(), on_closed=on_closed)
    with caplog.at_level(logging.ERROR), trio.fail_after(5):
        await connection.run()
    assert closed == [3]
    messages = [record.getMessage() for record in caplog.records]
    assert any("connection 3 failed" in message for message in messages)
    assert any("connection 3: closing its resources failed" in message for message in messages)


async def test_close_deadline_bounds_the_flush_to_a_client_that_does_not_read() -> None:
    """Shutdown's budget: a connection told to close by a deadline is gone by then, even if
    its writer is stuck on a client that never reads."""
    stream = StallingStream()
    connection = Connection(0, stream, chatty_router([]), request_ids=itertools.count())
    async with trio.open_nursery() as nursery:
        nursery.start_soon(connection.run)
        await connection.send(b"{}")
        await stream.writer_blocked.wait()
        began = trio.current_time()
        connection.close(deadline=began + 0.2)
        with trio.fail_after(1):
            await connection.closed.wait()
    assert stream.closed


async def test_a_server_request_deadline_is_its_own_timeout_type() -> None:
    answers, incoming = trio.open_memory_channel[bytes](math.inf)

    class Quiet(StallingStream):
        async def send_message(self, data: bytes) -> None:
            await trio.lowlevel.checkpoint()

    stream = Quiet()
    connection = Connection(0, stream, chatty_router([]), request_ids=itertools.count())
    async with trio.open_nursery() as nursery:
        nursery.start_soon(connection.run)
        await trio.testing.wait_all_tasks_blocked()
        with pytest.raises(ServerRequestTimeout) as raised:
            await connection.request("item/tool/requestUserInput", {}, timeout=0.05)
        assert isinstance(raised.value, trio.TooSlowError)
        connection.close()
    del answers, incoming


async def test_the_dispatcher_answers_a_server_request_timeout_without_calling_it_a_bug(
    caplog: pytest.LogCaptureFixture,
) -> None:
    sent: list[Any] = []
    answered = trio.Event()

    class Recording(StallingStream):
        async def send_message(self, data: bytes) -> None:
            sent.append(envelope.parse(data))
            if isinstance(sent[-1], envelope.Response):
                answered.set()
            await trio.lowlevel.checkpoint()

        async def send_messages(self, batch: Sequence[bytes]) -> None:
            for data in batch:
                await self.send_message(data)

    async def ask(ctx: RequestContext, params: None) -> Any:
        return await ctx.connection.request("item/tool/requestUserInput", {}, timeout=0.05)

    stream = Recording()
    router = Router([route("test/ask", None, ask, before_initialize=True)])
    connection = Connection(0, stream, router, request_ids=itertools.count())
    stream.inbound.send_nowait(request(1, "test/ask"))
    with caplog.at_level(logging.WARNING):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(connection.run)
            with trio.fail_after(5):
                await answered.wait()
            connection.close()
    [reply] = [m for m in sent if isinstance(m, envelope.Response)]
    assert reply.error["code"] == -32603
    assert "did not answer item/tool/requestUserInput" in reply.error["message"]
    assert not any(record.exc_info for record in caplog.records)


async def test_a_reply_and_the_notifications_that_follow_it_leave_in_one_write(tmp_path: Any) -> None:
    """Issue 17: `initialize`'s reply and `remoteControl/status/changed` are queued back to back
    and written together, as one transport write."""
    writes: list[list[bytes]] = []
    written = trio.Event()

    class Recording(StallingStream):
        async def send_message(self, data: bytes) -> None:
            await self.send_messages([data])

        async def send_messages(self, batch: Sequence[bytes]) -> None:
            writes.append(list(batch))
            written.set()
            await trio.lowlevel.checkpoint()

    settings = ServerSettings(codex_home=tmp_path, cwd=tmp_path, listen=NoListen())
    stream = Recording()
    connection = Connection(0, stream, AppServer(settings).router, request_ids=itertools.count())
    initialize = {"clientInfo": {"name": "t", "version": "1"}}
    stream.inbound.send_nowait(envelope.encode_request(1, "initialize", initialize))
    async with trio.open_nursery() as nursery:
        nursery.start_soon(connection.run)
        with trio.fail_after(5):
            await written.wait()
        connection.close()
    first = [orjson.loads(data) for data in writes[0]]
    assert [message.get("id", message.get("method")) for message in first] == [
        1,
        "remoteControl/status/changed",
    ]
