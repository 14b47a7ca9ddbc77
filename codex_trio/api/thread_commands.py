"""Thread commands beyond plain turns, as the TUI sends them: `thread/shellCommand` (`!cmd`),
`thread/compact/start` (`/compact`), `review/start` (`/review`), `thread/settings/update`
(`/model`, `/plan`, `/permissions`…), `permissionProfile/list`, `thread/revert` (Esc Esc)
and `thread/inject_items`.

The work itself is the core's (`core.user_shell`, `core.compaction`, `core.review`, the turn
loop); this family validates, picks the thread and hands work over. Work that runs as a turn is
started through the turns family's `start_turn` (given to the constructor by the server, as
families never import each other), so it is owned by the thread's runtime like any turn and
clients see the response first. Settings land in the runtime's overrides, which the next turn
resolves; the thread's wire form for `thread/revert` comes from the threads family the same way.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, Protocol

import trio

from codex_trio.core import collaboration
from codex_trio.core.compaction import Compaction
from codex_trio.core.review import Review, ReviewTargetError, resolve_target
from codex_trio.core.turn import RunningTurn, ThreadRuntime, TurnBody
from codex_trio.core.user_shell import UserShellCommand, run_user_shell
from codex_trio.protocol.converter import unstructure
from codex_trio.protocol.errors import invalid_request, server_shutting_down
from codex_trio.protocol.paging import page
from codex_trio.protocol.sandbox import policy_overrides
from codex_trio.protocol.thread_commands import (
    PermissionProfileListParams,
    ReviewStartParams,
    ThreadCompactStartParams,
    ThreadInjectItemsParams,
    ThreadRevertParams,
    ThreadSettingsUpdateParams,
    ThreadShellCommandParams,
)
from codex_trio.protocol.turns import UserInput
from codex_trio.routing import RequestContext, Route, route
from codex_trio.services import Services
from codex_trio.store import rollout
from codex_trio.threads import LoadedThread, ThreadManager

#: the reference's built-in permission profiles and the sandbox each selects.
PERMISSION_PROFILES: dict[str, dict[str, Any]] = {
    ":read-only": {"type": "readOnly", "networkAccess": False},
    ":workspace": {
        "type": "workspaceWrite",
        "writableRoots": [],
        "networkAccess": False,
        "excludeTmpdirEnvVar": False,
        "excludeSlashTmp": False,
    },
    ":danger-full-access": {"type": "dangerFullAccess"},
}


class StartTurn(Protocol):
    """The turns family's `start_turn` (see `codex_trio.api.turns.TurnsApi.start_turn`)."""

    def __call__(
        self,
        ctx: RequestContext,
        thread: LoadedThread,
        inputs: list[UserInput],
        *,
        body: TurnBody | None = None,
    ) -> Awaitable[RunningTurn]: ...


class ThreadCommandsApi:
    """The family; see the module docstring."""

    def __init__(
        self,
        services: Services,
        manager: ThreadManager,
        start_turn: StartTurn,
        thread_wire: Callable[[LoadedThread], Any],
    ) -> None:
        self.services = services
        self.manager = manager
        self._start_turn = start_turn
        self._thread_wire = thread_wire

    def routes(self) -> list[Route]:
        """The family's methods."""
        return [
            route("thread/shellCommand", ThreadShellCommandParams, self.shell_command),
            route("thread/compact/start", ThreadCompactStartParams, self.compact_start),
            route("review/start", ReviewStartParams, self.review_start),
            route(
                "thread/settings/update", ThreadSettingsUpdateParams, self.settings_update, experimental=True
            ),
            route("permissionProfile/list", PermissionProfileListParams, self.permission_profiles),
            route("thread/revert", ThreadRevertParams, self.revert),
            route("thread/inject_items", ThreadInjectItemsParams, self.inject_items),
        ]

    async def _idle_thread(self, thread_id: str) -> tuple[LoadedThread, ThreadRuntime]:
        if self.services.draining:
            raise server_shutting_down()
        thread = await self.manager.get_loaded(thread_id)
        runtime = ThreadRuntime.of(thread, self.services)
        if runtime.active_turn is not None:
            raise invalid_request("a turn is already running on this thread")
        return thread, runtime

    # ------------------------------------------------------------------ thread/shellCommand
    async def shell_command(self, ctx: RequestContext, params: ThreadShellCommandParams) -> dict[str, Any]:
        """Run the user's command: a turn of its own, or part of the turn that is running."""
        if not params.command.strip():
            raise invalid_request("command must not be empty")
        if params.timeout_ms is not None and params.timeout_ms < 0:
            raise invalid_request("timeoutMs must be non-negative")
        if self.services.draining:
            raise server_shutting_down()
        thread = await self.manager.get_loaded(params.thread_id)
        runtime = ThreadRuntime.of(thread, self.services)
        active = runtime.active_turn
        if active is None:
            await self._start_turn(ctx, thread, [], body=UserShellCommand(params.command, params.timeout_ms))
            return {}
        job = functools.partial(
            _until_unloaded,
            thread,
            functools.partial(
                run_user_shell,
                runtime,
                active.id,
                params.command,
                str(active.settings.cwd),
                params.timeout_ms,
            ),
        )
        ctx.call_after_response(lambda: self.services.start_detached(job, name=f"user shell {thread.id}"))
        return {}

    # ------------------------------------------------------------------ thread/compact/start
    async def compact_start(self, ctx: RequestContext, params: ThreadCompactStartParams) -> dict[str, Any]:
        """Compact the thread's history now, as a turn of its own."""
        thread, _ = await self._idle_thread(params.thread_id)
        await self._start_turn(ctx, thread, [], body=Compaction())
        return {}

    # ------------------------------------------------------------------ review/start
    async def review_start(self, ctx: RequestContext, params: ReviewStartParams) -> dict[str, Any]:
        """Review the target in a turn of the thread (inline delivery: the only one the schema has)."""
        if params.delivery not in (None, "inline"):
            raise invalid_request(f"Invalid request: unknown variant `{params.delivery}`, expected `inline`")
        thread, _ = await self._idle_thread(params.thread_id)
        try:
            review = await resolve_target(params.target, thread.cwd)
        except ReviewTargetError as exc:
            raise invalid_request(str(exc)) from None
        prompt = UserInput("text", {"type": "text", "text": review.prompt, "text_elements": []})
        turn = await self._start_turn(ctx, thread, [prompt], body=Review(review))
        wire = turn.wire()
        wire["items"] = [
            {
                "type": "userMessage",
                "id": turn.id,
                "clientId": None,
                "content": [{"type": "text", "text": review.hint, "text_elements": []}],
                "startedAtMs": None,
                "completedAtMs": None,
            }
        ]
        return {"turn": wire, "reviewThreadId": thread.id}

    # ------------------------------------------------------------------ settings
    async def settings_update(
        self, ctx: RequestContext, params: ThreadSettingsUpdateParams
    ) -> dict[str, Any]:
        """Overrides for the next turns; `thread/settings/updated` follows the response."""
        thread = await self.manager.get_loaded(params.thread_id)
        runtime = ThreadRuntime.of(thread, self.services)
        updates: dict[str, Any] = {}
        if params.permissions is not None and params.sandbox_policy is not None:
            raise invalid_request("`permissions` cannot be combined with `sandboxPolicy`")
        updates.update(policy_overrides(params.approval_policy, params.sandbox_policy))
        if params.sandbox_policy is not None:
            updates["active_permission_profile"] = None
        if params.permissions is not None:
            sandbox = PERMISSION_PROFILES.get(params.permissions)
            if sandbox is None:
                raise invalid_request(f"unknown permissions profile `{params.permissions}`")
            updates["sandbox_policy"] = dict(sandbox)
            updates["active_permission_profile"] = {"id": params.permissions, "extends": None}
        if params.collaboration_mode is not None:
            if params.collaboration_mode.get("mode") not in collaboration.MODES:
                raise invalid_request(f"unknown collaboration mode `{params.collaboration_mode.get('mode')}`")
            updates["collaboration_mode"] = params.collaboration_mode
        if params.cwd is not None:
            cwd = Path(params.cwd)
            updates["cwd"] = str(cwd if cwd.is_absolute() else self.services.settings.cwd / cwd)
        for key in ("model", "effort", "summary", "approvals_reviewer"):
            value = getattr(params, key)
            if value is not None:
                updates[key] = value
        if params.service_tier is not None:
            updates["service_tier"] = params.service_tier
        runtime.overrides.update(updates)
        ctx.call_after_response(
            lambda: self.services.broadcaster.broadcast(
                "thread/settings/updated",
                {"threadId": thread.id, "threadSettings": thread_settings(thread, runtime.overrides)},
                only=list(thread.subscribers | {ctx.connection.id}),
            )
        )
        return {}

    async def permission_profiles(
        self, ctx: RequestContext, params: PermissionProfileListParams
    ) -> dict[str, Any]:
        """`permissionProfile/list`: the built-in profiles, all allowed."""
        entries = [{"id": name, "description": None, "allowed": True} for name in PERMISSION_PROFILES]
        data, cursor = page(entries, params.cursor, params.limit, "permission profiles")
        return {"data": data, "nextCursor": cursor}

    # ------------------------------------------------------------------ revert, inject
    async def revert(self, ctx: RequestContext, params: ThreadRevertParams) -> dict[str, Any]:
        """Drop a turn and every later one from what the model sees; recorded in the rollout."""
        thread, runtime = await self._idle_thread(params.thread_id)
        lines = await thread.read_rollout()
        started = [
            line["payload"].get("turn_id")
            for line in lines
            if line.get("type") == "event_msg" and (line.get("payload") or {}).get("type") == "task_started"
        ]
        if params.before_turn_id not in started:
            raise invalid_request(f"turn {params.before_turn_id} not found in thread {thread.id}")
        await thread.append_rollout([rollout.thread_reverted(params.before_turn_id)], durable=True)
        runtime.history = None  # rebuilt from the rollout, which now ends with the revert
        runtime.last_usage = None
        ctx.notify_after_response("thread/reverted", {"threadId": thread.id})
        wire = unstructure(self._thread_wire(thread))
        wire["turns"] = []
        return {"thread": wire, "turnsBackwardsCursor": None, "itemsBackwardsCursor": None}

    async def inject_items(self, ctx: RequestContext, params: ThreadInjectItemsParams) -> dict[str, Any]:
        """Append raw Responses items to the history the model sees next (and the rollout)."""
        if not all(isinstance(item, dict) and isinstance(item.get("type"), str) for item in params.items):
            raise invalid_request("items must be Responses API items (objects with a `type`)")
        thread = await self.manager.get_loaded(params.thread_id)
        runtime = ThreadRuntime.of(thread, self.services)
        history = await runtime.load_history()
        entries = [dict(item) for item in params.items]
        history.extend(entries)
        await thread.append_rollout([rollout.response_item(e) for e in entries], durable=True)
        return {}


def thread_settings(thread: LoadedThread, overrides: dict[str, Any]) -> dict[str, Any]:
    """The thread's settings for its next turn, as `thread/settings/updated` shows them."""
    o = overrides
    cwd = str(o.get("cwd", thread.cwd))
    model = o.get("model", thread.model)
    effort = o.get("effort", thread.reasoning_effort)
    mode = o.get("collaboration_mode") or {
        "mode": "default",
        "settings": {"model": model, "reasoning_effort": effort, "developer_instructions": None},
    }
    return {
        "disabledPluginIds": [],
        "cwd": cwd,
        "environments": [{"environmentId": "local", "cwd": cwd, "runtimeWorkspaceRoots": [cwd]}],
        "approvalPolicy": o.get("approval_policy", thread.approval_policy),
        "approvalsReviewer": o.get("approvals_reviewer", thread.approvals_reviewer),
        "sandboxPolicy": o.get("sandbox_policy", thread.sandbox_policy),
        "activePermissionProfile": o.get("active_permission_profile", thread.active_permission_profile),
        "model": model,
        "modelProvider": thread.model_provider,
        "serviceTier": o.get("service_tier", thread.service_tier),
        "effort": effort,
        "summary": o.get("summary"),
        "collaborationMode": collaboration.resolved(mode),
    }


async def _until_unloaded(thread: LoadedThread, job: Callable[[], Awaitable[None]]) -> None:
    """Run `job`, cancelled if the thread is unloaded first."""
    async with trio.open_nursery() as nursery:

        async def watch() -> None:
            await thread.unloaded.wait()
            nursery.cancel_scope.cancel()

        nursery.start_soon(watch)
        await job()
        nursery.cancel_scope.cancel()
