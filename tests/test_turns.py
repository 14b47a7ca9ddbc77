"""Turns end to end: an in-process server, a scripted Responses server on 127.0.0.1.

Each test starts a thread, scripts the model's replies and checks what a client sees: the
event order, approvals and their resolution, interrupts, steering, retries and failures,
and what the model was sent.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import trio

from codex_trio.api.turns import TurnsApi
from codex_trio.client import ClientConnection
from codex_trio.core import model_client
from codex_trio.core.tools import ToolCall, ToolOutput, ToolTurn
from codex_trio.server import AppServer, open_app_server
from codex_trio.settings import ServerSettings
from tests.responses_server import (
    Dropped,
    FunctionCall,
    Patch,
    Reasoning,
    ResponsesServer,
    Shell,
    Stall,
    Status,
    Text,
    add_file,
)

#: every test's absolute bound (seconds).
TEST_TIMEOUT = 30

Message = dict[str, Any]


@pytest.fixture(autouse=True)
def fast_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(model_client, "RETRY_BASE_DELAY", 0.001)


async def start_thread(rpc: ClientConnection, workspace: Path, approval: str = "never") -> str:
    result = await rpc.call(
        "thread/start", {"cwd": str(workspace), "sandbox": "danger-full-access", "approvalPolicy": approval}
    )
    return str(result["thread"]["id"])


def text(value: str) -> list[dict[str, Any]]:
    return [{"type": "text", "text": value, "text_elements": []}]


async def start_turn(rpc: ClientConnection, thread_id: str, prompt: str) -> str:
    result = await rpc.call("turn/start", {"threadId": thread_id, "input": text(prompt)})
    assert result["turn"]["status"] == "inProgress"
    return str(result["turn"]["id"])


async def collect(rpc: ClientConnection, until: Callable[[Message], bool]) -> list[Message]:
    """Every message up to and including the first one `until` accepts."""
    seen = []
    while True:
        message = await rpc.receive()
        seen.append(message)
        if until(message):
            return seen


def completed(turn_id: str) -> Callable[[Message], bool]:
    return lambda m: m.get("method") == "turn/completed" and m["params"]["turn"]["id"] == turn_id


def method_is(name: str) -> Callable[[Message], bool]:
    return lambda m: m.get("method") == name


def names(messages: list[Message]) -> list[str]:
    return [m["method"] for m in messages if "method" in m]


def find(messages: list[Message], method: str, item_type: str | None = None) -> list[Message]:
    return [
        m
        for m in messages
        if m.get("method") == method and (item_type is None or m["params"]["item"]["type"] == item_type)
    ]


# ---------------------------------------------------------------------------- text turns
async def test_a_text_turn_streams_in_the_reference_order(
    rpc: ClientConnection, model: ResponsesServer, workspace: Path
) -> None:
    with trio.fail_after(TEST_TIMEOUT):
        thread_id = await start_thread(rpc, workspace)
        model.enqueue(Text("Hello there, friend!", pieces=4))
        turn_id = await start_turn(rpc, thread_id, "Say hello")
        events = await collect(rpc, completed(turn_id))
    turn_events = [m for m in events if m.get("method", "").startswith(("turn/", "item/", "thread/token"))]
    assert names(turn_events) == [
        "turn/started",
        "item/started",
        "item/completed",
        "item/started",
        *["item/agentMessage/delta"] * 4,
        "item/completed",
        "thread/tokenUsage/updated",
        "turn/completed",
    ]
    assert turn_events[1]["params"]["item"]["type"] == "userMessage"
    agent = turn_events[-3]["params"]["item"]
    assert agent["type"] == "agentMessage" and agent["text"] == "Hello there, friend!"
    final = turn_events[-1]["params"]["turn"]
    assert final["status"] == "completed" and final["items"] == [agent] and final["itemsView"] == "summary"
    statuses = [m["params"]["status"] for m in events if m.get("method") == "thread/status/changed"]
    assert statuses == [{"type": "active", "activeFlags": []}, {"type": "idle"}]
    body = model.posts[0].body
    assert body["stream"] is True and body["model"] == "gpt-5.5"
    assert {t.get("name") for t in body["tools"]} >= {"exec_command", "write_stdin", "apply_patch"}
    assert model.posts[0].texts("user")[-1] == "Say hello"


async def test_reasoning_summary_becomes_a_reasoning_item_before_the_answer(
    rpc: ClientConnection, model: ResponsesServer, workspace: Path
) -> None:
    with trio.fail_after(TEST_TIMEOUT):
        thread_id = await start_thread(rpc, workspace)
        model.enqueue(Reasoning("**Thinking** about it", "answer"))
        turn_id = await start_turn(rpc, thread_id, "think")
        events = await collect(rpc, completed(turn_id))
    reasoning = find(events, "item/completed", "reasoning")[0]["params"]["item"]
    assert reasoning["summary"] == ["**Thinking** about it"]
    deltas = [m["params"]["delta"] for m in events if m.get("method") == "item/reasoning/summaryTextDelta"]
    assert "".join(deltas) == "**Thinking** about it"
    order = [m["params"]["item"]["type"] for m in find(events, "item/completed")]
    assert order == ["userMessage", "reasoning", "agentMessage"]


async def test_the_next_request_carries_the_whole_history(
    rpc: ClientConnection, model: ResponsesServer, workspace: Path
) -> None:
    with trio.fail_after(TEST_TIMEOUT):
        thread_id = await start_thread(rpc, workspace)
        model.enqueue(Text("first answer"), Text("second answer"))
        for prompt in ("first question", "second question"):
            turn_id = await start_turn(rpc, thread_id, prompt)
            await collect(rpc, completed(turn_id))
    second = model.posts[1]
    assert second.texts("user")[-2:] == ["first question", "second question"]
    assert second.texts("assistant") == ["first answer"]


# ---------------------------------------------------------------------------- interrupts
async def test_interrupt_mid_stream_drops_the_model_stream_and_marks_the_next_request(
    rpc: ClientConnection, model: ResponsesServer, workspace: Path
) -> None:
    stall = Stall(before="half-said-zq ")
    with trio.fail_after(TEST_TIMEOUT):
        thread_id = await start_thread(rpc, workspace)
        model.enqueue(stall, Text("fresh"))
        turn_id = await start_turn(rpc, thread_id, "go slowly")
        await collect(rpc, method_is("item/agentMessage/delta"))
        assert await rpc.call("turn/interrupt", {"threadId": thread_id, "turnId": turn_id}) == {}
        events = await collect(rpc, completed(turn_id))
        await model.posts[0].finished.wait()
        assert model.posts[0].dropped
        turn = events[-1]["params"]["turn"]
        assert turn["status"] == "interrupted" and turn["items"] == []
        assert not find(events, "item/completed", "agentMessage"), "a partial answer is never completed"
        assert {"type": "idle"} in [m["params"]["status"] for m in find(events, "thread/status/changed")]
        next_turn = await start_turn(rpc, thread_id, "again")
        await collect(rpc, completed(next_turn))
    follow_up = model.posts[1]
    assert any("<turn_aborted>" in t for t in follow_up.texts("user"))
    assert "half-said-zq" not in json.dumps(follow_up.input)


async def test_interrupt_with_an_approval_pending_resolves_the_request_first(
    rpc: ClientConnection, model: ResponsesServer, workspace: Path
) -> None:
    call = Shell("touch never-made.txt")
    with trio.fail_after(TEST_TIMEOUT):
        thread_id = await start_thread(rpc, workspace, approval="untrusted")
        model.enqueue(call, Text("unused"))
        turn_id = await start_turn(rpc, thread_id, "try it")
        before = await collect(rpc, method_is("item/commandExecution/requestApproval"))
        request = before[-1]
        assert request["params"]["itemId"] == call.call_id
        assert find(before, "item/started", "commandExecution")
        await rpc.call("turn/interrupt", {"threadId": thread_id, "turnId": turn_id})
        events = await collect(rpc, completed(turn_id))
        # a late answer to the resolved request is ignored
        await rpc.respond(request["id"], {"decision": "accept"})
        await rpc.call("thread/loaded/list", {})
    resolved = [i for i, m in enumerate(events) if m.get("method") == "serverRequest/resolved"]
    assert len(resolved) == 1 and events[resolved[0]]["params"]["requestId"] == request["id"]
    assert resolved[0] < len(events) - 1, "serverRequest/resolved comes before turn/completed"
    assert events[-1]["params"]["turn"]["status"] == "interrupted"
    assert not (workspace / "never-made.txt").exists()
    assert len(model.posts) == 1


# ---------------------------------------------------------------------------- approvals
@pytest.mark.parametrize("decision", ["accept", "acceptForSession", "decline", "cancel"])
async def test_command_approval_decisions(
    rpc: ClientConnection, model: ResponsesServer, workspace: Path, decision: str
) -> None:
    call = Shell("echo made > made.txt")
    with trio.fail_after(TEST_TIMEOUT):
        thread_id = await start_thread(rpc, workspace, approval="untrusted")
        model.enqueue(call, Text("after"))
        turn_id = await start_turn(rpc, thread_id, "make it")
        request = (await collect(rpc, method_is("item/commandExecution/requestApproval")))[-1]
        await rpc.respond(request["id"], {"decision": decision})
        events = await collect(rpc, completed(turn_id))
    assert find(events, "serverRequest/resolved")[0]["params"]["requestId"] == request["id"]
    item = next(m for m in find(events, "item/completed") if m["params"]["item"]["id"] == call.call_id)
    status = events[-1]["params"]["turn"]["status"]
    if decision in ("accept", "acceptForSession"):
        assert item["params"]["item"]["status"] == "completed" and status == "completed"
        assert (workspace / "made.txt").read_text() == "made\n"
    else:
        assert item["params"]["item"]["status"] == "declined"
        assert not (workspace / "made.txt").exists()
    if decision == "decline":
        assert status == "completed"
        outputs = model.posts[1].items_of_type("function_call_output")
        assert "rejected" in outputs[-1]["output"]
    if decision == "cancel":
        assert status == "interrupted" and len(model.posts) == 1


async def test_accept_for_session_does_not_ask_twice_for_the_same_command(
    rpc: ClientConnection, model: ResponsesServer, workspace: Path
) -> None:
    with trio.fail_after(TEST_TIMEOUT):
        thread_id = await start_thread(rpc, workspace, approval="untrusted")
        model.enqueue(Shell("echo x >> log.txt"), Shell("echo x >> log.txt"), Text("done"))
        turn_id = await start_turn(rpc, thread_id, "twice")
        request = (await collect(rpc, method_is("item/commandExecution/requestApproval")))[-1]
        await rpc.respond(request["id"], {"decision": "acceptForSession"})
        events = await collect(rpc, completed(turn_id))
    assert not find(events, "item/commandExecution/requestApproval")
    assert (workspace / "log.txt").read_text() == "x\nx\n"


async def test_apply_patch_updates_a_file_and_reports_the_turn_diff(
    rpc: ClientConnection, model: ResponsesServer, workspace: Path
) -> None:
    (workspace / "notes.txt").write_text("one\ntwo\nthree\n")
    patch = "*** Begin Patch\n*** Update File: notes.txt\n@@\n one\n-two\n+TWO\n three\n*** End Patch\n"
    call = Patch(patch)
    with trio.fail_after(TEST_TIMEOUT):
        thread_id = await start_thread(rpc, workspace)
        model.enqueue(call, Patch(add_file("new.txt", "fresh")), Text("patched"))
        turn_id = await start_turn(rpc, thread_id, "edit")
        events = await collect(rpc, completed(turn_id))
    assert (workspace / "notes.txt").read_text() == "one\nTWO\nthree\n"
    assert (workspace / "new.txt").read_text() == "fresh\n"
    change = find(events, "item/completed", "fileChange")[0]["params"]["item"]["changes"][0]
    assert change["kind"] == {"type": "update", "move_path": None} and "-two\n+TWO" in change["diff"]
    diff = find(events, "turn/diff/updated")[-1]["params"]["diff"]
    assert "diff --git a/notes.txt b/notes.txt" in diff and "+++ b/new.txt" in diff
    outputs = model.posts[1].items_of_type("custom_tool_call_output")
    assert outputs[0]["call_id"] == call.call_id and "Success" in outputs[0]["output"]


async def test_a_patch_that_does_not_apply_is_reported_to_the_model(
    rpc: ClientConnection, model: ResponsesServer, workspace: Path
) -> None:
    patch = "*** Begin Patch\n*** Update File: missing.txt\n@@\n-a\n+b\n*** End Patch\n"
    with trio.fail_after(TEST_TIMEOUT):
        thread_id = await start_thread(rpc, workspace)
        model.enqueue(Patch(patch), Text("sorry"))
        turn_id = await start_turn(rpc, thread_id, "edit")
        events = await collect(rpc, completed(turn_id))
    assert events[-1]["params"]["turn"]["status"] == "completed"
    output = model.posts[1].items_of_type("custom_tool_call_output")[0]["output"]
    assert "verification failed" in output and "missing.txt" in output


# ---------------------------------------------------------------------------- tools
async def test_a_long_command_yields_a_session_that_write_stdin_polls_to_its_end(
    rpc: ClientConnection, model: ResponsesServer, workspace: Path
) -> None:
    with trio.fail_after(TEST_TIMEOUT):
        thread_id = await start_thread(rpc, workspace)
        model.enqueue(
            Shell("sleep 1; echo later", extra={"yield_time_ms": 250}),
            FunctionCall("write_stdin", {"session_id": 1000, "yield_time_ms": 10000}),
            Text("done"),
        )
        turn_id = await start_turn(rpc, thread_id, "wait for it")
        events = await collect(rpc, completed(turn_id))
    first = model.posts[1].items_of_type("function_call_output")[0]["output"]
    assert "Process running with session ID 1000" in first
    second = model.posts[2].items_of_type("function_call_output")[1]["output"]
    assert "Process exited with code 0" in second and "later" in second
    command = find(events, "item/completed", "commandExecution")[0]["params"]["item"]
    assert command["exitCode"] is None and command["processId"]


async def test_command_output_is_streamed_and_aggregated(
    rpc: ClientConnection, model: ResponsesServer, workspace: Path
) -> None:
    with trio.fail_after(TEST_TIMEOUT):
        thread_id = await start_thread(rpc, workspace)
        model.enqueue(Shell("echo out; echo err >&2; exit 3"), Text("ok"))
        turn_id = await start_turn(rpc, thread_id, "run")
        events = await collect(rpc, completed(turn_id))
    item = find(events, "item/completed", "commandExecution")[0]["params"]["item"]
    assert item["exitCode"] == 3 and item["status"] == "failed"
    assert "out" in item["aggregatedOutput"] and "err" in item["aggregatedOutput"]
    streamed = "".join(m["params"]["delta"] for m in find(events, "item/commandExecution/outputDelta"))
    assert "out" in streamed
    assert "Process exited with code 3" in model.posts[1].items_of_type("function_call_output")[0]["output"]


# ---------------------------------------------------------------------------- steering
async def test_steer_adds_input_to_the_running_turn_and_asks_again(
    rpc: ClientConnection, model: ResponsesServer, workspace: Path
) -> None:
    stall = Stall(before="half-said-zq ")
    with trio.fail_after(TEST_TIMEOUT):
        thread_id = await start_thread(rpc, workspace)
        model.enqueue(stall, Text("steered answer"))
        turn_id = await start_turn(rpc, thread_id, "Slow one")
        await collect(rpc, method_is("item/agentMessage/delta"))
        steer = {"threadId": thread_id, "expectedTurnId": turn_id, "input": text("steer me")}
        assert await rpc.call("turn/steer", steer) == {"turnId": turn_id}
        events = await collect(rpc, completed(turn_id))
    users = [m["params"]["item"]["content"][0]["text"] for m in find(events, "item/completed", "userMessage")]
    assert users == ["steer me"]
    assert events[-1]["params"]["turn"]["status"] == "completed"
    assert model.posts[1].texts("user")[-2:] == ["Slow one", "steer me"]
    assert "half-said-zq" not in json.dumps(model.posts[1].input)


async def test_turn_start_while_a_turn_runs_joins_that_turn(
    rpc: ClientConnection, model: ResponsesServer, workspace: Path
) -> None:
    stall = Stall()
    with trio.fail_after(TEST_TIMEOUT):
        thread_id = await start_thread(rpc, workspace)
        model.enqueue(stall, Text("second"))
        turn_id = await start_turn(rpc, thread_id, "first")
        await collect(rpc, method_is("item/agentMessage/delta"))
        assert await start_turn(rpc, thread_id, "second") == turn_id
        await collect(rpc, completed(turn_id))


async def test_turn_requests_are_validated(
    rpc: ClientConnection, model: ResponsesServer, workspace: Path
) -> None:
    from codex_trio.protocol.errors import RpcError

    with trio.fail_after(TEST_TIMEOUT):
        thread_id = await start_thread(rpc, workspace)
        unknown = "01a21391-ac16-7e42-b8ca-000000000000"
        for method, params, message in [
            ("turn/start", {"threadId": unknown, "input": text("x")}, f"thread not found: {unknown}"),
            ("turn/start", {"threadId": thread_id}, "Invalid request: missing field `input`"),
            ("turn/interrupt", {"threadId": thread_id, "turnId": unknown}, "no active turn to interrupt"),
            (
                "turn/steer",
                {"threadId": thread_id, "expectedTurnId": unknown, "input": text("x")},
                "no active turn to steer",
            ),
        ]:
            with pytest.raises(RpcError) as caught:
                await rpc.call(method, params)
            assert (caught.value.code, caught.value.message) == (-32600, message)


# ---------------------------------------------------------------------------- model failures
async def test_a_model_500_is_retried_and_the_turn_succeeds(
    codex_home: Path, model: ResponsesServer, client: ClientConnection, workspace: Path
) -> None:
    (codex_home / "config.toml").write_text(model.config_toml(retries=1))
    with trio.fail_after(TEST_TIMEOUT):
        thread_id = await start_thread(client, workspace)
        model.enqueue(Status(500), Text("recovered"))
        turn_id = await start_turn(client, thread_id, "hi")
        events = await collect(client, completed(turn_id))
    assert events[-1]["params"]["turn"]["status"] == "completed"
    assert len(model.posts) == 2 and not find(events, "error")


async def test_a_dropped_stream_is_retried_then_the_turn_fails(
    codex_home: Path, model: ResponsesServer, client: ClientConnection, workspace: Path
) -> None:
    (codex_home / "config.toml").write_text(model.config_toml(retries=2))
    with trio.fail_after(TEST_TIMEOUT):
        thread_id = await start_thread(client, workspace)
        model.enqueue(Dropped(), Dropped(), Dropped())
        turn_id = await start_turn(client, thread_id, "hi")
        events = await collect(client, completed(turn_id))
    errors = [m["params"] for m in find(events, "error")]
    assert [(e["error"]["message"], e["willRetry"]) for e in errors] == [
        ("Reconnecting... 1/2", True),
        ("Reconnecting... 2/2", True),
        ("stream disconnected before completion: stream closed before response.completed", False),
    ]
    assert errors[0]["error"]["codexErrorInfo"] == {"responseStreamDisconnected": {"httpStatusCode": None}}
    turn = events[-1]["params"]["turn"]
    assert turn["status"] == "failed" and turn["error"]["message"].startswith("stream disconnected")
    statuses = [m["params"]["status"] for m in find(events, "thread/status/changed")]
    assert statuses[-1] == {"type": "systemError"}
    assert len(model.posts) == 3


async def test_a_missing_api_key_fails_the_turn_with_its_name(
    codex_home: Path, model: ResponsesServer, client: ClientConnection, workspace: Path
) -> None:
    config = model.config_toml().replace(
        'wire_api = "responses"', 'wire_api = "responses"\nenv_key = "NO_SUCH_KEY_X"'
    )
    (codex_home / "config.toml").write_text(config)
    with trio.fail_after(TEST_TIMEOUT):
        thread_id = await start_thread(client, workspace)
        turn_id = await start_turn(client, thread_id, "hi")
        events = await collect(client, completed(turn_id))
    assert (
        events[-1]["params"]["turn"]["error"]["message"] == "Missing environment variable: `NO_SUCH_KEY_X`."
    )
    assert model.posts == []


# ---------------------------------------------------------------------------- persistence
async def test_finished_turns_survive_a_restart_and_the_history_is_replayed(
    server_settings: ServerSettings, configured: Path, model: ResponsesServer, workspace: Path
) -> None:
    with trio.fail_after(TEST_TIMEOUT):
        async with open_app_server(server_settings) as server:
            rpc = await server.connect()
            await rpc.initialize("before")
            thread_id = await start_thread(rpc, workspace)
            model.enqueue(Shell("echo hi"), Text("first answer"))
            turn_id = await start_turn(rpc, thread_id, "first question")
            await collect(rpc, completed(turn_id))
            await rpc.aclose()
        async with open_app_server(server_settings) as server:
            rpc = await server.connect()
            await rpc.initialize("after")
            read = await rpc.call("thread/read", {"threadId": thread_id, "includeTurns": True})
            turns = read["thread"]["turns"]
            assert [t["status"] for t in turns] == ["completed"]
            assert [i["type"] for i in turns[0]["items"]] == [
                "userMessage",
                "commandExecution",
                "agentMessage",
            ]
            await rpc.call("thread/resume", {"threadId": thread_id})
            model.enqueue(Text("second answer"))
            second = await start_turn(rpc, thread_id, "second question")
            await collect(rpc, completed(second))
            await rpc.aclose()
    replay = model.posts[-1]
    assert replay.texts("user")[-2:] == ["first question", "second question"]
    assert replay.texts("assistant") == ["first answer"]
    assert replay.items_of_type("function_call_output")[0]["output"].endswith("hi\n")


# ---------------------------------------------------------------------------- tool providers
class LookupTools:
    """A tool family outside the engine (the shape MCP servers plug in with)."""

    def __init__(self) -> None:
        self.calls: list[ToolCall] = []

    async def tool_specs(self, turn: ToolTurn) -> list[dict[str, Any]]:
        return [
            {
                "type": "function",
                "name": "lookup",
                "description": "Look a key up.",
                "strict": False,
                "parameters": {"type": "object", "properties": {"key": {"type": "string"}}},
            }
        ]

    def handles(self, turn: ToolTurn, call: ToolCall) -> bool:
        return call.name == "lookup"

    async def call(self, turn: ToolTurn, call: ToolCall) -> ToolOutput:
        self.calls.append(call)
        return "the answer is 42"


async def test_a_tool_provider_offers_tools_and_runs_their_calls(
    app_server: AppServer, rpc: ClientConnection, model: ResponsesServer, workspace: Path
) -> None:
    tools = LookupTools()
    turns_api = await app_server.family(TurnsApi)
    turns_api.tool_providers.append(tools)
    call = FunctionCall("lookup", {"key": "answer"})
    with trio.fail_after(TEST_TIMEOUT):
        thread_id = await start_thread(rpc, workspace)
        model.enqueue(call, Text("It is 42."))
        turn_id = await start_turn(rpc, thread_id, "what is the answer?")
        events = await collect(rpc, completed(turn_id))
    assert events[-1]["params"]["turn"]["status"] == "completed"
    assert "lookup" in model.posts[0].tool_names()
    assert [c.call_id for c in tools.calls] == [call.call_id]
    outputs = model.posts[1].items_of_type("function_call_output")
    assert outputs == [
        {"type": "function_call_output", "call_id": call.call_id, "output": "the answer is 42"}
    ]
