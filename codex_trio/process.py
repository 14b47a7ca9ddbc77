"""Child processes owned by a Trio task: spawn on pipes or a PTY, stream, write, resize, kill.

Knows nothing of JSON-RPC (it imports only the leaf `os_errors`); `command/exec`, the turns
engine and MCP's stdio servers build on it. The rules:

* every child is the leader of a new session and process group (pgid = pid), so one
  `killpg` reaches everything it started that did not leave the group itself;
* `spawn()` is an async context manager: whatever way its block ends (normal exit,
  exception, cancellation by terminate / timeout / disconnect / shutdown), it kills the
  whole group with SIGKILL, reaps the child and closes every file descriptor, in a
  shielded, time-bounded cleanup — no zombie and no fd outlives the block;
* `run_to_exit()` supervises a spawned child: it pumps stdout/stderr to callbacks while
  waiting for the exit, honours a caller-owned cancel scope (the control plane: its
  cancellation or deadline stops the child), and after the main process has exited drains
  the remaining output for a bounded time (a background child may hold the pipes open).

A PTY child gets the slave as stdin/stdout/stderr and as its controlling terminal; the
parent keeps only the master (a read there raises EIO once the last slave fd closes, which
is end of output) and closes its slave copy right after the spawn.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import math
import os
import signal
import struct
import subprocess
import termios
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import asynccontextmanager, suppress
from pathlib import Path
from typing import Literal

import attrs
import trio
import trio.lowlevel

from codex_trio.os_errors import os_error_text
from codex_trio.pipes import widen_pipe
from codex_trio.records import by_value

log = logging.getLogger(__name__)

#: bytes per read; each read becomes at most one output chunk.
READ_CHUNK = 64 * 1024
#: seconds to wait for output to reach EOF after the main process exited (the reference's 2 s).
IO_DRAIN_TIMEOUT = 2.0
#: seconds a short read waits for more output before handing over what it has (see _FdReader).
COALESCE_WINDOW = 0.002
#: seconds the shielded cleanup may spend reaping a SIGKILLed child before giving up on it.
REAP_TIMEOUT = 2.0

StreamName = Literal["stdout", "stderr"]
OutputSink = Callable[[StreamName, bytes], Awaitable[None]]


class SpawnError(Exception):
    """The child could not be started; the text is worded like the reference's errors."""


class StdinClosed(Exception):
    """Stdin was closed earlier (by `close_stdin`), so nothing more can be written."""


class NotATerminal(Exception):
    """Resize of a child that does not run on a PTY."""


@by_value
@attrs.frozen(repr=False, eq=False)
class TerminalSize:
    rows: int
    cols: int


DEFAULT_TERMINAL_SIZE = TerminalSize(rows=24, cols=80)


@by_value
@attrs.frozen(repr=False, eq=False)
class SpawnSpec:
    """What to start and how.

    `stdin`: give the child a pipe to write to (else it reads /dev/null). `tty`: run on a new
    PTY of this size (stdin is then always writable, and stderr is merged into stdout).
    `pass_fds`: extra descriptors the child inherits (the sandbox's seccomp program).
    """

    argv: Sequence[str]
    cwd: Path
    env: Mapping[str, str]
    stdin: bool = False
    tty: TerminalSize | None = None
    pass_fds: tuple[int, ...] = ()


def exit_code_of(returncode: int) -> int:
    """A wait status as a shell reports it: the exit code, or 128 + the signal number."""
    return 128 - returncode if returncode < 0 else returncode


class _FdReader(trio.abc.ReceiveStream):
    """The read side of a pipe or PTY master, handing out output in chunks of useful size.

    A read takes everything already buffered (up to `max_bytes`) and, once it holds some
    output, keeps collecting for at most COALESCE_WINDOW: a PTY yields at most ~4 KiB per
    read(2), and without this a fast writer's output would become thousands of tiny chunks,
    while output that trickles in is still handed over within the window. Other ready tasks
    run between the reads of one chunk (measured: +20-30 % PTY throughput, and no 2 ms hold
    of the loop per chunk). EIO from a PTY master (no slave fd left) is end of output.
    """

    def __init__(self, fd: int) -> None:
        os.set_blocking(fd, False)
        self._fd = fd
        self._eof = False

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        limit = READ_CHUNK if max_bytes is None else max_bytes
        await trio.lowlevel.checkpoint()
        parts: list[bytes] = []
        size = 0
        # One scope for the whole read: its deadline is set when the first bytes arrive.
        with trio.CancelScope() as window:
            while not self._eof and size < limit:
                if self._fd < 0:
                    raise trio.ClosedResourceError("file was already closed")
                try:
                    data = os.read(self._fd, limit - size)
                except BlockingIOError:
                    await trio.lowlevel.wait_readable(self._fd)
                    continue
                except OSError as exc:
                    if exc.errno == errno.EBADF:
                        raise trio.ClosedResourceError("file was already closed") from None
                    if exc.errno != errno.EIO:
                        raise trio.BrokenResourceError from exc
                    data = b""
                if not data:
                    self._eof = True
                    break
                if not parts:
                    window.deadline = trio.current_time() + COALESCE_WINDOW
                parts.append(data)
                size += len(data)
                if size < limit:
                    # A PTY read that finds the line discipline empty waits in the kernel for
                    # its flush worker; a scheduling round in between (the writer sending the
                    # previous chunk, other connections) gives the worker that time instead.
                    await trio.lowlevel.cancel_shielded_checkpoint()
        return parts[0] if len(parts) == 1 else b"".join(parts)

    async def aclose(self) -> None:
        if self._fd >= 0:
            fd, self._fd = self._fd, -1
            trio.lowlevel.notify_closing(fd)
            os.close(fd)
        await trio.lowlevel.checkpoint()


class Child:
    """A running child: its output streams, its stdin, its terminal and its process group."""

    def __init__(
        self,
        process: trio.Process,
        *,
        stdout: trio.abc.ReceiveStream,
        stderr: trio.abc.ReceiveStream | None,
        stdin: trio.abc.SendStream | None,
        master: trio.lowlevel.FdStream | None,
    ) -> None:
        self._process = process
        self.stdout = stdout
        #: None on a PTY: the terminal merges both streams into `stdout`.
        self.stderr = stderr
        self._stdin = stdin
        self._master = master
        self._stdin_closed = False
        # stdin writes are applied in the order they were asked for (one lane per child).
        self._stdin_lock = trio.Lock()

    @property
    def pid(self) -> int:
        return self._process.pid

    @property
    def is_tty(self) -> bool:
        return self._master is not None

    @property
    def has_stdin(self) -> bool:
        return self._stdin is not None

    @property
    def returncode(self) -> int | None:
        """The raw wait status once reaped: the exit code, or minus the signal number."""
        return self._process.returncode

    @property
    def exit_code(self) -> int | None:
        """Shell-style exit code once the child was reaped, else None."""
        code = self._process.returncode
        return None if code is None else exit_code_of(code)

    async def wait(self) -> int:
        """Wait for the main process to exit and reap it; returns the shell-style code."""
        return exit_code_of(await self._process.wait())

    async def write(self, data: bytes) -> None:
        """Write to stdin; waits while the child does not read (backpressure).

        Raises StdinClosed after `close_stdin`. A child that has exited or closed its stdin
        silently swallows the bytes, as the reference's writer does.
        """
        if self._stdin is None:
            raise StdinClosed("stdin is not a pipe")
        # Taken before the first checkpoint, so concurrent writes keep their arrival order.
        async with self._stdin_lock:
            if self._stdin_closed:
                raise StdinClosed("stdin is already closed")
            if data:
                await self._send(data)

    async def close_stdin(self) -> None:
        """Signal end of input: close the pipe, or on a PTY type newline + the EOF character."""
        if self._stdin is None:
            return
        async with self._stdin_lock:
            if self._stdin_closed:
                return
            self._stdin_closed = True
            if self._master is not None:
                # A terminal has no half-close: a newline ends any partial line, then VEOF
                # at the start of a line reads as end of file (what the reference sends).
                await self._send(b"\n" + _eof_char(self._master.fileno()))
            else:
                await self._stdin.aclose()

    async def _send(self, data: bytes) -> None:
        assert self._stdin is not None
        try:
            await self._stdin.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            log.debug("child %d: stdin write dropped, the reader is gone", self.pid)

    def resize(self, size: TerminalSize) -> None:
        """Set the PTY size; the kernel sends SIGWINCH to the terminal's foreground group."""
        if self._master is None:
            raise NotATerminal("process is not attached to a PTY")
        _set_winsize(self._master.fileno(), size)

    def kill(self) -> None:
        """SIGKILL the whole process group (and the leader itself, should it have left it)."""
        with suppress(ProcessLookupError, PermissionError):
            os.killpg(self._process.pid, signal.SIGKILL)
        if self._process.returncode is None:
            # Not reaped yet, so the pid cannot have been reused.
            with suppress(ProcessLookupError):
                self._process.send_signal(signal.SIGKILL)

    async def _close(self) -> None:
        """Kill the group, reap the leader, close every fd (the spawn block's cleanup)."""
        self.kill()
        with trio.move_on_after(REAP_TIMEOUT) as reaping:
            await self._process.wait()
        if reaping.cancelled_caught:
            log.warning("child %d did not die within %.0fs of SIGKILL", self.pid, REAP_TIMEOUT)
        for stream in (self._stdin, self.stdout, self.stderr):
            if stream is not None:
                await trio.aclose_forcefully(stream)


def _eof_char(master_fd: int) -> bytes:
    try:
        veof = termios.tcgetattr(master_fd)[6][termios.VEOF]
    except termios.error:
        return b"\x04"
    if isinstance(veof, int):
        return bytes([veof]) if veof else b"\x04"
    return veof if veof and veof != b"\x00" else b"\x04"


def _set_winsize(fd: int, size: TerminalSize) -> None:
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", size.rows, size.cols, 0, 0))


def _take_controlling_terminal() -> None:
    """Runs in the child between fork and exec (after setsid): fd 0 is the PTY slave."""
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)


def _resolve_for_pty(program: str, env: Mapping[str, str]) -> None:
    """The reference's PTY backend looks the program up in PATH itself, with its own errors."""
    if "/" in program:
        return
    path = env.get("PATH")
    if path is None:
        raise SpawnError(f"Unable to spawn {program} because:\nUnable to resolve the PATH")
    for directory in path.split(os.pathsep):
        candidate = os.path.join(directory or ".", program)
        if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return
    raise SpawnError(f'Unable to spawn {program} because:\nNo viable candidates found in PATH "{path}"')


@asynccontextmanager
async def spawn(spec: SpawnSpec) -> AsyncIterator[Child]:
    """Start a child for the duration of the block; see the module docstring for cleanup.

    Raises SpawnError (before the block runs) when the child cannot be started.
    """
    if not spec.argv or not spec.argv[0]:
        raise SpawnError("missing program for PTY spawn" if spec.tty else "missing program for pipe spawn")
    if spec.tty is not None:
        _resolve_for_pty(spec.argv[0], spec.env)
    owned: list[int] = []  # fds to close if the spawn fails
    child_side: list[int] = []  # the child's ends: always closed in the parent after spawning
    try:
        if spec.tty is not None:
            master, slave = os.openpty()
            owned.append(master)
            child_side.append(slave)
            owned.append(os.dup(master))
            _set_winsize(master, spec.tty)
            stdin_arg: int = slave
            stdout_arg = stderr_arg = slave
            preexec: Callable[[], None] | None = _take_controlling_terminal
        else:
            out_read, out_write = os.pipe()
            err_read, err_write = os.pipe()
            owned += [out_read, err_read]
            for fd in (out_read, err_read):
                widen_pipe(fd)
            child_side += [out_write, err_write]
            stdout_arg, stderr_arg = out_write, err_write
            if spec.stdin:
                in_read, in_write = os.pipe()
                owned.append(in_write)
                child_side.append(in_read)
                stdin_arg = in_read
            else:
                stdin_arg = subprocess.DEVNULL
            preexec = None
        try:
            process = await trio.lowlevel.open_process(
                list(spec.argv),
                stdin=stdin_arg,
                stdout=stdout_arg,
                stderr=stderr_arg,
                cwd=spec.cwd,
                env=dict(spec.env),
                start_new_session=True,
                preexec_fn=preexec,
                pass_fds=spec.pass_fds,
            )
        except OSError as exc:
            raise SpawnError(os_error_text(exc)) from exc
        except subprocess.SubprocessError as exc:  # preexec_fn failed in the child
            raise SpawnError(str(exc)) from exc
    except BaseException:
        for fd in owned:
            os.close(fd)
        raise
    finally:
        for fd in child_side:
            os.close(fd)

    if spec.tty is not None:
        # the master is read through its own dup, so reader and writer each own an fd
        master_stream = trio.lowlevel.FdStream(owned[0])
        child = Child(
            process, stdout=_FdReader(owned[1]), stderr=None, stdin=master_stream, master=master_stream
        )
    else:
        child = Child(
            process,
            stdout=_FdReader(owned[0]),
            stderr=_FdReader(owned[1]),
            stdin=trio.lowlevel.FdStream(owned[2]) if spec.stdin else None,
            master=None,
        )
    try:
        yield child
    finally:
        with trio.CancelScope(shield=True):
            await child._close()


async def pump(stream: trio.abc.ReceiveStream, sink: Callable[[bytes], Awaitable[None]]) -> None:
    """Hand every read of `stream` (at most READ_CHUNK bytes) to `sink` until EOF.

    While `sink` waits (a client applying backpressure) nothing is read, so the child is
    held back by its full pipe rather than buffered in memory.
    """
    while True:
        try:
            data = await stream.receive_some(READ_CHUNK)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            return
        if not data:
            return
        await sink(data if isinstance(data, bytes) else bytes(data))


@by_value
@attrs.frozen(repr=False, eq=False)
class Finished:
    """How a supervised child ended."""

    #: shell-style code of the main process (128 + signal when killed), None if not reaped.
    exit_code: int | None
    #: True when the caller's scope stopped it (cancelled or its deadline passed).
    stopped: bool


async def run_to_exit(
    child: Child,
    on_output: OutputSink,
    *,
    stop: trio.CancelScope,
    drain_timeout: float = IO_DRAIN_TIMEOUT,
) -> Finished:
    """Pump the child's output into `on_output` until it exits and its output is drained.

    `stop` is the caller's control scope (kept in a table, cancelled by terminate; its
    deadline is the timeout). When it fires before the main process exits, the group is
    killed at once. After the exit, the deadline no longer applies, and output still
    arriving is drained for at most `drain_timeout` seconds. The group is killed before
    returning, so a background child cannot keep running.
    """
    streams: list[tuple[StreamName, trio.abc.ReceiveStream]] = [("stdout", child.stdout)]
    if child.stderr is not None:
        streams.append(("stderr", child.stderr))
    drained = trio.Event()
    open_streams = len(streams)

    async def pump_one(name: StreamName, stream: trio.abc.ReceiveStream) -> None:
        nonlocal open_streams

        async def sink(data: bytes) -> None:
            await on_output(name, data)

        try:
            await pump(stream, sink)
        finally:
            open_streams -= 1
            if open_streams == 0:
                drained.set()

    async with trio.open_nursery() as pumps:
        for name, stream in streams:
            pumps.start_soon(pump_one, name, stream, name=f"pump {name} of {child.pid}")
        try:
            with stop:
                await child.wait()
                stop.deadline = math.inf  # the timeout covers the run, not the drain
                with trio.move_on_after(drain_timeout):
                    await drained.wait()
        except BaseException:
            # Cancelled from outside (disconnect, shutdown) or failed: the group dies now,
            # while the pumps unwind, rather than after them in spawn's cleanup.
            child.kill()
            raise
        if stop.cancelled_caught:
            child.kill()
            with trio.move_on_after(drain_timeout):
                await child.wait()
                await drained.wait()
        pumps.cancel_scope.cancel()
    child.kill()
    return Finished(exit_code=child.exit_code, stopped=stop.cancelled_caught)
