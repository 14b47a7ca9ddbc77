"""Child processes owned by a Trio task: spawn on pipes or a PTY, stream, write, resize, kill.

Knows nothing of JSON-RPC; `command/exec` and the turns engine both build on it. The rules:

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
import select
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

log = logging.getLogger(__name__)

#: bytes per read; each read becomes at most one output chunk.
READ_CHUNK = 64 * 1024
#: seconds to wait for output to reach EOF after the main process exited (the reference's 2 s).
IO_DRAIN_TIMEOUT = 2.0
#: seconds a short read waits for more output before handing over what it has (see _FdReader).
COALESCE_WINDOW = 0.002
#: worker threads reading PTY masters at once (each read burst lasts at most a few ms).
PTY_READER_THREADS = 16
#: chunks a stream's reader may be ahead of its consumer (memory: this many READ_CHUNKs).
READ_AHEAD = 2
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


@attrs.frozen
class TerminalSize:
    rows: int
    cols: int


DEFAULT_TERMINAL_SIZE = TerminalSize(rows=24, cols=80)


@attrs.frozen
class SpawnSpec:
    """What to start and how.

    `stdin`: give the child a pipe to write to (else it reads /dev/null). `tty`: run on a new
    PTY of this size (stdin is then always writable, and stderr is merged into stdout).
    """

    argv: Sequence[str]
    cwd: Path
    env: Mapping[str, str]
    stdin: bool = False
    tty: TerminalSize | None = None


def exit_code_of(returncode: int) -> int:
    """A wait status as a shell reports it: the exit code, or 128 + the signal number."""
    return 128 - returncode if returncode < 0 else returncode


def _read_burst(fd: int, limit: int, window: float) -> tuple[bytes, bool]:
    """Read what `fd` has, up to `limit` bytes; returns (data, end of output).

    The fd is non-blocking: when it runs dry, wait at most `window` seconds for more (0:
    return at once). Waiting is for worker threads only; the event loop passes 0.
    """
    parts: list[bytes] = []
    size = 0
    poller: select.poll | None = None
    while size < limit:
        try:
            data = os.read(fd, limit - size)
        except BlockingIOError:
            if not window:
                break
            if poller is None:
                poller = select.poll()
                poller.register(fd, select.POLLIN)
            if not poller.poll(window * 1000):
                break
            continue
        except OSError as exc:
            if exc.errno != errno.EIO:  # EIO: a PTY master with no slave left
                raise
            return b"".join(parts), True
        if not data:
            return b"".join(parts), True
        parts.append(data)
        size += len(data)
    return (parts[0] if len(parts) == 1 else b"".join(parts)), False


_PTY_READERS: trio.lowlevel.RunVar[trio.CapacityLimiter] = trio.lowlevel.RunVar("pty_readers")


def _pty_readers() -> trio.CapacityLimiter:
    try:
        return _PTY_READERS.get()
    except LookupError:
        limiter = trio.CapacityLimiter(PTY_READER_THREADS)
        _PTY_READERS.set(limiter)
        return limiter


class _FdReader(trio.abc.ReceiveStream):
    """The read side of a pipe or PTY master, handing out output in chunks of useful size.

    A read waits (cancellably) until the fd is readable, then takes everything buffered up
    to `max_bytes`, waiting up to COALESCE_WINDOW after a short read: a PTY yields at most
    ~4 KiB per read(2), and without this a fast writer's output would become thousands of
    tiny chunks, while output that trickles in is still handed over within the window.

    PTY reads cost ~30 µs of kernel time per 4 KiB, so for a PTY the burst runs in a worker
    thread (bounded by PTY_READER_THREADS; it never blocks for more than the window),
    which lets `pump` read the next chunk while the previous one is being sent.
    EIO from a PTY master (no slave fd left) is end of output.
    """

    def __init__(self, fd: int, *, threaded: bool = False) -> None:
        os.set_blocking(fd, False)
        self._fd = fd
        self._threaded = threaded
        self._eof = False

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        limit = READ_CHUNK if max_bytes is None else max_bytes
        if self._fd < 0:
            raise trio.ClosedResourceError("file was already closed")
        if self._eof:
            await trio.lowlevel.checkpoint()
            return b""
        try:
            await trio.lowlevel.wait_readable(self._fd)
            if self._threaded:
                data, self._eof = await trio.to_thread.run_sync(
                    _read_burst, self._fd, limit, COALESCE_WINDOW, limiter=_pty_readers()
                )
                return data
            parts: list[bytes] = []
            size = 0
            while True:
                data, self._eof = _read_burst(self._fd, limit - size, 0)
                parts.append(data)
                size += len(data)
                if self._eof or size >= limit:
                    break
                with trio.move_on_after(COALESCE_WINDOW) as idle:
                    await trio.lowlevel.wait_readable(self._fd)
                if idle.cancelled_caught:
                    break
        except OSError as exc:
            if exc.errno == errno.EBADF:
                raise trio.ClosedResourceError("file was already closed") from None
            raise trio.BrokenResourceError from exc
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


def _os_error_text(exc: OSError) -> str:
    """Rust's `io::Error` display: `No such file or directory (os error 2)`."""
    if exc.errno is None:
        return str(exc)
    return f"{os.strerror(exc.errno)} (os error {exc.errno})"


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
            )
        except OSError as exc:
            raise SpawnError(_os_error_text(exc)) from exc
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
        reader = _FdReader(owned[1], threaded=True)
        child = Child(process, stdout=reader, stderr=None, stdin=master_stream, master=master_stream)
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

    Reading runs up to READ_AHEAD chunks ahead of `sink`, so a slow sink (a client
    applying backpressure) and the reads overlap; beyond that the child is held back.
    """
    send, receive = trio.open_memory_channel[bytes](READ_AHEAD)

    async def read() -> None:
        async with send:
            while True:
                try:
                    data = await stream.receive_some(READ_CHUNK)
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    return
                if not data:
                    return
                await send.send(data if isinstance(data, bytes) else bytes(data))

    async with trio.open_nursery() as nursery, receive:
        nursery.start_soon(read, name="read ahead")
        async for data in receive:
            await sink(data)


@attrs.frozen
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
        with stop:
            await child.wait()
            stop.deadline = math.inf  # the timeout covers the run, not the drain
            with trio.move_on_after(drain_timeout):
                await drained.wait()
        if stop.cancelled_caught:
            child.kill()
            with trio.move_on_after(drain_timeout):
                await child.wait()
                await drained.wait()
        pumps.cancel_scope.cancel()
    child.kill()
    return Finished(exit_code=child.exit_code, stopped=stop.cancelled_caught)
