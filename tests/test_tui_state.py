"""Per-thread state and catalogs the TUI uses: read markers, goals with continuation turns,
background terminals, bundled system skills, the model and feature catalogs, and
externalAgentConfig/detect. An in-process server, a scripted Responses server on 127.0.0.1.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
import trio

from codex_trio.api import goals
from codex_trio.client import ClientConnection
from codex_trio.protocol.errors import RpcError
from codex_trio.server import AppServer
from codex_trio.settings import ServerSettings
from tests.responses_server import FunctionCall, ResponsesServer, Shell, Stall, Text

Message = dict[str, Any]


@pytest.fixture
async def rpc(
    codex_home: Path, model: ResponsesServer, app_server: AppServer
) -> AsyncIterator[ClientConnection]:
    (codex_home / "config.toml").write_text(model.config_toml())
    connection = await app_server.connect()
    await connection.initialize("pytest", experimentalApi=True)
    yield connection
    await connection.aclose()


async def start_thread(rpc: ClientConnection, cwd: Path) -> str:
    result = await rpc.call(
        "thread/start", {"cwd": str(cwd), "sandbox": "danger-full-access", "approvalPolicy": "never"}
    )
    return str(result["thread"]["id"])


async def until(rpc: ClientConnection, accept: Callable[[Message], bool]) -> list[Message]:
    seen = []
    with trio.fail_after(20):
        while True:
            message = await rpc.receive()
            seen.append(message)
            if accept(message):
                return seen


def method(name: str) -> Callable[[Message], bool]:
    return lambda m: m.get("method") == name


async def run_turn(rpc: ClientConnection, thread_id: str, prompt: str) -> list[Message]:
    await rpc.call("turn/start", {"threadId": thread_id, "input": [{"type": "text", "text": prompt}]})
    return await until(rpc, method("turn/completed"))


# ---------------------------------------------------------------------------- read state
async def test_read_state_follows_turns_and_updates_with_revisions(
    rpc: ClientConnection, model: ResponsesServer, server_settings: ServerSettings
) -> None:
    thread_id = await start_thread(rpc, server_settings.cwd)
    with pytest.raises(RpcError, match="thread read state unavailable"):
        await rpc.call(
            "thread/readState/update",
            {"threadId": thread_id, "operation": {"type": "read"}, "expectedRevision": "x"},
        )
    model.enqueue(Text("hello"))
    seen = await run_turn(rpc, thread_id, "hi")
    turn_id = seen[-1]["params"]["turn"]["id"]
    changed = [m for m in seen if m.get("method") == "thread/readState/changed"]
    assert changed[-1]["params"]["readState"]["firstUnread"] == {"type": "turn", "turnId": turn_id}
    # before the thread goes idle, as the reference
    order = [m.get("method") for m in seen]
    assert order.index("thread/readState/changed") < order.index("turn/completed")
    revision = changed[-1]["params"]["readState"]["revision"]

    with pytest.raises(RpcError) as stale:
        await rpc.call(
            "thread/readState/update",
            {"threadId": thread_id, "operation": {"type": "read"}, "expectedRevision": "stale"},
        )
    assert stale.value.code == -32600
    assert stale.value.data["reason"] == "readStateConflict"
    assert stale.value.data["readState"]["revision"] == revision

    result = await rpc.call(
        "thread/readState/update",
        {"threadId": thread_id, "operation": {"type": "read"}, "expectedRevision": revision},
    )
    assert result["readState"]["firstUnread"] is None
    note = await until(rpc, method("thread/readState/changed"))
    assert note[-1]["params"] == {"threadId": thread_id, "readState": result["readState"]}
    read = await rpc.call("thread/read", {"threadId": thread_id})
    assert read["readState"] == result["readState"]

    unread = await rpc.call(
        "thread/readState/update",
        {
            "threadId": thread_id,
            "operation": {"type": "unread"},
            "expectedRevision": result["readState"]["revision"],
        },
    )
    assert unread["readState"]["firstUnread"] == {"type": "threadStart"}
    listed = await rpc.call("thread/list", {})
    assert listed["readStates"][thread_id] == unread["readState"]
    with pytest.raises(RpcError) as bad:
        await rpc.call(
            "thread/readState/update",
            {"threadId": "nope", "operation": {"type": "read"}, "expectedRevision": "x"},
        )
    assert bad.value.code == -32602


# ---------------------------------------------------------------------------- goals
async def test_goal_runs_continuation_turns_until_the_model_completes_it(
    rpc: ClientConnection, model: ResponsesServer, server_settings: ServerSettings
) -> None:
    thread_id = await start_thread(rpc, server_settings.cwd)
    assert await rpc.call("thread/goal/get", {"threadId": thread_id}) == {"goal": None}
    assert await rpc.call("thread/goal/clear", {"threadId": thread_id}) == {"cleared": False}
    model.enqueue(Text("working"), FunctionCall("update_goal", {"status": "complete"}), Text("done"))
    result = await rpc.call("thread/goal/set", {"threadId": thread_id, "objective": "write a poem"})
    assert result["goal"]["status"] == "active"
    assert result["goal"]["objective"] == "write a poem"
    first = await until(rpc, method("turn/completed"))
    goal_updates = [m for m in first if m.get("method") == "thread/goal/updated"]
    assert goal_updates[0]["params"]["turnId"] is None
    assert not [
        m for m in first if m.get("method") == "item/started" and m["params"]["item"]["type"] == "userMessage"
    ]
    # a turn a continuation follows leaves the read marker alone, as the reference
    assert not [m for m in first if m.get("method") == "thread/readState/changed"]
    second = await until(rpc, method("turn/completed"))
    assert [m for m in second if m.get("method") == "thread/readState/changed"]
    updates = [m["params"]["goal"] for m in second if m.get("method") == "thread/goal/updated"]
    assert updates[-1]["status"] == "complete"
    goal = (await rpc.call("thread/goal/get", {"threadId": thread_id}))["goal"]
    assert goal["status"] == "complete"
    assert goal["tokensUsed"] == 120  # the first turn; accounting stops once complete

    posts = model.posts
    assert len(posts) == 3
    first_input = posts[0].input
    assert {
        "type": "function_call_output",
        "name": "goal_objective",
        "namespace": "agent",
        "output": "write a poem",
    } in first_input
    context = first_input[-1]["content"][0]["text"]
    assert context.startswith('<codex_internal_context source="goal">')
    assert "- Tokens used: 0" in context
    names = [t.get("name") for t in posts[0].body["tools"]]
    assert {"get_goal", "create_goal", "update_goal"} <= set(names)
    # the second turn got a fresh continuation message, and the tool's answer has the goal
    assert posts[1].input[-1]["content"][0]["text"].startswith("<codex_internal_context")
    output = json.loads(posts[2].items_of_type("function_call_output")[-1]["output"])
    assert output["goal"]["status"] == "complete"
    await trio.sleep(0.2)
    assert len(model.posts) == 3  # no continuation after completion

    assert await rpc.call("thread/goal/clear", {"threadId": thread_id}) == {"cleared": True}
    assert await rpc.call("thread/goal/get", {"threadId": thread_id}) == {"goal": None}


async def test_goal_errors_and_persistence(
    rpc: ClientConnection, model: ResponsesServer, server_settings: ServerSettings, codex_home: Path
) -> None:
    thread_id = await start_thread(rpc, server_settings.cwd)
    with pytest.raises(RpcError, match="no goal exists"):
        await rpc.call("thread/goal/set", {"threadId": thread_id, "status": "paused"})
    with pytest.raises(RpcError, match="must not be empty"):
        await rpc.call("thread/goal/set", {"threadId": thread_id, "objective": ""})
    with pytest.raises(RpcError, match="at most 4000 characters"):
        await rpc.call("thread/goal/set", {"threadId": thread_id, "objective": "x" * 4001})
    with pytest.raises(RpcError, match="thread not found"):
        await rpc.call("thread/goal/get", {"threadId": "01a23b39-22f3-7f40-b224-0d7db5df2d6b"})
    result = await rpc.call(
        "thread/goal/set", {"threadId": thread_id, "objective": "later", "status": "paused"}
    )
    assert result["goal"]["status"] == "paused"
    await trio.sleep(0.1)
    assert model.posts == []  # a paused goal starts nothing
    assert (codex_home / "codex_trio_thread_state_1.sqlite").exists()


async def test_goal_continuations_are_bounded_and_interruptible(
    rpc: ClientConnection,
    model: ResponsesServer,
    server_settings: ServerSettings,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(goals, "MAX_AUTOMATIC_TURNS", 2)
    thread_id = await start_thread(rpc, server_settings.cwd)
    model.enqueue(Text("one"), Text("two"), Text("three"))
    await rpc.call("thread/goal/set", {"threadId": thread_id, "objective": "never ends"})
    for _ in range(2):
        await until(rpc, method("turn/completed"))
    goal = (await rpc.call("thread/goal/get", {"threadId": thread_id}))["goal"]
    assert goal["status"] == "paused"
    assert len(model.posts) == 2

    release = trio.Event()
    model.enqueue(Stall(release=release))
    resumed = await rpc.call("thread/goal/set", {"threadId": thread_id, "status": "active"})
    assert resumed["goal"]["status"] == "active"
    started = await until(rpc, method("turn/started"))
    turn_id = started[-1]["params"]["turn"]["id"]
    await model.wait_posts(3)
    await rpc.call("turn/interrupt", {"threadId": thread_id, "turnId": turn_id})
    done = await until(rpc, method("turn/completed"))
    assert done[-1]["params"]["turn"]["status"] == "interrupted"
    await trio.sleep(0.2)
    assert len(model.posts) == 3  # an interrupted goal turn starts no continuation


# ---------------------------------------------------------------------------- background terminals
async def test_background_terminals_outlive_the_turn_and_are_stopped(
    rpc: ClientConnection, model: ResponsesServer, server_settings: ServerSettings
) -> None:
    thread_id = await start_thread(rpc, server_settings.cwd)
    # not login shells: a killed login shell can leave a developer profile's lock behind
    first = Shell("sleep 30", extra={"yield_time_ms": 250, "login": False})
    second = Shell("sleep 31", extra={"yield_time_ms": 250, "login": False})
    model.enqueue(first, Text("left one running"), second, Text("and another"))
    await run_turn(rpc, thread_id, "start one")
    await run_turn(rpc, thread_id, "start another")
    listed = await rpc.call("thread/backgroundTerminals/list", {"threadId": thread_id})
    assert [t["command"] for t in listed["data"]] == ["sleep 31", "sleep 30"]
    assert [t["itemId"] for t in listed["data"]] == [second.call_id, first.call_id]
    assert listed["nextCursor"] is None
    page = await rpc.call("thread/backgroundTerminals/list", {"threadId": thread_id, "limit": 1})
    assert page["nextCursor"] == page["data"][0]["processId"]
    rest = await rpc.call(
        "thread/backgroundTerminals/list", {"threadId": thread_id, "cursor": page["nextCursor"]}
    )
    assert [t["command"] for t in rest["data"]] == ["sleep 30"]

    newest = listed["data"][0]["processId"]
    term = {"threadId": thread_id, "processId": newest}
    assert await rpc.call("thread/backgroundTerminals/terminate", term) == {"terminated": True}
    assert await rpc.call("thread/backgroundTerminals/terminate", term) == {"terminated": False}
    with pytest.raises(RpcError, match="invalid background terminal process id"):
        await rpc.call("thread/backgroundTerminals/terminate", {"threadId": thread_id, "processId": "zzz"})
    remaining = await rpc.call("thread/backgroundTerminals/list", {"threadId": thread_id})
    assert [t["command"] for t in remaining["data"]] == ["sleep 30"]
    assert await rpc.call("thread/backgroundTerminals/clean", {"threadId": thread_id}) == {}
    assert (await rpc.call("thread/backgroundTerminals/list", {"threadId": thread_id}))["data"] == []
    with pytest.raises(RpcError, match="thread not found"):
        await rpc.call(
            "thread/backgroundTerminals/clean", {"threadId": "01a23b39-22f3-7f40-b224-0d7db5df2d6b"}
        )


# ---------------------------------------------------------------------------- catalogs
async def test_system_skills_are_installed_and_can_be_disabled(
    rpc: ClientConnection, server_settings: ServerSettings, codex_home: Path
) -> None:
    listed = await rpc.call("skills/list", {"cwds": [str(server_settings.cwd)], "forceReload": True})
    skills = listed["data"][0]["skills"]
    names = [s["interface"]["displayName"] for s in skills]
    assert names == ["Image Gen", "OpenAI Docs", "Review Agent", "Skill Creator", "Skill Installer"]
    assert all(s["scope"] == "system" and s["enabled"] for s in skills)
    system = codex_home / "skills" / ".system"
    assert (system / ".codex-system-skills.marker").exists()
    assert (system / "review-agent" / "SKILL.md").exists()
    assert skills[3]["shortDescription"] == "Create or update a skill"

    assert await rpc.call("skills/config/write", {"name": "imagegen", "enabled": False}) == {
        "effectiveEnabled": False
    }
    path = skills[1]["path"]
    await rpc.call("skills/config/write", {"path": path, "enabled": False})
    await rpc.call("skills/config/write", {"name": "imagegen", "enabled": True})
    text = (codex_home / "config.toml").read_text()
    assert text.count("[[skills.config]]") == 2
    again = (await rpc.call("skills/list", {"cwds": [str(server_settings.cwd)]}))["data"][0]["skills"]
    assert [(s["name"], s["enabled"]) for s in again][:2] == [("imagegen", True), ("openai-docs", False)]
    with pytest.raises(RpcError) as both:
        await rpc.call("skills/config/write", {"enabled": False})
    assert both.value.code == -32602
    assert both.value.message == "skills/config/write requires exactly one of path or name"


async def test_model_and_feature_catalogs_are_the_references(rpc: ClientConnection) -> None:
    models = (await rpc.call("model/list", {"includeHidden": True}))["data"]
    assert len(models) == 12
    assert [m["id"] for m in models if m["isDefault"]] == ["gpt-6.1-sol"]
    visible = (await rpc.call("model/list", {}))["data"]
    assert "codex-auto-review" not in [m["id"] for m in visible]
    features = await rpc.call("experimentalFeature/list", {"limit": 1000})
    assert len(features["data"]) == 215
    by_name = {f["name"]: f for f in features["data"]}
    assert by_name["plugins"]["enabled"] is True


async def test_external_agent_detect_finds_nothing_to_import(
    rpc: ClientConnection, server_settings: ServerSettings
) -> None:
    params = {"includeHome": True, "cwds": [str(server_settings.cwd)]}
    assert await rpc.call("externalAgentConfig/detect", params) == {"items": [], "connectors": []}


# ---------------------------------------------------------------------------- thread/search
async def test_thread_search_matches_visible_messages_with_snippets(
    rpc: ClientConnection, model: ResponsesServer, server_settings: ServerSettings
) -> None:
    first = await start_thread(rpc, server_settings.cwd)
    model.enqueue(Text("hello there"))
    await run_turn(rpc, first, "hi")
    second = await start_thread(rpc, server_settings.cwd)
    model.enqueue(Text("a Hello again"))
    await run_turn(rpc, second, "second prompt")

    found = await rpc.call("thread/search", {"searchTerm": "HELLO"})
    assert [(d["thread"]["id"], d["snippet"]) for d in found["data"]] == [
        (second, "a Hello again"),
        (first, "hello there"),
    ]
    assert found["nextCursor"] is None and found["backwardsCursor"] is None
    page = await rpc.call("thread/search", {"searchTerm": "hello", "limit": 1})
    assert [d["thread"]["id"] for d in page["data"]] == [second]
    rest = await rpc.call("thread/search", {"searchTerm": "hello", "cursor": page["nextCursor"]})
    assert [d["thread"]["id"] for d in rest["data"]] == [first]
    # injected context (environment_context) is not a visible message
    assert (await rpc.call("thread/search", {"searchTerm": "environment_context"}))["data"] == []
    assert (await rpc.call("thread/search", {"searchTerm": "zzz"}))["data"] == []
    with pytest.raises(RpcError, match="requires a non-empty searchTerm"):
        await rpc.call("thread/search", {"searchTerm": ""})


async def test_background_terminals_die_with_the_thread(
    rpc: ClientConnection, model: ResponsesServer, server_settings: ServerSettings
) -> None:
    thread_id = await start_thread(rpc, server_settings.cwd)
    model.enqueue(Shell("exec sleep 29.5", extra={"yield_time_ms": 250, "login": False}), Text("ok"))
    await run_turn(rpc, thread_id, "go")
    with trio.fail_after(10):
        while not _sleepers("29.5"):  # noqa: ASYNC110 (polling /proc: nothing to wait on)
            await trio.sleep(0.05)
    listed = await rpc.call("thread/backgroundTerminals/list", {"threadId": thread_id})
    assert [t["command"] for t in listed["data"]] == ["exec sleep 29.5"]
    await rpc.call("thread/archive", {"threadId": thread_id})
    with trio.fail_after(10):
        while _sleepers("29.5"):  # noqa: ASYNC110
            await trio.sleep(0.05)


def _sleepers(arg: str) -> list[int]:
    """Live `sleep <arg>` processes (zombies excluded)."""
    found = []
    for proc in Path("/proc").iterdir():
        try:
            cmdline = (proc / "cmdline").read_bytes().split(b"\0")
            state = (proc / "status").read_text()
        except OSError:
            continue
        if cmdline[:2] == [b"sleep", arg.encode()] and "zombie" not in state:
            found.append(int(proc.name))
    return found
