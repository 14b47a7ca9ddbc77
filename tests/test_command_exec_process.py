"""codex_trio.process on its own: spawn on pipes and PTYs, supervision, group kill, cleanup.

Every test takes `leak_check`, so each also proves that no child, zombie or fd is left.
Grandchildren are watched through pidfds, so their death is awaited, not polled.
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.lowlevel

from codex_trio.process import (
    READ_CHUNK,
    NotATerminal,
    SpawnError,
    SpawnSpec,
    StdinClosed,
    StreamName,
    TerminalSize,
    exit_code_of,
    run_to_exit,
    spawn,
)

TIMEOUT = 20


def spec(argv: list[str], tmp_path: Path, **extra: Any) -> SpawnSpec:
    return SpawnSpec(argv=argv, cwd=tmp_path, env=dict(os.environ), **extra)


class Collected:
    """Output per stream, with an event per expected needle."""

    def __init__(self) -> None:
        self.data: dict[StreamName, bytearray] = {"stdout": bytearray(), "stderr": bytearray()}
        self.chunks: list[tuple[StreamName, int]] = []
        self._changed = trio.Event()

    async def __call__(self, stream: StreamName, data: bytes) -> None:
        self.data[stream] += data
        self.chunks.append((stream, len(data)))
        self._changed.set()
        self._changed = trio.Event()

    async def wait_for(self, needle: bytes, stream: StreamName = "stdout") -> None:
        while needle not in self.data[stream]:
            await self._changed.wait()


async def wait_gone(pid: int) -> None:
    """Wait until a process that is not our child has exited (pidfd: no polling)."""
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return
    try:
        await trio.lowlevel.wait_readable(fd)
    finally:
        os.close(fd)


async def test_a_pipe_child_reports_exit_code_and_both_streams(leak_check: Any, tmp_path: Path) -> None:
    out = Collected()
    with trio.fail_after(TIMEOUT):
        async with spawn(spec(["sh", "-c", "echo out; echo err >&2; exit 3"], tmp_path)) as child:
            finished = await run_to_exit(child, out, stop=trio.CancelScope())
    assert (finished.exit_code, finished.stopped) == (3, False)
    assert out.data == {"stdout": b"out\n", "stderr": b"err\n"}


async def test_stdin_is_dev_null_unless_asked_for(leak_check: Any, tmp_path: Path) -> None:
    out = Collected()
    with trio.fail_after(TIMEOUT):
        async with spawn(spec(["sh", "-c", "cat; echo done"], tmp_path)) as child:
            assert not child.has_stdin
            with pytest.raises(StdinClosed):
                await child.write(b"x")
            await run_to_exit(child, out, stop=trio.CancelScope())
    assert out.data["stdout"] == b"done\n"


async def test_stdin_writes_reach_the_child_and_close_gives_eof(leak_check: Any, tmp_path: Path) -> None:
    out = Collected()
    with trio.fail_after(TIMEOUT):
        async with (
            spawn(spec(["sh", "-c", "cat; echo eof"], tmp_path, stdin=True)) as child,
            trio.open_nursery() as nursery,
        ):

            async def feed() -> None:
                await child.write(b"one\n")
                await out.wait_for(b"one\n")
                await child.write(b"two\n")
                await child.close_stdin()
                await child.close_stdin()  # idempotent
                with pytest.raises(StdinClosed):
                    await child.write(b"three\n")

            nursery.start_soon(feed)
            finished = await run_to_exit(child, out, stop=trio.CancelScope())
    assert finished.exit_code == 0
    assert out.data["stdout"] == b"one\ntwo\neof\n"


async def test_output_chunks_are_at_most_one_read(leak_check: Any, tmp_path: Path) -> None:
    out = Collected()
    size = 3 * 1024 * 1024 + 17
    with trio.fail_after(TIMEOUT):
        async with spawn(spec(["head", "-c", str(size), "/dev/zero"], tmp_path)) as child:
            await run_to_exit(child, out, stop=trio.CancelScope())
    assert len(out.data["stdout"]) == size
    assert max(length for _, length in out.chunks) <= READ_CHUNK


async def test_output_pipes_are_widened_so_a_fast_child_blocks_less_often(
    leak_check: Any, tmp_path: Path
) -> None:
    from codex_trio.pipes import PIPE_BUFFER

    out = Collected()
    probe = "import fcntl, sys; print(fcntl.fcntl(1, 1032), fcntl.fcntl(2, 1032))"  # F_GETPIPE_SZ
    with trio.fail_after(TIMEOUT):
        async with spawn(spec([sys.executable, "-c", probe], tmp_path)) as child:
            await run_to_exit(child, out, stop=trio.CancelScope())
    assert out.data["stdout"].split() == [str(PIPE_BUFFER).encode()] * 2


async def test_collecting_a_chunk_lets_ready_tasks_run_between_reads() -> None:
    """A PTY read hands out a few KiB at a time, so one chunk takes many reads: a task that is
    ready meanwhile runs between them instead of waiting for the whole chunk. A SEQPACKET
    socket gives the same shape deterministically (one read per message)."""
    import socket

    from codex_trio.process import _FdReader

    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    for _ in range(16):
        theirs.send(b"x" * 4096)
    reader = _FdReader(ours.detach())
    rounds = 0
    done = trio.Event()

    async def busy() -> None:
        nonlocal rounds
        while not done.is_set():
            rounds += 1
            await trio.lowlevel.checkpoint()

    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(busy)
            await trio.lowlevel.checkpoint()
            before = rounds
            chunk = await reader.receive_some(16 * 4096)
            during = rounds - before
            done.set()
    await reader.aclose()
    theirs.close()
    assert len(chunk) == 16 * 4096
    assert during >= 15


async def test_a_pty_child_has_a_controlling_terminal_of_the_requested_size(
    leak_check: Any, tmp_path: Path
) -> None:
    out = Collected()
    script = "stty size; test -t 0 && echo tty; echo err >&2; ps -o tpgid= -p $$; echo pid=$$"
    with trio.fail_after(TIMEOUT):
        async with spawn(spec(["sh", "-c", script], tmp_path, tty=TerminalSize(33, 101))) as child:
            assert child.is_tty and child.stderr is None
            finished = await run_to_exit(child, out, stop=trio.CancelScope())
    assert finished.exit_code == 0
    lines = out.data["stdout"].decode().split("\r\n")
    assert lines[:3] == ["33 101", "tty", "err"]
    # the child's own process group is the terminal's foreground group
    assert lines[3].strip() == lines[4].removeprefix("pid=")


async def test_resizing_a_pty_sends_sigwinch_and_the_child_sees_the_new_size(
    leak_check: Any, tmp_path: Path
) -> None:
    out = Collected()
    script = (  # SIGWINCH is blocked before "ready", so sigwait cannot miss it
        "import os, signal\n"
        "signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGWINCH})\n"
        "print('ready', flush=True)\n"
        "signal.sigwait({signal.SIGWINCH})\n"
        "print('winch', *os.get_terminal_size(0), flush=True)\n"
    )
    with trio.fail_after(TIMEOUT):
        async with (
            spawn(spec([sys.executable, "-c", script], tmp_path, tty=TerminalSize(24, 80))) as child,
            trio.open_nursery() as nursery,
        ):

            async def resize() -> None:
                await out.wait_for(b"ready")
                child.resize(TerminalSize(rows=50, cols=120))

            nursery.start_soon(resize)
            finished = await run_to_exit(child, out, stop=trio.CancelScope())
    assert finished.exit_code == 0
    assert b"winch 120 50" in out.data["stdout"]


async def test_resizing_a_pipe_child_is_refused(leak_check: Any, tmp_path: Path) -> None:
    with trio.fail_after(TIMEOUT):
        async with spawn(spec(["true"], tmp_path)) as child:
            with pytest.raises(NotATerminal):
                child.resize(TerminalSize(5, 5))
            await child.wait()


async def test_closing_pty_stdin_types_newline_and_eof(leak_check: Any, tmp_path: Path) -> None:
    out = Collected()
    with trio.fail_after(TIMEOUT):
        async with spawn(spec(["sh", "-c", "cat; echo after"], tmp_path, tty=TerminalSize(24, 80))) as child:
            await child.write(b"xyz")
            await child.close_stdin()
            finished = await run_to_exit(child, out, stop=trio.CancelScope())
    assert finished.exit_code == 0
    assert out.data["stdout"] == b"xyz\r\nxyz\r\nafter\r\n"


async def test_cancelling_the_stop_scope_kills_the_whole_group(leak_check: Any, tmp_path: Path) -> None:
    out = Collected()
    stop = trio.CancelScope()
    script = "trap 'echo trapped' TERM; sleep 300 & echo bg=$!; while :; do sleep 0.05; done"
    with trio.fail_after(TIMEOUT):
        async with spawn(spec(["sh", "-c", script], tmp_path)) as child, trio.open_nursery() as nursery:

            async def terminate() -> None:
                await out.wait_for(b"\n")
                stop.cancel()

            nursery.start_soon(terminate)
            finished = await run_to_exit(child, out, stop=stop)
        await wait_gone(int(out.data["stdout"].split(b"=")[1]))
    assert finished == type(finished)(exit_code=128 + signal.SIGKILL, stopped=True)
    assert b"trapped" not in out.data["stdout"]


async def test_the_stop_deadline_is_a_timeout_that_keeps_earlier_output(
    leak_check: Any, tmp_path: Path
) -> None:
    out = Collected()
    stop = trio.CancelScope(deadline=trio.current_time() + 0.2)
    with trio.fail_after(TIMEOUT):
        async with spawn(spec(["sh", "-c", "echo before; exec sleep 300"], tmp_path)) as child:
            finished = await run_to_exit(child, out, stop=stop)
    assert finished.stopped and finished.exit_code == 128 + signal.SIGKILL
    assert out.data["stdout"] == b"before\n"


async def test_a_background_child_holding_the_pipe_is_drained_briefly_then_killed(
    leak_check: Any, tmp_path: Path
) -> None:
    out = Collected()
    with trio.fail_after(TIMEOUT):
        async with spawn(spec(["sh", "-c", "sleep 300 & echo bg=$!; exit 4"], tmp_path)) as child:
            began = trio.current_time()
            finished = await run_to_exit(child, out, stop=trio.CancelScope(), drain_timeout=0.3)
            assert 0.3 <= trio.current_time() - began < 5
            await wait_gone(int(out.data["stdout"].split(b"=")[1]))
    assert finished == type(finished)(exit_code=4, stopped=False)


async def test_outside_cancellation_kills_the_group_and_closes_everything(
    leak_check: Any, tmp_path: Path
) -> None:
    out = Collected()
    with trio.fail_after(TIMEOUT):
        with trio.CancelScope() as outer:
            async with (
                spawn(spec(["sh", "-c", "sleep 300 & echo bg=$!; wait"], tmp_path, stdin=True)) as child,
                trio.open_nursery() as nursery,
            ):

                async def disconnect() -> None:
                    await out.wait_for(b"\n")
                    outer.cancel()

                nursery.start_soon(disconnect)
                await run_to_exit(child, out, stop=trio.CancelScope())
        assert outer.cancelled_caught
        assert child.returncode == -signal.SIGKILL
        await wait_gone(int(out.data["stdout"].split(b"=")[1]))


@pytest.mark.parametrize(
    ("argv", "tty", "message"),
    [
        (["definitely-not-a-command-xyz"], False, "No such file or directory (os error 2)"),
        (["/etc/passwd"], False, "Permission denied (os error 13)"),
        ([""], False, "missing program for pipe spawn"),
        ([""], True, "missing program for PTY spawn"),
        (["/nonexistent/prog"], True, "No such file or directory (os error 2)"),
    ],
)
async def test_spawn_failures_are_worded_like_the_reference_and_leak_nothing(
    leak_check: Any, tmp_path: Path, argv: list[str], tty: bool, message: str
) -> None:
    size = TerminalSize(24, 80) if tty else None
    with pytest.raises(SpawnError, match=f"^{message}$".replace("(", r"\(").replace(")", r"\)")):
        async with spawn(spec(argv, tmp_path, tty=size, stdin=True)):
            pytest.fail("spawned")


async def test_a_pty_program_missing_from_path_names_the_path(leak_check: Any, tmp_path: Path) -> None:
    env = {"PATH": "/foo:/bar"}
    with pytest.raises(SpawnError) as caught:
        async with spawn(SpawnSpec(["nope-xyz"], tmp_path, env, tty=TerminalSize(24, 80))):
            pass
    assert (
        str(caught.value)
        == 'Unable to spawn nope-xyz because:\nNo viable candidates found in PATH "/foo:/bar"'
    )
    with pytest.raises(SpawnError, match="Unable to resolve the PATH"):
        async with spawn(SpawnSpec(["nope-xyz"], tmp_path, {}, tty=TerminalSize(24, 80))):
            pass


async def test_a_missing_cwd_is_a_spawn_error(leak_check: Any, tmp_path: Path) -> None:
    with pytest.raises(SpawnError, match=r"No such file or directory \(os error 2\)"):
        async with spawn(SpawnSpec(["true"], tmp_path / "missing", dict(os.environ))):
            pass


def test_exit_codes_are_shell_style() -> None:
    assert [exit_code_of(c) for c in (0, 3, -9, -15)] == [0, 3, 137, 143]


async def test_children_run_with_no_blocked_or_ignored_signals(leak_check: Any, tmp_path: Path) -> None:
    out = Collected()
    with trio.fail_after(TIMEOUT):
        async with spawn(spec(["grep", "-E", "^Sig(Blk|Ign)", "/proc/self/status"], tmp_path)) as child:
            await run_to_exit(child, out, stop=trio.CancelScope())
    assert out.data["stdout"] == b"SigBlk:\t0000000000000000\nSigIgn:\t0000000000000000\n"
