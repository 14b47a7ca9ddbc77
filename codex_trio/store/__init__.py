"""Thread persistence: the `ThreadStore` interface and the records it deals in.

The thread API and the turn loop see only `ThreadStore`. `codex_trio.store.local` implements
it with the reference's files (rollout JSONL under `CODEX_HOME/sessions/YYYY/MM/DD/`, archived
ones under `archived_sessions/`) plus a SQLite index (`rows`, kept in step by `index`);
`codex_trio.store.postgres` with PostgreSQL tables shared by several servers. `rollout` builds
and reads rollout lines, `history` rebuilds turns from them, `listing` builds list queries;
all three are pure. Nothing here imports an API module or the thread manager: imports are
`protocol` and the leaves (`ids`) only.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal, Protocol

import attrs

from codex_trio.records import by_value

SortKey = Literal["created_at", "updated_at", "recency_at", "section_position"]
SortDirection = Literal["asc", "desc"]


class StoreError(Exception):
    """A store operation that cannot be done; the API layer words it for the wire."""


class NoRollout(StoreError):
    """No (active, or archived when asked) rollout exists for this thread."""


class InvalidCursor(StoreError):
    """A `thread/list` cursor that does not parse."""


class LeaseHeld(StoreError):
    """Another server has this thread loaded: it alone may append to it until its lease ends."""

    def __init__(self, thread_id: str, owner: str, expires_in_s: float) -> None:
        super().__init__(f"thread {thread_id} is leased by another server ({owner})")
        self.thread_id = thread_id
        self.owner = owner
        self.expires_in_s = expires_in_s


@by_value
@attrs.frozen(repr=False, eq=False)
class GitInfo:
    sha: str | None = None
    branch: str | None = None
    origin_url: str | None = None

    @property
    def empty(self) -> bool:
        return self.sha is None and self.branch is None and self.origin_url is None


#: a field of a gitInfo patch that the request left out (keep the stored value).
KEEP: Any = attrs.make_class("Keep", {}, repr=False)()


@by_value
@attrs.frozen(repr=False, eq=False)
class GitInfoPatch:
    """Three-state fields: `KEEP` keeps, None clears, a string sets."""

    sha: Any = KEEP
    branch: Any = KEEP
    origin_url: Any = KEEP

    def apply(self, current: GitInfo) -> GitInfo:
        return GitInfo(
            sha=current.sha if self.sha is KEEP else self.sha,
            branch=current.branch if self.branch is KEEP else self.branch,
            origin_url=current.origin_url if self.origin_url is KEEP else self.origin_url,
        )


@by_value
@attrs.frozen(repr=False, eq=False)
class ThreadRecord:
    """What is known about a thread without reading its whole rollout (an index row)."""

    id: str
    rollout_path: str | None
    created_at_ms: int
    updated_at_ms: int
    cwd: str
    model_provider: str
    model: str | None = None
    reasoning_effort: str | None = None
    #: the session_meta `source`: "vscode", "cli", … or an object for sub-agents.
    source: Any = "vscode"
    cli_version: str = ""
    originator: str = ""
    preview: str = ""
    name: str | None = None
    archived: bool = False
    archived_at_ms: int | None = None
    git: GitInfo = GitInfo()
    has_user_event: bool = False
    forked_from_id: str | None = None
    ephemeral: bool = False
    history_mode: str = "paginated"
    thread_source: str | None = None
    agent_nickname: str | None = None
    agent_role: str | None = None
    first_turn_id: str | None = None
    #: true once the rollout file and the index row exist.
    materialized: bool = False

    @property
    def recency_at_ms(self) -> int:
        return self.updated_at_ms


@by_value
@attrs.frozen(repr=False, eq=False)
class ListQuery:
    """A `thread/list` request, already validated."""

    limit: int
    sort_key: SortKey = "created_at"
    direction: SortDirection = "desc"
    cursor: str | None = None
    search: str | None = None
    archived: bool = False
    #: None: every provider.
    model_providers: Sequence[str] | None = None
    cwds: Sequence[str] | None = None
    source_kinds: Sequence[str] | None = None
    excluded_ids: Sequence[str] = ()


@by_value
@attrs.frozen(repr=False, eq=False)
class ListPage:
    records: list[ThreadRecord]
    next_cursor: str | None
    backwards_cursor: str | None


class ThreadStore(Protocol):
    """Where threads live between restarts. Every method is safe to call from the event loop.

    Writes to one thread are ordered by the caller (the thread manager's per-thread lane).
    A store shared by several servers hands out leases: only the holder of a thread's lease
    appends to it (`acquire_lease`), and an append returns only once it is durable.
    """

    async def open(self) -> None:
        """Prepare the store (create folders, open the index, apply schema migrations)."""
        ...

    async def aclose(self) -> None:
        """Release what the store holds (handles, connections, this server's leases)."""
        ...

    def new_rollout_path(self, created_at_ms: int, thread_id: str) -> str | None:
        """The rollout file a new thread will be written to; None for stores without files."""
        ...

    async def materialize(
        self, record: ThreadRecord, session_meta: dict[str, Any], ordinal: int = 0
    ) -> ThreadRecord:
        """Write the thread's first line (`session_meta`) durably and store its row."""
        ...

    async def append(self, record: ThreadRecord, lines: Sequence[dict[str, Any]], *, durable: bool) -> None:
        """Append full rollout lines in order and store `record` (the thread's updated row).

        Returns once the lines are written (flushed; durable on disk when `durable`).
        """
        ...

    async def read_lines(self, record: ThreadRecord) -> list[dict[str, Any]]:
        """Every rollout line of the thread, in order (what history pages are built from)."""
        ...

    async def get(self, thread_id: str) -> ThreadRecord | None: ...

    async def find_by_path(self, path: str) -> ThreadRecord | None:
        """The thread whose rollout is at `path` (legacy `getConversationSummary`)."""
        ...

    async def list(self, query: ListQuery) -> ListPage:
        """A page of threads (raises `InvalidCursor`)."""
        ...

    async def set_name(self, record: ThreadRecord, name: str) -> ThreadRecord: ...

    async def update_git(self, thread_id: str, patch: GitInfoPatch) -> ThreadRecord:
        """Apply a git-info patch atomically (concurrent patches lose no field)."""
        ...

    async def archive(self, thread_id: str) -> ThreadRecord: ...

    async def unarchive(self, thread_id: str) -> ThreadRecord: ...

    async def delete(self, thread_id: str) -> None: ...

    async def backfill(self) -> None:
        """Background catch-up after the first list (indexing files); returns when done."""
        ...

    async def acquire_lease(self, thread_id: str) -> None:
        """Take or renew this server's lease on a thread; raises `LeaseHeld`."""
        ...

    async def release_lease(self, thread_id: str) -> None: ...

    async def renew_leases(self) -> None:
        """Extend every lease this server holds (the heartbeat calls it)."""
        ...

    @property
    def lease_interval(self) -> float | None:
        """Seconds between heartbeats; None for a store that needs no leases."""
        ...
