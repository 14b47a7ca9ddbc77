"""Server lifecycle: detached work, the two-stage drain, broadcasts and slow consumers."""

from __future__ import annotations

from typing import Any

import pytest
import trio
import trio.testing

from codex_trio.connection import (
    BROADCAST_BACKLOG,
    FLUSH_TIMEOUT,
    OUTBOUND_CAPACITY,
    SLOW_CONSUMER_GRACE,
    WRITE_BATCH_BYTES,
    Connection,
)
from codex_trio.protocol.errors import RpcError
from codex_trio.server import AppServer
from codex_trio.settings import ServerSettings
from codex_trio.transport.memory import MEMORY_CAPACITY, MemoryMessageStream, memory_message_stream_pair


async def test_detached_work_outlives_its_request_and_gets_the_drain_grace(
    leak_check: Any, server_settings: ServerSettings, autojump_clock: trio.testing.MockClock
) -> None:
    finished: list[str] = []
    server = AppServer(server_settings)
    async with trio.open_nursery() as nursery:
        await nursery.start(server.run)

        async def quick() -> None:
            await trio.sleep(server_settings.drain_grace / 2)
            finished.append("quick")

        async def slow() -> None:
            try:
                await trio.sleep(3600)
            finally:
                finished.append("slow cancelled")

        server.start_detached(quick, name="quick")
        server.start_detached(slow, name="slow")
        began = trio.current_time()
        server.shutdown()
        await server.stopped.wait()
        assert trio.current_time() - began == pytest.approx(server_settings.drain_grace)
    assert finished == ["quick", "slow cancelled"]


async def test_draining_refuses_new_detached_work_with_the_reference_error(
    leak_check: Any, server_settings: ServerSettings
) -> None:
    server = AppServer(server_settings)
    async with trio.open_nursery() as nursery:
        await nursery.start(server.run)
        held = trio.Event()

        async def hold() -> None:
            await held.wait()

        server.start_detached(hold, name="hold")
        server.shutdown()
        await trio.testing.wait_all_tasks_blocked()
        assert server.draining
        with pytest.raises(RpcError) as caught:
            server.start_detached(hold, name="late")
        assert caught.value.code == -32600
        assert caught.value.data == {"reason": "serverShuttingDown"}
        held.set()


async def test_force_shutdown_stops_at_once(leak_check: Any, server_settings: ServerSettings) -> None:
    server = AppServer(server_settings)
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            await nursery.start(server.run)

            async def forever() -> None:
                await trio.sleep_forever()

            server.start_detached(forever, name="forever")
            server.force_shutdown()
    assert server.stopped.is_set()


async def test_shutdown_closes_every_connection(app_server: AppServer) -> None:
    clients = [await app_server.connect() for _ in range(3)]
    for c in clients:
        await c.initialize()
    app_server.shutdown()
    with trio.fail_after(5):
        for c in clients:
            await c.closed.wait()
        await app_server.stopped.wait()


async def test_broadcasts_reach_initialized_connections_that_did_not_opt_out(app_server: AppServer) -> None:
    plain, opted_out, uninitialized = [await app_server.connect() for _ in range(3)]
    await plain.initialize()
    await opted_out.initialize(optOutNotificationMethods=["test/hello", "remoteControl/status/changed"])
    await plain.receive()
    app_server.broadcaster.broadcast("test/hello", {"n": 1})
    app_server.broadcaster.broadcast("test/other", {"n": 2})
    assert (await plain.wait_for("test/hello"))["params"] == {"n": 1}
    assert (await opted_out.receive())["method"] == "test/other", "opted-out methods are skipped"
    with trio.move_on_after(0.05):
        await uninitialized.receive()
        pytest.fail("an uninitialized connection got a broadcast")
    for c in (plain, opted_out, uninitialized):
        await c.aclose()


async def _stalled_connection(server: AppServer) -> tuple[MemoryMessageStream, Connection]:
    """A client that initializes, then never reads again; and its server-side connection."""
    server_end, client_end = memory_message_stream_pair()
    server.adopt(server_end, "backpressure")
    await client_end.send_message(
        b'{"id":1,"method":"initialize","params":{"clientInfo":{"name":"s","version":"1"}}}'
    )
    await trio.testing.wait_all_tasks_blocked()
    (connection,) = [c for c in server.broadcaster.connections if c.stream is server_end]
    assert connection.session.initialized
    return client_end, connection


async def test_a_stalled_client_is_dropped_after_the_grace_and_others_are_not_held_up(
    app_server: AppServer, autojump_clock: trio.testing.MockClock
) -> None:
    reader = await app_server.connect()
    await reader.initialize()
    await reader.receive()
    stalled, connection = await _stalled_connection(app_server)
    with trio.fail_after(SLOW_CONSUMER_GRACE * 3):
        # Fill the stalled client's pipe, its outbound queue, and part of its backlog.
        for n in range(MEMORY_CAPACITY + OUTBOUND_CAPACITY + 10):
            app_server.broadcaster.broadcast("test/tick", {"n": n})
            assert (await reader.receive())["params"] == {"n": n}, "a stalled peer never delays the others"
        assert len(app_server.broadcaster.connections) == 2
        began = trio.current_time()
        await connection.closed.wait()
    # Dropped after the grace; the writer then gets FLUSH_TIMEOUT to hand over what it holds.
    assert trio.current_time() - began == pytest.approx(SLOW_CONSUMER_GRACE + FLUSH_TIMEOUT, abs=0.5)
    await reader.aclose()
    await stalled.aclose()


async def test_a_client_that_overflows_the_backlog_is_dropped_at_once(app_server: AppServer) -> None:
    stalled, connection = await _stalled_connection(app_server)
    with trio.fail_after(5):
        sent = 0
        while not connection.disconnect.cancel_called:
            app_server.broadcaster.broadcast("test/tick", {"n": sent})
            sent += 1
            await trio.lowlevel.checkpoint()
        await connection.closed.wait()
    # What a stalled client can cost: the pipe, one write batch, the queue and the backlog.
    one_message = len(b'{"method":"test/tick","params":{"n":10000},"emittedAtMs":1795631161387}')
    bound = MEMORY_CAPACITY + WRITE_BATCH_BYTES // one_message + OUTBOUND_CAPACITY + BROADCAST_BACKLOG + 2
    assert sent <= bound
    await stalled.aclose()
