"""`thread/*` and `getConversationSummary`: the thread API family.

Owns the server's `ThreadManager` (loaded threads, subscriptions) and its `LocalThreadStore`
(rollouts and the index). Lifecycle notifications (`thread/started`, `thread/status/changed`,
`thread/name/updated`, `thread/archived|unarchived|deleted|closed`) go to every initialized
connection; turn and item events go to a thread's subscribers (see `codex_trio.threads`).
"""

from __future__ import annotations

import logging
import os
import uuid
from functools import partial
from typing import Any

import attrs
import trio

from codex_trio.api.thread_history import check_limit, fork_cut, items_page, resume_cursors, turns_page
from codex_trio.api.thread_settings import SettingsResolver, ThreadSettings, absolute, bad_params
from codex_trio.config.thread_store import ThreadStoreConfig, ThreadStoreConfigError, thread_store_config
from codex_trio.connection import Connection
from codex_trio.ids import now_ms, uuid7
from codex_trio.protocol.converter import describe, get_converter, unstructure
from codex_trio.protocol.errors import (
    INVALID_PARAMS,
    RpcError,
    invalid_request,
    server_shutting_down,
)
from codex_trio.protocol.thread import (
    ABSENT,
    IDLE,
    NOT_LOADED,
    ConversationSummary,
    Environment,
    GetConversationSummaryParams,
    GetConversationSummaryResponse,
    GitInfoWire,
    PageResponse,
    Thread,
    ThreadForkParams,
    ThreadIdParams,
    ThreadItemsListParams,
    ThreadListParams,
    ThreadListResponse,
    ThreadLoadedListParams,
    ThreadLoadedListResponse,
    ThreadMetadataUpdateParams,
    ThreadOverrides,
    ThreadReadParams,
    ThreadReadResponse,
    ThreadResponse,
    ThreadResumeParams,
    ThreadResumeResponse,
    ThreadSetNameParams,
    ThreadStartParams,
    ThreadStartResponse,
    ThreadTurnsListParams,
    ThreadUnsubscribeResponse,
    sandbox_policy,
)
from codex_trio.routing import RequestContext, Route, route
from codex_trio.services import Services
from codex_trio.store import (
    KEEP,
    GitInfoPatch,
    InvalidCursor,
    LeaseHeld,
    ListQuery,
    NoRollout,
    StoreError,
    ThreadRecord,
    ThreadStore,
    history,
    rollout,
)
from codex_trio.store.local import LocalThreadStore
from codex_trio.store.thread_state import derived_read_mark, read_state_wire
from codex_trio.threads import (
    DEFAULT_UNLOAD_DELAY,
    LoadedThread,
    ThreadManager,
    lease_held_error,
    parse_thread_id,
)

log = logging.getLogger(__name__)

#: `thread/list` page size when the request gives none, and the most it returns (the reference's).
DEFAULT_LIST_LIMIT = 25
MAX_LIST_LIMIT = 100
#: `excludedThreadIds` entries accepted at most (the schema's documented bound).
MAX_EXCLUDED_IDS = 100
DEPRECATION_SUMMARY = (
    "Full-history hydration is deprecated for paginated threads; use `excludeTurns: true`, then page with "
    "`thread/turns/list` and `thread/items/list`."
)


def _no_rollout(thread_id: str) -> RpcError:
    return invalid_request(f"no rollout found for thread id {thread_id}")


def _postgres_store(config: ThreadStoreConfig) -> ThreadStore:
    """The PostgreSQL store (psycopg is imported only by servers configured for it)."""
    try:
        from codex_trio.store.postgres import PostgresThreadStore
    except ImportError as exc:
        raise invalid_request(
            f"failed to load configuration: thread_store.kind = \"postgres\" needs psycopg ({exc}); "
            "install codex-trio[postgres]"
        ) from None
    assert config.url is not None
    options: dict[str, Any] = {}
    if config.lease_ttl_secs is not None:
        options["lease_ttl"] = config.lease_ttl_secs
    if config.pool_size is not None:
        options["pool_size"] = config.pool_size
    return PostgresThreadStore(config.url, **options)


class ThreadsApi:
    """The thread family: see the module docstring."""

    def __init__(self, services: Services) -> None:
        self.services = services
        #: the local store until config.toml's `[thread_store]` names another (see `_ready`).
        self.store: ThreadStore = LocalThreadStore(services.settings.codex_home)
        self.manager = ThreadManager(services, self.store)
        self.resolver = SettingsResolver(services)
        self._opened = False
        self._open_lock = trio.Lock()
        self._backfill_started = False
        self._heartbeat = trio.CancelScope()

    def routes(self) -> list[Route]:
        return [
            route("thread/start", ThreadStartParams, self.thread_start),
            route("thread/resume", ThreadResumeParams, self.thread_resume),
            route("thread/fork", ThreadForkParams, self.thread_fork),
            route("thread/read", ThreadReadParams, self.thread_read),
            route("thread/list", ThreadListParams, self.thread_list),
            route("thread/loaded/list", ThreadLoadedListParams, self.thread_loaded_list),
            route("thread/name/set", ThreadSetNameParams, self.thread_name_set),
            route("thread/metadata/update", ThreadMetadataUpdateParams, self.thread_metadata_update),
            route("thread/archive", ThreadIdParams, self.thread_archive),
            route("thread/unarchive", ThreadIdParams, self.thread_unarchive),
            route("thread/delete", ThreadIdParams, self.thread_delete),
            route("thread/unsubscribe", ThreadIdParams, self.thread_unsubscribe),
            route("thread/turns/list", ThreadTurnsListParams, self.thread_turns_list),
            route("thread/items/list", ThreadItemsListParams, self.thread_items_list),
            route("getConversationSummary", GetConversationSummaryParams, self.get_conversation_summary),
        ]

    async def connection_closed(self, connection: Connection) -> None:
        """Drop the connection's subscriptions."""
        self.manager.drop_connection(connection.id)

    def warm(self) -> None:
        """Build the converter's functions for the commonest calls (see `Services`): a
        listening server does it in the background, so its first thread/start does not."""
        converter = get_converter()
        for params in (ThreadStartParams, ThreadResumeParams, ThreadReadParams, ThreadListParams):
            converter.get_structure_hook(params)
        for response in (ThreadStartResponse, ThreadResumeResponse, ThreadReadResponse, ThreadListResponse):
            converter.get_unstructure_hook(response)

    def drain_started(self) -> None:
        """The lease heartbeat never ends by itself: stop it so the drain does not wait for it."""
        self._heartbeat.cancel()

    async def aclose(self) -> None:
        """The server stopped: close the store (handles, connections, leases), so nothing outlives it."""
        self._backfill_started = False
        self._heartbeat.cancel()
        await self.store.aclose()
        await self.manager.state.aclose()

    # ------------------------------------------------------------------ shared helpers
    async def _ready(self) -> None:
        """Open the store and read the server config once (lazily: start-up stays cheap)."""
        if self._opened:
            return
        async with self._open_lock:
            if self._opened:
                return
            config = await self.resolver.load_config(None, None)
            try:
                store_config = thread_store_config(config.raw)
            except ThreadStoreConfigError as exc:
                raise invalid_request(f"failed to load configuration: {exc}") from None
            if store_config.kind == "postgres":
                self.store = self.manager.store = _postgres_store(store_config)
            try:
                await self.store.open()
            except StoreError as exc:
                raise invalid_request(f"thread store unavailable: {exc}") from None
            delay = config.thread_unload_delay_secs
            self.manager.unload_delay = DEFAULT_UNLOAD_DELAY if delay is None else delay
            if self.store.lease_interval is not None and not self.services.draining:
                self._heartbeat = trio.CancelScope()
                self.services.start_detached(self._keep_leases, self._heartbeat, name="thread leases")
            self._opened = True

    async def _keep_leases(self, scope: trio.CancelScope) -> None:
        with scope:
            await self.manager.keep_leases()

    def _fresh_record(
        self,
        ctx: RequestContext,
        settings: ThreadSettings,
        *,
        ephemeral: bool,
        thread_source: str | None,
        fork_of: ThreadRecord | None = None,
    ) -> ThreadRecord:
        """The record of a thread that `thread/start` or `thread/fork` creates (a new id, now).

        A fork keeps its source's preview, name and user-event flag and points back at it.
        """
        thread_id = uuid7()
        now = now_ms()
        record = ThreadRecord(
            id=thread_id,
            rollout_path=None if ephemeral else self.store.new_rollout_path(now, thread_id),
            created_at_ms=now,
            updated_at_ms=now,
            cwd=str(settings.cwd),
            model_provider=settings.model_provider,
            model=settings.model,
            reasoning_effort=settings.reasoning_effort,
            cli_version=rollout.CLI_VERSION,
            originator=ctx.connection.session.client_name,
            ephemeral=ephemeral,
            thread_source=thread_source,
        )
        if fork_of is None:
            return record
        return attrs.evolve(
            record,
            preview=fork_of.preview,
            name=fork_of.name,
            has_user_event=fork_of.has_user_event,
            forked_from_id=fork_of.id,
        )

    def _new_loaded(
        self,
        record: ThreadRecord,
        settings: ThreadSettings,
        params: ThreadOverrides,
    ) -> LoadedThread:
        return LoadedThread(
            manager=self.manager,
            record=record,
            cwd=settings.cwd,
            model=settings.model,
            model_provider=settings.model_provider,
            reasoning_effort=settings.reasoning_effort,
            approval_policy=settings.approval_policy,
            approvals_reviewer=settings.approvals_reviewer,
            sandbox_policy=sandbox_policy(
                settings.sandbox_mode, settings.config.get("sandbox_workspace_write")
            ),
            sandbox_mode=settings.sandbox_mode,
            config=settings.config,
            base_instructions=params.base_instructions,
            developer_instructions=params.developer_instructions,
            active_permission_profile=settings.active_permission_profile,
            service_tier=settings.service_tier,
            effective=settings.effective,
        )

    def _thread_wire(
        self,
        record: ThreadRecord,
        *,
        status: dict[str, Any],
        loaded: LoadedThread | None,
        turns: list[Any] | None = None,
        listed: bool = False,
    ) -> Thread:
        path = record.rollout_path
        if path is not None and not os.path.isabs(path):
            path = str(self.services.settings.codex_home / path)
        environments = None
        if loaded is not None:
            cwd = str(loaded.cwd)
            environments = [Environment("local", cwd, [cwd])]
        git = record.git
        created = record.created_at_ms // 1000
        updated = record.updated_at_ms // 1000
        return Thread(
            id=record.id,
            environments=environments,
            extra=None,
            session_id=record.id,
            forked_from_id=None if listed else record.forked_from_id,
            attached_to_thread_id=None,
            parent_thread_id=None,
            preview=record.preview,
            ephemeral=record.ephemeral,
            section=None,
            section_entered_at=None,
            project_id=None,
            history_mode=record.history_mode,
            model_provider=record.model_provider,
            model=loaded.model if loaded is not None else record.model,
            reasoning_effort=loaded.reasoning_effort if loaded is not None else record.reasoning_effort,
            created_at=created,
            updated_at=updated,
            recency_at=updated,
            status=status,
            path=path,
            cwd=str(loaded.cwd) if loaded is not None else record.cwd,
            cli_version=record.cli_version,
            originator=record.originator,
            source=record.source,
            can_accept_direct_input=None if listed or loaded is None else True,
            thread_source=record.thread_source,
            agent_nickname=record.agent_nickname,
            agent_role=record.agent_role,
            git_info=None if git.empty else GitInfoWire(git.sha, git.branch, git.origin_url),
            name=record.name,
            daybreak_enabled=None,
            turns=turns if turns is not None else [],
        )

    def _loaded_wire(self, thread: LoadedThread, turns: list[Any] | None = None) -> Thread:
        return self._thread_wire(thread.record, status=thread.status, loaded=thread, turns=turns)

    def _start_like(self, thread: LoadedThread, turns: list[Any] | None = None) -> dict[str, Any]:
        """The fields `thread/start`, `thread/resume` and `thread/fork` share."""
        cwd = str(thread.cwd)
        return {
            "thread": self._loaded_wire(thread, turns),
            "model": thread.model,
            "model_provider": thread.model_provider,
            "service_tier": thread.service_tier,
            "disabled_plugin_ids": [],
            "cwd": cwd,
            "runtime_workspace_roots": [cwd],
            "instruction_sources": [],
            "approval_policy": thread.approval_policy,
            "approvals_reviewer": thread.approvals_reviewer,
            "sandbox": thread.sandbox_policy,
            "active_permission_profile": thread.active_permission_profile,
            "reasoning_effort": thread.reasoning_effort,
        }

    async def _read_state(self, record: ThreadRecord) -> dict[str, Any] | None:
        if record.ephemeral:
            return None
        state = self.manager.state
        mark = await state.run(state.db.read_mark, record.id)
        if mark is None:
            mark = derived_read_mark(record.id, record.materialized, record.first_turn_id)
        return read_state_wire(mark)

    def _announce_started(self, ctx: RequestContext, thread: LoadedThread) -> None:
        """`thread/started` to every initialized connection; the caller gets it after the response."""
        params = {"thread": unstructure(self._loaded_wire(thread))}
        ctx.notify_after_response("thread/started", params)
        others = [c.id for c in self.services.broadcaster.connections if c.id != ctx.connection.id]
        if others:
            self.services.broadcaster.broadcast("thread/started", params, only=others)

    def _deprecation(self, ctx: RequestContext) -> None:
        ctx.notify_after_response("deprecationNotice", {"summary": DEPRECATION_SUMMARY, "details": None})

    async def _record(self, thread_id: str) -> tuple[ThreadRecord | None, LoadedThread | None]:
        loaded = self.manager.loaded(thread_id)
        if loaded is not None:
            if self.store.lease_interval is not None and loaded.record.materialized:
                # A shared store: another server may have renamed it or patched its git info.
                stored = await self.store.get(thread_id)
                if stored is not None:
                    loaded.record = attrs.evolve(loaded.record, name=stored.name, git=stored.git)
            return loaded.record, loaded
        await self._ready()
        return await self.store.get(thread_id), None

    async def _lines(self, record: ThreadRecord, loaded: LoadedThread | None) -> list[dict[str, Any]]:
        if loaded is not None:
            return await loaded.read_rollout()
        return await self.store.read_lines(record)

    async def rollout_of(self, thread_id: str) -> tuple[str | None, list[dict[str, Any]]]:
        """The rollout's file name and lines of a thread (None, [] when it has none yet)."""
        record, loaded = await self._record(thread_id)
        if record is None or record.rollout_path is None:
            return None, []
        try:
            lines = await self._lines(record, loaded)
        except (NoRollout, OSError):
            return None, []
        return os.path.basename(record.rollout_path), lines

    # ------------------------------------------------------------------ thread/start
    async def thread_start(self, ctx: RequestContext, params: ThreadStartParams) -> ThreadStartResponse:
        if self.services.draining:
            raise server_shutting_down()
        await self._ready()
        cwd = self.resolver.resolve_cwd(params.cwd)
        settings = await self.resolver.resolve(
            params, experimental_api=ctx.connection.session.experimental_api, cwd=cwd
        )
        if self.services.draining:
            raise server_shutting_down()
        record = self._fresh_record(
            ctx, settings, ephemeral=bool(params.ephemeral), thread_source=params.thread_source
        )
        thread = self._new_loaded(record, settings, params)
        await self.manager.try_lease(thread)
        self.manager.register(thread)
        self.manager.subscribe(thread, ctx.connection.id)
        self._announce_started(ctx, thread)
        self.services.start_detached(self.manager.capture_git, thread, name=f"thread start {record.id}")
        return ThreadStartResponse(**self._start_like(thread))

    # ------------------------------------------------------------------ thread/resume
    async def thread_resume(self, ctx: RequestContext, params: ThreadResumeParams) -> ThreadResumeResponse:
        thread_id = parse_thread_id(params.thread_id, label="session id")
        if self.services.draining:
            raise server_shutting_down()
        await self._ready()
        thread = self.manager.loaded(thread_id)
        if thread is not None:
            persisted = thread.record.materialized and not thread.ephemeral
            if not persisted and not params.exclude_turns:
                raise _no_rollout(thread_id)
            lines = await thread.read_rollout() if persisted else []
            turns = history.build_turns(lines, running=thread.status.get("type") == "active")
            if not turns and not params.exclude_turns:
                raise RpcError(-32601, "list_turns is not supported yet")
            self.manager.subscribe(thread, ctx.connection.id)
            if not params.exclude_turns:
                self._deprecation(ctx)
            # Approvals the thread still waits on are asked again, after this response.
            ctx.call_after_response(partial(thread.offer_open_requests, ctx.connection.id))
            return self._resume_response(thread, turns, None if params.exclude_turns else turns)
        record = await self.store.get(thread_id)
        if record is None or record.archived:
            raise _no_rollout(thread_id)
        lines = await self.store.read_lines(record)
        cwd = self.resolver.stored_cwd(params.cwd, record)
        settings = await self.resolver.resolve(
            params, experimental_api=ctx.connection.session.experimental_api, cwd=cwd, fallback=record
        )
        # Another request may have loaded it meanwhile: then this is a plain re-subscribe.
        thread = self.manager.loaded(thread_id)
        if thread is None:
            thread = self._new_loaded(record, settings, params)
            thread.status = dict(NOT_LOADED)
            thread.next_ordinal = rollout.next_ordinal(lines)
            self.manager.register(thread)
            self.manager.subscribe(thread, ctx.connection.id)
            # Held by another server: loaded read-only; `turn/start` claims it or says who has it.
            await self.manager.try_lease(thread)
            await thread.set_status(dict(IDLE))
            self.services.broadcaster.broadcast("thread/goal/cleared", {"threadId": thread_id})
        else:
            self.manager.subscribe(thread, ctx.connection.id)
            ctx.call_after_response(partial(thread.offer_open_requests, ctx.connection.id))
        turns = history.build_turns(lines)
        if not params.exclude_turns:
            self._deprecation(ctx)
        return self._resume_response(thread, turns, None if params.exclude_turns else turns)

    def _resume_response(
        self, thread: LoadedThread, built: list[history.BuiltTurn], shown: list[history.BuiltTurn] | None
    ) -> ThreadResumeResponse:
        wire_turns = [t.to_wire("full") for t in shown] if shown is not None else []
        turns_cursor, items_cursor = resume_cursors(thread.id, built)
        common = self._start_like(thread, wire_turns)
        return ThreadResumeResponse(
            **common,
            collaboration_mode={
                "mode": "default",
                "settings": {
                    "model": thread.model,
                    "reasoning_effort": thread.reasoning_effort,
                    "developer_instructions": None,
                },
            },
            multi_agent_mode="explicitRequestOnly",
            initial_turns_page=None,
            turns_backwards_cursor=turns_cursor,
            items_backwards_cursor=items_cursor,
        )

    # ------------------------------------------------------------------ thread/fork
    async def thread_fork(self, ctx: RequestContext, params: ThreadForkParams) -> ThreadStartResponse:
        source_id = parse_thread_id(params.thread_id, label="session id")
        if params.ephemeral and not params.exclude_turns:
            raise invalid_request("ephemeral paginated thread/fork requires `excludeTurns: true`")
        if self.services.draining:
            raise server_shutting_down()
        await self._ready()
        record, loaded = await self._record(source_id)
        if record is None or record.ephemeral or not record.materialized or record.archived:
            raise _no_rollout(source_id)
        lines = await self._lines(record, loaded)
        turns = history.build_turns(lines)
        copied = [line for line in lines if line.get("type") != "session_meta"]
        if params.last_turn_id is not None:
            cut = fork_cut(lines, turns, params.last_turn_id)
            if cut is None:
                raise invalid_request(f"turn not found: {params.last_turn_id}")
            copied = [line for line in copied if int(line.get("ordinal", 0) or 0) <= cut]
            turns = [t for t in turns if t.ordinal <= cut]
        cwd = self.resolver.stored_cwd(params.cwd, record)
        settings = await self.resolver.resolve(
            params, experimental_api=ctx.connection.session.experimental_api, cwd=cwd, fallback=record
        )
        fork = self._fresh_record(
            ctx, settings, ephemeral=params.ephemeral, thread_source=params.thread_source, fork_of=record
        )
        thread = self._new_loaded(fork, settings, params)
        records = [{"type": line["type"], "payload": line.get("payload")} for line in copied]
        await self.manager.try_lease(thread)
        async with thread.lane:
            if params.ephemeral:
                thread.next_ordinal = 1
                await self.manager.append_locked(thread, records, durable=False)
            else:
                thread.pending_lines = records
                await self.manager.materialize_locked(thread)
                if fork.name is not None:
                    thread.record = await self.store.set_name(thread.record, fork.name)
        self.manager.register(thread)
        self.manager.subscribe(thread, ctx.connection.id)
        if not params.exclude_turns:
            self._deprecation(ctx)
        self._announce_started(ctx, thread)
        wire_turns = [] if params.exclude_turns else [t.to_wire("full") for t in turns]
        return ThreadStartResponse(**self._start_like(thread, wire_turns))

    # ------------------------------------------------------------------ thread/read
    async def thread_read(self, ctx: RequestContext, params: ThreadReadParams) -> ThreadReadResponse:
        thread_id = parse_thread_id(params.thread_id)
        record, loaded = await self._record(thread_id)
        if record is None:
            raise invalid_request(f"thread not loaded: {thread_id}")
        turns: list[Any] = []
        if params.include_turns:
            if record.ephemeral:
                raise invalid_request("ephemeral threads do not support includeTurns")
            if loaded is not None and (not record.materialized or record.first_turn_id is None):
                raise RpcError(-32601, "list_turns is not supported yet")
            lines = await self._lines(record, loaded)
            running = loaded is not None and loaded.status.get("type") == "active"
            turns = [t.to_wire("full") for t in history.build_turns(lines, running=running)]
            self._deprecation(ctx)
        if loaded is not None:
            wire = self._loaded_wire(loaded, turns)
        else:
            wire = self._thread_wire(record, status=dict(NOT_LOADED), loaded=None, turns=turns)
        return ThreadReadResponse(wire, await self._read_state(record))

    # ------------------------------------------------------------------ thread/list
    async def thread_list(self, ctx: RequestContext, params: ThreadListParams) -> ThreadListResponse:
        limit = DEFAULT_LIST_LIMIT if params.limit is None else params.limit
        check_limit(limit)
        if params.originators:
            raise RpcError(INVALID_PARAMS, "originator filtering is not supported by the local app-server")
        excluded: list[str] = []
        for raw in params.excluded_thread_ids or []:
            try:
                excluded.append(parse_thread_id(raw, label="excluded thread id"))
            except RpcError as exc:
                raise RpcError(INVALID_PARAMS, exc.message) from None
        if len(excluded) > MAX_EXCLUDED_IDS:
            raise RpcError(
                INVALID_PARAMS, f"excludedThreadIds must contain at most {MAX_EXCLUDED_IDS} entries"
            )
        cwds = self._cwd_filter(params.cwd)
        await self._ready()
        providers: list[str] | None
        if params.model_providers is None:
            providers = [await self.resolver.default_provider()]
        else:
            providers = list(params.model_providers) or None
        query = ListQuery(
            limit=min(max(limit, 1), MAX_LIST_LIMIT),
            sort_key=params.sort_key or "created_at",
            direction=params.sort_direction or "desc",
            cursor=params.cursor,
            search=params.search_term or None,
            archived=bool(params.archived),
            model_providers=providers,
            cwds=cwds,
            source_kinds=list(params.source_kinds or []) or None,
            excluded_ids=excluded,
        )
        try:
            page = await self.store.list(query)
        except InvalidCursor:
            raise invalid_request(f"invalid cursor: {params.cursor}") from None
        self._start_backfill()
        data = []
        read_states: dict[str, Any] = {}
        for record in page.records:
            loaded = self.manager.loaded(record.id)
            status = loaded.status if loaded is not None else dict(NOT_LOADED)
            data.append(self._thread_wire(record, status=status, loaded=loaded, listed=True))
            state = await self._read_state(record)
            if state is not None:
                read_states[record.id] = state
        return ThreadListResponse(data, read_states, page.next_cursor, page.backwards_cursor)

    def _start_backfill(self) -> None:
        """After the first list, index the remaining rollouts in the background (newest first).

        The first page only reads the files it needs; a later search or another sort would
        otherwise pay for reading every rollout at once.
        """
        if self._backfill_started or self.services.draining:
            return
        self._backfill_started = True
        try:
            self.services.start_detached(self.store.backfill, name="thread index backfill")
        except RpcError:
            self._backfill_started = False

    def _cwd_filter(self, raw: Any) -> list[str] | None:
        if raw is None:
            return None
        values = [raw] if isinstance(raw, str) else raw
        if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
            raise bad_params("data did not match any variant of untagged enum ThreadListCwdFilter")
        return [str(self.resolver.resolve_cwd(v)) for v in values]

    # ------------------------------------------------------------------ thread/loaded/list
    async def thread_loaded_list(
        self, ctx: RequestContext, params: ThreadLoadedListParams
    ) -> ThreadLoadedListResponse:
        ids = self.manager.loaded_ids()
        check_limit(params.limit)
        if params.cursor is not None and ids:
            try:
                cursor = str(uuid.UUID(params.cursor))
            except ValueError:
                raise invalid_request(f"invalid cursor: {params.cursor}") from None
            ids = [i for i in ids if i > cursor]
        if params.limit is not None and len(ids) > max(params.limit, 1):
            page = ids[: max(params.limit, 1)]
            return ThreadLoadedListResponse(page, page[-1])
        return ThreadLoadedListResponse(ids, None)

    # ------------------------------------------------------------------ names and metadata
    async def _writable(self, thread_id: str) -> tuple[ThreadRecord, LoadedThread | None]:
        """The record to update (materializing a loaded, never-written thread); lane held by caller."""
        loaded = self.manager.loaded(thread_id)
        if loaded is not None:
            if loaded.ephemeral:
                raise invalid_request(f"ephemeral thread does not support metadata updates: {thread_id}")
            await self.manager.materialize_locked(loaded)
            return loaded.record, loaded
        record = await self.store.get(thread_id)
        if record is None:
            raise _no_rollout(thread_id)
        return record, None

    async def thread_name_set(self, ctx: RequestContext, params: ThreadSetNameParams) -> None:
        name = params.name.strip()
        if not name:
            raise invalid_request("thread name must not be empty")
        thread_id = parse_thread_id(params.thread_id)
        await self._ready()
        async with self.manager.lane(thread_id):
            record, loaded = await self._writable(thread_id)
            updated = await self.store.set_name(record, name)
            if loaded is not None:
                loaded.record = attrs.evolve(loaded.record, name=updated.name)
        self.services.broadcaster.broadcast(
            "thread/name/updated", {"threadId": thread_id, "threadName": name}
        )

    async def thread_metadata_update(
        self, ctx: RequestContext, params: ThreadMetadataUpdateParams
    ) -> ThreadResponse:
        patch = _git_patch(params.git_info)
        thread_id = parse_thread_id(params.thread_id)
        await self._ready()
        async with self.manager.lane(thread_id):
            record, loaded = await self._writable(thread_id)
            try:
                updated = await self.store.update_git(record.id, patch)
            except NoRollout:
                raise _no_rollout(thread_id) from None
            if loaded is not None:
                loaded.record = attrs.evolve(loaded.record, git=updated.git)
                return ThreadResponse(self._loaded_wire(loaded))
        return ThreadResponse(self._thread_wire(updated, status=dict(NOT_LOADED), loaded=None))

    # ------------------------------------------------------------------ archive / unarchive / delete
    async def thread_archive(self, ctx: RequestContext, params: ThreadIdParams) -> None:
        thread_id = parse_thread_id(params.thread_id, label="session id")
        await self._ready()
        async with self.manager.lane(thread_id):
            loaded = self.manager.loaded(thread_id)
            if loaded is not None and (loaded.ephemeral or not loaded.record.materialized):
                raise _no_rollout(thread_id)
            try:
                await self.store.archive(thread_id)
            except NoRollout:
                raise _no_rollout(thread_id) from None
            except LeaseHeld as held:
                raise lease_held_error(held) from None
            if loaded is not None:
                await self.manager.unload(loaded, closed=False)
        self.services.broadcaster.broadcast("thread/archived", {"threadId": thread_id})

    async def thread_unarchive(self, ctx: RequestContext, params: ThreadIdParams) -> ThreadResponse:
        thread_id = parse_thread_id(params.thread_id)
        await self._ready()
        async with self.manager.lane(thread_id):
            loaded = self.manager.loaded(thread_id)
            if loaded is not None:
                raise invalid_request(f"thread {thread_id} already has an active writer")
            try:
                record = await self.store.unarchive(thread_id)
            except NoRollout:
                raise invalid_request(f"no archived rollout found for thread id {thread_id}") from None
        self.services.broadcaster.broadcast("thread/unarchived", {"threadId": thread_id})
        return ThreadResponse(self._thread_wire(record, status=dict(NOT_LOADED), loaded=None))

    async def thread_delete(self, ctx: RequestContext, params: ThreadIdParams) -> None:
        thread_id = parse_thread_id(params.thread_id)
        await self._ready()
        async with self.manager.lane(thread_id):
            loaded = self.manager.loaded(thread_id)
            if loaded is not None and (loaded.ephemeral or not loaded.record.materialized):
                raise invalid_request(f"thread is not persisted and cannot be deleted: {thread_id}")
            try:
                await self.store.delete(thread_id)
            except NoRollout:
                raise _no_rollout(thread_id) from None
            except LeaseHeld as held:
                raise lease_held_error(held) from None
            if loaded is not None:
                await self.manager.unload(loaded, closed=False)
        self.services.broadcaster.broadcast("thread/deleted", {"threadId": thread_id})

    async def thread_unsubscribe(
        self, ctx: RequestContext, params: ThreadIdParams
    ) -> ThreadUnsubscribeResponse:
        thread_id = parse_thread_id(params.thread_id)
        thread = self.manager.loaded(thread_id)
        if thread is None:
            return ThreadUnsubscribeResponse("notLoaded")
        if self.manager.unsubscribe(thread, ctx.connection.id):
            return ThreadUnsubscribeResponse("unsubscribed")
        return ThreadUnsubscribeResponse("notSubscribed")

    # ------------------------------------------------------------------ paginated history
    async def _history(
        self, thread_id: str, method: str
    ) -> tuple[list[history.BuiltTurn], LoadedThread | None]:
        record, loaded = await self._record(thread_id)
        if record is None:
            raise invalid_request(f"thread not loaded: {thread_id}")
        if record.ephemeral:
            raise invalid_request(f"ephemeral threads do not support {method}")
        if not record.materialized:
            raise invalid_request(
                f"thread {thread_id} is not materialized yet; "
                f"{method} is unavailable before first user message"
            )
        if loaded is not None and record.first_turn_id is None:
            name = "list_turns" if method == "thread/turns/list" else method
            raise RpcError(-32601, f"{name} is not supported yet")
        lines = await self._lines(record, loaded)
        running = loaded is not None and loaded.status.get("type") == "active"
        return history.build_turns(lines, running=running), loaded

    async def thread_turns_list(self, ctx: RequestContext, params: ThreadTurnsListParams) -> PageResponse:
        thread_id = parse_thread_id(params.thread_id)
        check_limit(params.limit)
        turns, _ = await self._history(thread_id, "thread/turns/list")
        return turns_page(turns, thread_id, params)

    async def thread_items_list(self, ctx: RequestContext, params: ThreadItemsListParams) -> PageResponse:
        thread_id = parse_thread_id(params.thread_id)
        check_limit(params.limit)
        turns, _ = await self._history(thread_id, "thread/items/list")
        return items_page(turns, thread_id, params)

    # ------------------------------------------------------------------ getConversationSummary
    async def get_conversation_summary(
        self, ctx: RequestContext, params: GetConversationSummaryParams
    ) -> GetConversationSummaryResponse:
        untagged = bad_params("data did not match any variant of untagged enum GetConversationSummaryParams")
        await self._ready()
        if isinstance(params.conversation_id, str):
            try:
                thread_id = str(uuid.UUID(params.conversation_id))
            except ValueError:
                raise untagged from None
            loaded = self.manager.loaded(thread_id)
            record = loaded.record if loaded is not None else await self.store.get(thread_id)
            if record is None or record.ephemeral or not record.materialized:
                raise invalid_request(f"no rollout found for conversation id {thread_id}")
        elif isinstance(params.rollout_path, str) and params.conversation_id is ABSENT:
            path = absolute(self.services.settings.codex_home, params.rollout_path)
            if not await trio.to_thread.run_sync(path.is_file):
                raise invalid_request(f"failed to resolve rollout path `{path}`: file does not exist")
            found = await self.store.find_by_path(str(path))
            if found is None:
                raise invalid_request(f"failed to resolve rollout path `{path}`: file does not exist")
            loaded = self.manager.loaded(found.id)
            record = (
                loaded.record if loaded is not None and loaded.record.rollout_path == str(path) else found
            )
        else:
            raise untagged
        git = record.git
        return GetConversationSummaryResponse(
            ConversationSummary(
                conversation_id=record.id,
                # A thread in a database (not moved from a CODEX_HOME) has no rollout file.
                path=record.rollout_path or "",
                preview=record.preview,
                timestamp=rollout.iso_ms(record.created_at_ms),
                updated_at=rollout.iso_ms(record.updated_at_ms),
                model_provider=record.model_provider,
                cwd=record.cwd,
                cli_version=record.cli_version,
                source=record.source,
                git_info=None
                if git.empty
                else {"sha": git.sha, "branch": git.branch, "origin_url": git.origin_url},
            )
        )


def _git_patch(raw: Any) -> GitInfoPatch:
    """Validate a `gitInfo` patch: absent/null fields keep/clear, strings must not be empty."""
    if raw is ABSENT or raw is None:
        raise invalid_request("thread metadata update must include at least one field")
    if not isinstance(raw, dict):
        raise bad_params(f"invalid type: {describe(raw)}, expected struct ThreadMetadataGitInfoUpdateParams")
    fields = {"sha": "sha", "branch": "branch", "originUrl": "origin_url"}
    values: dict[str, Any] = {}
    for wire_key, attr in fields.items():
        if wire_key not in raw:
            values[attr] = KEEP
            continue
        value = raw[wire_key]
        if value is not None and not isinstance(value, str):
            raise bad_params(f"invalid type: {describe(value)}, expected a string")
        if value is not None and not value.strip():
            raise invalid_request(f"gitInfo.{wire_key} must not be empty")
        values[attr] = value
    if all(v is KEEP for v in values.values()):
        raise invalid_request("gitInfo must include at least one field")
    return GitInfoPatch(**values)
