"""The TUI's thread commands end to end: `thread/shellCommand`, `thread/compact/start` (and
automatic compaction), `review/start`, `thread/settings/update`, `permissionProfile/list`,
`thread/revert`, `thread/inject_items`.

An in-process server and the scripted Responses server on 127.0.0.1; each test checks what
the client sees and what reaches the model.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
import trio

from codex_trio.client import ClientConnection
from codex_trio.core import model_client
from codex_trio.core.compaction import SUMMARIZATION_PROMPT, SUMMARY_PREFIX
from codex_trio.core.review import UNCOMMITTED_PROMPT
from codex_trio.server import open_app_server
from codex_trio.settings import ServerSettings
from tests.responses_server import ResponsesServer, Shell, Text
from tests.test_turns import (
    TEST_TIMEOUT,
    Message,
    collect,
    completed,
    find,
    method_is,
    names,
    start_thread,
    start_turn,
)


@pytest.fixture(autouse=True)
def fast_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(model_client, "RETRY_BASE_DELAY", 0.001)


@pytest.fixture(autouse=True)
def plain_login_shell(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """User shell commands run `$SHELL -lc`: keep the host's login profile out of the tests."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))


def started_turn(messages: list[Message]) -> str:
    return str(next(m for m in messages if m.get("method") == "turn/started")["params"]["turn"]["id"])


async def next_turn(rpc: ClientConnection) -> list[Message]:
    """Every message up to the end of the next turn that starts."""
    seen = await collect(rpc, method_is("turn/started"))
    return seen + await collect(rpc, completed(started_turn(seen)))


# ---------------------------------------------------------------------------- thread/shellCommand
async def test_a_shell_command_is_a_user_shell_item_the_next_request_sees(
    rpc: ClientConnection, model: ResponsesServer, workspace: Path
) -> None:
    with trio.fail_after(TEST_TIMEOUT):
        result = await rpc.call("thread/start", {"cwd": str(workspace), "sandbox": "read-only"})
        thread_id = result["thread"]["id"]
        command = "echo from-the-user > user_shell.txt; cat user_shell.txt; exit 3"
        assert await rpc.call("thread/shellCommand", {"threadId": thread_id, "command": command}) == {}
        events = await next_turn(rpc)
        model.enqueue(Text("seen"))
        turn_id = await start_turn(rpc, thread_id, "what did I run?")
        await collect(rpc, completed(turn_id))
    assert names([m for m in events if m.get("method", "").startswith(("turn/", "item/"))]) == [
        "turn/started",
        "item/started",
        "item/commandExecution/outputDelta",
        "item/completed",
        "turn/completed",
    ]
    item = find(events, "item/completed", "commandExecution")[0]["params"]["item"]
    assert item["source"] == "userShell" and item["cwd"] == str(workspace)
    assert item["command"].endswith(f"-lc '{command}'")
    assert item["status"] == "failed" and item["exitCode"] == 3
    assert item["aggregatedOutput"] == "from-the-user\n"
    # the user's command is not bound by the thread's read-only sandbox
    assert (workspace / "user_shell.txt").read_text() == "from-the-user\n"
    assert events[-1]["params"]["turn"]["status"] == "completed"
    message = model.posts[0].texts("user")[-2]
    assert message.startswith(
        f"<user_shell_command>\n<command>\n{command}\n</command>\n<result>\nExit code: 3\n"
    )
    assert message.endswith("Output:\nfrom-the-user\n\n</result>\n</user_shell_command>")
    assert "\nDuration: " in message


async def test_a_shell_command_past_its_timeout_is_killed(
    rpc: ClientConnection, model: ResponsesServer, workspace: Path
) -> None:
    with trio.fail_after(TEST_TIMEOUT):
        thread_id = await start_thread(rpc, workspace)
        await rpc.call(
            "thread/shellCommand", {"threadId": thread_id, "command": "sleep 30", "timeoutMs": 200}
        )
        events = await next_turn(rpc)
    item = find(events, "item/completed", "commandExecution")[0]["params"]["item"]
    assert item["status"] == "failed" and item["exitCode"] == 124
    assert "timed out" in item["aggregatedOutput"]


async def test_shell_command_requests_are_validated(
    rpc: ClientConnection, model: ResponsesServer, workspace: Path
) -> None:
    with trio.fail_after(TEST_TIMEOUT):
        thread_id = await start_thread(rpc, workspace)
        with pytest.raises(Exception, match="command must not be empty"):
            await rpc.call("thread/shellCommand", {"threadId": thread_id, "command": "  "})
        with pytest.raises(Exception, match="non-negative"):
            await rpc.call("thread/shellCommand", {"threadId": thread_id, "command": "ls", "timeoutMs": -1})


# ---------------------------------------------------------------------------- compaction
async def test_compaction_summarises_and_the_next_turns_see_the_summary_even_after_a_restart(
    server_settings: ServerSettings, configured: Path, model: ResponsesServer, workspace: Path
) -> None:
    with trio.fail_after(TEST_TIMEOUT):
        async with open_app_server(server_settings) as server:
            rpc = await server.connect()
            await rpc.initialize("before")
            thread_id = await start_thread(rpc, workspace)
            model.enqueue(
                Text("first answer"), Text("second answer"), Text("THE-SUMMARY"), Text("third answer")
            )
            for prompt in ("first question", "second question"):
                await collect(rpc, completed(await start_turn(rpc, thread_id, prompt)))
            assert await rpc.call("thread/compact/start", {"threadId": thread_id}) == {}
            events = await next_turn(rpc)
            await collect(rpc, completed(await start_turn(rpc, thread_id, "third question")))
            await rpc.aclose()
        async with open_app_server(server_settings) as server:
            rpc = await server.connect()
            await rpc.initialize("after")
            await rpc.call("thread/resume", {"threadId": thread_id})
            model.enqueue(Text("fourth answer"))
            await collect(rpc, completed(await start_turn(rpc, thread_id, "fourth question")))
            await rpc.aclose()
    compaction = model.posts[2]
    assert compaction.body["tools"] == [] and compaction.body["parallel_tool_calls"] is False
    assert compaction.texts("user")[-1] == SUMMARIZATION_PROMPT
    assert compaction.texts("assistant") == ["first answer", "second answer"]
    assert json.loads(compaction.headers["x-codex-turn-metadata"])["request_kind"] == "compaction"
    items = [m["params"]["item"]["type"] for m in find(events, "item/completed")]
    assert items == ["contextCompaction"]
    assert not find(events, "item/agentMessage/delta"), "the summary is not shown as an answer"
    assert events[-1]["params"]["turn"]["status"] == "completed"
    summary = f"{SUMMARY_PREFIX}\nTHE-SUMMARY"
    third, fourth = model.posts[3], model.posts[4]
    assert third.texts("user")[-4:] == ["first question", "second question", summary, "third question"]
    assert third.texts("assistant") == []
    assert fourth.texts("user")[-5:] == [
        "first question",
        "second question",
        summary,
        "third question",
        "fourth question",
    ]
    assert fourth.texts("assistant") == ["third answer"]


async def test_a_turn_past_the_auto_compact_limit_compacts_first(
    codex_home: Path, model: ResponsesServer, rpc_factory: Any, workspace: Path
) -> None:
    (codex_home / "config.toml").write_text(model.config_toml(extra="model_auto_compact_token_limit = 100"))
    with trio.fail_after(TEST_TIMEOUT):
        rpc = await rpc_factory()
        thread_id = await start_thread(rpc, workspace)
        # each scripted response reports 120 tokens: past the limit of 100
        model.enqueue(Text("first answer"), Text("AUTO-SUMMARY"), Text("second answer"))
        await collect(rpc, completed(await start_turn(rpc, thread_id, "first question")))
        second = await start_turn(rpc, thread_id, "second question")
        events = await collect(rpc, completed(second))
    assert model.posts[1].texts("user")[-1] == SUMMARIZATION_PROMPT
    assert [m["params"]["item"]["type"] for m in find(events, "item/completed")] == [
        "contextCompaction",
        "userMessage",
        "agentMessage",
    ]
    assert model.posts[2].texts("user")[-3:] == [
        "first question",
        f"{SUMMARY_PREFIX}\nAUTO-SUMMARY",
        "second question",
    ]


@pytest.fixture
async def rpc_factory(app_server: Any) -> Any:
    async def make() -> ClientConnection:
        connection = await app_server.connect()
        await connection.initialize("pytest", experimentalApi=True)
        return connection

    return make


# ---------------------------------------------------------------------------- review
def git(cwd: Path, *args: str) -> str:
    done = subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@t.invalid", *args],
        cwd=cwd,
        check=True,
        capture_output=True,
        text=True,
    )
    return done.stdout.strip()


async def test_a_review_runs_apart_and_its_findings_reach_the_thread(
    rpc: ClientConnection, model: ResponsesServer, workspace: Path
) -> None:
    git(workspace, "init", "-q")
    (workspace / "a.txt").write_text("one\n")
    findings = {
        "findings": [
            {
                "title": "[P2] Off by one",
                "body": "The loop stops early.",
                "confidence_score": 0.5,
                "priority": 2,
                "code_location": {
                    "absolute_file_path": str(workspace / "a.txt"),
                    "line_range": {"start": 1, "end": 2},
                },
            }
        ],
        "overall_correctness": "patch is incorrect",
        "overall_explanation": "One bug.",
        "overall_confidence_score": 0.6,
    }
    location = f"{workspace / 'a.txt'}:1-2"
    rendered = f"One bug.\n\nReview comment:\n\n- [P2] Off by one — {location}\n  The loop stops early."
    with trio.fail_after(TEST_TIMEOUT):
        thread_id = await start_thread(rpc, workspace)
        model.enqueue(Text("earlier answer"), Text(json.dumps(findings)), Text("will fix"))
        await collect(rpc, completed(await start_turn(rpc, thread_id, "earlier question")))
        result = await rpc.call(
            "review/start", {"threadId": thread_id, "target": {"type": "uncommittedChanges"}}
        )
        assert result["reviewThreadId"] == thread_id
        assert result["turn"]["items"][0]["content"][0]["text"] == "current changes"
        events = await collect(rpc, completed(result["turn"]["id"]))
        await collect(rpc, completed(await start_turn(rpc, thread_id, "fix it")))
    kinds = [m["params"]["item"]["type"] for m in find(events, "item/completed")]
    assert kinds == ["enteredReviewMode", "userMessage", "exitedReviewMode", "agentMessage"]
    entered = find(events, "item/completed", "enteredReviewMode")[0]["params"]["item"]
    assert entered["review"] == "current changes"
    exited = find(events, "item/completed", "exitedReviewMode")[0]["params"]["item"]
    assert exited["review"] == rendered
    assert not find(events, "item/agentMessage/delta"), "the reviewer's raw JSON is not shown"
    assert events[-1]["params"]["turn"]["items"][0]["text"] == rendered
    review = model.posts[1]
    assert review.texts("developer")[0].startswith("# Review guidelines")
    assert review.texts("user")[-1] == UNCOMMITTED_PROMPT
    assert "earlier question" not in review.texts("user"), "the reviewer sees only its task"
    assert "apply_patch" not in review.tool_names()
    after = model.posts[2]
    assert after.texts("user")[-2].startswith("<user_action>\n") and rendered in after.texts("user")[-2]
    assert after.texts("assistant") == ["earlier answer", rendered]
    assert UNCOMMITTED_PROMPT not in after.texts("user")


@pytest.mark.parametrize(
    ("target", "hint", "prompt_part"),
    [
        ({"type": "custom", "instructions": "Check the docs"}, "Check the docs", "Check the docs"),
        (
            {"type": "commit", "sha": "abcdef1234567", "title": "Fix it"},
            "commit abcdef1: Fix it",
            '("Fix it")',
        ),
        ({"type": "baseBranch", "branch": "main"}, "changes against 'main'", "base branch 'main'"),
    ],
)
async def test_review_targets_have_the_reference_labels(
    rpc: ClientConnection,
    model: ResponsesServer,
    workspace: Path,
    target: dict[str, Any],
    hint: str,
    prompt_part: str,
) -> None:
    with trio.fail_after(TEST_TIMEOUT):
        thread_id = await start_thread(rpc, workspace)
        model.enqueue(Text("not json at all"))
        result = await rpc.call("review/start", {"threadId": thread_id, "target": target})
        events = await collect(rpc, completed(result["turn"]["id"]))
    assert find(events, "item/completed", "enteredReviewMode")[0]["params"]["item"]["review"] == hint
    assert prompt_part in model.posts[0].texts("user")[-1]
    exited = find(events, "item/completed", "exitedReviewMode")[0]["params"]["item"]
    assert exited["review"] == "not json at all"


async def test_review_requests_are_validated(
    rpc: ClientConnection, model: ResponsesServer, workspace: Path
) -> None:
    with trio.fail_after(TEST_TIMEOUT):
        thread_id = await start_thread(rpc, workspace)
        with pytest.raises(Exception, match="instructions must not be empty"):
            await rpc.call(
                "review/start", {"threadId": thread_id, "target": {"type": "custom", "instructions": ""}}
            )
        with pytest.raises(Exception, match="detached"):
            await rpc.call(
                "review/start",
                {"threadId": thread_id, "target": {"type": "uncommittedChanges"}, "delivery": "detached"},
            )


# ---------------------------------------------------------------------------- settings
async def test_settings_update_applies_to_the_next_turn(
    rpc_factory: Any, model: ResponsesServer, configured: Path, workspace: Path
) -> None:
    with trio.fail_after(TEST_TIMEOUT):
        rpc = await rpc_factory()
        thread_id = await start_thread(rpc, workspace)
        mode = {
            "mode": "default",
            "settings": {"model": "gpt-5.5", "reasoning_effort": None, "developer_instructions": None},
        }
        first = await rpc.call(
            "turn/start",
            {"threadId": thread_id, "input": [{"type": "text", "text": "one"}], "collaborationMode": mode},
        )
        await collect(rpc, completed(first["turn"]["id"]))
        plan = {
            "mode": "plan",
            "settings": {"model": "gpt-5.4", "reasoning_effort": "high", "developer_instructions": None},
        }
        update = {
            "threadId": thread_id,
            "collaborationMode": plan,
            "permissions": ":workspace",
            "serviceTier": "fast",
        }
        assert await rpc.call("thread/settings/update", update) == {}
        note = (await collect(rpc, method_is("thread/settings/updated")))[-1]["params"]
        await collect(rpc, completed(await start_turn(rpc, thread_id, "two")))
    settings = note["threadSettings"]
    assert settings["sandboxPolicy"]["type"] == "workspaceWrite"
    assert settings["activePermissionProfile"] == {"id": ":workspace", "extends": None}
    assert settings["serviceTier"] == "fast"
    assert settings["collaborationMode"]["mode"] == "plan"
    assert settings["collaborationMode"]["settings"]["developer_instructions"].startswith("# Plan Mode")
    before, after = model.posts
    assert any(
        t.startswith("<collaboration_mode># Collaboration Mode: Default") for t in before.texts("developer")
    )
    assert any(t.startswith("<collaboration_mode># Plan Mode") for t in after.texts("developer"))
    assert not any("Collaboration Mode: Default" in t for t in after.texts("developer"))
    assert after.body["model"] == "gpt-5.4" and after.body["reasoning"]["effort"] == "high"
    assert any("working directory and the writable roots" in t for t in after.texts("developer"))


async def test_settings_update_is_experimental_and_validated(
    rpc: ClientConnection, rpc_factory: Any, model: ResponsesServer, workspace: Path
) -> None:
    with trio.fail_after(TEST_TIMEOUT):
        thread_id = await start_thread(rpc, workspace)
        with pytest.raises(Exception, match="experimental"):
            await rpc.call("thread/settings/update", {"threadId": thread_id, "model": "x"})
        experimental = await rpc_factory()
        with pytest.raises(Exception, match="unknown permissions profile"):
            await experimental.call("thread/settings/update", {"threadId": thread_id, "permissions": ":nope"})


async def test_permission_profiles_are_the_reference_built_ins(rpc: ClientConnection) -> None:
    result = await rpc.call("permissionProfile/list", {})
    assert result == {
        "data": [
            {"id": ":read-only", "description": None, "allowed": True},
            {"id": ":workspace", "description": None, "allowed": True},
            {"id": ":danger-full-access", "description": None, "allowed": True},
        ],
        "nextCursor": None,
    }


# ---------------------------------------------------------------------------- revert, inject
async def test_revert_drops_later_turns_from_what_the_model_sees_even_after_a_restart(
    server_settings: ServerSettings, configured: Path, model: ResponsesServer, workspace: Path
) -> None:
    with trio.fail_after(TEST_TIMEOUT):
        async with open_app_server(server_settings) as server:
            rpc = await server.connect()
            await rpc.initialize("before")
            thread_id = await start_thread(rpc, workspace)
            model.enqueue(Text("answer one"), Text("answer two"), Text("answer edited"))
            await collect(rpc, completed(await start_turn(rpc, thread_id, "question one")))
            second = await start_turn(rpc, thread_id, "question two")
            await collect(rpc, completed(second))
            result = await rpc.call("thread/revert", {"threadId": thread_id, "beforeTurnId": second})
            assert result["thread"]["id"] == thread_id and result["thread"]["turns"] == []
            await collect(rpc, method_is("thread/reverted"))
            await collect(rpc, completed(await start_turn(rpc, thread_id, "question two, edited")))
            with pytest.raises(Exception, match="not found"):
                await rpc.call("thread/revert", {"threadId": thread_id, "beforeTurnId": "nope"})
            await rpc.aclose()
        async with open_app_server(server_settings) as server:
            rpc = await server.connect()
            await rpc.initialize("after")
            await rpc.call("thread/resume", {"threadId": thread_id})
            listed = await rpc.call("thread/turns/list", {"threadId": thread_id})
            assert [t["items"][0]["content"][0]["text"] for t in reversed(listed["data"])] == [
                "question one",
                "question two, edited",
            ]
            model.enqueue(Text("answer three"))
            await collect(rpc, completed(await start_turn(rpc, thread_id, "question three")))
            await rpc.aclose()
    edited, replay = model.posts[2], model.posts[3]
    assert edited.texts("user")[-2:] == ["question one", "question two, edited"]
    assert edited.texts("assistant") == ["answer one"]
    assert replay.texts("user")[-3:] == ["question one", "question two, edited", "question three"]
    assert "question two" not in replay.texts("user")


async def test_injected_items_reach_the_next_request(
    rpc: ClientConnection, model: ResponsesServer, workspace: Path
) -> None:
    injected = {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "INJECTED"}]}
    with trio.fail_after(TEST_TIMEOUT):
        thread_id = await start_thread(rpc, workspace)
        assert await rpc.call("thread/inject_items", {"threadId": thread_id, "items": [injected]}) == {}
        with pytest.raises(Exception, match="Responses API items"):
            await rpc.call("thread/inject_items", {"threadId": thread_id, "items": [1]})
        model.enqueue(Text("ok"), Shell("true"))
        await collect(rpc, completed(await start_turn(rpc, thread_id, "after")))
    assert model.posts[0].texts("user")[-2:] == ["INJECTED", "after"]
