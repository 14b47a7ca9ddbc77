"""The shell tools `exec_command` / `write_stdin`: sessions of processes the model runs.

A command runs as a *session* (`ExecSession`): a task in the thread runtime's nursery that
spawns the child through `codex_trio.process` (new process group, killed with everything it
started when the session's scope is cancelled) and keeps its output. `exec_command` waits
up to `yield_time_ms` for the command to finish; a command still running then stays alive
as a session the model continues with `write_stdin`.

Ownership: a session belongs to the turn that started it (`owner`) until that turn ends.
An interrupted turn stops its sessions (`stop_owned`) before it reports `turn/completed`;
a turn that ends otherwise leaves them to the thread, for later turns' `write_stdin`.
Every session dies when the thread runtime that runs them stops (thread unloaded or
archived, server shutdown): the runtime's nursery is cancelled and each process group killed.

Output kept per session is bounded (`MAX_SESSION_BUFFER`); output handed to the model is
cut to its token budget, head and tail kept.
"""

from __future__ import annotations

import codecs
import itertools
import logging
import os
import secrets
import shlex
import time
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

import attrs
import trio

from codex_trio.process import (
    DEFAULT_TERMINAL_SIZE,
    Child,
    SpawnError,
    SpawnSpec,
    StreamName,
    run_to_exit,
)
from codex_trio.records import by_value
from codex_trio.sandbox import Confinement, spawn_confined

log = logging.getLogger(__name__)

#: bytes of output a session keeps for the model between two reads of it.
MAX_SESSION_BUFFER = 1024 * 1024
#: default and bounds of `yield_time_ms` (milliseconds), as the tool description says.
DEFAULT_YIELD_MS = 10_000
DEFAULT_WRITE_YIELD_MS = 250
DEFAULT_POLL_YIELD_MS = 5_000
MIN_YIELD_MS = 250
MAX_YIELD_MS = 30_000
MAX_POLL_YIELD_MS = 300_000
#: default output budget in tokens; a token is counted as 4 bytes.
DEFAULT_MAX_OUTPUT_TOKENS = 10_000
BYTES_PER_TOKEN = 4
#: sessions one thread may keep running at once.
MAX_SESSIONS = 64
#: seconds output may keep arriving after the command exited (a background child holds the pipe).
EXIT_DRAIN_TIMEOUT = 0.5
#: seconds a stopped session may take to be killed, reaped and drained.
STOP_TIMEOUT = 5.0

#: environment for commands run by the model: no pagers or colours waiting on a terminal.
COMMAND_ENV = {"PAGER": "cat", "GIT_PAGER": "cat", "NO_COLOR": "1"}


class ExecToolError(Exception):
    """A tool call that could not run; the text goes back to the model."""


def default_shell() -> str:
    shell = os.environ.get("SHELL", "")
    return shell if shell and os.path.isabs(shell) and os.access(shell, os.X_OK) else "/bin/bash"


@by_value
@attrs.frozen(repr=False, eq=False)
class ExecArgs:
    """`exec_command` arguments, validated."""

    cmd: str
    workdir: str | None = None
    shell: str | None = None
    login: bool = True
    tty: bool = False
    yield_time_ms: int = DEFAULT_YIELD_MS
    max_output_tokens: int = DEFAULT_MAX_OUTPUT_TOKENS
    escalated: bool = False
    justification: str | None = None
    prefix_rule: list[str] | None = None

    def argv(self) -> list[str]:
        shell = self.shell or default_shell()
        return [shell, "-lc" if self.login else "-c", self.cmd]

    def display(self) -> str:
        """The command as the item shows it: `/bin/bash -lc 'echo hi'`."""
        return shlex.join(self.argv())

    def cwd(self, turn_cwd: Path) -> Path:
        if not self.workdir:
            return turn_cwd
        path = Path(self.workdir)
        return path if path.is_absolute() else turn_cwd / path


def parse_exec_args(raw: Mapping[str, Any]) -> ExecArgs:
    cmd = raw.get("cmd", raw.get("command"))
    if isinstance(cmd, list) and all(isinstance(p, str) for p in cmd):
        cmd = shlex.join(cmd)
    if not isinstance(cmd, str) or not cmd.strip():
        raise ExecToolError("missing field `cmd`")
    prefix = raw.get("prefix_rule")
    return ExecArgs(
        cmd=cmd,
        workdir=_opt_str(raw.get("workdir")),
        shell=_opt_str(raw.get("shell")),
        login=raw.get("login") is not False,
        tty=raw.get("tty") is True,
        yield_time_ms=_clamp(raw.get("yield_time_ms"), DEFAULT_YIELD_MS, MIN_YIELD_MS, MAX_YIELD_MS),
        max_output_tokens=_clamp(raw.get("max_output_tokens"), DEFAULT_MAX_OUTPUT_TOKENS, 1, 1 << 30),
        escalated=raw.get("sandbox_permissions") == "require_escalated",
        justification=_opt_str(raw.get("justification")),
        prefix_rule=[p for p in prefix if isinstance(p, str)] if isinstance(prefix, list) else None,
    )


def _opt_str(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _clamp(value: Any, default: int, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return default
    return int(min(max(value, low), high))


# ---------------------------------------------------------------------------- command actions
_LISTERS = {"ls", "tree", "exa", "eza"}
_SEARCHERS = {"rg", "grep", "ag", "ack", "fd", "find"}
_READERS = {"cat", "head", "tail", "less", "more", "nl", "bat"}


def command_actions(cmd: str) -> list[dict[str, Any]]:
    """A best-effort reading of what a command does, for clients to summarise it."""
    try:
        words = shlex.split(cmd)
    except ValueError:
        return [{"type": "unknown", "command": cmd}]
    if (
        not words
        or any(w in ("|", "||", "&&", ";", ">", ">>", "<") for w in words)
        or any(c in cmd for c in (";", "|", "&", ">", "<", "$(", "`"))
    ):
        return [{"type": "unknown", "command": cmd}]
    head, args = words[0], [w for w in words[1:] if not w.startswith("-")]
    if head in _LISTERS:
        return [{"type": "listFiles", "command": cmd, "path": args[0] if args else None}]
    if head in _SEARCHERS:
        return [
            {
                "type": "search",
                "command": cmd,
                "query": args[0] if args else None,
                "path": args[1] if len(args) > 1 else None,
            }
        ]
    if head in _READERS and len(args) == 1:
        return [{"type": "read", "command": cmd, "name": os.path.basename(args[0]), "path": args[0]}]
    return [{"type": "unknown", "command": cmd}]


# ---------------------------------------------------------------------------- sessions
OutputListener = Callable[[str], Awaitable[None]]


class ExecSession:
    """One running command: its child, its buffered output, its end."""

    def __init__(
        self,
        session_id: int,
        args: ExecArgs,
        cwd: Path,
        owner: str | None = None,
        confinement: Confinement | None = None,
    ) -> None:
        self.id = session_id
        self.args = args
        self.cwd = cwd
        #: the turn that started it; an interrupt of that turn stops it.
        self.owner = owner
        #: the sandbox the command runs in; None runs it with the server's rights.
        self.confinement = confinement
        self.started = time.monotonic()
        self.pid: int | None = None
        self.exit_code: int | None = None
        #: set once the process exited and its output was drained (or it could not start).
        self.done = trio.Event()
        self.spawn_error: str | None = None
        self.stop = trio.CancelScope()
        self._buffer = bytearray()
        self._dropped = 0
        self._decoder = codecs.getincrementaldecoder("utf-8")("replace")
        self._listener: OutputListener | None = None
        self._child: Child | None = None

    @property
    def running(self) -> bool:
        return not self.done.is_set()

    def listen(self, listener: OutputListener | None) -> None:
        """Stream new output (decoded) to `listener` while a tool call waits on this session."""
        self._listener = listener

    async def _on_output(self, stream: StreamName, data: bytes) -> None:
        self._buffer += data
        if len(self._buffer) > MAX_SESSION_BUFFER:
            excess = len(self._buffer) - MAX_SESSION_BUFFER
            del self._buffer[:excess]
            self._dropped += excess
        if self._listener is not None:
            text = self._decoder.decode(data)
            if text:
                await self._listener(text)

    def take_output(self) -> bytes:
        """Everything buffered since the last call (the model sees each byte once)."""
        data = bytes(self._buffer)
        self._buffer.clear()
        return data

    async def write(self, chars: str) -> None:
        """Type `chars` into a tty session."""
        child = self._child
        if child is None or not child.has_stdin or not self.running:
            raise ExecToolError(
                "stdin is closed for this session; run the command with tty=true to write to it"
            )
        await child.write(chars.encode())

    async def run(
        self, env: Mapping[str, str], *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """The session task (in the thread runtime's nursery): spawn, pump, wait, drain."""
        spec = SpawnSpec(
            argv=self.args.argv(),
            cwd=self.cwd,
            env=env,
            stdin=self.args.tty,
            tty=DEFAULT_TERMINAL_SIZE if self.args.tty else None,
        )
        try:
            async with spawn_confined(spec, self.confinement) as child:
                self.pid = child.pid
                self._child = child
                task_status.started()
                finished = await run_to_exit(
                    child, self._on_output, stop=self.stop, drain_timeout=EXIT_DRAIN_TIMEOUT
                )
                self.exit_code = finished.exit_code
        except SpawnError as exc:
            self.spawn_error = str(exc)
            task_status.started()
        finally:
            self._child = None
            tail = self._decoder.decode(b"", final=True)
            if tail and self._listener is not None:
                with trio.CancelScope(shield=True):
                    await self._listener(tail)
            self.done.set()


@by_value
@attrs.frozen(repr=False, eq=False)
class ExecResult:
    """What one `exec_command` / `write_stdin` call hands back."""

    output: bytes
    wall_time: float
    exit_code: int | None
    session_id: int | None
    pid: int | None
    error: str | None = None

    def text_for_model(self, max_tokens: int) -> str:
        if self.error is not None:
            return f"exec_command failed: {self.error}"
        text = self.output.decode("utf-8", "replace")
        tokens = (len(self.output) + BYTES_PER_TOKEN - 1) // BYTES_PER_TOKEN
        lines = [f"Chunk ID: {secrets.token_hex(3)}", f"Wall time: {self.wall_time:.4f} seconds"]
        if self.exit_code is not None:
            lines.append(f"Process exited with code {self.exit_code}")
        elif self.session_id is not None:
            lines.append(f"Process running with session ID {self.session_id}")
        lines.append(f"Original token count: {tokens}")
        lines.append("Output:")
        return "\n".join(lines) + "\n" + truncate_middle(text, max_tokens * BYTES_PER_TOKEN)


def truncate_middle(text: str, max_chars: int) -> str:
    if len(text) <= max_chars:
        return text
    keep = max(max_chars // 2, 1)
    removed = len(text) - 2 * keep
    return f"{text[:keep]}\n…{removed // BYTES_PER_TOKEN} tokens truncated…\n{text[-keep:]}"


class ExecSessions:
    """A thread's running commands, owned by the nursery the thread runtime gives it."""

    def __init__(self, nursery: trio.Nursery) -> None:
        self._nursery = nursery
        #: the model call that started each session (its commandExecution item id).
        self.item_ids: dict[int, str] = {}
        self._sessions: dict[int, ExecSession] = {}
        self._ids = itertools.count(1000)
        self._changed = trio.Event()

    @property
    def running(self) -> int:
        return sum(1 for s in self._sessions.values() if s.running)

    async def start(
        self,
        args: ExecArgs,
        cwd: Path,
        *,
        owner: str | None = None,
        base_env: Mapping[str, str] | None = None,
        confinement: Confinement | None = None,
    ) -> ExecSession:
        """Spawn the command in a session task; returns once it started (or failed to).

        `owner` is the turn that started it; `base_env` the environment after the shell
        environment policy (default: the server's); `confinement` the sandbox to run in.
        """
        self._reap()
        if len(self._sessions) >= MAX_SESSIONS:
            raise ExecToolError(f"too many running sessions ({MAX_SESSIONS}); stop some with write_stdin")
        session = ExecSession(next(self._ids), args, cwd, owner, confinement)
        env = {**(os.environ if base_env is None else base_env), **COMMAND_ENV}
        if not args.tty:
            env.setdefault("TERM", "dumb")
        self._sessions[session.id] = session
        await self._nursery.start(self._run, session, env, name=f"exec session {session.id}")
        return session

    async def _run(
        self,
        session: ExecSession,
        env: Mapping[str, str],
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        try:
            await session.run(env, task_status=task_status)
        finally:
            self._changed.set()
            self._changed = trio.Event()

    async def wait_changed(self) -> None:
        """Return once some session ended."""
        await self._changed.wait()

    def running_sessions(self) -> list[ExecSession]:
        """The sessions still running (the thread's background terminals), newest first."""
        live = [s for s in self._sessions.values() if s.running]
        for sid in set(self.item_ids) - {s.id for s in live}:
            del self.item_ids[sid]
        return sorted(live, key=lambda s: s.started, reverse=True)

    def get(self, session_id: int) -> ExecSession | None:
        self._reap()
        return self._sessions.get(session_id)

    def stop_all(self) -> None:
        for session in self._sessions.values():
            session.stop.cancel()

    async def stop(self, session: ExecSession) -> None:
        """Kill the session's process group and wait (bounded) until it is reaped."""
        session.stop.cancel()
        with trio.move_on_after(STOP_TIMEOUT) as waited:
            await session.done.wait()
        if waited.cancelled_caught:
            log.warning("exec session %d did not stop within %.0fs", session.id, STOP_TIMEOUT)

    async def stop_owned(self, owner: str) -> None:
        """Stop every session the turn `owner` started that is still running."""
        owned = [s for s in self._sessions.values() if s.owner == owner and s.running]
        for session in owned:
            session.stop.cancel()
        for session in owned:
            await self.stop(session)

    def _reap(self) -> None:
        for sid in [sid for sid, s in self._sessions.items() if not s.running]:
            del self._sessions[sid]


async def wait_for(session: ExecSession, yield_ms: int) -> ExecResult:
    """Wait until the session ends or `yield_ms` passes; take the output it produced."""
    began = time.monotonic()
    with trio.move_on_after(yield_ms / 1000):
        await session.done.wait()
    wall = time.monotonic() - began
    if session.spawn_error is not None:
        return ExecResult(b"", wall, None, None, None, error=session.spawn_error)
    running = session.running
    return ExecResult(
        session.take_output(),
        wall,
        None if running else session.exit_code,
        session.id if running else None,
        session.pid,
    )
