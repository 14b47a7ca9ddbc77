"""Ownership under faults: commands die with their turn or thread, questions outlive clients.

* A command started by `exec_command` belongs to its turn: `turn/interrupt`, archiving or
  unloading the thread and server shutdown kill its whole process group (the shell and
  what it started in the background), and its item completes `failed` with exit code -1.
  A session left running by a turn that completed belongs to the thread and dies with it.
* An approval belongs to the thread: it stays open when the asked client disconnects, is
  asked again (same request id, same item) of a client that resumes the thread, and only a
  connection that was sent it can answer it.
"""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Any

import pytest
import trio

from codex_trio.client import ClientConnection
from codex_trio.server import AppServer, open_app_server
from codex_trio.settings import ServerSettings
from codex_trio.testing import LeakCheck, StdioServer
from tests.responses_server import ResponsesServer, Shell, Stall, Text
from tests.test_turns import Message, collect, completed, find, method_is, start_thread, start_turn

TEST_TIMEOUT = 30
#: seconds a killed process may take to disappear from /proc.
GONE_TIMEOUT = 5.0
#: a shell that records its pid and a background child's, then waits on the child.
TREE = "echo $$ > sh.pid; sleep 300 & echo $! > bg.pid; echo started; wait; echo finished > finished.txt"


@pytest.fixture
def configured(codex_home: Path, model: ResponsesServer) -> Path:
    (codex_home / "config.toml").write_text(model.config_toml(extra="thread_unload_delay_secs = 0"))
    return codex_home


def alive(pid: int) -> bool:
    """True while `pid` runs (a zombie waiting for its reaper counts as dead)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except FileNotFoundError:
        return False
    return stat[stat.rindex(b")") + 2 : stat.rindex(b")") + 3] not in (b"Z", b"X")


async def tree_pids(workspace: Path) -> list[int]:
    """The pids TREE recorded (the shell and its background child), once both are written."""
    with trio.fail_after(TEST_TIMEOUT):
        while True:
            try:
                pids = [int((workspace / name).read_text()) for name in ("sh.pid", "bg.pid")]
            except (FileNotFoundError, ValueError):
                pids = []
            if pids:
                return pids
            await trio.sleep(0.02)


async def all_gone(pids: list[int]) -> bool:
    """Whether every pid has died within GONE_TIMEOUT (a kill is not observable as an event)."""
    with trio.move_on_after(GONE_TIMEOUT):
        while any(alive(p) for p in pids):  # noqa: ASYNC110
            await trio.sleep(0.02)
        return True
    return False


def started_output(message: Message) -> bool:
    if message.get("method") != "item/commandExecution/outputDelta":
        return False
    return "started" in message["params"]["delta"]


async def start_tree(
    rpc: ClientConnection, model: ResponsesServer, workspace: Path, *then: Any, keep: bool = False
) -> tuple[str, str, Shell, list[int]]:
    """A thread whose turn runs TREE: waited on by its call, or (`keep`) left as a session.

    Returns the thread and turn ids, the call, and the pids once the command runs."""
    call = Shell(TREE, extra={"yield_time_ms": 250 if keep else 30000})
    thread_id = await start_thread(rpc, workspace)
    model.enqueue(call, *then)
    turn_id = await start_turn(rpc, thread_id, "run it")
    if not keep:
        await collect(rpc, started_output)
    return thread_id, turn_id, call, await tree_pids(workspace)


async def connected(app_server: AppServer, name: str) -> ClientConnection:
    client = await app_server.connect()
    await client.initialize(name)
    return client


def killed_item(events: list[Message], call_id: str) -> dict[str, object]:
    items = [m["params"]["item"] for m in find(events, "item/completed", "commandExecution")]
    (item,) = [i for i in items if i["id"] == call_id]
    return item


# ---------------------------------------------------------------------------- processes
async def test_interrupt_kills_the_running_command_tree_and_fails_its_item(
    rpc: ClientConnection, model: ResponsesServer, workspace: Path
) -> None:
    with trio.fail_after(TEST_TIMEOUT):
        thread_id, turn_id, call, pids = await start_tree(rpc, model, workspace, Text("unused"))
        assert all(alive(p) for p in pids)
        await rpc.call("turn/interrupt", {"threadId": thread_id, "turnId": turn_id})
        events = await collect(rpc, completed(turn_id))
        assert await all_gone(pids), "no process of the command survives the interrupt"
        read = await rpc.call("thread/read", {"threadId": thread_id, "includeTurns": True})
    item = killed_item(events, call.call_id)
    assert item["status"] == "failed" and item["exitCode"] == -1
    assert item["aggregatedOutput"] == "started\n" and item["processId"] == str(pids[0])
    assert events[-1]["params"]["turn"]["status"] == "interrupted"
    assert not (workspace / "finished.txt").exists()
    stored = [i for i in read["thread"]["turns"][-1]["items"] if i["type"] == "commandExecution"]
    assert stored[0]["status"] == "failed"
    assert len(model.posts) == 1


async def test_a_session_an_interrupted_turn_left_running_dies_with_that_turn(
    rpc: ClientConnection, model: ResponsesServer, workspace: Path
) -> None:
    stall = Stall()
    with trio.fail_after(TEST_TIMEOUT):
        thread_id, turn_id, _, pids = await start_tree(rpc, model, workspace, stall, keep=True)
        await stall.streaming.wait()
        assert all(alive(p) for p in pids), "the session outlives its exec_command call"
        await rpc.call("turn/interrupt", {"threadId": thread_id, "turnId": turn_id})
        await collect(rpc, completed(turn_id))
        assert await all_gone(pids)


async def test_a_session_left_by_a_completed_turn_belongs_to_the_thread_until_archive(
    rpc: ClientConnection, model: ResponsesServer, workspace: Path
) -> None:
    stall = Stall()
    with trio.fail_after(TEST_TIMEOUT):
        thread_id, first, _, pids = await start_tree(
            rpc, model, workspace, Text("left it running"), stall, keep=True
        )
        await collect(rpc, completed(first))
        second = await start_turn(rpc, thread_id, "something else")
        await stall.streaming.wait()
        await rpc.call("turn/interrupt", {"threadId": thread_id, "turnId": second})
        await collect(rpc, completed(second))
        assert all(alive(p) for p in pids), "an interrupt stops only the interrupted turn's commands"
        await rpc.call("thread/archive", {"threadId": thread_id})
        assert await all_gone(pids), "the thread's sessions die when it is archived"


async def test_archiving_a_thread_kills_its_running_command(
    rpc: ClientConnection, model: ResponsesServer, workspace: Path
) -> None:
    with trio.fail_after(TEST_TIMEOUT):
        thread_id, turn_id, call, pids = await start_tree(rpc, model, workspace, Text("unused"))
        await rpc.call("thread/archive", {"threadId": thread_id})
        events = await collect(rpc, completed(turn_id))
        assert await all_gone(pids)
    assert killed_item(events, call.call_id)["status"] == "failed"
    assert events[-1]["params"]["turn"]["status"] == "interrupted"


async def test_unloading_a_thread_kills_the_sessions_it_kept(
    rpc: ClientConnection, model: ResponsesServer, workspace: Path
) -> None:
    with trio.fail_after(TEST_TIMEOUT):
        thread_id, turn_id, _, pids = await start_tree(rpc, model, workspace, Text("left"), keep=True)
        await collect(rpc, completed(turn_id))
        assert all(alive(p) for p in pids)
        await rpc.call("thread/unsubscribe", {"threadId": thread_id})
        await collect(rpc, method_is("thread/closed"))
        assert await all_gone(pids), "the last subscriber left: the thread unloads with its sessions"


async def test_shutdown_kills_running_commands_and_kept_sessions(
    leak_check: LeakCheck, configured: Path, server_settings: ServerSettings, model: ResponsesServer
) -> None:
    workspace = server_settings.cwd
    kept, running = workspace / "kept", workspace / "running"
    kept.mkdir()
    running.mkdir()
    with trio.fail_after(TEST_TIMEOUT):
        async with open_app_server(server_settings) as server:
            rpc = await server.connect()
            await rpc.initialize("pytest")
            _, first, _, kept_pids = await start_tree(rpc, model, kept, Text("left"), keep=True)
            await collect(rpc, completed(first))
            *_, running_pids = await start_tree(rpc, model, running, Text("unused"))
            pids = kept_pids + running_pids
            assert all(alive(p) for p in pids)
        assert await all_gone(pids)


async def test_sigterm_to_a_server_process_kills_the_commands_of_its_turns(
    configured: Path, stdio_server: StdioServer, model: ResponsesServer, tmp_path: Path
) -> None:
    rpc, workspace = stdio_server.client, tmp_path / "workspace"
    with trio.fail_after(TEST_TIMEOUT):
        await rpc.initialize("pytest")
        *_, pids = await start_tree(rpc, model, workspace, Text("unused"))
        stdio_server.process.send_signal(signal.SIGTERM)
        assert await stdio_server.wait() == 0
        assert await all_gone(pids), "no command outlives the server process"


# ---------------------------------------------------------------------------- approvals
async def test_a_pending_approval_outlives_its_client_and_is_asked_again_on_resume(
    app_server: AppServer, configured: Path, model: ResponsesServer, workspace: Path
) -> None:
    call = Shell("touch made.txt")
    with trio.fail_after(TEST_TIMEOUT):
        first = await connected(app_server, "first")
        thread_id = await start_thread(first, workspace, approval="untrusted")
        model.enqueue(call, Text("done"))
        turn_id = await start_turn(first, thread_id, "make it")
        asked = (await collect(first, method_is("item/commandExecution/requestApproval")))[-1]
        await first.aclose()

        second = await connected(app_server, "second")
        read = await second.call("thread/read", {"threadId": thread_id})
        assert read["thread"]["status"] == {"type": "active", "activeFlags": ["waitingOnApproval"]}
        response = await second.request("thread/resume", {"threadId": thread_id, "excludeTurns": True})
        assert "result" in response
        again = (await collect(second, method_is("item/commandExecution/requestApproval")))[-1]
        await second.respond(again["id"], {"decision": "accept"})
        events = await collect(second, completed(turn_id))
        await second.aclose()
    assert again["id"] == asked["id"]
    assert again["params"] == asked["params"]
    assert again["params"]["itemId"] == call.call_id and again["params"]["turnId"] == turn_id
    assert find(events, "serverRequest/resolved")[0]["params"]["requestId"] == asked["id"]
    assert events[-1]["params"]["turn"]["status"] == "completed"
    assert (workspace / "made.txt").exists()


async def test_a_connection_cannot_answer_a_request_it_was_not_sent(
    app_server: AppServer, configured: Path, model: ResponsesServer, workspace: Path
) -> None:
    with trio.fail_after(TEST_TIMEOUT):
        owner = await connected(app_server, "owner")
        intruder = await connected(app_server, "intruder")
        thread_id = await start_thread(owner, workspace, approval="untrusted")
        model.enqueue(Shell("touch made.txt"), Text("declined"))
        turn_id = await start_turn(owner, thread_id, "make it")
        asked = (await collect(owner, method_is("item/commandExecution/requestApproval")))[-1]
        # B18: guessing the id from another connection gets nothing done.
        await intruder.respond(asked["id"], {"decision": "accept"})
        await intruder.call("thread/loaded/list", {})  # its answer was read (and dropped) before this
        read = await intruder.call("thread/read", {"threadId": thread_id})
        assert read["thread"]["status"] == {"type": "active", "activeFlags": ["waitingOnApproval"]}
        assert not (workspace / "made.txt").exists()
        await owner.respond(asked["id"], {"decision": "decline"})
        events = await collect(owner, completed(turn_id))
        await owner.aclose()
        await intruder.aclose()
    assert events[-1]["params"]["turn"]["status"] == "completed"
    assert not (workspace / "made.txt").exists()


async def test_both_subscribers_are_asked_the_first_answer_wins_and_both_learn_it(
    app_server: AppServer, configured: Path, model: ResponsesServer, workspace: Path
) -> None:
    with trio.fail_after(TEST_TIMEOUT):
        one = await connected(app_server, "one")
        two = await connected(app_server, "two")
        thread_id = await start_thread(one, workspace, approval="untrusted")
        await two.call("thread/resume", {"threadId": thread_id, "excludeTurns": True})
        model.enqueue(Shell("touch made.txt"), Text("done"))
        turn_id = await start_turn(one, thread_id, "make it")
        to_one = (await collect(one, method_is("item/commandExecution/requestApproval")))[-1]
        to_two = (await collect(two, method_is("item/commandExecution/requestApproval")))[-1]
        assert to_one["id"] == to_two["id"]
        await two.respond(to_two["id"], {"decision": "accept"})
        seen_one = await collect(one, completed(turn_id))
        seen_two = await collect(two, completed(turn_id))
        await one.respond(to_one["id"], {"decision": "decline"})  # too late: ignored
        await one.call("thread/loaded/list", {})
        await one.aclose()
        await two.aclose()
    for seen in (seen_one, seen_two):
        assert find(seen, "serverRequest/resolved")[0]["params"]["requestId"] == to_one["id"]
        assert seen[-1]["params"]["turn"]["status"] == "completed"
    assert (workspace / "made.txt").exists()
    assert len(model.posts) == 2


async def test_archiving_the_thread_resolves_its_pending_approval(
    rpc: ClientConnection, model: ResponsesServer, workspace: Path
) -> None:
    with trio.fail_after(TEST_TIMEOUT):
        thread_id = await start_thread(rpc, workspace, approval="untrusted")
        model.enqueue(Shell("touch made.txt"), Text("unused"))
        turn_id = await start_turn(rpc, thread_id, "make it")
        asked = (await collect(rpc, method_is("item/commandExecution/requestApproval")))[-1]
        await rpc.call("thread/archive", {"threadId": thread_id})
        events = await collect(rpc, completed(turn_id))
    assert find(events, "serverRequest/resolved")[0]["params"]["requestId"] == asked["id"]
    assert events[-1]["params"]["turn"]["status"] == "interrupted"
    assert not (workspace / "made.txt").exists()
