"""Loaded threads: who is subscribed, what a thread runs with, and its ordered writes.

This module owns the in-memory side of threads; `codex_trio.store` owns the disk side and
`codex_trio.api.threads` the `thread/*` methods. It may import protocol, store, outgoing and
services; it never imports an API module.

Contract for the turns engine (codex_trio/core, codex_trio/api/turns.py)
========================================================================

Getting at threads
------------------
* `ThreadsApi(services)` (codex_trio/api/threads.py) creates the one `ThreadManager` of the
  server and exposes it as `ThreadsApi.manager`. The composition root passes it on:
  ``threads = ThreadsApi(server)``, then
  ``TurnsApi(server, threads.manager, account.credentials, tool_providers=[mcp.tools])``.
* `await manager.get_loaded(thread_id) -> LoadedThread` returns a loaded thread, or raises the
  reference's RpcError: -32600 ``invalid thread id: …`` for a malformed id and
  ``thread not found: <id>`` for an id that is not loaded (what `turn/start` answers).
  `manager.loaded(thread_id)` is the non-raising lookup (None when absent).
* `manager.subscribe(thread, connection_id)` adds a subscriber (and cancels a pending unload);
  `manager.on_loaded` hooks run for every thread that becomes loaded (start, resume, fork).
* Drain: check `services.draining` yourself in `turn/start` and raise
  `protocol.errors.server_shutting_down()`; `thread/start` does so here.
* Leases: with a store shared by several servers (PostgreSQL) only the holder of a thread's
  lease appends to it. `turn/start` calls `await manager.claim(thread)` first: it takes the
  lease or raises -32600 (`data.reason = "threadLeasedByAnotherServer"`); True means the
  thread was re-read from the store (drop anything cached from its rollout).

A LoadedThread
--------------
Plain attributes (read-only for you; `thread/resume` with overrides never changes a loaded
thread, as in the reference):
* `id: str`, `ephemeral: bool`, `cwd: Path` (absolute), `model: str`,
  `model_provider: str` (the provider id, e.g. "mock"), `reasoning_effort: str | None`,
  `approval_policy: Any` (wire value: "untrusted" | "on-request" | "never" | {"granular": …}),
  `approvals_reviewer: str`, `sandbox_policy: dict` (wire SandboxPolicy, camelCase, e.g.
  ``{"type": "readOnly", "networkAccess": False}``), `sandbox_mode: str` (kebab-case mode),
  `config: Mapping[str, Any]` (the thread's effective config table: config.toml merged with
  `-c` flags and the request's `config` overrides; use it for `model_providers`, etc.),
  `base_instructions: str | None`, `developer_instructions: str | None`.
* `subscribers: set[int]` — connection ids that receive the thread's turn/item events.
* `open_requests: list[OpenRequest]` — server->client requests (approvals, elicitations) still
  waiting for an answer. They belong to the thread, not to the connection that was asked:
  `thread/resume` offers each to the connection that subscribes (`offer_open_requests`).
* `status: dict` — the wire ThreadStatus (``{"type": "idle"}``, ``{"type": "active",
  "activeFlags": [...]}``, ``{"type": "systemError"}``).
* `turn_state: Any` — a free slot owned by the turns engine (e.g. the running turn, its cancel
  scope). Nothing here reads it. `unloaded: trio.Event` is set when the thread is unloaded,
  archived or deleted: a running turn should then be cancelled by its owner.

Methods:
* `await thread.notify_subscribers(method, params)` — a notification to the thread's current
  subscribers only (turn/*, item/*, thread/tokenUsage/updated, per-thread warnings).
* `await thread.set_status(status_dict)` — records the status and broadcasts
  ``thread/status/changed {threadId, status}`` to every connection (only when it changed).
* `await thread.append_rollout(lines, durable=False)` — append rollout records, in order, through
  the thread's ordering lane. Each line is ``{"type": <kind>, "payload": {...}}``; the store
  adds ``timestamp`` and ``ordinal``. The first append materializes the thread on disk (its
  `session_meta` line is written first) and indexes it. Returns once the lines are flushed to
  the OS (and fsync'd when `durable=True`: use that for the last line of a turn, i.e.
  task_complete / turn_aborted). Ephemeral threads keep their lines in memory only.
  Appending a completed user message (see `rollout.item_completed`) marks the thread as having
  user content (it then shows in `thread/list`, with that message as its preview).
* `await thread.read_rollout() -> list[dict]` — every record of the thread so far (full lines,
  with ``timestamp``/``ordinal``/``type``/``payload``), e.g. to rebuild the model's input
  history from ``response_item`` lines after `thread/resume`.
* `thread.mark_user_content(preview)` — explicit form of the above, for input that is not a
  plain text user message.

Rollout records (codex_trio/store/rollout.py builds them; the reference's 0.169 format)
------------------------------------------------------------------------------------
Build lines with these helpers (all return ``{"type", "payload"}`` dicts):
* `rollout.task_started(turn_id, started_at_s, model_context_window=None)`
* `rollout.item_completed(thread_id, turn_id, item, started_at_ms, completed_at_ms)` — `item` is
  the v2 ThreadItem exactly as sent in ``item/completed`` (``{"type": "userMessage", …}``);
  it is stored in the reference's core TurnItem form (UserMessage, AgentMessage, Reasoning,
  Plan, CommandExecution, FileChange, WebSearch, McpToolCall, ContextCompaction…) and turned
  back into the same v2 item by `thread/read`, `thread/turns/list` and `thread/items/list`.
* `rollout.task_complete(turn_id, last_agent_message, started_at_s, completed_at_s, duration_ms)`
* `rollout.turn_aborted(turn_id, reason, started_at_s, completed_at_s, duration_ms)` — reason
  ``"interrupted"`` gives a turn with status ``interrupted``.
* `rollout.turn_error(turn_id, message, codex_error_info=None)` — the turn becomes ``failed``
  with that error (write it before task_complete).
* `rollout.response_item(payload)` — one Responses-API item of the model conversation
  (``{"type": "message", "role": "user", "content": [...]}``, ``function_call``,
  ``function_call_output``, …): the history replayed to the model.
* `rollout.token_count(info)` and `rollout.turn_context(payload)` are stored as given.
Turns are rebuilt from task_started → item_completed* → task_complete | turn_aborted; a turn
without an end is ``inProgress`` while the thread is active and ``interrupted`` otherwise.
"""

from __future__ import annotations

import logging
import os
import subprocess
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import attrs
import trio

from codex_trio import tracing
from codex_trio.ids import now_ms
from codex_trio.protocol.errors import RpcError, invalid_request
from codex_trio.protocol.thread import IDLE, NOT_LOADED
from codex_trio.store import GitInfo, GitInfoPatch, LeaseHeld, ThreadRecord, ThreadStore, rollout
from codex_trio.store.thread_state import ThreadStateStore

if TYPE_CHECKING:
    from codex_trio.connection import Connection
    from codex_trio.services import Services

log = logging.getLogger(__name__)

__all__ = [
    "DEFAULT_UNLOAD_DELAY",
    "LoadedThread",
    "ThreadManager",
    "TurnEnd",
    "parse_thread_id",
]

#: seconds a loaded thread without subscribers stays loaded (config `thread_unload_delay_secs`).
DEFAULT_UNLOAD_DELAY = 60.0

def parse_thread_id(raw: str, *, label: str = "thread id") -> str:
    """A UUID in canonical form, or the reference's -32600 (`invalid thread id: …`)."""
    try:
        return str(uuid.UUID(raw))
    except ValueError:
        raise invalid_request(f"invalid {label}: {uuid_error(raw)}") from None


def uuid_error(raw: str) -> str:
    """The Rust `uuid` crate's message for a string that is not a UUID."""
    body = raw
    offset = 0
    if raw.lower().startswith("urn:uuid:"):
        body, offset = raw[9:], 9
    for index, char in enumerate(body, start=1):
        if char not in "0123456789abcdefABCDEF-":
            return (
                "invalid character: expected an optional prefix of `urn:uuid:` followed by "
                f"[0-9a-fA-F-], found `{char}` at {index + offset}"
            )
    if "-" in body:
        groups = body.split("-")
        if len(groups) != 5:
            return f"invalid group count: expected 5, found {len(groups)}"
        for number, (group, expected) in enumerate(zip(groups, (8, 4, 4, 4, 12), strict=True)):
            if len(group) != expected:
                return f"invalid group length in group {number}: expected {expected}, found {len(group)}"
    return f"invalid length: expected length 32 for simple format, found {len(body)}"


class OpenRequest(Protocol):
    """A server->client request a thread is waiting on (see `codex_trio.core.approvals`)."""

    def offer(self, connection: Connection) -> None:
        """Send the request to `connection` too, unless it was already asked."""
        ...


@attrs.define(eq=False)
class LoadedThread:
    """A thread in memory: settings, subscribers, status and ordered rollout writes.

    See the module docstring for the contract the turns engine relies on.
    """

    manager: ThreadManager
    record: ThreadRecord
    cwd: Path
    model: str
    model_provider: str
    reasoning_effort: str | None
    approval_policy: Any
    approvals_reviewer: str
    sandbox_policy: dict[str, Any]
    sandbox_mode: str
    config: Mapping[str, Any]
    base_instructions: str | None = None
    developer_instructions: str | None = None
    active_permission_profile: dict[str, Any] | None = None
    service_tier: str | None = None
    #: the typed effective config (codex_trio.config.effective.EffectiveConfig) when available.
    effective: Any = None
    subscribers: set[int] = attrs.Factory(set)
    status: dict[str, Any] = attrs.Factory(lambda: dict(IDLE))
    turn_state: Any = None
    open_requests: list[OpenRequest] = attrs.Factory(list)
    unloaded: trio.Event = attrs.Factory(trio.Event)
    #: the ordering lane: one writer at a time, in arrival order (trio's FIFO lock is fair).
    lane: trio.StrictFIFOLock = attrs.Factory(trio.StrictFIFOLock)
    #: lines of an ephemeral thread (never written to disk).
    memory_lines: list[dict[str, Any]] = attrs.Factory(list)
    next_ordinal: int = 0
    #: cancels a pending unload when a subscriber comes back.
    unload_scope: trio.CancelScope | None = None
    #: forked threads copy these lines after their session_meta when first written.
    pending_lines: list[dict[str, Any]] = attrs.Factory(list)
    forked_from_ordinal: int | None = None
    #: this server holds the thread's store lease (it may append); see `ThreadManager.claim`.
    leased: bool = False

    @property
    def id(self) -> str:
        return self.record.id

    @property
    def ephemeral(self) -> bool:
        return self.record.ephemeral

    @property
    def has_turns(self) -> bool:
        return self.record.first_turn_id is not None

    async def notify_subscribers(self, method: str, params: Any) -> None:
        """Send a notification to this thread's subscribers only."""
        self.manager.services.broadcaster.broadcast(method, params, only=list(self.subscribers))

    async def set_status(self, status: dict[str, Any]) -> None:
        """Record the status and tell every connection when it changed."""
        if status == self.status:
            return
        self.status = dict(status)
        self.manager.services.broadcaster.broadcast(
            "thread/status/changed", {"threadId": self.id, "status": self.status}
        )

    async def append_rollout(self, lines: list[dict[str, Any]], *, durable: bool = False) -> None:
        """Append records in order, through this thread's lane; flushed before returning."""
        async with self.lane:
            await self.manager.append_locked(self, lines, durable=durable)

    async def read_rollout(self) -> list[dict[str, Any]]:
        """Every record of this thread so far."""
        async with self.lane:
            if self.ephemeral or not self.record.materialized:
                return list(self.memory_lines)
            return await self.manager.store.read_lines(self.record)

    def offer_open_requests(self, connection_id: int) -> None:
        """Ask a (re-)subscribed connection every question this thread still waits on."""
        connection = self.manager.services.broadcaster.get(connection_id)
        if connection is None or connection_id not in self.subscribers:
            return
        for request in list(self.open_requests):
            request.offer(connection)

    def mark_user_content(self, preview: str) -> None:
        """The thread has a user message: it is listed from now on (indexed at the next append)."""
        if not self.record.has_user_event:
            self.record = attrs.evolve(self.record, preview=preview, has_user_event=True)


@attrs.define
class TurnEnd:
    """What the turns engine tells `ThreadManager.on_turn_end` hooks when a turn ends:
    its id, how it ended (`completed`, `interrupted`, `failed`), the tokens its model
    responses used, and whether it was started automatically (a goal continuation).
    A hook that schedules a follow-up turn sets `continues`; later hooks see it."""

    turn_id: str
    status: str
    tokens_used: int = 0
    automatic: bool = False
    duration_ms: int = 0
    continues: bool = False


class ThreadManager:
    """The registry of loaded threads, their subscriptions, lanes and unload timers."""

    def __init__(self, services: Services, store: ThreadStore) -> None:
        self.services = services
        self.store = store
        self._loaded: dict[str, LoadedThread] = {}
        #: read markers and goals (`codex_trio.store.thread_state`).
        self.state = ThreadStateStore(services.settings.codex_home)
        #: lanes of threads that are not loaded (name/metadata writes), dropped when idle.
        self._idle_lanes: dict[str, trio.StrictFIFOLock] = {}
        self.unload_delay = DEFAULT_UNLOAD_DELAY
        #: called with every thread that becomes loaded (start, resume, fork); other families
        #: start per-thread work here (the MCP family starts the thread's servers).
        self.on_loaded: list[Callable[[LoadedThread], None]] = []
        #: awaited, in order, when a turn ends, before the thread goes idle and before
        #: `turn/completed` (read state, goal accounting); a hook must not raise.
        self.on_turn_end: list[Callable[[LoadedThread, TurnEnd], Awaitable[None]]] = []

    async def turn_ended(self, thread: LoadedThread, end: TurnEnd) -> None:
        """Run the `on_turn_end` hooks; one that fails is logged, the turn still ends."""
        for hook in self.on_turn_end:
            try:
                await hook(thread, end)
            except Exception:
                log.exception("turn-end hook failed for thread %s", thread.id)

    # ------------------------------------------------------------------ lookups
    def loaded(self, thread_id: str) -> LoadedThread | None:
        """The loaded thread with this (canonical) id, or None."""
        return self._loaded.get(thread_id)

    async def get_loaded(self, thread_id: str) -> LoadedThread:
        """A loaded thread, or the reference's -32600 (`thread not found: <id>`)."""
        canonical = parse_thread_id(thread_id)
        thread = self._loaded.get(canonical)
        if thread is None:
            raise invalid_request(f"thread not found: {canonical}")
        return thread

    def loaded_ids(self) -> list[str]:
        return sorted(self._loaded)

    @property
    def threads(self) -> list[LoadedThread]:
        return list(self._loaded.values())

    @asynccontextmanager
    async def lane(self, thread_id: str) -> AsyncIterator[LoadedThread | None]:
        """Hold the thread's ordering lane (its own when loaded); yields the loaded thread."""
        thread = self._loaded.get(thread_id)
        if thread is not None:
            async with thread.lane:
                yield thread
            return
        lock = self._idle_lanes.setdefault(thread_id, trio.StrictFIFOLock())
        try:
            async with lock:
                yield self._loaded.get(thread_id)
        finally:
            if not lock.locked() and lock.statistics().tasks_waiting == 0:
                self._idle_lanes.pop(thread_id, None)

    # ------------------------------------------------------------------ leases
    async def try_lease(self, thread: LoadedThread) -> None:
        """Take the thread's lease if nobody else holds it (a thread loaded without it is read-only)."""
        if thread.ephemeral or thread.leased:
            return
        try:
            await self.store.acquire_lease(thread.id)
        except LeaseHeld:
            return
        thread.leased = True

    async def claim(self, thread: LoadedThread) -> bool:
        """Make sure this server may run turns on the thread: take its lease, or refuse.

        A thread resumed while another server held it was loaded without the lease; once the
        lease is ours, its row and next ordinal are re-read, since the other server may have
        appended meanwhile. True when that happened (anything cached from the rollout, such
        as the model's history, is stale).
        """
        if thread.ephemeral or thread.leased:
            return False
        async with thread.lane:
            if thread.leased:
                return False
            try:
                await self.store.acquire_lease(thread.id)
            except LeaseHeld as held:
                raise lease_held_error(held) from None
            thread.leased = True
            if thread.record.materialized:
                stored = await self.store.get(thread.id)
                if stored is not None:
                    thread.record = stored
                    lines = await self.store.read_lines(stored)
                    thread.next_ordinal = rollout.next_ordinal(lines)
            return True

    async def release(self, thread: LoadedThread) -> None:
        """Give the thread's lease back (unload, archive, delete)."""
        if thread.leased:
            thread.leased = False
            with trio.CancelScope(shield=True):
                try:
                    await self.store.release_lease(thread.id)
                except Exception:
                    # The lease then simply expires.
                    log.warning("releasing the lease of %s failed", thread.id, exc_info=True)

    async def keep_leases(self) -> None:
        """The heartbeat: renew this server's leases until cancelled (a store without leases returns)."""
        interval = self.store.lease_interval
        if interval is None:
            return
        while True:
            await trio.sleep(interval)
            try:
                await self.store.renew_leases()
            except Exception:
                log.warning("renewing thread leases failed", exc_info=True)

    # ------------------------------------------------------------------ registration
    def register(self, thread: LoadedThread) -> None:
        self._loaded[thread.id] = thread
        for hook in self.on_loaded:
            hook(thread)

    def subscribe(self, thread: LoadedThread, connection_id: int) -> None:
        thread.subscribers.add(connection_id)
        if thread.unload_scope is not None:
            thread.unload_scope.cancel()
            thread.unload_scope = None

    def unsubscribe(self, thread: LoadedThread, connection_id: int) -> bool:
        if connection_id not in thread.subscribers:
            return False
        thread.subscribers.discard(connection_id)
        if not thread.subscribers:
            self.schedule_unload(thread)
        return True

    def drop_connection(self, connection_id: int) -> None:
        """A connection closed: it leaves every thread it was subscribed to."""
        for thread in list(self._loaded.values()):
            self.unsubscribe(thread, connection_id)

    def schedule_unload(self, thread: LoadedThread) -> None:
        """Unload after the configured delay unless someone subscribes again meanwhile."""
        if thread.unload_scope is not None or self.services.draining:
            return
        scope = trio.CancelScope()
        thread.unload_scope = scope
        try:
            self.services.start_detached(self._unload_later, thread, scope, name=f"unload {thread.id}")
        except RpcError as exc:  # the drain started in between: shutdown unloads it anyway
            log.debug("thread %s: not scheduling its unload: %s", thread.id, exc.message)
            thread.unload_scope = None

    async def _unload_later(self, thread: LoadedThread, scope: trio.CancelScope) -> None:
        with scope:
            while True:
                await trio.sleep(self.unload_delay)
                if (
                    thread.unload_scope is not scope
                    or thread.subscribers
                    or self._loaded.get(thread.id) is not thread
                ):
                    return
                # A running turn keeps its thread loaded; look again after another delay.
                if thread.status.get("type") != "active":
                    await self.unload(thread, closed=True)
                    return

    async def unload(self, thread: LoadedThread, *, closed: bool) -> None:
        """Forget a loaded thread: `notLoaded` to everyone, then `thread/closed` when `closed`."""
        if self._loaded.get(thread.id) is not thread:
            return
        del self._loaded[thread.id]
        thread.unload_scope = None
        thread.unloaded.set()
        await self.release(thread)
        await thread.set_status(dict(NOT_LOADED))
        if closed:
            self.services.broadcaster.broadcast("thread/closed", {"threadId": thread.id})

    # ------------------------------------------------------------------ writes (lane held)
    async def materialize_locked(self, thread: LoadedThread) -> None:
        """Write the thread's rollout header and index it (caller holds the thread's lane)."""
        record = thread.record
        if record.materialized or record.ephemeral:
            return
        git = record.git
        meta = rollout.session_meta(
            thread_id=record.id,
            created_at_ms=record.created_at_ms,
            cwd=record.cwd,
            originator=record.originator,
            model_provider=record.model_provider,
            source=record.source,
            base_instructions=thread.base_instructions,
            model=thread.model,
            git=None
            if git.empty
            else {"commit_hash": git.sha, "branch": git.branch, "repository_url": git.origin_url},
            forked_from_id=record.forked_from_id,
            forked_from_ordinal=thread.forked_from_ordinal,
        )
        ordinal = thread.forked_from_ordinal or 0
        thread.record = await self.store.materialize(
            attrs.evolve(record, updated_at_ms=max(record.updated_at_ms, now_ms())), meta, ordinal
        )
        thread.next_ordinal = ordinal + 1
        if thread.pending_lines:
            pending, thread.pending_lines = thread.pending_lines, []
            await self.append_locked(thread, pending, durable=True)

    async def append_locked(
        self, thread: LoadedThread, lines: list[dict[str, Any]], *, durable: bool
    ) -> None:
        """Number, stamp and write `lines` (caller holds the lane); updates the index row."""
        if not lines:
            return
        if thread.unloaded.is_set():
            # Archived or deleted under a running writer: never recreate the rollout.
            log.debug("dropping %d rollout records for unloaded thread %s", len(lines), thread.id)
            return
        if not thread.record.materialized and not thread.ephemeral:
            await self.materialize_locked(thread)
        at = now_ms()
        full = []
        for record in lines:
            full.append(rollout.full_line(thread.next_ordinal, record, at))
            thread.next_ordinal += 1
        updated = _fold_metadata(thread.record, lines)
        updated = attrs.evolve(updated, updated_at_ms=max(updated.updated_at_ms, at))
        if thread.ephemeral:
            thread.memory_lines.extend(full)
            thread.record = updated
            return
        try:
            await self.store.append(updated, full, durable=durable)
        except LeaseHeld:
            # Another server took the thread over: the next `turn/start` here is refused.
            thread.leased = False
            raise
        thread.record = updated

    async def capture_git(self, thread: LoadedThread) -> None:
        """Start-up work: record the repository's commit, branch and origin (if a git repo)."""
        with tracing.span("app_server.thread_start.git_info", {"conversation.id": thread.id}):
            info = await git_info(thread.cwd)
        if info is None or info.empty:
            return
        async with thread.lane:
            if thread.record.materialized:
                patch = GitInfoPatch(sha=info.sha, branch=info.branch, origin_url=info.origin_url)
                if thread.record.git.empty:
                    thread.record = await self.store.update_git(thread.id, patch)
            elif thread.record.git.empty:
                thread.record = attrs.evolve(thread.record, git=info)


def lease_held_error(held: LeaseHeld) -> RpcError:
    """-32600 for a turn on a thread another server has loaded, naming who and for how long."""
    return RpcError(
        -32600,
        f"thread {held.thread_id} is loaded on another server ({held.owner}); "
        f"its lease expires in {held.expires_in_s:.0f}s unless that server renews it",
        {"reason": "threadLeasedByAnotherServer", "owner": held.owner},
    )


def _fold_metadata(record: ThreadRecord, lines: list[dict[str, Any]]) -> ThreadRecord:
    """What appended records change in the index row: first user message, first turn, model."""
    changes: dict[str, Any] = {}
    for line in lines:
        if not record.has_user_event and "preview" not in changes:
            preview = rollout.user_preview_of(line)
            if preview is not None:
                changes["preview"] = preview
                changes["has_user_event"] = True
        payload = line.get("payload")
        if not isinstance(payload, dict):
            continue
        if (
            record.first_turn_id is None
            and "first_turn_id" not in changes
            and line.get("type") == "event_msg"
            and payload.get("type") in ("task_started", "turn_started")
            and isinstance(payload.get("turn_id"), str)
        ):
            changes["first_turn_id"] = payload["turn_id"]
    return attrs.evolve(record, **changes) if changes else record


# ---------------------------------------------------------------------------- git
#: seconds a `git` query may take before the thread starts without git info.
GIT_TIMEOUT = 5.0


async def git_info(cwd: Path) -> GitInfo | None:
    """Commit, branch and origin URL of the repository at `cwd`, via `git`; None outside one."""
    if not await trio.to_thread.run_sync(os.path.isdir, cwd):
        return None

    async def run(*args: str) -> str | None:
        try:
            result = await trio.run_process(
                ["git", *args],
                cwd=str(cwd),
                capture_stdout=True,
                capture_stderr=True,
                check=False,
                stdin=subprocess.DEVNULL,
            )
        except OSError:
            return None
        if result.returncode != 0:
            return None
        text = result.stdout.decode("utf-8", "replace").strip()
        return text or None

    with trio.move_on_after(GIT_TIMEOUT):
        sha = await run("rev-parse", "HEAD")
        inside = sha is not None or await run("rev-parse", "--is-inside-work-tree") == "true"
        if not inside:
            return None
        branch = await run("rev-parse", "--abbrev-ref", "HEAD")
        origin = await run("remote", "get-url", "origin")
        return GitInfo(sha=sha, branch=None if branch == "HEAD" else branch, origin_url=origin)
    return None
