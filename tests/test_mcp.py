"""MCP servers end to end: a real stdio MCP server (tests/mcp_fixture_server.py, written with the
`mcp` package), the in-process app-server, and the scripted Responses server.

Each test configures the fixture in config.toml, starts a thread (which starts its servers),
and checks what a client sees: startup status, the status list, the tools the model is
offered, `mcpToolCall` items, tool approvals and elicitations with their answers reaching the
MCP server, interrupts and disconnects while an elicitation is pending, a server that crashes
at startup, and the direct API. The app-server fixture's leak check proves that no MCP server
process outlives the server.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import attrs
import pytest
import trio

from codex_trio.client import ClientConnection
from codex_trio.procfs import descendants
from codex_trio.protocol.errors import RpcError
from codex_trio.server import AppServer, open_app_server
from codex_trio.settings import ServerSettings
from codex_trio.testing import LeakCheck
from tests.responses_server import RecordedRequest, ResponsesServer, SseWriter, Text, new_id

pytest.importorskip("mcp", reason="the optional `mcp` extra is not installed")

#: every test's absolute bound (seconds): a Python MCP server takes a second or two to start.
TEST_TIMEOUT = 60
FIXTURE = Path(__file__).with_name("mcp_fixture_server.py")

Message = dict[str, Any]


def server_table(name: str = "fixture", *args: str, extra: str = "") -> str:
    argv = json.dumps([str(FIXTURE), *args])
    return f'\n[mcp_servers.{name}]\ncommand = "{sys.executable}"\nargs = {argv}\n{extra}\n'


@attrs.define
class McpCall:
    """The model calls `tool` in the `mcp__<server>` namespace."""

    tool: str
    arguments: dict[str, Any] = attrs.Factory(dict)
    server: str = "fixture"
    call_id: str = attrs.Factory(lambda: new_id("call"))

    async def send(self, sse: SseWriter, request: RecordedRequest) -> None:
        await sse.created()
        await sse.item(
            {
                "id": new_id("fc"),
                "type": "function_call",
                "name": self.tool,
                "namespace": f"mcp__{self.server}",
                "call_id": self.call_id,
                "arguments": json.dumps(self.arguments),
            }
        )
        await sse.completed()


Configure = Callable[..., None]


@pytest.fixture
def configure(codex_home: Path, model: ResponsesServer) -> Configure:
    """Write config.toml: the scripted model, `top` top-level keys, then the server tables."""

    def write(servers: str, top: str = "") -> None:
        (codex_home / "config.toml").write_text(model.config_toml(extra=top) + servers)

    return write


@pytest.fixture
async def app_server(server_settings: ServerSettings) -> AsyncIterator[AppServer]:
    """The plugin's server and leak check (children, fds, tasks), minus the thread store's
    SQLite files (kept open for the process's life)."""
    check = LeakCheck()
    async with open_app_server(server_settings) as server:
        yield server
    problems = [p for p in await check.leftovers() if not _only_sqlite(p)]
    if problems:
        pytest.fail("; ".join(problems))


def _only_sqlite(problem: str) -> bool:
    return problem.startswith("file descriptors left") and all(
        part.split("'")[1].endswith((".sqlite", ".sqlite-wal", ".sqlite-shm"))
        for part in problem.split(", ")
        if "'" in part
    )


# ---------------------------------------------------------------------------- helpers
async def start_thread(rpc: ClientConnection, workspace: Path, approval: str = "never") -> str:
    result = await rpc.call("thread/start", {"cwd": str(workspace), "approvalPolicy": approval})
    return str(result["thread"]["id"])


async def wait_started(rpc: ClientConnection, name: str = "fixture") -> Message:
    """The startup status that ends a server's start (ready or failed)."""
    return await rpc.wait_for(
        "mcpServer/startupStatus/updated",
        lambda p: p["name"] == name and p["status"] in ("ready", "failed"),
    )


async def start_turn(rpc: ClientConnection, thread_id: str, prompt: str = "go") -> str:
    result = await rpc.call(
        "turn/start",
        {"threadId": thread_id, "input": [{"type": "text", "text": prompt, "text_elements": []}]},
    )
    return str(result["turn"]["id"])


async def collect(rpc: ClientConnection, until: Callable[[Message], bool]) -> list[Message]:
    seen = []
    while True:
        message = await rpc.receive()
        seen.append(message)
        if until(message):
            return seen


def turn_completed(turn_id: str) -> Callable[[Message], bool]:
    return lambda m: m.get("method") == "turn/completed" and m["params"]["turn"]["id"] == turn_id


def is_request(m: Message) -> bool:
    return m.get("method") == "mcpServer/elicitation/request"


def items(messages: list[Message], method: str) -> list[dict[str, Any]]:
    return [
        m["params"]["item"]
        for m in messages
        if m.get("method") == method and m["params"]["item"]["type"] == "mcpToolCall"
    ]


def index_of(messages: list[Message], predicate: Callable[[Message], bool]) -> int:
    return next(i for i, m in enumerate(messages) if predicate(m))


def last_output(request: RecordedRequest) -> Any:
    return request.items_of_type("function_call_output")[-1]["output"]


# ---------------------------------------------------------------------------- listing
async def test_a_thread_starts_its_servers_and_the_status_list_shows_their_tools(
    configure: Configure, client: ClientConnection, workspace: Path
) -> None:
    configure(server_table() + server_table("off", extra="enabled = false"))
    with trio.fail_after(TEST_TIMEOUT):
        thread_id = await start_thread(client, workspace)
        starting = await client.wait_for("mcpServer/startupStatus/updated")
        ready = await wait_started(client)
        listed = await client.call("mcpServerStatus/list", {"threadId": thread_id})
        brief = await client.call(
            "mcpServerStatus/list", {"threadId": thread_id, "detail": "toolsAndAuthOnly", "limit": 1}
        )
        nothing = await client.call("mcpServerStatus/list", {"threadId": thread_id, "serverName": "nope"})
        without_thread = await client.call("mcpServerStatus/list", {"serverName": "fixture"})
    assert starting["params"] == {
        "threadId": thread_id,
        "name": "fixture",
        "status": "starting",
        "error": None,
        "failureReason": None,
    }
    assert ready["params"]["status"] == "ready" and ready["params"]["error"] is None
    fixture, off = listed["data"]
    assert listed["nextCursor"] is None
    assert fixture["name"] == "fixture" and fixture["runtimeStatus"] == "connected"
    assert fixture["serverInfo"] == {
        "name": "fixture",
        "title": None,
        "version": "1.2.3",
        "description": None,
        "icons": None,
        "websiteUrl": None,
    }
    assert fixture["authStatus"] == "unsupported" and fixture["toolsError"] is None
    assert {"echo", "ask_name", "boom", "peek"} <= set(fixture["tools"])
    assert fixture["tools"]["echo"]["inputSchema"]["required"] == ["text"]
    assert fixture["tools"]["peek"]["annotations"] == {"readOnlyHint": True}
    assert [r["uri"] for r in fixture["resources"]] == ["fixture://greeting"]
    assert off["runtimeStatus"] == "disabled" and off["tools"] == {} and off["serverInfo"] is None
    assert [e["name"] for e in brief["data"]] == ["fixture"] and brief["nextCursor"] == "1"
    assert brief["data"][0]["resources"] == []
    assert nothing == {"data": [], "nextCursor": None}
    (probed,) = without_thread["data"]
    assert probed["runtimeStatus"] is None and "echo" in probed["tools"]


# ---------------------------------------------------------------------------- turns
async def test_a_model_call_becomes_an_mcp_tool_call_item_with_the_servers_result(
    configure: Configure, client: ClientConnection, model: ResponsesServer, workspace: Path
) -> None:
    configure(server_table())
    echo, boom, slow = McpCall("echo", {"text": "yo"}), McpCall("boom"), McpCall("slow", {"steps": 2})
    model.enqueue(echo, boom, slow, Text("done"))
    with trio.fail_after(TEST_TIMEOUT):
        thread_id = await start_thread(client, workspace)
        turn_id = await start_turn(client, thread_id)
        events = await collect(client, turn_completed(turn_id))
        read = await client.call("thread/read", {"threadId": thread_id, "includeTurns": True})
    namespace = next(t for t in model.posts[0].body["tools"] if t.get("name") == "mcp__fixture")
    assert namespace["type"] == "namespace" and namespace["description"] == "A test server."
    functions = {f["name"]: f for f in namespace["tools"]}
    assert functions["echo"] == {
        "type": "function",
        "name": "echo",
        "description": "Echo the text back.",
        "strict": False,
        "parameters": {"type": "object", "properties": {"text": {"type": "string"}}, "required": ["text"]},
    }
    assert list(functions) == sorted(functions)
    started, completed = items(events, "item/started"), items(events, "item/completed")
    ids = [echo.call_id, boom.call_id, slow.call_id]
    assert [i["id"] for i in started] == ids == [i["id"] for i in completed]
    progress = [m["params"] for m in events if m.get("method") == "item/mcpToolCall/progress"]
    assert progress == [
        {"threadId": thread_id, "turnId": turn_id, "itemId": slow.call_id, "message": f"step {n}"}
        for n in (1, 2)
    ]
    assert started[0] == {
        "type": "mcpToolCall",
        "id": echo.call_id,
        "server": "fixture",
        "tool": "echo",
        "status": "inProgress",
        "arguments": {"text": "yo"},
        "appContext": None,
        "mcpAppUi": None,
        "pluginId": None,
        "readOnlyHint": None,
        "result": None,
        "error": None,
        "durationMs": None,
        "startedAtMs": started[0]["startedAtMs"],
        "completedAtMs": None,
    }
    assert completed[0]["status"] == "completed" and completed[0]["error"] is None
    assert completed[0]["result"] == {
        "content": [{"type": "text", "text": "yo"}],
        "structuredContent": {"result": "yo"},
        "_meta": None,
    }
    assert completed[1]["status"] == "failed"
    assert completed[1]["result"]["content"] == [{"type": "text", "text": "Error executing tool boom"}]
    # the model gets the structured content as text, an error result as content items
    output = last_output(model.posts[1])
    assert output.startswith("Wall time: ") and output.endswith('Output:\n{"result":"yo"}')
    error = last_output(model.posts[2])
    assert error[0]["type"] == "input_text" and error[0]["text"].startswith("Wall time: ")
    assert error[1] == {"type": "input_text", "text": "Error executing tool boom"}
    assert model.posts[1].items_of_type("function_call")[-1]["namespace"] == "mcp__fixture"
    stored = [i for i in read["thread"]["turns"][0]["items"] if i["type"] == "mcpToolCall"]
    assert [i["status"] for i in stored] == ["completed", "failed", "completed"]
    assert stored[0]["result"]["structuredContent"] == {"result": "yo"}


async def test_a_tool_call_asks_for_approval_and_a_declined_one_fails_while_the_turn_goes_on(
    configure: Configure, client: ClientConnection, model: ResponsesServer, workspace: Path
) -> None:
    configure(server_table())
    declined, allowed, again, peek = (
        McpCall("echo", {"text": "a"}),
        McpCall("echo", {"text": "b"}),
        McpCall("echo", {"text": "c"}),
        McpCall("peek", {"key": "k"}),
    )
    model.enqueue(declined, allowed, again, peek, Text("done"))
    with trio.fail_after(TEST_TIMEOUT):
        thread_id = await start_thread(client, workspace, approval="on-request")
        turn_id = await start_turn(client, thread_id)
        first = await collect(client, is_request)
        await client.respond(first[-1]["id"], {"action": "decline"})
        second = await collect(client, is_request)
        await client.respond(second[-1]["id"], {"action": "accept", "_meta": {"persist": "session"}})
        rest = await collect(client, turn_completed(turn_id))
    events = first + second + rest
    approval = first[-1]["params"]
    assert approval == {
        "threadId": thread_id,
        "turnId": turn_id,
        "serverName": "fixture",
        "mode": "form",
        "_meta": {
            "codex_approval_kind": "mcp_tool_call",
            "persist": ["session", "always"],
            "tool_name": "echo",
            "tool_description": "Echo the text back.",
            "tool_params": {"text": "a"},
            "tool_params_display": [{"name": "text", "value": "a", "display_name": "text"}],
        },
        "message": 'Allow the fixture MCP server to run tool "echo"?',
        "requestedSchema": {"type": "object", "properties": {}},
    }
    # the item starts before the question; the answer is resolved before the item completes
    assert index_of(
        events, lambda m: m.get("method") == "item/started" and m["params"]["item"]["id"] == declined.call_id
    ) < index_of(events, is_request)
    resolved = [m["params"]["requestId"] for m in events if m.get("method") == "serverRequest/resolved"]
    assert resolved == [first[-1]["id"], second[-1]["id"]]
    done = {i["id"]: i for i in items(events, "item/completed")}
    assert done[declined.call_id]["status"] == "failed" and done[declined.call_id]["result"] is None
    assert done[declined.call_id]["error"] == {"message": "user rejected MCP tool call"}
    assert done[allowed.call_id]["status"] == "completed"
    # allowed for the session: the same tool runs again without asking; a read-only tool never asks
    assert done[again.call_id]["status"] == "completed" and done[peek.call_id]["readOnlyHint"] is True
    assert len([m for m in events if is_request(m)]) == 2
    assert last_output(model.posts[1])[1] == {"type": "input_text", "text": "user rejected MCP tool call"}
    statuses = [m["params"]["status"] for m in events if m.get("method") == "thread/status/changed"]
    assert {"type": "active", "activeFlags": ["waitingOnApproval"]} in statuses
    assert events[-1]["params"]["turn"]["status"] == "completed"


APPROVED = '[mcp_servers.fixture.tools.ask_name]\napproval_mode = "approve"'


async def test_an_elicitation_reaches_the_client_and_each_answer_reaches_the_server(
    configure: Configure, client: ClientConnection, model: ResponsesServer, workspace: Path
) -> None:
    configure(server_table(extra=APPROVED))
    answers: list[tuple[dict[str, Any], str]] = [
        ({"action": "accept", "content": {"name": "Ada"}}, "hello Ada"),
        ({"action": "decline"}, "elicitation decline"),
        ({"action": "cancel"}, "elicitation cancel"),
    ]
    with trio.fail_after(TEST_TIMEOUT):
        thread_id = await start_thread(client, workspace, approval="on-request")
        for answer, expected in answers:
            call = McpCall("ask_name")
            model.enqueue(call, Text("done"))
            turn_id = await start_turn(client, thread_id)
            before = await collect(client, is_request)
            request = before[-1]
            await client.respond(request["id"], answer)
            after = await collect(client, turn_completed(turn_id))
            assert request["params"] == {
                "threadId": thread_id,
                "turnId": turn_id,
                "serverName": "fixture",
                "mode": "form",
                "_meta": None,
                "message": "What is your name?",
                "requestedSchema": {
                    "type": "object",
                    "properties": {"name": {"type": "string", "title": "Name", "description": "Your name"}},
                    "required": ["name"],
                },
            }
            resolved = index_of(after, lambda m: m.get("method") == "serverRequest/resolved")
            assert after[resolved]["params"] == {"threadId": thread_id, "requestId": request["id"]}
            (item,) = items(after, "item/completed")
            assert resolved < index_of(after, lambda m: m.get("method") == "item/completed")
            assert item["status"] == "completed"
            assert item["result"]["structuredContent"] == {"result": expected}
            assert after[-1]["params"]["turn"]["status"] == "completed"
            assert expected in last_output(model.posts[-1])


async def test_an_interrupt_resolves_a_pending_elicitation_before_the_turn_completes(
    configure: Configure, client: ClientConnection, model: ResponsesServer, workspace: Path
) -> None:
    configure(server_table(extra=APPROVED))
    model.enqueue(McpCall("ask_name"), McpCall("peek", {"key": "k"}), Text("done"))
    with trio.fail_after(TEST_TIMEOUT):
        thread_id = await start_thread(client, workspace, approval="on-request")
        turn_id = await start_turn(client, thread_id)
        request = (await collect(client, is_request))[-1]
        await client.call("turn/interrupt", {"threadId": thread_id, "turnId": turn_id})
        events = await collect(client, turn_completed(turn_id))
        # a late answer to the resolved request is ignored
        await client.respond(request["id"], {"action": "accept", "content": {"name": "late"}})
        # the server went on: the next turn's call (a read-only tool: no approval) works
        next_turn = await start_turn(client, thread_id)
        after = await collect(client, turn_completed(next_turn))
    resolved = index_of(events, lambda m: m.get("method") == "serverRequest/resolved")
    assert events[resolved]["params"] == {"threadId": thread_id, "requestId": request["id"]}
    assert resolved < len(events) - 1
    assert events[-1]["params"]["turn"]["status"] == "interrupted"
    (item,) = items(after, "item/completed")
    assert item["tool"] == "peek" and item["status"] == "completed"
    assert after[-1]["params"]["turn"]["status"] == "completed"


async def test_a_pending_elicitation_outlives_its_client_and_is_asked_again_on_resume(
    configure: Configure, app_server: AppServer, model: ResponsesServer, workspace: Path
) -> None:
    configure(server_table(extra=APPROVED))
    model.enqueue(McpCall("ask_name"), Text("done"))
    with trio.fail_after(TEST_TIMEOUT):
        owner = await app_server.connect()
        await owner.initialize()
        thread_id = await start_thread(owner, workspace, approval="on-request")
        await start_turn(owner, thread_id)
        asked = (await collect(owner, is_request))[-1]
        await owner.aclose()
        # the question belongs to the thread: a client that resumes it is asked the same request
        other = await app_server.connect()
        await other.initialize()
        read = await other.call("thread/read", {"threadId": thread_id})
        assert read["thread"]["status"] == {"type": "active", "activeFlags": ["waitingOnApproval"]}
        await other.call("thread/resume", {"threadId": thread_id, "excludeTurns": True})
        again = (await collect(other, is_request))[-1]
        assert again["id"] == asked["id"] and again["params"] == asked["params"]
        await other.respond(again["id"], {"action": "decline"})
        await collect(other, lambda m: m.get("method") == "turn/completed")
        await other.aclose()
    assert last_output(model.posts[1]).endswith('{"result":"elicitation decline"}')


# ---------------------------------------------------------------------------- failures and the API
async def test_a_server_that_crashes_at_startup_is_reported_and_the_thread_still_works(
    configure: Configure, client: ClientConnection, model: ResponsesServer, workspace: Path
) -> None:
    configure(
        server_table("broken", "--crash") + '[mcp_servers.missing]\ncommand = "/nonexistent/mcp-server"\n'
    )
    model.enqueue(Text("fine"))
    with trio.fail_after(TEST_TIMEOUT):
        thread_id = await start_thread(client, workspace)
        missing = await wait_started(client, "missing")
        failed = await wait_started(client, "broken")
        turn_id = await start_turn(client, thread_id)
        events = await collect(client, turn_completed(turn_id))
        listed = await client.call("mcpServerStatus/list", {"threadId": thread_id})
    assert failed["params"] == {
        "threadId": thread_id,
        "name": "broken",
        "status": "failed",
        "error": "MCP client for `broken` failed to start: MCP startup failed: "
        "handshaking with MCP server failed: connection closed: initialize response",
        "failureReason": None,
    }
    assert missing["params"]["error"] == (
        "MCP client for `missing` failed to start: MCP startup failed: No such file or directory (os error 2)"
    )
    assert events[-1]["params"]["turn"]["status"] == "completed"
    assert not [t for t in model.posts[0].body["tools"] if t.get("type") == "namespace"]
    entry, gone = listed["data"]
    assert gone["name"] == "missing" and gone["runtimeStatus"] == "failed"
    assert entry["runtimeStatus"] == "failed" and entry["tools"] == {} and entry["serverInfo"] is None
    assert entry["toolsError"] == (
        "MCP startup failed: handshaking with MCP server failed: connection closed: initialize response"
    )


async def test_tools_and_resources_can_be_used_directly_and_a_reload_restarts_the_servers(
    configure: Configure, client: ClientConnection, workspace: Path
) -> None:
    configure(server_table())
    with trio.fail_after(TEST_TIMEOUT):
        thread_id = await start_thread(client, workspace)
        await wait_started(client)
        echoed = await client.call(
            "mcpServer/tool/call",
            {"threadId": thread_id, "server": "fixture", "tool": "echo", "arguments": {"text": "x"}},
        )
        plain = await client.call(
            "mcpServer/tool/call",
            {"threadId": thread_id, "server": "fixture", "tool": "plain", "arguments": {"text": "x"}},
        )
        failed = await client.call(
            "mcpServer/tool/call", {"threadId": thread_id, "server": "fixture", "tool": "boom"}
        )
        with pytest.raises(RpcError) as unknown:
            await client.call(
                "mcpServer/tool/call", {"threadId": thread_id, "server": "nope", "tool": "echo"}
            )
        contents = await client.call(
            "mcpServer/resource/read",
            {"threadId": thread_id, "server": "fixture", "uri": "fixture://greeting"},
        )
        with pytest.raises(RpcError) as missing:
            await client.call(
                "mcpServer/resource/read",
                {"threadId": thread_id, "server": "fixture", "uri": "fixture://nope"},
            )
        assert await client.call("config/mcpServer/reload") == {}
        await client.call("mcpServerStatus/list", {"threadId": thread_id})
        restarted = await client.wait_for(
            "mcpServer/startupStatus/updated", lambda p: p["status"] == "starting"
        )
    assert echoed == {
        "content": [{"type": "text", "text": "x"}],
        "structuredContent": {"result": "x"},
        "isError": False,
    }
    assert plain == {"content": [{"type": "text", "text": "plain x"}], "isError": False}
    assert failed == {"content": [{"type": "text", "text": "Error executing tool boom"}], "isError": True}
    assert (unknown.value.code, unknown.value.message) == (-32603, "unknown MCP server 'nope'")
    assert contents == {
        "contents": [
            {"uri": "fixture://greeting", "mimeType": "text/plain", "text": "hello from the fixture"}
        ],
        "originCallId": None,
    }
    assert (missing.value.code, missing.value.message) == (-32602, "Unknown resource: fixture://nope")
    assert missing.value.data == {"uri": "fixture://nope"}
    assert restarted["params"]["threadId"] == thread_id


async def test_a_threads_servers_stop_when_it_unloads(
    configure: Configure, client: ClientConnection, workspace: Path, tmp_path: Path
) -> None:
    pidfile = tmp_path / "pids"
    configure(server_table("fixture", "--pidfile", str(pidfile)), top="thread_unload_delay_secs = 0")
    with trio.fail_after(TEST_TIMEOUT):
        thread_id = await start_thread(client, workspace)
        await wait_started(client)
        (pid,) = [int(line) for line in pidfile.read_text().split()]
        assert pid in descendants(os.getpid())
        await client.call("thread/unsubscribe", {"threadId": thread_id})
        await client.wait_for("thread/closed")
        # The child's exit has no trio event to wait on: poll /proc, bounded by the test's deadline.
        while pid in descendants(os.getpid()):  # noqa: ASYNC110
            await trio.sleep(0.02)


async def test_a_streamable_http_server_is_reached_by_its_url(
    configure: Configure, client: ClientConnection, workspace: Path
) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    configure(f'\n[mcp_servers.web]\nurl = "http://127.0.0.1:{port}/mcp"\n')
    argv = [sys.executable, str(FIXTURE), "--http", str(port)]
    process = await trio.lowlevel.open_process(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        with trio.fail_after(TEST_TIMEOUT):
            while True:  # uvicorn has no readiness signal to await: try to connect, bounded
                try:
                    await (await trio.open_tcp_stream("127.0.0.1", port)).aclose()
                    break
                except OSError:
                    await trio.sleep(0.05)
            thread_id = await start_thread(client, workspace)
            ready = await wait_started(client, "web")
            listed = await client.call("mcpServerStatus/list", {"threadId": thread_id})
            echoed = await client.call(
                "mcpServer/tool/call",
                {"threadId": thread_id, "server": "web", "tool": "echo", "arguments": {"text": "over http"}},
            )
    finally:
        process.kill()
        with trio.CancelScope(shield=True):
            await process.wait()
    assert ready["params"]["status"] == "ready"
    (entry,) = listed["data"]
    assert entry["runtimeStatus"] == "connected" and entry["httpOrigin"] == f"http://127.0.0.1:{port}"
    assert "echo" in entry["tools"]
    assert echoed["structuredContent"] == {"result": "over http"}
