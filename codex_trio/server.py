"""The composition root: builds the API families, owns the server's nurseries, drains.

Task tree of a running server (`AppServer.run`):

    run                              forced shutdown cancels `_root_scope`
    └── connections nursery          one task per connection (Connection.run) and the
        │                            listeners' accept loops (inside `_listeners_scope`)
        └── detached nursery         work that outlives its request, started with
            │                        `start_detached` (each tracked by `_track_detached`):
            ├── thread start-up      git info of a new thread (`capture_git`)
            ├── thread runtimes      `ThreadRuntime.run`: its turns and exec sessions
            ├── unload timers        a thread without subscribers unloads after a delay
            ├── MCP servers          `ThreadMcp.run` per thread, and their start-up
            ├── index backfill       the thread index catching up with old rollouts
            └── family builds        a listener's thread family; the agent group for a
                                     thread whose config names MCP servers

Imports the API families, `dispatch`, `connection`, `outgoing`, `client`, `transport`,
`settings` and `protocol`; only `cli`, `testing` and the package root import it.

Shutdown is a two-stage drain: stop accepting and refuse new threads and turns, give detached
work `drain_grace` seconds, cancel it, then disconnect every connection (which cancels its
requests and kills its processes) and let each writer flush for a bounded time. Every stage
draws from one budget, `shutdown_timeout` seconds from the moment the drain starts: when it
is spent, whatever is still running is cancelled, so a client that does not read can never
hold the process open.
"""

from __future__ import annotations

import functools
import importlib
import itertools
import logging
import math
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any, TypeVar

import attrs
import trio

from codex_trio import tracing
from codex_trio.api.session import SessionApi
from codex_trio.connection import Connection, OverloadPolicy
from codex_trio.dispatch import Router
from codex_trio.log_store import LogStore
from codex_trio.outgoing import Broadcaster
from codex_trio.protocol.errors import server_shutting_down
from codex_trio.records import by_value
from codex_trio.sandbox_support import check_support
from codex_trio.settings import ServerSettings
from codex_trio.transport.base import MessageStream, ServerClosed
from codex_trio.transport.listen import NoListen, StdioListen, UnixListen, WebSocketListen
from codex_trio.transport.stdio import open_stdio

if TYPE_CHECKING:
    from codex_trio.client import ClientConnection
    from codex_trio.transport.unix import ControlSocket
    from codex_trio.transport.websocket import WebSocketEndpoint

log = logging.getLogger(__name__)

#: seconds all families together may take to release their resources at the end of `run`.
FAMILY_CLOSE_TIMEOUT = 2.0
#: seconds each connection may spend flushing once the drain disconnects it: a client that
#: reads takes milliseconds, one that does not must not hold the exit for long.
SHUTDOWN_FLUSH_TIMEOUT = 0.5
#: seconds the families get to release their resources even when the shutdown budget is spent
#: (closing database handles is quick and must not be skipped).
FAMILY_CLOSE_FLOOR = 0.25


F = TypeVar("F")


@by_value
@attrs.frozen(repr=False, eq=False)
class FamilyGroup:
    """API families imported and built together, on the first call of one of their methods.

    Most of a cold start is building the protocol's attrs classes; a client that only runs
    commands never pays for threads, turns or MCP. `methods` must list exactly the routes
    the families declare (a test checks it); `build` runs once the modules are imported.
    """

    modules: tuple[str, ...]
    methods: tuple[str, ...]
    build: Callable[[AppServer], list[Any]]
    #: a method of each group whose families `build` uses: those groups are built first.
    needs: tuple[str, ...] = ()


def _build_fs(server: AppServer) -> list[Any]:
    from codex_trio.api.fs import FsApi

    return [FsApi()]


def _build_command_exec(server: AppServer) -> list[Any]:
    from codex_trio.api.command_exec import CommandExecApi

    return [CommandExecApi(server)]


def _build_config(server: AppServer) -> list[Any]:
    from codex_trio.api.catalog import CatalogApi
    from codex_trio.api.config import ConfigApi
    from codex_trio.api.external_agent import ExternalAgentApi
    from codex_trio.api.legacy import LegacyApi

    return [ConfigApi(server), CatalogApi(server), LegacyApi(server), ExternalAgentApi()]


def _build_plugins(server: AppServer) -> list[Any]:
    from codex_trio.api.plugins import PluginsApi

    return [PluginsApi(server)]


def _build_device_keys(server: AppServer) -> list[Any]:
    from codex_trio.api.device_keys import DeviceKeysApi

    return [DeviceKeysApi(server)]


def _build_threads(server: AppServer) -> list[Any]:
    """The thread family alone: starting, resuming and reading threads needs no turn engine,
    model client or MCP code (the agent group builds on it when one of those is used)."""
    from codex_trio.api.threads import ThreadsApi

    threads = ThreadsApi(server)
    threads.manager.on_loaded.append(server._thread_loaded)
    return [threads]


def _build_agent(server: AppServer) -> list[Any]:
    """Accounts, MCP, turns and the families of running threads know each other: one group."""
    from codex_trio.api.account import AccountApi
    from codex_trio.api.background_terminals import BackgroundTerminalsApi
    from codex_trio.api.feedback import FeedbackApi
    from codex_trio.api.goals import GoalsApi
    from codex_trio.api.mcp import McpApi
    from codex_trio.api.read_state import ReadStateApi
    from codex_trio.api.thread_commands import ThreadCommandsApi
    from codex_trio.api.thread_search import ThreadSearchApi
    from codex_trio.api.threads import ThreadsApi
    from codex_trio.api.turns import TurnsApi

    threads = server.built_family(ThreadsApi)
    account = AccountApi(server)
    mcp = McpApi(server, threads.manager)
    # goal accounting runs before the read-state change at a turn's end, as in the reference
    goals = GoalsApi(server, threads.manager)
    read_state = ReadStateApi(server, threads.manager)
    turns = TurnsApi(server, threads.manager, account.model_login, tool_providers=[goals.tools, mcp.tools])
    goals.start_turn = turns.start_automatic_turn
    terminals = BackgroundTerminalsApi(server, threads.manager)
    search = ThreadSearchApi(threads.thread_list)
    feedback = FeedbackApi(server, threads.rollout_of, server.log_store)
    commands = ThreadCommandsApi(server, threads.manager, turns.start_turn, threads._loaded_wire)
    return [account, turns, mcp, read_state, goals, terminals, search, feedback, commands]


FAMILY_GROUPS = (
    FamilyGroup(
        ("codex_trio.api.fs",),
        (
            "fs/readFile",
            "fs/writeFile",
            "fs/createDirectory",
            "fs/getMetadata",
            "fs/readDirectory",
            "fs/remove",
            "fs/copy",
            "fs/watch",
            "fs/unwatch",
        ),
        _build_fs,
    ),
    FamilyGroup(
        ("codex_trio.api.command_exec",),
        ("command/exec", "command/exec/write", "command/exec/resize", "command/exec/terminate"),
        _build_command_exec,
    ),
    FamilyGroup(
        (
            "codex_trio.api.config",
            "codex_trio.api.catalog",
            "codex_trio.api.legacy",
            "codex_trio.api.external_agent",
        ),
        (
            "config/read",
            "config/value/write",
            "config/batchWrite",
            "configRequirements/read",
            "model/list",
            "experimentalFeature/list",
            "skills/list",
            "skills/config/write",
            "hooks/list",
            "collaborationMode/list",
            "gitDiffToRemote",
            "fuzzyFileSearch",
            "fuzzyFileSearch/sessionStart",
            "fuzzyFileSearch/sessionUpdate",
            "fuzzyFileSearch/sessionStop",
            "externalAgentConfig/detect",
        ),
        _build_config,
    ),
    FamilyGroup(
        ("codex_trio.api.plugins",),
        (
            "plugin/list",
            "plugin/installed",
            "plugin/read",
            "plugin/install",
            "plugin/uninstall",
            "marketplace/add",
            "marketplace/remove",
            "marketplace/upgrade",
        ),
        _build_plugins,
    ),
    FamilyGroup(
        ("codex_trio.api.device_keys",),
        ("device/key/create", "device/key/public", "device/key/sign"),
        _build_device_keys,
    ),
    FamilyGroup(
        ("codex_trio.api.threads",),
        (
            "thread/start",
            "thread/resume",
            "thread/fork",
            "thread/read",
            "thread/list",
            "thread/loaded/list",
            "thread/name/set",
            "thread/metadata/update",
            "thread/archive",
            "thread/unarchive",
            "thread/delete",
            "thread/unsubscribe",
            "thread/turns/list",
            "thread/items/list",
            "getConversationSummary",
        ),
        _build_threads,
    ),
    FamilyGroup(
        (
            "codex_trio.api.account",
            "codex_trio.api.turns",
            "codex_trio.api.mcp",
            "codex_trio.api.feedback",
            "codex_trio.api.read_state",
            "codex_trio.api.goals",
            "codex_trio.api.background_terminals",
            "codex_trio.api.thread_search",
            "codex_trio.api.thread_commands",
        ),
        (
            "account/read",
            "account/login/start",
            "account/login/cancel",
            "account/logout",
            "account/rateLimits/read",
            "getAuthStatus",
            "account/bedrock/checkGovCloudRequirements",
            "turn/start",
            "turn/steer",
            "turn/interrupt",
            "mcpServerStatus/list",
            "config/mcpServer/reload",
            "mcpServer/tool/call",
            "mcpServer/resource/read",
            "feedback/save",
            "feedback/upload",
            "thread/readState/update",
            "thread/goal/get",
            "thread/goal/set",
            "thread/goal/clear",
            "thread/backgroundTerminals/list",
            "thread/backgroundTerminals/terminate",
            "thread/backgroundTerminals/clean",
            "thread/search",
            "thread/shellCommand",
            "thread/compact/start",
            "review/start",
            "thread/settings/update",
            "permissionProfile/list",
            "thread/revert",
            "thread/inject_items",
        ),
        _build_agent,
        needs=("thread/start",),
    ),
)


class AppServer:
    """One app-server: its connections, its API families and its detached work."""

    def __init__(self, settings: ServerSettings) -> None:
        self.settings = settings
        self.broadcaster = Broadcaster()
        self.router = Router()
        self.draining = False
        self.stopped = trio.Event()
        self._shutdown = trio.Event()
        #: trio time by which shutdown must be over (set when the drain starts).
        self._shutdown_deadline = math.inf
        self._root_scope = trio.CancelScope()
        self._forced = False
        self._listeners_scope = trio.CancelScope()
        self._connection_ids = itertools.count()
        self._server_request_ids = itertools.count()
        #: detached tasks started and not yet finished; `_detached_idle` is set when it drops
        #: to 0 while the drain waits for it.
        self._detached_running = 0
        self._detached_idle = trio.Event()
        self._connections: trio.Nursery | None = None
        self._detached: trio.Nursery | None = None
        self._families: list[Any] = []
        #: every log record of the process goes here while the server runs (feedback bundles).
        self.log_store = LogStore(settings.codex_home) if settings.log_store else None
        #: where the ws:// or unix:// listener listens, once `run` has started it.
        self.listening: WebSocketEndpoint | ControlSocket | None = None
        self._build_routes()

    def _build_routes(self) -> None:
        """The method table: the handshake now, every other family on first use."""
        self._session_api = SessionApi(self.settings.codex_home, self.settings.bwrap)
        self._add_families([self._session_api])
        for group in FAMILY_GROUPS:
            self.router.add_lazy(group.methods, functools.partial(self._load_group, group))

    def _add_families(self, families: list[Any]) -> None:
        for family in families:
            self._families.append(family)
            self.router.add(family.routes())

    async def _load_group(self, group: FamilyGroup) -> None:
        for method in group.needs:
            await self.router.ensure_loaded(method)
        # Importing is CPU work (class creation), done off the loop so other connections
        # keep being served; building the families is quick and happens here.
        for module in group.modules:
            await trio.to_thread.run_sync(importlib.import_module, module)
        self._add_families(group.build(self))

    async def family(self, cls: type[F]) -> F:
        """The loaded instance of an API family class, loading its group if needed."""
        for group in FAMILY_GROUPS:
            if any(module == cls.__module__ for module in group.modules):
                await self.router.ensure_loaded(group.methods[0])
        return self.built_family(cls)

    def built_family(self, cls: type[F]) -> F:
        """The instance of an API family class whose group is built."""
        for family in self._families:
            if isinstance(family, cls):
                return family
        raise LookupError(f"no API family {cls.__name__}")

    def _thread_loaded(self, thread: Any) -> None:
        """A thread became loaded before the agent group was built: a thread whose config
        names MCP servers starts them at once (as the reference does), so build the group
        that owns them (its MCP family starts the servers of every thread already loaded)."""
        if self.draining or self.router.built("turn/start"):
            return
        from codex_trio.mcp import configures_servers

        if configures_servers(thread.config):
            self.start_detached(self._build_in_background, "turn/start", name="build the agent families")

    async def _build_in_background(self, method: str) -> None:
        """Build the group of `method` now; a failure is left for its first call to report."""
        try:
            await self.router.ensure_loaded(method)
        except Exception:
            log.exception("building the routes for %s failed", method)

    # ------------------------------------------------------------------ lifecycle
    async def run(self, *, task_status: trio.TaskStatus[AppServer] = trio.TASK_STATUS_IGNORED) -> None:
        """Serve until `shutdown()` (or a forced stop); `task_status.started` once listening."""
        home = self.settings.codex_home
        async with trio.open_nursery() as startup:
            # `initialize` answers with the sandbox's state: probing bubblewrap (a process run,
            # ~10 ms) beside the rest of start-up takes it off a client's first round trip.
            startup.start_soon(check_support, self.settings.bwrap)
            await trio.to_thread.run_sync(functools.partial(home.mkdir, parents=True, exist_ok=True))
            await self._session_api.load_installation_id()
            owned_provider = await self._start_tracing()
        if self.log_store is not None:
            self.log_store.attach()
        try:
            with self._root_scope:
                async with trio.open_nursery() as connections:
                    self._connections = connections
                    if self.log_store is not None:
                        connections.start_soon(self.log_store.run)
                    async with trio.open_nursery() as detached:
                        self._detached = detached
                        await self._start_listeners(connections)
                        task_status.started(self)
                        await self._shutdown.wait()
                        self._start_budget()
                        await self._drain_detached(detached)
                    if self.log_store is not None:
                        self.log_store.stop()
                    flush_by = min(trio.current_time() + SHUTDOWN_FLUSH_TIMEOUT, self._shutdown_deadline)
                    for connection in self.broadcaster.connections:
                        connection.close(deadline=flush_by)
        finally:
            if self._root_scope.cancelled_caught and not self._forced:
                log.warning("shutdown budget (%gs) spent; cancelled the rest", self.settings.shutdown_timeout)
            await self._close_families()
            await self._stop_tracing(owned_provider)
            await self._close_log_store()
            self.stopped.set()
            log.debug("server stopped")

    async def _start_tracing(self) -> Any:
        """Install the tracer provider; returns the one this server built (and must close)."""
        provider = self.settings.tracer_provider
        if provider is not None:
            tracing.install(provider)
            return None
        overrides: list[tuple[str, Any]] = [
            (key, value) for key, value in self.settings.config_overrides if key.split(".")[0] == "otel"
        ]
        if overrides:
            from codex_trio.config.layers import parse_override_value

            overrides = [(key, parse_override_value(value)) for key, value in overrides]
        config = await trio.to_thread.run_sync(tracing.exporter_config, self.settings.codex_home, overrides)
        if config is None:
            return None
        # Importing the SDK and the exporter is blocking work: off the loop.
        provider = await trio.to_thread.run_sync(tracing.build_provider, config)
        tracing.install(provider)
        log.info("tracing: exporting spans to %s (%s)", config["endpoint"], config["protocol"])
        return provider

    async def _stop_tracing(self, provider: Any) -> None:
        """Flush the last spans and join the exporter thread (bounded by the export timeouts)."""
        if self.settings.tracer_provider is None and provider is None:
            return
        tracing.uninstall()
        if provider is not None:
            with trio.CancelScope(shield=True):
                try:
                    await trio.to_thread.run_sync(tracing.close_provider, provider)
                except Exception:
                    log.exception("closing the trace exporter failed")

    async def _close_log_store(self) -> None:
        """Write the last records (at most the bounded queue) and close the database."""
        store = self.log_store
        if store is None:
            return
        store.detach()
        with trio.CancelScope(shield=True):
            try:
                await store.close()
            except Exception:
                log.exception("closing the log store failed")

    async def _close_families(self) -> None:
        """Let each family release what it holds (database handles...) once no task uses it."""
        now = trio.current_time()
        deadline = min(now + FAMILY_CLOSE_TIMEOUT, max(self._shutdown_deadline, now + FAMILY_CLOSE_FLOOR))
        with trio.CancelScope(shield=True, deadline=deadline):
            for family in reversed(self._families):
                aclose = getattr(family, "aclose", None)
                if aclose is not None:
                    try:
                        await aclose()
                    except Exception:
                        log.exception("closing %s failed", type(family).__name__)

    async def _drain_detached(self, detached: trio.Nursery) -> None:
        log.info(
            "entering drain (connections=%d, detached tasks=%d)",
            len(self.broadcaster.connections),
            self._detached_running,
        )
        self.draining = True
        self._listeners_scope.cancel()
        for family in self._families:
            # Families whose detached work never finishes by itself (MCP servers) stop it now.
            drain_started = getattr(family, "drain_started", None)
            if drain_started is not None:
                drain_started()
        with trio.move_on_at(min(trio.current_time() + self.settings.drain_grace, self._shutdown_deadline)):
            await self.detached_idle()
        detached.cancel_scope.cancel()

    async def detached_idle(self) -> None:
        """Wait until no detached work runs (the drain; tests and embedders wanting quiescence)."""
        while self._detached_running:
            self._detached_idle = trio.Event()
            await self._detached_idle.wait()

    def shutdown(self) -> None:
        """Start the graceful drain (idempotent)."""
        self._shutdown.set()

    def _start_budget(self) -> None:
        """Start the shutdown budget: at its end the root scope cancels whatever is left.

        Shielded cleanups (killing process groups, closing transports) are bounded on their own.
        """
        self._shutdown_deadline = trio.current_time() + self.settings.shutdown_timeout
        self._root_scope.deadline = self._shutdown_deadline

    def force_shutdown(self) -> None:
        """Stop now: everything is cancelled; cleanup code still kills child processes."""
        self._shutdown.set()
        self._forced = True
        self._root_scope.cancel()

    async def _start_listeners(self, nursery: trio.Nursery) -> None:
        """Start the transport; listeners accept inside `_listeners_scope` (the drain cancels it)."""
        listen = self.settings.listen
        if isinstance(listen, StdioListen):
            nursery.start_soon(self._serve_stdio)
        elif isinstance(listen, NoListen):
            pass
        elif isinstance(listen, WebSocketListen):
            # Network transports are imported on first use: a stdio server never pays for them.
            from codex_trio.transport.websocket import serve_websocket

            self.listening = await nursery.start(
                serve_websocket, listen, self.settings.ws_auth, self.adopt, self._listeners_scope
            )
            self._prebuild_threads()
        elif isinstance(listen, UnixListen):
            from codex_trio.transport.unix import serve_control_socket

            self.listening = await nursery.start(
                serve_control_socket,
                listen,
                self.settings.codex_home,
                self.settings.cwd,
                self.adopt,
                self._listeners_scope,
            )
            self._prebuild_threads()
        else:
            raise ValueError(f"transport {listen!r} is not available in this build")

    def _prebuild_threads(self) -> None:
        """A listening server builds the thread family in the background once it listens.

        Its clients share threads: the first `thread/start` is announced to every one of them,
        and should not wait for ~50 ms of class creation first. A stdio server has one client,
        which asks for a thread right after `initialize` (a prebuild would not be done by
        then), so it keeps its smaller idle footprint and builds the family on that call.
        """
        self.start_detached(self._prebuild, "thread/start", name="build the thread family")

    async def _prebuild(self, method: str) -> None:
        """Build the group of `method`, then let its families warm up (`warm`, in a worker thread)."""
        before = len(self._families)
        await self._build_in_background(method)
        for family in self._families[before:]:
            warm = getattr(family, "warm", None)
            if warm is not None:
                try:
                    await trio.to_thread.run_sync(warm)
                except Exception:
                    log.exception("warming %s failed", type(family).__name__)

    async def _serve_stdio(self) -> None:
        await self.serve_connection(open_stdio(), "backpressure")
        # stdio has exactly one client: when it leaves, the server is done.
        self.shutdown()

    # ------------------------------------------------------------------ connections
    async def serve_connection(self, stream: MessageStream, overload: OverloadPolicy) -> None:
        """Run one connection to its end; transports call this from a connections-nursery task."""
        connection = Connection(
            next(self._connection_ids),
            stream,
            self.router,
            request_ids=self._server_request_ids,
            overload=overload,
            on_closed=self._connection_closed,
        )
        self.broadcaster.add(connection)
        await connection.run()

    def adopt(self, stream: MessageStream, overload: OverloadPolicy) -> None:
        """Hand a freshly opened stream to the connections nursery (listeners use this)."""
        if self._connections is None or self.draining:
            raise ServerClosed("server is not accepting connections")
        try:
            self._connections.start_soon(self.serve_connection, stream, overload)
        except RuntimeError as exc:  # the connections nursery has already closed
            raise ServerClosed("server is not accepting connections") from exc

    async def _connection_closed(self, connection: Connection) -> None:
        self.broadcaster.remove(connection)
        for family in self._families:
            closed = getattr(family, "connection_closed", None)
            if closed is not None:
                await closed(connection)

    async def connect(self) -> ClientConnection:
        """An in-process client connection (memory streams, the same dispatch path)."""
        # imported here: a server started by the command line never has one
        from codex_trio.client import ClientConnection
        from codex_trio.transport.memory import memory_message_stream_pair

        server_end, client_end = memory_message_stream_pair()
        self.adopt(server_end, "backpressure")
        client = ClientConnection(client_end)
        assert self._connections is not None
        self._connections.start_soon(client.run)
        return client

    # ------------------------------------------------------------------ detached work
    def start_detached(self, fn: Callable[..., Awaitable[Any]], *args: Any, name: str) -> None:
        """Run work that outlives its request, owned by the server (drained at shutdown)."""
        if self._detached is None or self.draining:
            raise server_shutting_down()
        # Counted now, not when the task first runs, so a drain that starts in between waits.
        self._detached_running += 1
        self._detached.start_soon(self._track_detached, fn, args, name=name)

    async def _track_detached(self, fn: Callable[..., Awaitable[Any]], args: tuple[Any, ...]) -> None:
        try:
            await fn(*args)
        finally:
            self._detached_running -= 1
            if not self._detached_running:
                self._detached_idle.set()


async def serve(
    settings: ServerSettings, *, task_status: trio.TaskStatus[AppServer] = trio.TASK_STATUS_IGNORED
) -> None:
    """Run an app-server until it shuts down; for `nursery.start(serve, settings)`."""
    await AppServer(settings).run(task_status=task_status)


@asynccontextmanager
async def open_app_server(settings: ServerSettings | None = None) -> AsyncIterator[AppServer]:
    """Run a server inside the caller's Trio program; leaving the block drains it."""
    server = AppServer(settings if settings is not None else ServerSettings(listen=NoListen()))
    async with trio.open_nursery() as nursery:
        await nursery.start(server.run)
        try:
            yield server
        finally:
            server.shutdown()
