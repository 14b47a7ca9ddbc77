"""The fault-injection suite: a real server on ws and on stdio, attacked by misbehaving clients.

After every fault a watchdog client's `fs/getMetadata` must be answered within WATCHDOG_LIMIT;
at the end no process a fault started is left, the server's fd count is back to its baseline,
its memory is bounded, every valid request got exactly one reply, and a signal sent at a random
moment (commands running, a client not reading) ends the server within its shutdown budget.
See docs/reliability.md; `CODEX_TRIO_FAULT_SEED=N` replays a run.
"""

from __future__ import annotations

import os
import random
import signal
from pathlib import Path

import pytest
import trio
import trio.lowlevel
import trio_websocket

from tests.faults import (
    EXIT_LIMIT,
    FAULTS,
    FD_SLACK,
    RSS_GROWTH_LIMIT,
    SEED,
    STDIO_FAULTS,
    WATCHDOG_LIMIT,
    WS_FAULTS,
    RpcClient,
    ServerProcess,
    Target,
    check,
    frame,
    initialize_frames,
    marked_processes,
    run_server,
    settle,
    small_buffer_socket,
    start_turn,
    stdio_client,
    ws_client,
)
from tests.responses_server import ResponsesServer

#: what a misbehaving client may see of its own connection failing; never a test failure.
CLIENT_SIDE_ERRORS = (
    OSError,
    trio.BrokenResourceError,
    trio.ClosedResourceError,
    trio_websocket.ConnectionClosed,
    trio_websocket.HandshakeError,
)


async def watchdog_answers(watchdog: RpcClient, after: str) -> None:
    with trio.move_on_after(WATCHDOG_LIMIT) as late:
        answer = await watchdog.call("fs/getMetadata", {"path": "/"})
    check(not late.cancelled_caught, f"watchdog not answered within {WATCHDOG_LIMIT}s after {after}")
    check("result" in answer, f"watchdog got {answer} after {after}")


def describe_processes(pids: list[int]) -> str:
    """State, parent, group, session and command of each pid: what a "processes left" failure
    needs to tell a lifecycle gap (a live tree nobody killed) from a slow reaper."""
    described = []
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as stat_file:
                stat = stat_file.read().rsplit(")", 1)[1].split()
            with open(f"/proc/{pid}/cmdline", "rb") as cmdline:
                command = cmdline.read().replace(b"\0", b" ")[:120].decode(errors="replace")
        except OSError as exc:
            described.append(f"[{pid}: {exc.strerror}]")
            continue
        state, ppid, pgrp, session = stat[0], stat[1], stat[2], stat[3]
        described.append(f"[{pid} {state} ppid={ppid} pgrp={pgrp} sid={session} {command!r}]")
    return " ".join(described)


async def end_checks(
    server: ServerProcess, mark: str, baseline_fds: int, baseline_rss: int, done: list[str]
) -> None:
    history = f"faults: {', '.join(done)}"
    check(
        await settle(lambda: not marked_processes(mark), 10),
        f"processes left: {describe_processes(marked_processes(mark))}; {history}",
    )
    check(
        await settle(lambda: abs(server.fd_count() - baseline_fds) <= FD_SLACK, 10),
        f"fd count {server.fd_count()} vs baseline {baseline_fds}; {history}",
    )
    check(server.rss() - baseline_rss < RSS_GROWTH_LIMIT, f"RSS grew from {baseline_rss} to {server.rss()}")
    check("Traceback" not in server.stderr(), f"the server logged a failure:\n{server.stderr()[-4000:]}")


async def signal_and_wait(server: ServerProcess, rng: random.Random, mark: str) -> None:
    signum = rng.choice([signal.SIGTERM, signal.SIGINT])
    await trio.sleep(rng.uniform(0, 0.3))
    server.process.send_signal(signum)
    with trio.move_on_after(EXIT_LIMIT) as late:
        code = await server.process.wait()
    check(not late.cancelled_caught, f"still running {EXIT_LIMIT}s after {signum.name}")
    check(code == 0, f"exit status {code} after {signum.name}:\n{server.stderr()[-4000:]}")
    check(
        "shutdown budget" not in server.stderr(),
        f"shutdown needed its whole budget:\n{server.stderr()[-4000:]}",
    )
    check(
        await settle(lambda: not marked_processes(mark), 3),
        f"processes left after exit: {describe_processes(marked_processes(mark))}",
    )


@pytest.mark.deadline(300)
async def test_a_websocket_server_survives_misbehaving_clients(tmp_path: Path, nursery: trio.Nursery) -> None:
    rng = random.Random(SEED)
    mark = f"ws-{SEED}-{os.getpid()}"
    model = ResponsesServer()
    await nursery.start(model.run)
    config = model.config_toml()
    async with run_server(tmp_path, ["--listen", "ws://127.0.0.1:0"], config=config) as server:
        assert server.port is not None
        target = Target(server, rng, mark, model)
        async with ws_client(server.port) as (watchdog, _):
            await watchdog.initialize("watchdog")
            # Load what the faults use, so the baseline already counts those families' fds.
            await watchdog.call("command/exec", target.command("true", stream=False))
            await watchdog.call("thread/start", {"cwd": str(server.workspace)})
            await watchdog_answers(watchdog, "start-up")
            baseline_fds, baseline_rss = server.fd_count(), server.rss()
            done: list[str] = []
            for index in range(FAULTS):
                fault = rng.choice(WS_FAULTS)
                done.append(fault.__name__)
                try:
                    with trio.fail_after(30):
                        await fault(target)
                except* CLIENT_SIDE_ERRORS:
                    pass
                check(
                    server.alive(),
                    f"server exited during fault {index} ({fault.__name__}):\n{server.stderr()[-4000:]}",
                )
                await watchdog_answers(watchdog, f"fault {index} ({fault.__name__})")
            turns = done.count("turn_then_drop")
            check(len(model.posts) >= turns, f"{turns} turns started, the model saw {len(model.posts)}")
            # Turns whose clients left run on; let the hanging model streams finish them.
            target.release_stalls()
            await end_checks(server, mark, baseline_fds, baseline_rss, done)
            check(not watchdog.exactly_one_reply_each(), f"watchdog: {watchdog.exactly_one_reply_each()}")
            # Shutdown under load: a flooding command on a client that never reads, and a
            # command with a grandchild on the watchdog.
            stalled = await small_buffer_socket(server.port)
            async with stalled:
                await stalled.send_all(
                    initialize_frames()
                    + frame({"id": 1, "method": "command/exec", "params": target.command(target.flood())})
                )
                await watchdog.send("command/exec", target.command("sleep 300 & sleep 300", stream=False))
                await start_turn(target, watchdog)
                await signal_and_wait(server, rng, mark)
            target.release_stalls()


@pytest.mark.deadline(300)
async def test_a_stdio_server_survives_a_misbehaving_client(tmp_path: Path, nursery: trio.Nursery) -> None:
    rng = random.Random(SEED + 1)
    mark = f"stdio-{SEED}-{os.getpid()}"
    async with run_server(tmp_path, [], stdio=True) as server:
        target = Target(server, rng, mark)
        client = stdio_client(server)
        nursery.start_soon(client.run)
        await client.initialize("stdio-fault")
        await client.call("command/exec", target.command("true", stream=False))
        await watchdog_answers(client, "start-up")
        baseline_fds, baseline_rss = server.fd_count(), server.rss()
        done: list[str] = []
        for index in range(max(1, FAULTS // 2)):
            fault = rng.choice(STDIO_FAULTS)
            done.append(fault.__name__)
            with trio.fail_after(30):
                await fault(target, client)
            check(
                server.alive(),
                f"server exited during fault {index} ({fault.__name__}):\n{server.stderr()[-4000:]}",
            )
            await watchdog_answers(client, f"fault {index} ({fault.__name__})")
        await end_checks(server, mark, baseline_fds, baseline_rss, done)
        check(not client.exactly_one_reply_each(), f"replies: {client.exactly_one_reply_each()}")
        await client.send("command/exec", target.command(target.flood(), tty=rng.random() < 0.5))
        await client.send("command/exec", target.command("sleep 300 & sleep 300", stream=False))
        client.pause()
        await signal_and_wait(server, rng, mark)


@pytest.mark.parametrize("tty", [False, True], ids=["pipes", "pty"])
async def test_sigterm_during_an_output_flood_to_a_client_that_does_not_read(
    tmp_path: Path, tty: bool
) -> None:
    """Issue 11 finding 7: one shutdown budget bounds every stage, so a client that never
    reads cannot hold the process open."""
    mark = f"flood-{SEED}-{os.getpid()}-{tty}"
    async with run_server(tmp_path, ["--listen", "ws://127.0.0.1:0"]) as server:
        assert server.port is not None
        target = Target(server, random.Random(SEED), mark)
        stalled = [await small_buffer_socket(server.port) for _ in range(3)]
        for stream in stalled:
            requests = b"".join(
                frame(
                    {"id": index, "method": "command/exec", "params": target.command(target.flood(), tty=tty)}
                )
                for index in range(3)
            )
            await stream.send_all(initialize_frames() + requests)
        check(await settle(lambda: len(marked_processes(mark)) >= 9, 10), "the floods did not start")
        await trio.sleep(0.5)
        began = trio.current_time()
        server.process.send_signal(signal.SIGTERM)
        with trio.move_on_after(EXIT_LIMIT) as late:
            code = await server.process.wait()
        check(not late.cancelled_caught, f"still running {EXIT_LIMIT}s after SIGTERM")
        check(code == 0, f"exit status {code}")
        check(await settle(lambda: not marked_processes(mark), 3), f"left: {marked_processes(mark)}")
        elapsed = trio.current_time() - began
        for stream in stalled:
            await stream.aclose()
    assert elapsed < EXIT_LIMIT


@pytest.mark.parametrize("transport", ["ws", "unix"])
async def test_pipelined_requests_and_an_abrupt_close_leave_the_server_serving(
    tmp_path: Path, transport: str
) -> None:
    """Issue 11 finding 1, as reported: a client with a small receive buffer pipelines a few
    hundred requests without reading and closes; the server used to exit 1 every time."""
    socket_path = tmp_path / "ctl.sock"
    listen = "ws://127.0.0.1:0" if transport == "ws" else f"unix://{socket_path}"
    async with run_server(tmp_path, ["--listen", listen]) as server:
        port = server.port or 0
        unix_path = str(socket_path) if transport == "unix" else None
        for round_ in range(3):
            stream = await small_buffer_socket(port, unix_path=unix_path)
            async with stream:
                data = b"" if round_ == 0 else initialize_frames()
                request = {"method": "fs/readDirectory", "params": {"path": str(server.workspace)}}
                data += b"".join(frame({"id": index, **request}) for index in range(400))
                with trio.move_on_after(1.0):
                    await stream.send_all(data)
                    await trio.sleep_forever()
            await trio.sleep(0.2)
            check(server.alive(), f"server exited:\n{server.stderr()[-4000:]}")
        if unix_path is None:
            async with ws_client(port) as (client, _):
                await client.initialize()
                answer = await client.call("fs/getMetadata", {"path": "/"})
        else:
            stream = await small_buffer_socket(0, unix_path=unix_path)
            async with stream:
                await stream.send_all(initialize_frames())
                received = b""
                with trio.fail_after(10):
                    while b'"id":"init"' not in received:
                        received += await stream.receive_some(65536)
                answer = {"result": received}
        check("result" in answer, f"after the faults: {answer}")
        check("Traceback" not in server.stderr(), server.stderr()[-4000:])


@pytest.mark.deadline(240)
@pytest.mark.parametrize("transport", ["ws", "stdio"])
async def test_signals_at_random_moments_leave_nothing_behind(
    tmp_path: Path, nursery: trio.Nursery, transport: str
) -> None:
    """SIGINT or SIGTERM lands while faults, commands and turns are under way: the server
    exits 0 within its shutdown budget and no process it started survives."""
    rng = random.Random(SEED + (2 if transport == "ws" else 3))
    model = ResponsesServer()
    await nursery.start(model.run)
    for round_ in range(3):
        mark = f"signal-{transport}-{SEED}-{os.getpid()}-{round_}"
        args = ["--listen", "ws://127.0.0.1:0"] if transport == "ws" else []
        workdir = tmp_path / f"round-{round_}"
        workdir.mkdir()
        async with run_server(
            workdir, args, stdio=transport == "stdio", config=model.config_toml()
        ) as server:
            target = Target(server, rng, mark, model)
            async with trio.open_nursery() as load:
                if transport == "ws":
                    load.start_soon(_keep_faulting, target)
                    async with ws_client(target.port) as (client, _):
                        await _busy(target, client)
                        await signal_and_wait(server, rng, mark)
                else:
                    client = stdio_client(server)
                    load.start_soon(client.run)
                    await _busy(target, client)
                    await signal_and_wait(server, rng, mark)
                load.cancel_scope.cancel()
        target.release_stalls()


async def _busy(target: Target, client: RpcClient) -> None:
    """Commands (one flooding, one with a grandchild) and a turn, all running."""
    await client.initialize("busy")
    await client.send("command/exec", target.command(target.flood(), tty=target.rng.random() < 0.5))
    await client.send("command/exec", target.command("sleep 300 & sleep 300", stream=False))
    await start_turn(target, client)
    check(await settle(lambda: len(marked_processes(target.mark)) >= 2, 10), "the commands did not start")


async def _keep_faulting(target: Target) -> None:
    """Random faults until cancelled; the server going away mid-fault is expected here."""
    while True:
        try:
            await target.rng.choice(WS_FAULTS)(target)
        except* Exception:
            pass
        await trio.lowlevel.checkpoint()
