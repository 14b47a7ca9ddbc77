"""The `command/exec` family: run an argv for a client, outside any thread (methods.md §2).

Ownership: a `command/exec` request task (in its connection's work nursery) owns its
process for the whole run — it spawns it, supervises it and answers with the result. While
it runs, the process is listed in `CommandExecApi._running` under (connection id, process
id) together with its cancel scope. `command/exec/terminate` cancels that scope, the
timeout is its deadline, and a disconnect or shutdown cancels the request task itself;
every path ends in `process.spawn`'s cleanup, which kills the whole process group, reaps
the child and closes its fds. Process ids are per connection: the key includes the
connection, so one connection can never reach another's processes.

Confinement: the command runs in the bubblewrap sandbox of its `sandboxPolicy` (else the
`permissionProfile`, else the configured `sandbox_mode`; see codex_trio.sandbox), with the
environment of `[shell_environment_policy]` under the request's `env`.

Ordering: streamed output is queued on the connection (awaiting room: backpressure) before
the final response, so the response always follows the last `command/exec/outputDelta`.
Stdin writes to one process go through a FIFO lock taken before the handler's first
checkpoint, so they reach the child in the order the client sent them.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import attrs
import orjson
import trio

from codex_trio.config.effective import load_config
from codex_trio.config.shell_env import shell_environment_policy
from codex_trio.process import (
    Child,
    Finished,
    NotATerminal,
    SpawnError,
    SpawnSpec,
    StdinClosed,
    StreamName,
    TerminalSize,
    run_to_exit,
)
from codex_trio.protocol.b64 import Base64Error, decode_base64, encode_base64
from codex_trio.protocol.command_exec import (
    DEFAULT_COLS,
    DEFAULT_OUTPUT_BYTES_CAP,
    DEFAULT_ROWS,
    DEFAULT_TIMEOUT_MS,
    OUTPUT_DELTA,
    TIMEOUT_EXIT_CODE,
    CommandExecOutputDelta,
    CommandExecParams,
    CommandExecResizeParams,
    CommandExecResponse,
    CommandExecTerminateParams,
    CommandExecWriteParams,
    check_exec_params,
    check_terminal_size,
    duplicate_process,
    no_active_process,
    process_id_repr,
)
from codex_trio.protocol.converter import unstructure
from codex_trio.protocol.errors import RpcError, internal_error, invalid_params, invalid_request, os_error
from codex_trio.routing import RequestContext, Route, route
from codex_trio.sandbox import (
    Confinement,
    SandboxUnavailable,
    confinement_for,
    confines,
    hidden_paths,
    policy_from_config,
    policy_from_profile,
    spawn_confined,
)
from codex_trio.sandbox_support import check_support
from codex_trio.services import Services

log = logging.getLogger(__name__)

#: key of a running process: (connection id, client process id or a generated number).
ProcessKey = tuple[int, str | int]


@attrs.define(eq=False)
class _Capture:
    """One stream's output budget: bytes beyond `cap` are read and dropped."""

    cap: int | None
    used: int = 0
    reached: bool = False
    buffer: bytearray = attrs.Factory(bytearray)

    def take(self, data: bytes) -> bytes:
        """The part of `data` within the cap; sets `reached` on the chunk that hits it."""
        if self.cap is None:
            return data
        part = data[: max(self.cap - self.used, 0)]
        self.used += len(part)
        self.reached = self.used == self.cap
        return part


@attrs.define(eq=False)
class _Exec:
    """A running `command/exec`: what write / resize / terminate need to reach it."""

    process_id: str | None
    stream_stdin: bool
    tty: bool
    #: the control plane: terminate cancels it, the timeout is its deadline.
    scope: trio.CancelScope = attrs.Factory(trio.CancelScope)
    child: Child | None = None
    spawned: trio.Event = attrs.Factory(trio.Event)
    terminated: bool = False
    #: FIFO lane for stdin: writes are applied in arrival order, also during the spawn.
    stdin_lane: trio.Lock = attrs.Factory(trio.Lock)


class CommandExecApi:
    """Owns the table of running processes of every connection."""

    def __init__(self, services: Services) -> None:
        self._settings = services.settings
        self._running: dict[ProcessKey, _Exec] = {}
        self._generated_ids = itertools.count(1)

    def routes(self) -> list[Route]:
        """The family's methods."""
        return [
            route("command/exec", CommandExecParams, self.exec),
            route("command/exec/write", CommandExecWriteParams, self.write),
            route("command/exec/resize", CommandExecResizeParams, self.resize),
            route("command/exec/terminate", CommandExecTerminateParams, self.terminate),
        ]

    # ------------------------------------------------------------------ command/exec
    async def exec(self, ctx: RequestContext, params: CommandExecParams) -> CommandExecResponse:
        """`command/exec`: run a process to its end; the request task owns (and kills) it."""
        if params.permission_profile is not None and not ctx.connection.session.experimental_api:
            raise invalid_request("command/exec.permissionProfile requires experimentalApi capability")
        check_exec_params(params)
        tty = params.tty
        entry = _Exec(params.process_id, stream_stdin=tty or params.stream_stdin, tty=tty)
        key: ProcessKey = (
            ctx.connection.id,
            params.process_id if params.process_id is not None else next(self._generated_ids),
        )
        # Registered before the first checkpoint: a duplicate id is refused at once.
        if key in self._running:
            assert params.process_id is not None
            raise duplicate_process(params.process_id)
        self._running[key] = entry
        try:
            confinement, base_env = await self._confinement(params)
            spec = SpawnSpec(
                argv=tuple(params.command),
                cwd=_resolve_cwd(self._settings.cwd, params.cwd),
                env=_child_env(base_env, params.env),
                stdin=tty or params.stream_stdin,
                tty=_terminal_size(params) if tty else None,
            )
            return await self._run(ctx, params, spec, entry, confinement)
        finally:
            del self._running[key]
            entry.spawned.set()  # wake writers that waited for a spawn that failed

    async def _confinement(self, params: CommandExecParams) -> tuple[Confinement | None, dict[str, str]]:
        """The request's sandbox (its policy, else the configured one) and the base environment."""
        try:
            raw: Mapping[str, Any] = (await trio.to_thread.run_sync(load_config, self._settings)).raw
        except ValueError as exc:  # an invalid config.toml: the strictest defaults apply
            log.warning("command/exec: config not loaded (%s); using the default sandbox", exc)
            raw = {}
        policy = params.sandbox_policy
        if policy is None and params.permission_profile is not None:
            policy = policy_from_profile(params.permission_profile)
        if policy is None:
            policy = policy_from_config(raw)
        base_env = shell_environment_policy(raw).apply()
        if not confines(policy):
            return None, base_env
        try:
            support = await check_support(self._settings.bwrap)
            return confinement_for(policy, support, hidden_paths(self._settings)), base_env
        except SandboxUnavailable as exc:
            raise internal_error(f"failed to spawn command: sandbox unavailable: {exc}") from None

    async def _run(
        self,
        ctx: RequestContext,
        params: CommandExecParams,
        spec: SpawnSpec,
        entry: _Exec,
        confinement: Confinement | None,
    ) -> CommandExecResponse:
        stream_output = params.tty or params.stream_stdout_stderr
        cap = (
            None
            if params.disable_output_cap
            else (DEFAULT_OUTPUT_BYTES_CAP if params.output_bytes_cap is None else params.output_bytes_cap)
        )
        captures: dict[StreamName, _Capture] = {"stdout": _Capture(cap), "stderr": _Capture(cap)}
        connection = ctx.connection

        async def on_output(stream: StreamName, data: bytes) -> None:
            capture = captures[stream]
            if capture.reached:
                return  # past the cap: keep reading so the child is not blocked, drop it
            part = capture.take(data)
            if not stream_output:
                capture.buffer += part
            elif entry.process_id is not None:
                # The base64 text goes into the JSON as a pre-encoded fragment: no `str` copy
                # of every chunk and no escape scan on the hot path of a stream.
                delta = CommandExecOutputDelta(entry.process_id, stream, "", capture.reached)
                params = unstructure(delta)
                params["deltaBase64"] = orjson.Fragment(b'"' + encode_base64(part) + b'"')
                await connection.notify(OUTPUT_DELTA, params)

        if not params.disable_timeout:
            timeout_ms = DEFAULT_TIMEOUT_MS if params.timeout_ms is None else params.timeout_ms
            entry.scope.deadline = trio.current_time() + timeout_ms / 1000
        try:
            async with spawn_confined(spec, confinement) as child:
                entry.child = child
                entry.spawned.set()
                finished = await run_to_exit(child, on_output, stop=entry.scope)
        except SpawnError as exc:
            raise internal_error(f"failed to spawn command: {exc}") from None
        return CommandExecResponse(
            exit_code=_exit_code(finished, entry, child.returncode),
            stdout=captures["stdout"].buffer.decode("utf-8", errors="replace"),
            stderr=captures["stderr"].buffer.decode("utf-8", errors="replace"),
        )

    # ------------------------------------------------------------------ write / resize / terminate
    async def write(self, ctx: RequestContext, params: CommandExecWriteParams) -> dict[str, Any]:
        """`command/exec/write`: feed (or close) a running process's stdin."""
        if params.delta_base64 is None and not params.close_stdin:
            raise invalid_params("command/exec/write requires deltaBase64 or closeStdin")
        data = b""
        if params.delta_base64 is not None:
            try:
                data = decode_base64(params.delta_base64)
            except Base64Error as exc:
                raise invalid_params(f"invalid deltaBase64: {exc}") from None
        entry = self._lookup(ctx, params.process_id)
        if not entry.stream_stdin:
            raise invalid_request("stdin streaming is not enabled for this command/exec")
        async with entry.stdin_lane:
            child = await self._spawned(entry, params.process_id)
            try:
                if data:
                    await child.write(data)
                if params.close_stdin:
                    await child.close_stdin()
            except StdinClosed:
                raise invalid_request("stdin is already closed") from None
        return {}

    async def resize(self, ctx: RequestContext, params: CommandExecResizeParams) -> dict[str, Any]:
        """`command/exec/resize`: resize a running process's PTY."""
        check_terminal_size(params.size)
        entry = self._lookup(ctx, params.process_id)
        child = await self._spawned(entry, params.process_id)
        try:
            child.resize(TerminalSize(rows=params.size.rows, cols=params.size.cols))
        except NotATerminal as exc:
            raise invalid_request(f"failed to resize PTY: {exc}") from None
        except OSError as exc:
            raise invalid_request(f"failed to resize PTY: {os_error(exc).message}") from None
        return {}

    async def terminate(self, ctx: RequestContext, params: CommandExecTerminateParams) -> dict[str, Any]:
        """`command/exec/terminate`: cancel a running process's scope."""
        entry = self._lookup(ctx, params.process_id)
        entry.terminated = True
        entry.scope.cancel()
        return {}

    def _lookup(self, ctx: RequestContext, process_id: str) -> _Exec:
        entry = self._running.get((ctx.connection.id, process_id))
        if entry is None:
            raise no_active_process(process_id)
        return entry

    @staticmethod
    async def _spawned(entry: _Exec, process_id: str) -> Child:
        """The entry's child, waiting for a spawn still in progress."""
        await entry.spawned.wait()
        if entry.child is None:
            raise no_longer_running(process_id)
        return entry.child


def no_longer_running(process_id: str) -> RpcError:
    """-32600 for a process that exited between lookup and use."""
    return invalid_request(f"command/exec {process_id_repr(process_id)} is no longer running")


def _child_env(base: dict[str, str], overrides: dict[str, str | None] | None) -> dict[str, str]:
    """The shell environment policy's variables with the request's; `null` unsets one."""
    env = dict(base)
    for name, value in (overrides or {}).items():
        if value is None:
            env.pop(name, None)
        else:
            env[name] = value
    return env


def _terminal_size(params: CommandExecParams) -> TerminalSize:
    if params.size is None:
        return TerminalSize(rows=DEFAULT_ROWS, cols=DEFAULT_COLS)
    return TerminalSize(rows=params.size.rows, cols=params.size.cols)


def _exit_code(finished: Finished, entry: _Exec, returncode: int | None) -> int:
    """The code the reference reports: 124 on timeout, else the child's own.

    A signal death is 128 + signal on pipes, but 1 on a PTY (the reference's PTY backend
    reports every signal death as exit code 1, terminate included).
    """
    if finished.stopped and not entry.terminated:
        return TIMEOUT_EXIT_CODE
    if returncode is None:
        return -1
    if returncode < 0 and entry.tty:
        return 1
    return finished.exit_code if finished.exit_code is not None else -1


def _resolve_cwd(base: Path, cwd: str | None) -> Path:
    """A relative (or empty) `cwd` is taken from the server's working directory."""
    return base / cwd if cwd else base
