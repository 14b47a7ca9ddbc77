"""Two server processes on one PostgreSQL database: the promises of a shared thread store.

Any server lists and reads every thread; a thread runs turns on one server at a time (its
lease); a killed server's lease expires; metadata updates from both servers lose nothing.
Real processes (`python -m codex_trio` over stdio), a real database, a scripted model.
"""

from __future__ import annotations

import os
import signal
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import psycopg
import pytest
import trio
import trio.lowlevel

from codex_trio.client import ClientConnection
from codex_trio.protocol.errors import RpcError
from codex_trio.testing import StdioServer, spawn_stdio_server
from tests.responses_server import ResponsesServer, Stall

TEST_TIMEOUT = 60
#: short leases, so a killed server's thread frees up quickly.
LEASE_TTL = 2


@pytest.fixture
def config(model: ResponsesServer, pg_url: str) -> str:
    return model.config_toml(
        extra=(
            "thread_unload_delay_secs = 0\n"
            f'[thread_store]\nkind = "postgres"\nurl = "{pg_url}"\nlease_ttl_secs = {LEASE_TTL}\n'
        )
    )


@asynccontextmanager
async def spawn(tmp_path: Path, name: str, config: str) -> AsyncIterator[StdioServer]:
    """A server process with its own CODEX_HOME (only the database is shared), initialized."""
    home = tmp_path / name
    workspace = home / "workspace"
    workspace.mkdir(parents=True)
    (home / "config.toml").write_text(config)
    async with trio.open_nursery() as nursery:
        try:
            async with spawn_stdio_server(home, workspace, nursery) as server:
                await server.client.initialize(name)
                yield server
        finally:
            nursery.cancel_scope.cancel()


def text(value: str) -> list[dict[str, Any]]:
    return [{"type": "text", "text": value, "text_elements": []}]


async def run_turn(client: ClientConnection, thread_id: str, prompt: str) -> str:
    result = await client.call("turn/start", {"threadId": thread_id, "input": text(prompt)})
    turn_id = str(result["turn"]["id"])
    done = await client.wait_for("turn/completed", lambda p: p["turn"]["id"] == turn_id)
    assert done["params"]["turn"]["status"] == "completed"
    return turn_id


async def refused_turn(client: ClientConnection, thread_id: str) -> RpcError:
    with pytest.raises(RpcError) as caught:
        await client.call("turn/start", {"threadId": thread_id, "input": text("mine now?")})
    return caught.value


async def started_with_turn(server: StdioServer, prompt: str) -> str:
    thread_id = str((await server.client.call("thread/start", {}))["thread"]["id"])
    await run_turn(server.client, thread_id, prompt)
    return thread_id


async def test_a_thread_moves_to_another_server_once_the_first_releases_it(
    tmp_path: Path, config: str, model: ResponsesServer
) -> None:
    with trio.fail_after(TEST_TIMEOUT):
        async with spawn(tmp_path, "a", config) as a, spawn(tmp_path, "b", config) as b:
            thread_id = await started_with_turn(a, "hello from A")
            listed = await b.client.call("thread/list", {})
            assert [t["id"] for t in listed["data"]] == [thread_id]
            assert listed["data"][0]["preview"] == "hello from A"
            read = await b.client.call("thread/read", {"threadId": thread_id, "includeTurns": True})
            assert len(read["thread"]["turns"]) == 1

            # A holds the lease: B may load the thread, but not run a turn on it.
            resumed = await b.client.call("thread/resume", {"threadId": thread_id})
            assert len(resumed["thread"]["turns"]) == 1
            error = await refused_turn(b.client, thread_id)
            assert error.code == -32600 and error.data["reason"] == "threadLeasedByAnotherServer"
            assert "loaded on another server" in error.message

            # A lets go (its last subscriber leaves: unloaded, lease released): B takes over.
            await a.client.call("thread/unsubscribe", {"threadId": thread_id})
            await a.client.wait_for("thread/closed")
            await run_turn(b.client, thread_id, "hello from B")
            # B's model saw the whole conversation, rebuilt from the shared store.
            assert model.posts[-1].texts("user")[-2:] == ["hello from A", "hello from B"]
            read = await a.client.call("thread/read", {"threadId": thread_id, "includeTurns": True})
            turns = read["thread"]["turns"]
            assert [t["items"][0]["content"][0]["text"] for t in turns] == ["hello from A", "hello from B"]
            # ...and now A is the one refused.
            await a.client.call("thread/resume", {"threadId": thread_id})
            error = await refused_turn(a.client, thread_id)
            assert error.data["reason"] == "threadLeasedByAnotherServer"


async def test_a_turn_on_a_thread_leased_by_another_server_is_refused(
    tmp_path: Path, config: str, model: ResponsesServer
) -> None:
    with trio.fail_after(TEST_TIMEOUT):
        async with spawn(tmp_path, "a", config) as a, spawn(tmp_path, "b", config) as b:
            thread_id = await started_with_turn(a, "busy on A")
            await b.client.call("thread/resume", {"threadId": thread_id})
            error = await refused_turn(b.client, thread_id)
            assert error.code == -32600 and error.data["reason"] == "threadLeasedByAnotherServer"
            # Archive and delete of a thread loaded elsewhere are refused the same way.
            for method in ("thread/archive", "thread/delete"):
                with pytest.raises(RpcError) as caught:
                    await b.client.call(method, {"threadId": thread_id})
                assert caught.value.data["reason"] == "threadLeasedByAnotherServer"
            # A still runs turns on it.
            await run_turn(a.client, thread_id, "still mine")


async def test_a_killed_servers_lease_expires_and_another_takes_the_thread(
    tmp_path: Path, config: str, model: ResponsesServer
) -> None:
    with trio.fail_after(TEST_TIMEOUT):
        async with spawn(tmp_path, "b", config) as b:
            async with spawn(tmp_path, "a", config) as a:
                thread_id = await started_with_turn(a, "before the crash")
                os.killpg(a.process.pid, signal.SIGKILL)
                await a.process.wait()
            await b.client.call("thread/resume", {"threadId": thread_id})
            # Until the lease expires (LEASE_TTL after A's last heartbeat) B is refused.
            while True:
                try:
                    await run_turn(b.client, thread_id, "after the crash")
                    break
                except RpcError as exc:
                    assert exc.data["reason"] == "threadLeasedByAnotherServer"
                    await trio.sleep(0.2)
            read = await b.client.call("thread/read", {"threadId": thread_id, "includeTurns": True})
            texts = [t["items"][0]["content"][0]["text"] for t in read["thread"]["turns"]]
            assert texts == ["before the crash", "after the crash"]


async def test_concurrent_metadata_updates_from_both_servers_lose_no_field(
    tmp_path: Path, config: str, model: ResponsesServer
) -> None:
    with trio.fail_after(TEST_TIMEOUT):
        async with spawn(tmp_path, "a", config) as a, spawn(tmp_path, "b", config) as b:
            thread_id = await started_with_turn(a, "metadata")

            # One request at a time per client (the stdio client is one stream); both servers at once.
            async def patch(client: ClientConnection, *fields: str) -> None:
                for n in range(15):
                    for field in fields:
                        params = {"threadId": thread_id, "gitInfo": {field: f"{field}{n}"}}
                        await client.call("thread/metadata/update", params)

            async with trio.open_nursery() as nursery:
                nursery.start_soon(patch, a.client, "sha", "originUrl")
                nursery.start_soon(patch, b.client, "branch")
            expected = {"sha": "sha14", "branch": "branch14", "originUrl": "originUrl14"}
            for client in (a.client, b.client):
                read = await client.call("thread/read", {"threadId": thread_id})
                assert read["thread"]["gitInfo"] == expected


async def test_a_server_that_loses_its_lease_mid_turn_fails_the_turn_and_keeps_serving(
    tmp_path: Path, config: str, model: ResponsesServer, pg_url: str
) -> None:
    with trio.fail_after(TEST_TIMEOUT):
        async with spawn(tmp_path, "a", config) as a:
            thread_id = await started_with_turn(a, "first")
            stall = Stall()
            model.enqueue(stall)
            result = await a.client.call("turn/start", {"threadId": thread_id, "input": text("second")})
            await stall.streaming.wait()
            # Another server took the thread over (A was partitioned past its lease, say).
            await trio.to_thread.run_sync(steal_lease, pg_url, thread_id)
            stall.release.set()
            done = await a.client.wait_for(
                "turn/completed", lambda p: p["turn"]["id"] == result["turn"]["id"]
            )
            assert done["params"]["turn"]["status"] == "failed"
            assert "leased by another server (thief)" in done["params"]["turn"]["error"]["message"]
            read = await a.client.call("thread/read", {"threadId": thread_id, "includeTurns": True})
            assert len(read["thread"]["turns"]) == 2 and read["thread"]["turns"][1]["status"] != "completed"
            error = await refused_turn(a.client, thread_id)
            assert error.data == {"reason": "threadLeasedByAnotherServer", "owner": "thief"}


def steal_lease(url: str, thread_id: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            "UPDATE codex_thread_leases SET owner = 'thief', expires_at = now() + interval '1 hour' "
            "WHERE thread_id = %s",
            (thread_id,),
        )
