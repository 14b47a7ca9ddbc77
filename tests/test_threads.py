"""The thread API over an in-process server: lifecycle, listing, metadata, fan-out, restarts.

Every test runs against both stores: the local one (rollout files + SQLite) and PostgreSQL
(a real database in the session's throwaway cluster, see conftest.py).
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import trio

from codex_trio.api.threads import ThreadsApi
from codex_trio.client import ClientConnection
from codex_trio.ids import now_ms, uuid7
from codex_trio.protocol.errors import RpcError
from codex_trio.server import AppServer, open_app_server
from codex_trio.settings import ServerSettings
from codex_trio.store import rollout
from codex_trio.testing import LeakCheck
from codex_trio.threads import git_info
from codex_trio.transport.listen import NoListen

UNKNOWN = "01a21391-ac16-7e42-b8ca-000000000000"
CONFIG = """\
model = "gpt-5.5"
model_provider = "mock"
thread_unload_delay_secs = 0

[model_providers.mock]
name = "m"
base_url = "http://127.0.0.1:9/v1"
"""


def exists(path: str) -> bool:
    return Path(path).exists()


def make_repo(repo: Path, home: Path) -> None:
    """A git repository with one commit on `main` and an origin remote."""
    repo.mkdir()
    env = {
        "GIT_CONFIG_GLOBAL": "/dev/null",
        "GIT_CONFIG_NOSYSTEM": "1",
        "HOME": str(home),
        "PATH": "/usr/bin:/bin",
    }
    for args in (
        ["init", "-q", "-b", "main"],
        ["-c", "user.name=t", "-c", "user.email=t@x", "commit", "-q", "--allow-empty", "-m", "x"],
        ["remote", "add", "origin", "https://example.com/r.git"],
    ):
        subprocess.run(["git", *args], cwd=repo, check=True, env=env, capture_output=True)


@pytest.fixture(params=["local", "postgres"])
def store_kind(request: pytest.FixtureRequest) -> str:
    kind: str = request.param
    return kind


@pytest.fixture
def settings(
    codex_home: Path, tmp_path: Path, store_kind: str, request: pytest.FixtureRequest
) -> ServerSettings:
    config = CONFIG
    if store_kind == "postgres":
        url = request.getfixturevalue("pg_url")
        config += f'\n[thread_store]\nkind = "postgres"\nurl = "{url}"\n'
    (codex_home / "config.toml").write_text(config)
    workspace = tmp_path / "workspace"
    workspace.mkdir(exist_ok=True)
    return ServerSettings(codex_home=codex_home, listen=NoListen(), cwd=workspace)


@pytest.fixture
async def server(leak_check: LeakCheck, settings: ServerSettings) -> AsyncIterator[AppServer]:
    async with open_app_server(settings) as app:
        yield app


async def connect(server: AppServer, **capabilities: Any) -> ClientConnection:
    client = await server.connect()
    await client.initialize("tests", **capabilities)
    return client


async def api(server: AppServer) -> ThreadsApi:
    return await server.family(ThreadsApi)


async def stored_lines(server: AppServer, thread_id: str) -> list[dict[str, Any]]:
    """The thread's rollout lines as its store holds them (a file, or PostgreSQL rows)."""
    store = (await api(server)).store
    record = await store.get(thread_id)
    assert record is not None
    return await store.read_lines(record)


def is_local(server: AppServer) -> bool:
    return server.settings.codex_home.joinpath("config.toml").read_text().find("[thread_store]") < 0


async def fake_turn(server: AppServer, thread_id: str, text: str, answer: str = "ok") -> str:
    """What the turns engine writes for a text turn, without a model."""
    thread = await (await api(server)).manager.get_loaded(thread_id)
    turn = uuid7()
    now = now_ms()
    user = {
        "type": "userMessage",
        "id": uuid7(),
        "content": [{"type": "text", "text": text, "text_elements": []}],
    }
    thread.mark_user_content(text)
    await thread.append_rollout(
        [
            rollout.task_started(turn, now // 1000),
            rollout.response_item(
                {"type": "message", "role": "user", "content": [{"type": "input_text", "text": text}]}
            ),
            rollout.item_completed(thread_id, turn, user, now, now),
            rollout.item_completed(
                thread_id, turn, {"type": "agentMessage", "id": f"msg_{turn}", "text": answer}, now, now
            ),
            rollout.task_complete(turn, answer, now // 1000, now // 1000, 5),
        ],
        durable=True,
    )
    return turn


async def start(client: ClientConnection, **params: Any) -> dict[str, Any]:
    result: dict[str, Any] = await client.call("thread/start", params)
    return result


async def listed(client: ClientConnection, **params: Any) -> list[str]:
    return [t["id"] for t in (await client.call("thread/list", params))["data"]]


async def error_of(client: ClientConnection, method: str, params: Any) -> RpcError:
    with pytest.raises(RpcError) as caught:
        await client.call(method, params)
    return caught.value


async def test_thread_start_answers_first_then_tells_every_connection(server: AppServer) -> None:
    with trio.fail_after(10):
        first, second = await connect(server), await connect(server)
        response = await first.request("thread/start", {})
        thread = response["result"]["thread"]
        assert thread["status"] == {"type": "idle"} and thread["ephemeral"] is False
        assert thread["modelProvider"] == "mock"
        if is_local(server):
            assert thread["path"].endswith(f"-{thread['id']}.jsonl")
        else:
            assert thread["path"] is None, "a PostgreSQL thread has no rollout file"
        assert response["result"]["sandbox"] == {"type": "readOnly", "networkAccess": False}
        started = await first.wait_for("thread/started")
        assert started["params"]["thread"]["id"] == thread["id"]
        other = await second.wait_for("thread/started")
        assert other["params"]["thread"]["id"] == thread["id"]
        assert await (await api(server)).store.get(thread["id"]) is None, "nothing is written before a turn"


async def test_a_thread_is_listed_and_written_only_once_it_has_a_user_message(server: AppServer) -> None:
    with trio.fail_after(10):
        client = await connect(server)
        empty = (await start(client))["thread"]["id"]
        used = (await start(client))["thread"]
        assert await listed(client) == []
        await fake_turn(server, used["id"], "alpha apple")
        assert await listed(client) == [used["id"]]
        assert not is_local(server) or exists(used["path"])
        page = await client.call("thread/list", {})
        assert page["data"][0]["preview"] == "alpha apple"
        assert page["readStates"][used["id"]]["firstUnread"]["type"] == "turn"
        assert empty not in await listed(client, modelProviders=[])
        summary = (await client.call("getConversationSummary", {"conversationId": used["id"]}))["summary"]
        assert summary["preview"] == "alpha apple" and summary["path"] == (used["path"] or "")
        error = await error_of(client, "getConversationSummary", {"conversationId": empty})
        assert error.message == f"no rollout found for conversation id {empty}"


async def test_a_restart_lists_every_thread_written_before_it(
    settings: ServerSettings, leak_check: LeakCheck
) -> None:
    with trio.fail_after(30):
        written: list[str] = []
        async with open_app_server(settings) as first:
            client = await connect(first)
            for n in range(30):
                thread_id = (await start(client))["thread"]["id"]
                await fake_turn(first, thread_id, f"message {n}")
                written.append(thread_id)
            await client.call("thread/name/set", {"threadId": written[3], "name": "named before restart"})
            await client.aclose()
        async with open_app_server(settings) as second:
            client = await connect(second)
            result = await client.call("thread/list", {"limit": 100})
            assert [t["id"] for t in result["data"]] == written[::-1]
            assert all(t["status"] == {"type": "notLoaded"} for t in result["data"])
            names = {t["id"]: t["name"] for t in result["data"]}
            assert names[written[3]] == "named before restart"
            read = await client.call("thread/read", {"threadId": written[0], "includeTurns": True})
            assert read["thread"]["turns"][0]["items"][0]["content"][0]["text"] == "message 0"
            await client.aclose()


async def test_list_pages_sorts_searches_and_filters(server: AppServer) -> None:
    with trio.fail_after(10):
        client = await connect(server)
        ids = []
        for text in ("alpha apple", "beta banana", "gamma apple"):
            thread_id = (await start(client))["thread"]["id"]
            await fake_turn(server, thread_id, text)
            ids.append(thread_id)
        first = await client.call("thread/list", {"limit": 2})
        assert [t["id"] for t in first["data"]] == ids[:0:-1]
        second = await client.call("thread/list", {"limit": 2, "cursor": first["nextCursor"]})
        assert [t["id"] for t in second["data"]] == ids[:1] and second["nextCursor"] is None
        assert await listed(client, sortKey="created_at", sortDirection="asc") == ids
        assert await listed(client, searchTerm="apple") == [ids[2], ids[0]]
        assert await listed(client, searchTerm="APPLE") == []
        assert await listed(client, modelProviders=["other"]) == []
        assert (
            await error_of(client, "thread/list", {"cursor": "garbage"})
        ).message == "invalid cursor: garbage"
        assert (await error_of(client, "thread/list", {"limit": -1})).code == -32600
        assert (await error_of(client, "thread/list", {"originators": ["x"]})).code == -32602


async def test_name_and_metadata_updates_are_broadcast_and_validated(server: AppServer) -> None:
    with trio.fail_after(10):
        client, other = await connect(server), await connect(server)
        thread_id = (await start(client))["thread"]["id"]
        assert await client.call("thread/name/set", {"threadId": thread_id, "name": "  Task  "}) == {}
        for connection in (client, other):
            updated = await connection.wait_for("thread/name/updated")
            assert updated["params"] == {"threadId": thread_id, "threadName": "Task"}
        git = {"sha": "abc", "branch": "main", "originUrl": "https://x/r.git"}
        result = await client.call("thread/metadata/update", {"threadId": thread_id, "gitInfo": git})
        assert result["thread"]["gitInfo"] == git
        result = await client.call(
            "thread/metadata/update", {"threadId": thread_id, "gitInfo": {"sha": None}}
        )
        assert result["thread"]["gitInfo"] == {**git, "sha": None}
        cleared = {"branch": None, "originUrl": None}
        result = await client.call("thread/metadata/update", {"threadId": thread_id, "gitInfo": cleared})
        assert result["thread"]["gitInfo"] is None
        messages = {
            "thread metadata update must include at least one field": {"threadId": thread_id},
            "gitInfo must include at least one field": {"threadId": thread_id, "gitInfo": {}},
            "gitInfo.sha must not be empty": {"threadId": thread_id, "gitInfo": {"sha": ""}},
            f"no rollout found for thread id {UNKNOWN}": {"threadId": UNKNOWN, "gitInfo": {"sha": "x"}},
        }
        for message, params in messages.items():
            assert (await error_of(client, "thread/metadata/update", params)).message == message
        ephemeral = (await start(client, ephemeral=True))["thread"]["id"]
        error = await error_of(client, "thread/name/set", {"threadId": ephemeral, "name": "x"})
        assert error.message == f"ephemeral thread does not support metadata updates: {ephemeral}"
        read = await client.call("thread/read", {"threadId": thread_id})
        assert read["thread"]["name"] == "Task"
        assert read["readState"] == {"firstUnread": None, "revision": f"initial:{thread_id}"}


async def test_concurrent_metadata_updates_to_one_thread_are_serialized(server: AppServer) -> None:
    with trio.fail_after(20):
        client = await connect(server)
        thread_id = (await start(client))["thread"]["id"]
        await fake_turn(server, thread_id, "busy thread")

        async def patch(git: dict[str, Any]) -> None:
            await client.call("thread/metadata/update", {"threadId": thread_id, "gitInfo": git})

        async def rename(n: int) -> None:
            await client.call("thread/name/set", {"threadId": thread_id, "name": f"name {n}"})

        async with trio.open_nursery() as nursery:
            for n in range(15):
                nursery.start_soon(patch, {"sha": f"sha{n}"})
                nursery.start_soon(patch, {"branch": f"branch{n}"})
                nursery.start_soon(rename, n)
                nursery.start_soon(fake_turn, server, thread_id, f"turn {n}")
        thread = (await client.call("thread/read", {"threadId": thread_id, "includeTurns": True}))["thread"]
        assert thread["gitInfo"]["sha"].startswith("sha") and thread["gitInfo"]["branch"].startswith("branch")
        assert thread["name"].startswith("name ")
        assert len(thread["turns"]) == 16
        lines = await stored_lines(server, thread_id)
        ordinals = [line["ordinal"] for line in lines]
        assert ordinals == list(range(len(lines))), "appends never interleave"


async def test_archive_unarchive_and_delete_notify_everyone(server: AppServer) -> None:
    with trio.fail_after(10):
        client, other = await connect(server), await connect(server)
        thread_id = (await start(client))["thread"]["id"]
        await fake_turn(server, thread_id, "archive me")
        assert await client.call("thread/archive", {"threadId": thread_id}) == {}
        status = await other.wait_for("thread/status/changed")
        assert status["params"] == {"threadId": thread_id, "status": {"type": "notLoaded"}}
        await other.wait_for("thread/archived")
        assert await listed(client) == [] and await listed(client, archived=True) == [thread_id]
        assert (await error_of(client, "thread/archive", {"threadId": thread_id})).message.startswith(
            "no rollout"
        )
        unarchived = await client.call("thread/unarchive", {"threadId": thread_id})
        assert unarchived["thread"]["status"] == {"type": "notLoaded"}
        await other.wait_for("thread/unarchived")
        error = await error_of(client, "thread/unarchive", {"threadId": thread_id})
        assert error.message == f"no archived rollout found for thread id {thread_id}"
        assert await client.call("thread/delete", {"threadId": thread_id}) == {}
        await other.wait_for("thread/deleted")
        error = await error_of(client, "thread/read", {"threadId": thread_id})
        assert error.message == f"thread not loaded: {thread_id}"
        ephemeral = (await start(client, ephemeral=True))["thread"]["id"]
        error = await error_of(client, "thread/delete", {"threadId": ephemeral})
        assert error.message == f"thread is not persisted and cannot be deleted: {ephemeral}"


async def test_the_last_subscriber_leaving_unloads_the_thread(server: AppServer) -> None:
    with trio.fail_after(10):
        client, watcher = await connect(server), await connect(server)
        thread_id = (await start(client))["thread"]["id"]
        assert await client.call("thread/unsubscribe", {"threadId": thread_id}) == {"status": "unsubscribed"}
        status = await watcher.wait_for("thread/status/changed")
        assert status["params"]["status"] == {"type": "notLoaded"}
        await watcher.wait_for("thread/closed")
        assert thread_id not in (await client.call("thread/loaded/list", {}))["data"]
        assert await client.call("thread/unsubscribe", {"threadId": thread_id}) == {"status": "notLoaded"}

        second = (await start(watcher))["thread"]["id"]
        await watcher.aclose()
        closed = await client.wait_for("thread/closed", lambda p: p["threadId"] == second)
        assert closed["params"] == {"threadId": second}


async def test_history_pages_through_turns_and_items(server: AppServer) -> None:
    with trio.fail_after(10):
        client = await connect(server)
        thread_id = (await start(client))["thread"]["id"]
        error = await error_of(client, "thread/turns/list", {"threadId": thread_id})
        assert "is not materialized yet" in error.message
        turns = [await fake_turn(server, thread_id, f"q{n}") for n in range(3)]
        page = await client.call("thread/turns/list", {"threadId": thread_id, "limit": 2})
        assert [t["id"] for t in page["data"]] == turns[:0:-1]
        assert page["data"][0]["itemsView"] == "summary"
        rest = await client.call(
            "thread/turns/list", {"threadId": thread_id, "limit": 2, "cursor": page["nextCursor"]}
        )
        assert [t["id"] for t in rest["data"]] == turns[:1] and rest["nextCursor"] is None
        items = await client.call("thread/items/list", {"threadId": thread_id, "turnId": turns[1]})
        assert [(e["turnId"], e["item"]["type"]) for e in items["data"]] == [
            (turns[1], "userMessage"),
            (turns[1], "agentMessage"),
        ]
        error = await error_of(client, "thread/turns/list", {"threadId": thread_id, "cursor": "nope"})
        assert error.message == "invalid cursor: nope"
        read = await client.call("thread/read", {"threadId": thread_id, "includeTurns": True})
        assert [t["status"] for t in read["thread"]["turns"]] == ["completed"] * 3
        await client.wait_for("deprecationNotice")


async def test_resume_and_fork_after_a_restart(settings: ServerSettings, leak_check: LeakCheck) -> None:
    with trio.fail_after(20):
        async with open_app_server(settings) as first:
            client = await connect(first)
            thread_id = (await start(client))["thread"]["id"]
            turn = await fake_turn(first, thread_id, "remember me")
            await fake_turn(first, thread_id, "and this")
            await client.aclose()
        async with open_app_server(settings) as second:
            client = await connect(second)
            resumed = await client.call("thread/resume", {"threadId": thread_id})
            assert resumed["thread"]["status"] == {"type": "idle"}
            assert len(resumed["thread"]["turns"]) == 2 and resumed["turnsBackwardsCursor"] is not None
            await client.wait_for("thread/status/changed")
            fork = await client.call("thread/fork", {"threadId": thread_id, "lastTurnId": turn})
            assert fork["thread"]["forkedFromId"] == thread_id
            assert [t["id"] for t in fork["thread"]["turns"]] == [turn]
            assert fork["thread"]["preview"] == "remember me"
            error = await error_of(client, "thread/fork", {"threadId": thread_id, "lastTurnId": UNKNOWN})
            assert error.message == f"turn not found: {UNKNOWN}"
            error = await error_of(client, "thread/resume", {"threadId": UNKNOWN})
            assert error.message == f"no rollout found for thread id {UNKNOWN}"
            error = await error_of(client, "thread/resume", {"threadId": "xyz"})
            assert error.message.startswith("invalid session id: invalid character")
            await client.aclose()


async def test_thread_start_is_refused_while_draining(server: AppServer) -> None:
    with trio.fail_after(10):
        client = await connect(server)
        server.draining = True
        try:
            error = await error_of(client, "thread/start", {})
        finally:
            server.draining = False
        assert error.data == {"reason": "serverShuttingDown"}


async def test_bad_input_gets_the_reference_errors(server: AppServer) -> None:
    with trio.fail_after(10):
        client = await connect(server)
        cases = {
            (
                "thread/read",
                "not-a-uuid",
            ): "invalid thread id: invalid character: expected an optional prefix of "
            "`urn:uuid:` followed by [0-9a-fA-F-], found `n` at 1",
            (
                "thread/read",
                "01a21391-ac16-7e42-b8ca-00000000000",
            ): "invalid thread id: invalid group length in group 4: expected 12, found 11",
            ("thread/read", UNKNOWN): f"thread not loaded: {UNKNOWN}",
        }
        for (method, thread_id), message in cases.items():
            assert (await error_of(client, method, {"threadId": thread_id})).message == message
        error = await error_of(client, "thread/start", {"sandbox": "bogus"})
        assert error.message.startswith("Invalid request: unknown variant `bogus`")
        error = await error_of(client, "thread/start", {"approvalPolicy": "sometimes"})
        assert error.message == (
            "Invalid request: unknown variant `sometimes`, expected one of "
            "`untrusted`, `on-request`, `granular`, `never`"
        )
        error = await error_of(client, "thread/start", {"modelProvider": "nope"})
        assert error.message == "failed to load configuration: Model provider `nope` not found"
        granular = {"granular": {"mcp_elicitations": True, "rules": True, "sandbox_approval": True}}
        error = await error_of(client, "thread/start", {"approvalPolicy": granular})
        assert error.message == "askForApproval.granular requires experimentalApi capability"
        error = await error_of(client, "getConversationSummary", {})
        assert error.message.endswith("untagged enum GetConversationSummaryParams")


@pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")
async def test_git_info_is_captured_and_written_with_the_rollout(server: AppServer, tmp_path: Path) -> None:
    with trio.fail_after(20):
        repo = tmp_path / "repo"
        await trio.to_thread.run_sync(make_repo, repo, tmp_path)
        info = await git_info(repo)
        assert info is not None and info.branch == "main" and info.origin_url == "https://example.com/r.git"
        assert info.sha is not None and len(info.sha) == 40
        assert await git_info(tmp_path / "workspace") is None

        client = await connect(server)
        thread_id = (await start(client, cwd=str(repo)))["thread"]["id"]
        thread = await (await api(server)).manager.get_loaded(thread_id)
        await (await api(server)).manager.capture_git(thread)
        await fake_turn(server, thread_id, "in a repo")
        read = (await client.call("thread/read", {"threadId": thread_id}))["thread"]
        assert read["gitInfo"] == {
            "sha": info.sha,
            "branch": "main",
            "originUrl": "https://example.com/r.git",
        }
        meta = (await stored_lines(server, thread_id))[0]
        assert meta["payload"]["git"]["commit_hash"] == info.sha
