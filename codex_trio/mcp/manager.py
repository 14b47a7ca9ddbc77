"""Each thread's MCP servers: who owns them, their status, and elicitations routed to clients.

Ownership (task tree):

    server detached nursery
    └── ThreadMcp.run              "mcp <thread id>": one per thread with configured servers;
        │                          its cancel scope (`ThreadMcp.scope`) is the control plane:
        │                          cancelled when the thread unloads, on config reload (the
        │                          next use starts a fresh one) and when the server drains
        ├── unload watcher
        └── session.serve (each)     "mcp <thread id> <server>": one task per server, holding its
                                   child process / HTTP session and `ClientSession` open

Servers start on the thread's first use (a turn, a status list, a direct call), report
`mcpServer/startupStatus/updated` (starting, then ready or failed) and stay up while the
thread is loaded. A server that fails to start is a status, never a failed thread.

An `elicitation/create` from a server becomes `mcpServer/elicitation/request` to the thread's
subscribers (first answer wins, each asked client gets `serverRequest/resolved`). It is tied
to the tool call in flight on that server (its turn id, its approval policy): when that call
ends — normally, by `turn/interrupt` or by its deadline — any elicitation still pending is
cancelled and resolved before the call returns, so a turn never finishes with a request left
open. A subscriber that disconnects counts as `cancel` once no asked client is left.
"""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs
import trio

from codex_trio.config.effective import load_config
from codex_trio.core.approvals import NO_ANSWER, ask_subscribers, policy_name
from codex_trio.mcp import configures_servers
from codex_trio.mcp.config import McpServerConfig, parse_servers
from codex_trio.mcp.state import ServerState
from codex_trio.plugins.store import plugin_mcp_servers
from codex_trio.protocol import mcp as wire
from codex_trio.protocol.errors import RpcError, server_shutting_down
from codex_trio.protocol.thread import WAITING_ON_APPROVAL

if TYPE_CHECKING:
    from codex_trio.mcp.session import ProgressCallback
    from codex_trio.services import Services
    from codex_trio.threads import LoadedThread

log = logging.getLogger(__name__)

#: seconds the cleanup of an ended call may spend resolving its pending elicitations.
RESOLVE_TIMEOUT = 5.0
#: config reads (blocking file I/O) at once.
CONFIG_THREADS = trio.CapacityLimiter(2)

RUNTIME_STATUS = {
    "starting": "starting",
    "ready": "connected",
    "failed": "failed",
    "cancelled": "cancelled",
    "disabled": "disabled",
}


class McpUnavailable(Exception):
    """The `mcp` package is not installed."""


def session_module() -> Any:
    """`codex_trio.mcp.session`, imported on first use (it imports the optional `mcp` package)."""
    try:
        from codex_trio.mcp import session
    except ImportError as exc:
        raise McpUnavailable(
            f"the `mcp` package is not installed (pip install 'codex-trio[mcp]'): {exc}"
        ) from exc
    return session


def with_plugin_servers(codex_home: Path, config: Mapping[str, Any]) -> dict[str, Any]:
    """`[mcp_servers]` plus the servers of installed, enabled plugins (configured names win);
    blocking: reads the plugin cache."""
    configured = config.get("mcp_servers")
    return {
        **plugin_mcp_servers(codex_home, config),
        **(configured if isinstance(configured, Mapping) else {}),
    }


def new_state(config: McpServerConfig) -> ServerState:
    return ServerState(config, status="starting" if config.enabled else "disabled")


@attrs.define(eq=False)
class ActiveCall:
    """A tool call in flight on one server; elicitations it causes are tied to it."""

    turn_id: str | None
    approval_policy: Any
    pending: set[Pending] = attrs.Factory(set)


@attrs.define(eq=False)
class Pending:
    """An elicitation waiting for a client's answer."""

    scope: trio.CancelScope = attrs.Factory(trio.CancelScope)
    done: trio.Event = attrs.Factory(trio.Event)


# ---------------------------------------------------------------------------- one thread
class ThreadMcp:
    """One thread's servers (see the module docstring)."""

    def __init__(
        self,
        registry: McpRegistry,
        thread: LoadedThread,
        configs: list[McpServerConfig],
        generation: int,
    ) -> None:
        self.registry = registry
        self.thread = thread
        self.generation = generation
        self.states: dict[str, ServerState] = {c.name: new_state(c) for c in configs}
        self.scope = trio.CancelScope()
        self.done = trio.Event()
        #: (server, tool) pairs the user allowed for the rest of the session.
        self.approved: set[tuple[str, str]] = set()
        self._calls: dict[str, list[ActiveCall]] = {}
        self._waiting = 0
        self._status_before: dict[str, Any] | None = None

    @property
    def has_servers(self) -> bool:
        return any(s.config.enabled for s in self.states.values())

    def stop(self) -> None:
        self.scope.cancel()

    async def run(self) -> None:
        """The owner task: starts every enabled server and keeps them until stopped."""
        try:
            with self.scope:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self._stop_on_unload, name=f"mcp {self.thread.id} unload watcher")
                    for state in self.states.values():
                        if state.config.enabled:
                            await self.registry.notify_status(self.thread.id, state.name, "starting")
                            nursery.start_soon(self._serve, state, name=f"mcp {self.thread.id} {state.name}")
        finally:
            for state in self.states.values():
                if state.status == "starting":
                    state.status = "cancelled"
                state.settled.set()
            self.done.set()
            self.registry.forget(self)

    async def _stop_on_unload(self) -> None:
        await self.thread.unloaded.wait()
        self.scope.cancel()

    async def _serve(self, state: ServerState) -> None:
        if state.config.error is not None:
            await self._fail(state, state.config.error)
            return
        try:
            session = session_module()
        except McpUnavailable as exc:
            await self._fail(state, str(exc))
            return
        await session.serve(state, self, self.registry.cwd_for(self.thread))

    async def _fail(self, state: ServerState, detail: str) -> None:
        state.status, state.detail = "failed", detail
        state.settled.set()
        await self.status_changed(state)

    async def wait_settled(self) -> None:
        """Until every enabled server has started or failed (each start is bounded)."""
        for state in self.states.values():
            if state.config.enabled:
                await state.settled.wait()

    # ------------------------------------------------------------------ session hooks
    async def status_changed(self, state: ServerState) -> None:
        status: wire.StartupState = "ready" if state.status == "ready" else "failed"
        await self.registry.notify_status(self.thread.id, state.name, status, state.error)

    async def elicit(self, state: ServerState, request: dict[str, Any]) -> dict[str, Any]:
        """A server's `elicitation/create`, answered by the thread's subscribers."""
        calls = self._calls.get(state.name)
        call = calls[-1] if calls else None
        policy = call.approval_policy if call is not None else self.thread.approval_policy
        if not elicitations_allowed(policy):
            return wire.DECLINED.to_mcp()
        turn_id = call.turn_id if call is not None else None
        try:
            params = wire.elicitation_params(self.thread.id, turn_id, state.name, request)
        except wire.InvalidForm as exc:
            log.warning("MCP server %s sent an elicitation form that cannot be shown: %s", state.name, exc)
            return wire.CANCELLED.to_mcp()
        pending = Pending()
        if call is not None:
            call.pending.add(pending)
        answer = wire.CANCELLED
        try:
            with pending.scope:
                answer = await self.ask(params)
        finally:
            if call is not None:
                call.pending.discard(pending)
            pending.done.set()
        return answer.to_mcp()

    async def ask(self, params: dict[str, Any]) -> wire.ElicitationAnswer:
        """Send one `mcpServer/elicitation/request`; the thread waits on approval meanwhile."""
        async with self._waiting_on_approval():
            result = await ask_subscribers(
                self.thread, self.registry.broadcaster, "mcpServer/elicitation/request", params
            )
        return wire.parse_elicitation_answer(None if result is NO_ANSWER else result)

    @asynccontextmanager
    async def _waiting_on_approval(self) -> AsyncIterator[None]:
        if self._waiting == 0:
            self._status_before = dict(self.thread.status)
            await self.thread.set_status(WAITING_ON_APPROVAL)
        self._waiting += 1
        try:
            yield
        finally:
            self._waiting -= 1
            waiting = self.thread.status == WAITING_ON_APPROVAL
            if self._waiting == 0 and waiting and self._status_before is not None:
                with trio.CancelScope(shield=True), trio.move_on_after(RESOLVE_TIMEOUT):
                    await self.thread.set_status(self._status_before)

    # ------------------------------------------------------------------ calls
    def connected(self, server: str) -> ServerState | None:
        state = self.states.get(server)
        return state if state is not None and state.session is not None else None

    async def call_tool(
        self,
        state: ServerState,
        tool: str,
        arguments: Mapping[str, Any] | None,
        *,
        turn_id: str | None,
        approval_policy: Any,
        meta: Mapping[str, Any] | None = None,
        progress: ProgressCallback | None = None,
    ) -> dict[str, Any]:
        """`tools/call` with the server's deadline; elicitations it causes end with it.

        Raises `session.CallFailed` for a protocol or transport failure and trio.TooSlowError
        at the deadline.
        """
        session = session_module()
        call = ActiveCall(turn_id, approval_policy)
        calls = self._calls.setdefault(state.name, [])
        calls.append(call)
        try:
            with trio.fail_after(state.config.tool_timeout):
                result: dict[str, Any] = await session.call_tool(
                    state.session, tool, arguments, meta, progress
                )
            return result
        finally:
            calls.remove(call)
            if call.pending:
                with trio.CancelScope(shield=True), trio.move_on_after(RESOLVE_TIMEOUT):
                    for pending in list(call.pending):
                        pending.scope.cancel()
                    for pending in list(call.pending):
                        await pending.done.wait()


def elicitations_allowed(approval_policy: Any) -> bool:
    """`never` declines every elicitation without asking; so does a granular policy without
    `mcp_elicitations`."""
    if isinstance(approval_policy, dict) and isinstance(approval_policy.get("granular"), dict):
        return bool(approval_policy["granular"].get("mcp_elicitations"))
    return policy_name(approval_policy) != "never"


# ---------------------------------------------------------------------------- the registry
class McpRegistry:
    """Every thread's `ThreadMcp`, keyed by thread id; `reload` makes the next use restart them."""

    def __init__(self, services: Services) -> None:
        self.services = services
        self.broadcaster = services.broadcaster
        self._threads: dict[str, ThreadMcp] = {}
        self._lock = trio.Lock()
        self.generation = 0

    def current(self, thread_id: str) -> ThreadMcp | None:
        return self._threads.get(thread_id)

    def forget(self, mcp: ThreadMcp) -> None:
        if self._threads.get(mcp.thread.id) is mcp:
            del self._threads[mcp.thread.id]

    def cwd_for(self, thread: LoadedThread) -> Path:
        """Where a stdio server runs when its config names no `cwd`: the server's own cwd."""
        return Path(self.services.settings.cwd)

    async def for_thread(self, thread: LoadedThread) -> ThreadMcp:
        """The thread's servers, started on first use (and after a reload)."""
        async with self._lock:
            current = self._threads.get(thread.id)
            fresh = current is not None and current.generation == self.generation
            if current is not None and fresh and not current.scope.cancel_called:
                return current
            if current is not None:
                current.stop()
                with trio.CancelScope(shield=True), trio.move_on_after(RESOLVE_TIMEOUT) as waited:
                    await current.done.wait()
                if waited.cancelled_caught:
                    log.warning("thread %s: MCP servers still stopping", thread.id)
            configs = await self._configs(thread)
            mcp = ThreadMcp(self, thread, configs, self.generation)
            if not mcp.has_servers or thread.unloaded.is_set():
                # Nothing to own: not kept (the next use looks at the config again).
                mcp.done.set()
                return mcp
            self._threads[thread.id] = mcp
            try:
                self.services.start_detached(mcp.run, name=f"mcp {thread.id}")
            except RpcError:
                del self._threads[thread.id]
                raise server_shutting_down() from None
            return mcp

    def prestart(self, thread: LoadedThread) -> None:
        """A thread was loaded: start its servers now, as the reference does, so they are
        ready (or reported failed) before its first turn."""
        if self.services.draining or not configures_servers(thread.config):
            return
        try:
            self.services.start_detached(self.for_thread, thread, name=f"mcp start {thread.id}")
        except RpcError:
            log.debug("thread %s: server draining, MCP servers not started", thread.id)

    async def _configs(self, thread: LoadedThread) -> list[McpServerConfig]:
        settings = self.services.settings
        config: Mapping[str, Any] = thread.config
        if self.generation > 0:
            effective = await trio.to_thread.run_sync(
                lambda: load_config(settings, thread.cwd), limiter=CONFIG_THREADS
            )
            config = effective.raw
        table = await trio.to_thread.run_sync(
            with_plugin_servers, settings.codex_home, config, limiter=CONFIG_THREADS
        )
        return parse_servers(table, dict(os.environ), Path(settings.cwd))

    async def server_configs(self) -> list[McpServerConfig]:
        """The servers of the server-level config (for requests without a thread)."""
        settings = self.services.settings
        effective = await trio.to_thread.run_sync(lambda: load_config(settings), limiter=CONFIG_THREADS)
        table = await trio.to_thread.run_sync(
            with_plugin_servers, settings.codex_home, effective.raw, limiter=CONFIG_THREADS
        )
        return parse_servers(table, dict(os.environ), Path(settings.cwd))

    def reload(self) -> None:
        """`config/mcpServer/reload`: every thread's servers restart on their next use."""
        self.generation += 1

    def stop_all(self) -> None:
        """The server drains: stop every thread's servers now (they are not work to finish)."""
        for mcp in list(self._threads.values()):
            mcp.stop()

    async def notify_status(
        self, thread_id: str | None, name: str, status: wire.StartupState, error: str | None = None
    ) -> None:
        self.broadcaster.broadcast(
            "mcpServer/startupStatus/updated", wire.startup_status(thread_id, name, status, error)
        )


# ---------------------------------------------------------------------------- without a thread
class _NoThread:
    """Hooks for servers started for one request only: no status events, no one to ask."""

    async def status_changed(self, state: ServerState) -> None:
        return None

    async def elicit(self, state: ServerState, request: dict[str, Any]) -> dict[str, Any]:
        return wire.CANCELLED.to_mcp()


@asynccontextmanager
async def temporary_servers(
    configs: list[McpServerConfig], cwd: Path, *, resources: bool = True
) -> AsyncIterator[dict[str, ServerState]]:
    """Start `configs` for the duration of the block (owned by the calling task); every
    enabled server has started or failed when the block begins."""
    states = {c.name: new_state(c) for c in configs}
    hooks = _NoThread()
    async with trio.open_nursery() as nursery:
        for state in states.values():
            if not state.config.enabled:
                continue
            if state.config.error is not None:
                state.status, state.detail = "failed", state.config.error
                state.settled.set()
                continue
            try:
                session = session_module()
            except McpUnavailable as exc:
                state.status, state.detail = "failed", str(exc)
                state.settled.set()
                continue
            nursery.start_soon(
                _serve_temporary, session, state, hooks, cwd, resources, name=f"mcp request {state.name}"
            )
        for state in states.values():
            if state.config.enabled:
                await state.settled.wait()
        try:
            yield states
        finally:
            nursery.cancel_scope.cancel()


async def _serve_temporary(
    session: Any, state: ServerState, hooks: _NoThread, cwd: Path, resources: bool
) -> None:
    await session.serve(state, hooks, cwd, resources=resources)
