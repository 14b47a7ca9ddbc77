"""`turn/start`, `turn/steer`, `turn/interrupt`: the requests that drive the agent loop.

This family owns no turn state of its own: a thread's turns live in its `ThreadRuntime`
(`codex_trio.core.turn`, kept in `LoadedThread.turn_state`), and run in the server's detached
nursery, so they outlive the request and the connection that started them. Handlers only
validate, resolve the turn's settings and hand work over. Anything a handler starts that
emits notifications waits until the handler's response is queued (`call_after_response`),
so clients always see the response first, as with the reference.
"""

from __future__ import annotations

import os
import platform
from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs
import trio

from codex_trio import tracing
from codex_trio._version import VERSION
from codex_trio.config.auth import read_auth
from codex_trio.config.effective import ProviderConfig, builtin_providers, provider_from_table
from codex_trio.config.shell_env import shell_environment_policy
from codex_trio.core.model_client import Login
from codex_trio.core.tools import ToolProvider
from codex_trio.core.turn import RunningTurn, ThreadRuntime, TurnBody, TurnSettings
from codex_trio.protocol.errors import invalid_request, server_shutting_down
from codex_trio.protocol.sandbox import policy_overrides
from codex_trio.protocol.turns import TurnInterruptParams, TurnStartParams, TurnSteerParams, UserInput
from codex_trio.routing import RequestContext, Route, route
from codex_trio.services import Services
from codex_trio.threads import LoadedThread, ThreadManager


def provider_for(config: Mapping[str, Any], provider_id: str) -> ProviderConfig:
    """The provider a thread uses, from its effective config table (built-ins included)."""
    base_url = config.get("openai_base_url")
    providers = builtin_providers(base_url if isinstance(base_url, str) else None, os.environ)
    configured = config.get("model_providers")
    if provider_id not in providers and isinstance(configured, dict):
        table = configured.get(provider_id)
        if isinstance(table, dict):
            return provider_from_table(provider_id, table)
    provider = providers.get(provider_id)
    if provider is None:
        raise invalid_request(f"failed to load configuration: Model provider `{provider_id}` not found")
    return provider


class TurnsApi:
    """The turn family; see the module docstring."""

    def __init__(
        self,
        services: Services,
        manager: ThreadManager,
        login: Callable[[], Awaitable[Login | None]] | None = None,
        tool_providers: Sequence[ToolProvider] = (),
    ) -> None:
        """`login` is the account family's current login (external tokens come with their
        refresh); `tool_providers` offer tools beyond the built-in ones (see `codex_trio.core.tools`)."""
        self.services = services
        self.manager = manager
        self._account_login = login
        self.tool_providers = list(tool_providers)
        self._platform = f"({platform.system()} {platform.release()}; {platform.machine()})"

    def routes(self) -> list[Route]:
        """The family's methods."""
        return [
            route("turn/start", TurnStartParams, self.turn_start),
            route("turn/steer", TurnSteerParams, self.turn_steer),
            route("turn/interrupt", TurnInterruptParams, self.turn_interrupt),
        ]

    async def turn_start(self, ctx: RequestContext, params: TurnStartParams) -> dict[str, Any]:
        """`turn/start`: run a turn on a loaded thread; while one runs, the input steers it instead."""
        if self.services.draining:
            raise server_shutting_down()
        thread = await self.manager.get_loaded(params.thread_id)
        # Several servers may share the store: only the lease holder runs turns on a thread.
        reloaded = await self.manager.claim(thread)
        runtime = ThreadRuntime.of(thread, self.services)
        if reloaded and runtime.active_turn is None:
            runtime.history = None  # another server may have run turns since: rebuild it
        active = runtime.active_turn
        if active is not None:
            # As the reference: input sent while a turn runs joins that turn.
            ctx.call_after_response(lambda: active.steer(list(params.input), params.client_user_message_id))
            tracing.set_attribute("turn.id", active.id)
            return {"turn": active.wire()}
        self._remember_overrides(runtime, params)
        turn = await self.start_turn(
            ctx,
            thread,
            list(params.input),
            client_user_message_id=params.client_user_message_id,
            output_schema=params.output_schema,
        )
        return {"turn": turn.wire()}

    async def start_turn(
        self,
        ctx: RequestContext,
        thread: LoadedThread,
        inputs: list[UserInput],
        *,
        body: TurnBody | None = None,
        client_user_message_id: str | None = None,
        output_schema: Any = None,
    ) -> RunningTurn:
        """Run a turn next on `thread` (no turn of it accepts input); it starts once the
        response is queued. `body` replaces the regular turn (compaction, review, shell)."""
        runtime = ThreadRuntime.of(thread, self.services)
        previous = runtime.current
        if previous is not None and not previous.done.is_set():
            await previous.done.wait()  # an interrupted turn is still writing its end
        session = ctx.connection.session
        settings = self._settings(thread, runtime, session.client_name, session.client_version, output_schema)
        settings = await self._with_login(thread, settings)
        turn = RunningTurn(
            thread,
            self.services,
            settings,
            inputs,
            client_user_message_id=client_user_message_id,
            tool_providers=self.tool_providers,
            body=body,
        )
        if ctx.connection.id not in thread.subscribers:
            self.manager.subscribe(thread, ctx.connection.id)
        ctx.call_after_response(turn.ready.set)
        tracing.set_attribute("turn.id", turn.id)
        runtime.submit(turn)
        return turn

    async def turn_steer(self, ctx: RequestContext, params: TurnSteerParams) -> dict[str, Any]:
        """`turn/steer`: add input to the running turn."""
        thread = await self.manager.get_loaded(params.thread_id)
        runtime = thread.turn_state if isinstance(thread.turn_state, ThreadRuntime) else None
        turn = runtime.active_turn if runtime is not None else None
        if turn is None:
            raise invalid_request("no active turn to steer")
        if params.expected_turn_id != turn.id:
            raise invalid_request(
                f"expected active turn id `{params.expected_turn_id}` but found `{turn.id}`"
            )
        if not params.input:
            raise invalid_request("input must not be empty")
        ctx.call_after_response(lambda: turn.steer(list(params.input), params.client_user_message_id))
        return {"turnId": turn.id}

    async def turn_interrupt(self, ctx: RequestContext, params: TurnInterruptParams) -> dict[str, Any]:
        """`turn/interrupt`: cancel the running turn; it ends as interrupted."""
        thread = await self.manager.get_loaded(params.thread_id)
        runtime = thread.turn_state if isinstance(thread.turn_state, ThreadRuntime) else None
        turn = runtime.active_turn if runtime is not None else None
        if turn is None:
            raise invalid_request("no active turn to interrupt")
        if params.turn_id != turn.id:
            raise invalid_request(f"expected active turn id `{params.turn_id}` but found `{turn.id}`")
        # The response goes first; the turn then ends with turn/completed (interrupted).
        ctx.call_after_response(turn.interrupt)
        return {}

    # ------------------------------------------------------------------ settings
    async def _login(self) -> Login | None:
        """The account's current login (in-memory tokens first, then auth.json)."""
        if self._account_login is not None:
            return await self._account_login()
        stored = await trio.to_thread.run_sync(read_auth, self.services.settings.codex_home)
        account_id = stored.identity.account_id if stored is not None else None
        if stored is None:
            return None
        token = stored.api_key if stored.mode == "apikey" else stored.access_token
        return Login(stored.mode, token, account_id) if token else None

    def _remember_overrides(self, runtime: ThreadRuntime, params: TurnStartParams) -> None:
        """turn/start overrides apply to this turn and the thread's later turns."""
        updates: dict[str, Any] = {}
        if params.cwd is not None:
            updates["cwd"] = params.cwd
        updates.update(policy_overrides(params.approval_policy, params.sandbox_policy))
        for key in ("model", "effort", "summary", "service_tier"):
            value = getattr(params, key)
            if value is not None:
                updates[key] = value
        if isinstance(params.collaboration_mode, dict):
            updates["collaboration_mode"] = params.collaboration_mode
        runtime.overrides.update(updates)

    async def start_automatic_turn(
        self, thread: LoadedThread, hidden_items: list[dict[str, Any]]
    ) -> RunningTurn | None:
        """Start a turn the server decided on (a goal continuation): no user input, the
        thread's current settings, `hidden_items` as its context. None when the thread is
        busy, gone or the server is draining (the caller tries again at the next idle)."""
        if self.services.draining or self.manager.loaded(thread.id) is not thread:
            return None
        runtime = ThreadRuntime.of(thread, self.services)
        previous = runtime.current
        if previous is not None and not previous.done.is_set():
            return None
        client = previous.settings.originator if previous is not None else None
        settings = await self._with_login(thread, self._settings(thread, runtime, client, None, None))
        turn = RunningTurn(
            thread, self.services, settings, [], tool_providers=self.tool_providers, hidden_items=hidden_items
        )
        turn.ready.set()
        runtime.submit(turn)
        return turn

    async def _with_login(self, thread: LoadedThread, settings: TurnSettings) -> TurnSettings:
        if not settings.provider.requires_openai_auth:
            return settings
        login = await self._login()
        provider = _chatgpt_backend(settings.provider, login, thread.config)
        return attrs.evolve(settings, login=login, provider=provider)

    def _settings(
        self,
        thread: LoadedThread,
        runtime: ThreadRuntime,
        client_name: str | None,
        client_version: str | None,
        output_schema: Any,
    ) -> TurnSettings:
        o = runtime.overrides
        cwd = Path(o["cwd"]) if "cwd" in o else thread.cwd
        if not cwd.is_absolute():
            cwd = self.services.settings.cwd / cwd
        config = thread.config
        context_window = config.get("model_context_window")
        client = client_name or "codex_trio"
        user_agent = f"{client}/{VERSION} {self._platform} ({client}; {client_version or VERSION})"
        summary = o.get("summary") or _str(config.get("model_reasoning_summary"))
        model, effort = o.get("model", thread.model), o.get("effort", thread.reasoning_effort)
        mode = o.get("collaboration_mode")
        mode_settings = mode.get("settings") if isinstance(mode, dict) else None
        if isinstance(mode_settings, dict):
            # As the reference: the mode's own model and effort win over separate overrides.
            model = _str(mode_settings.get("model")) or model
            effort = _str(mode_settings.get("reasoning_effort")) or effort
        limit = config.get("model_auto_compact_token_limit")
        return TurnSettings(
            cwd=cwd,
            model=model,
            provider=provider_for(config, thread.model_provider),
            approval_policy=o.get("approval_policy", thread.approval_policy),
            sandbox_policy=o.get("sandbox_policy", thread.sandbox_policy),
            effort=effort,
            summary=summary,
            output_schema=output_schema,
            collaboration_mode=mode if isinstance(mode, dict) else None,
            service_tier=o.get("service_tier", thread.service_tier),
            auto_compact_limit=limit if isinstance(limit, int) and not isinstance(limit, bool) else None,
            base_instructions=thread.base_instructions,
            developer_instructions=thread.developer_instructions,
            context_window=context_window if isinstance(context_window, int) else None,
            originator=client,
            user_agent=user_agent,
            shell_environment=shell_environment_policy(config),
        )


def _chatgpt_backend(
    provider: ProviderConfig, login: Login | None, config: Mapping[str, Any]
) -> ProviderConfig:
    """A ChatGPT login talks to the ChatGPT backend unless a base URL was configured."""
    if provider.id != "openai" or login is None or login.mode == "apikey":
        return provider
    if isinstance(config.get("openai_base_url"), str) or os.environ.get("OPENAI_BASE_URL", "").strip():
        return provider
    base = config.get("chatgpt_base_url")
    root = base if isinstance(base, str) and base else "https://chatgpt.com/backend-api/"
    return attrs.evolve(provider, base_url=root.rstrip("/") + "/codex")


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) else None
