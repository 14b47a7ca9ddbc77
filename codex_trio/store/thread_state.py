"""Per-thread state kept beside the rollout: read markers and goals.

The reference keeps these in SQLite databases of its own (`state_5.sqlite`, `goals_1.sqlite`);
ours is one file, `codex_trio_thread_state_1.sqlite`, so both servers can share a CODEX_HOME.
Every write is a committed SQLite transaction (WAL, `synchronous=FULL`) before the caller
answers, so a response that claims a change never outlives a crash that loses it.

`ThreadStateDb` is synchronous; `ThreadStateStore` runs it in worker threads one call at a
time (a `CapacityLimiter(1)` lane), so the event loop never waits on SQLite.
"""

from __future__ import annotations

import functools
import sqlite3
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import attrs
import trio

from codex_trio.records import by_value

STATE_FILE = "codex_trio_thread_state_1.sqlite"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS read_state (
    thread_id TEXT PRIMARY KEY NOT NULL,
    unread_kind TEXT,
    unread_turn_id TEXT,
    revision TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS goals (
    thread_id TEXT PRIMARY KEY NOT NULL,
    objective TEXT NOT NULL,
    status TEXT NOT NULL,
    token_budget INTEGER,
    tokens_used INTEGER NOT NULL DEFAULT 0,
    time_used_seconds INTEGER NOT NULL DEFAULT 0,
    created_at_ms INTEGER NOT NULL,
    updated_at_ms INTEGER NOT NULL
);
"""

T = TypeVar("T")


@by_value
@attrs.frozen(repr=False, eq=False)
class ReadMark:
    """A thread's first unread position: `kind` is None (read), `threadStart` or `turn`."""

    kind: str | None
    turn_id: str | None
    revision: str


@by_value
@attrs.frozen(repr=False, eq=False)
class GoalRow:
    """A thread's goal as stored (times in milliseconds; `status` in wire camelCase)."""

    thread_id: str
    objective: str
    status: str
    token_budget: int | None
    tokens_used: int
    time_used_seconds: int
    created_at_ms: int
    updated_at_ms: int


class ThreadStateDb:
    """The SQLite file; every method runs in a worker thread, one at a time."""

    def __init__(self, codex_home: Path) -> None:
        self.path = codex_home / STATE_FILE
        self._db: sqlite3.Connection | None = None

    @property
    def db(self) -> sqlite3.Connection:
        if self._db is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # check_same_thread=False: calls come from different worker threads, never two at once.
            db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=FULL")
            db.executescript(_SCHEMA)
            self._db = db
        return self._db

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

    # ------------------------------------------------------------------ read marks
    def read_mark(self, thread_id: str) -> ReadMark | None:
        row = self.db.execute(
            "SELECT unread_kind, unread_turn_id, revision FROM read_state WHERE thread_id = ?", (thread_id,)
        ).fetchone()
        return ReadMark(row[0], row[1], row[2]) if row else None

    def set_read_mark(self, thread_id: str, mark: ReadMark, expected: str | None) -> ReadMark | None:
        """Store `mark` unless the stored revision differs from `expected` (None: any);
        returns the stored mark when the write was refused, None when it was made."""
        with self.db:
            self.db.execute("BEGIN IMMEDIATE")
            current = self.read_mark(thread_id)
            if expected is not None and (current is None or current.revision != expected):
                return current or ReadMark(None, None, "")
            self.db.execute(
                "INSERT OR REPLACE INTO read_state(thread_id, unread_kind, unread_turn_id, revision) "
                "VALUES (?, ?, ?, ?)",
                (thread_id, mark.kind, mark.turn_id, mark.revision),
            )
        return None

    # ------------------------------------------------------------------ goals
    def goal(self, thread_id: str) -> GoalRow | None:
        row = self.db.execute(
            "SELECT thread_id, objective, status, token_budget, tokens_used, time_used_seconds, "
            "created_at_ms, updated_at_ms FROM goals WHERE thread_id = ?",
            (thread_id,),
        ).fetchone()
        return GoalRow(*row) if row else None

    def put_goal(self, goal: GoalRow) -> None:
        with self.db:
            self.db.execute(
                "INSERT OR REPLACE INTO goals(thread_id, objective, status, token_budget, tokens_used, "
                "time_used_seconds, created_at_ms, updated_at_ms) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                attrs.astuple(goal),
            )

    def delete_goal(self, thread_id: str) -> bool:
        with self.db:
            return self.db.execute("DELETE FROM goals WHERE thread_id = ?", (thread_id,)).rowcount > 0


class ThreadStateStore:
    """`ThreadStateDb` behind a one-at-a-time worker-thread lane."""

    def __init__(self, codex_home: Path) -> None:
        self.db = ThreadStateDb(codex_home)
        self._lane = trio.CapacityLimiter(1)

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """Call a `ThreadStateDb` method in the lane."""
        return await trio.to_thread.run_sync(functools.partial(fn, *args), limiter=self._lane)

    async def aclose(self) -> None:
        await self.run(self.db.close)


def derived_read_mark(thread_id: str, materialized: bool, first_turn_id: str | None) -> ReadMark | None:
    """The mark of a thread nothing was stored for: none before it is on disk; a thread with
    turns that was never marked starts unread at its first turn (a stable revision)."""
    if not materialized:
        return None
    if first_turn_id is None:
        return ReadMark(None, None, f"initial:{thread_id}")
    return ReadMark(
        "turn", first_turn_id, str(uuid.uuid5(uuid.NAMESPACE_URL, f"codex-trio:{thread_id}:{first_turn_id}"))
    )


def read_state_wire(mark: ReadMark | None) -> dict[str, Any] | None:
    """The wire `ThreadReadState` of a mark."""
    if mark is None:
        return None
    first: dict[str, Any] | None
    if mark.kind == "turn":
        first = {"type": "turn", "turnId": mark.turn_id}
    elif mark.kind is not None:
        first = {"type": mark.kind}
    else:
        first = None
    return {"firstUnread": first, "revision": mark.revision}
