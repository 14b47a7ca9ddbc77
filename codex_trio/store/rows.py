"""The SQLite row store: one row per persisted thread, for listing, search and metadata.

Synchronous and not thread-safe by design: `LocalThreadStore` calls it only from worker threads,
one call at a time (a `CapacityLimiter(1)` lane), so the event loop never waits on SQLite and
statements never interleave. The file is ours (`codex_trio_threads_1.sqlite`); the reference's
`state_5.sqlite` is left alone, so both servers can share a CODEX_HOME.

This module knows SQL only; `codex_trio.store.index` keeps the rows in step with the rollout
files (reconcile and backfill) and is the only other module that writes here.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from codex_trio.store import GitInfo, GitInfoPatch, ListPage, ListQuery, ThreadRecord
from codex_trio.store.listing import (
    COLUMNS,
    SORT_COLUMNS,
    WRITE_COLUMNS,
    SqlDialect,
    make_page,
    row_to_record,
    row_values,
    source_kind,
    source_text,
    where_clause,
)
from codex_trio.store.rollout import ARCHIVED_DIR, ScannedRollout

INDEX_FILE = "codex_trio_threads_1.sqlite"
SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS threads (
    id TEXT PRIMARY KEY,
    rollout_path TEXT NOT NULL,
    created_at_ms INTEGER NOT NULL,
    updated_at_ms INTEGER NOT NULL,
    source TEXT NOT NULL,
    source_kind TEXT NOT NULL,
    model_provider TEXT NOT NULL,
    model TEXT,
    reasoning_effort TEXT,
    cwd TEXT NOT NULL,
    cli_version TEXT NOT NULL DEFAULT '',
    originator TEXT NOT NULL DEFAULT '',
    preview TEXT NOT NULL DEFAULT '',
    has_user_event INTEGER NOT NULL DEFAULT 0,
    first_turn_id TEXT,
    name TEXT,
    name_updated_at_ms INTEGER,
    archived INTEGER NOT NULL DEFAULT 0,
    archived_at_ms INTEGER,
    git_sha TEXT,
    git_branch TEXT,
    git_origin_url TEXT,
    forked_from_id TEXT,
    history_mode TEXT NOT NULL DEFAULT 'paginated',
    thread_source TEXT,
    agent_nickname TEXT,
    agent_role TEXT,
    file_size INTEGER NOT NULL DEFAULT 0,
    file_mtime_ns INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS threads_list_created
    ON threads(archived, has_user_event, created_at_ms DESC, id DESC);
CREATE INDEX IF NOT EXISTS threads_list_updated
    ON threads(archived, has_user_event, updated_at_ms DESC, id DESC);
CREATE INDEX IF NOT EXISTS threads_path ON threads(rollout_path);
CREATE TABLE IF NOT EXISTS names (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    updated_at_ms INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS dirs (path TEXT PRIMARY KEY, mtime_ns INTEGER NOT NULL);
"""

SQLITE = SqlDialect(placeholder="?", contains=lambda haystack, needle: f"instr({haystack}, {needle}) > 0")


class ThreadRows:
    """The SQLite rows. Every method runs in a worker thread, one at a time."""

    def __init__(self, codex_home: Path) -> None:
        self.home = codex_home
        self.path = codex_home / INDEX_FILE
        self._db: sqlite3.Connection | None = None

    # ------------------------------------------------------------------ lifecycle
    @property
    def db(self) -> sqlite3.Connection:
        if self._db is None:
            self.open()
        assert self._db is not None
        return self._db

    def open(self) -> None:
        self.home.mkdir(parents=True, exist_ok=True)
        # check_same_thread=False: calls come from different worker threads, never two at once.
        db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        db.row_factory = sqlite3.Row
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        db.executescript(_SCHEMA)
        db.execute(
            "INSERT OR IGNORE INTO meta(key, value) VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),)
        )
        self._db = db

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

    # ------------------------------------------------------------------ rows
    def upsert(self, record: ThreadRecord, file_size: int, file_mtime_ns: int) -> None:
        """Insert or replace what this server knows about a thread it writes (authoritative)."""
        self.db.execute(
            f"""
            INSERT INTO threads ({WRITE_COLUMNS}, file_size, file_mtime_ns)
            VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)
            ON CONFLICT(id) DO UPDATE SET
                rollout_path=excluded.rollout_path,
                updated_at_ms=max(threads.updated_at_ms, excluded.updated_at_ms),
                model=coalesce(excluded.model, threads.model),
                reasoning_effort=coalesce(excluded.reasoning_effort, threads.reasoning_effort),
                preview=CASE WHEN threads.preview = '' THEN excluded.preview ELSE threads.preview END,
                has_user_event=max(threads.has_user_event, excluded.has_user_event),
                first_turn_id=coalesce(threads.first_turn_id, excluded.first_turn_id),
                archived=excluded.archived,
                archived_at_ms=excluded.archived_at_ms,
                file_size=excluded.file_size,
                file_mtime_ns=excluded.file_mtime_ns
            """,
            (*row_values(record), file_size, file_mtime_ns),
        )

    def get(self, thread_id: str) -> ThreadRecord | None:
        row = self.db.execute(f"SELECT {COLUMNS} FROM threads WHERE id = ?", (thread_id,)).fetchone()
        return row_to_record(row) if row is not None else None

    def get_by_path(self, path: str) -> ThreadRecord | None:
        row = self.db.execute(f"SELECT {COLUMNS} FROM threads WHERE rollout_path = ?", (path,)).fetchone()
        return row_to_record(row) if row is not None else None

    def set_name(self, thread_id: str, name: str, at_ms: int) -> None:
        self.db.execute(
            "INSERT INTO names(id, name, updated_at_ms) VALUES (?,?,?) ON CONFLICT(id) DO UPDATE SET "
            "name=excluded.name, updated_at_ms=excluded.updated_at_ms "
            "WHERE excluded.updated_at_ms >= names.updated_at_ms",
            (thread_id, name, at_ms),
        )
        self.db.execute(
            "UPDATE threads SET name = ?, name_updated_at_ms = ? WHERE id = ? "
            "AND (name_updated_at_ms IS NULL OR name_updated_at_ms <= ?)",
            (name, at_ms, thread_id, at_ms),
        )

    def update_git(self, thread_id: str, patch: GitInfoPatch) -> GitInfo | None:
        """Apply a gitInfo patch atomically (read-modify-write in one transaction)."""
        db = self.db
        db.execute("BEGIN IMMEDIATE")
        try:
            row = db.execute(
                "SELECT git_sha, git_branch, git_origin_url FROM threads WHERE id = ?", (thread_id,)
            ).fetchone()
            if row is None:
                db.execute("ROLLBACK")
                return None
            updated = patch.apply(GitInfo(row[0], row[1], row[2]))
            db.execute(
                "UPDATE threads SET git_sha = ?, git_branch = ?, git_origin_url = ? WHERE id = ?",
                (updated.sha, updated.branch, updated.origin_url, thread_id),
            )
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise
        return updated

    def set_location(
        self,
        thread_id: str,
        path: str,
        *,
        archived: bool,
        archived_at_ms: int | None,
        updated_at_ms: int | None,
    ) -> None:
        st = file_stat(path)
        self.db.execute(
            "UPDATE threads SET rollout_path = ?, archived = ?, archived_at_ms = ?, "
            "updated_at_ms = max(updated_at_ms, coalesce(?, updated_at_ms)), file_size = ?, "
            "file_mtime_ns = ? WHERE id = ?",
            (path, int(archived), archived_at_ms, updated_at_ms, st[0], st[1], thread_id),
        )

    def delete(self, thread_id: str) -> None:
        self.db.execute("DELETE FROM threads WHERE id = ?", (thread_id,))

    # ------------------------------------------------------------------ listing
    def all_records(self) -> list[ThreadRecord]:
        """Every row, oldest first (archived, empty and sub-agent threads too)."""
        rows = self.db.execute(f"SELECT {COLUMNS} FROM threads ORDER BY created_at_ms, id").fetchall()
        return [row_to_record(r) for r in rows]

    def page(self, query: ListQuery) -> ListPage:
        """One page of `query` from the rows as they are (the caller reconciles first)."""
        return make_page(query, self.rows(query, query.limit + 1))

    def rows(self, query: ListQuery, count: int) -> list[tuple[ThreadRecord, int]]:
        """Up to `count` (record, sort key) rows of `query`, in its order."""
        column = SORT_COLUMNS[query.sort_key]
        clause, args = where_clause(query, SQLITE, lambda thread_id: self._sort_key(column, thread_id))
        sql = f"SELECT {COLUMNS}, {column} AS sort_key FROM threads {clause} LIMIT ?"
        return [(row_to_record(r), int(r["sort_key"])) for r in self.db.execute(sql, [*args, count])]

    def _sort_key(self, column: str, thread_id: str) -> int | None:
        row = self.db.execute(f"SELECT {column} FROM threads WHERE id = ?", (thread_id,)).fetchone()
        return None if row is None else int(row[0])

    # ------------------------------------------------------------------ what reconcile needs
    @contextmanager
    def transaction(self) -> Iterator[None]:
        db = self.db
        db.execute("BEGIN")
        try:
            yield
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise

    def reconciled_dirs(self) -> dict[str, int]:
        """Folder -> its mtime when it was last fully reconciled."""
        return dict(self.db.execute("SELECT path, mtime_ns FROM dirs").fetchall())

    def dir_done(self, folder: str, mtime: int) -> None:
        self.db.execute(
            "INSERT INTO dirs(path, mtime_ns) VALUES (?, ?) "
            "ON CONFLICT(path) DO UPDATE SET mtime_ns = excluded.mtime_ns",
            (folder, mtime),
        )

    def paths_under(self, folder: str) -> list[tuple[str, str]]:
        """(id, rollout path) of the rows whose file is under `folder`."""
        prefix = folder + os.sep
        return self.db.execute(
            "SELECT id, rollout_path FROM threads WHERE rollout_path > ? AND rollout_path < ?",
            (prefix, prefix + "\uffff"),
        ).fetchall()

    def known_files(self, paths: Sequence[str]) -> dict[str, tuple[int, int, str, int]]:
        """Path -> (file size, mtime, id, metadata complete) for the rows of these files."""
        marks = ",".join("?" * len(paths))
        return {
            row[0]: row[1:]
            for row in self.db.execute(
                "SELECT rollout_path, file_size, file_mtime_ns, id, "
                "preview <> '' AND first_turn_id IS NOT NULL AND model IS NOT NULL "
                f"FROM threads WHERE rollout_path IN ({marks})",
                list(paths),
            )
        }

    def file_moved_on(self, thread_id: str, st: os.stat_result) -> None:
        """A file whose metadata is all known grew or was touched: only its times move."""
        self.db.execute(
            "UPDATE threads SET updated_at_ms = max(updated_at_ms, ?), file_size = ?, file_mtime_ns = ? "
            "WHERE id = ?",
            (st.st_mtime_ns // 1_000_000, st.st_size, st.st_mtime_ns, thread_id),
        )

    def merge_scanned(self, path: str, st: os.stat_result, scanned: ScannedRollout) -> int:
        """Insert-if-absent; for an existing row, only fill what it lacks and move times forward."""
        archived = Path(path).parent.name == ARCHIVED_DIR
        existing = self.path_of(scanned.thread_id)
        # The row's recorded file is gone (moved by another process): follow the file we found.
        follow = int(existing is None or not os.path.exists(existing))
        mtime_ms = st.st_mtime_ns // 1_000_000
        created = scanned.created_at_ms if scanned.created_at_ms is not None else mtime_ms
        git = scanned.git or {}
        source = scanned.source
        cursor = self.db.execute(
            """
            INSERT INTO threads (id, rollout_path, created_at_ms, updated_at_ms, source, source_kind,
                model_provider, model, cwd, cli_version, originator, preview, has_user_event,
                first_turn_id, name, name_updated_at_ms, archived, archived_at_ms, git_sha, git_branch,
                git_origin_url, forked_from_id, file_size, file_mtime_ns)
            SELECT ?,?,?,?,?,?,?,?,?,?,?,?,?,?, n.name, n.updated_at_ms, ?,?,?,?,?,?,?,?
            FROM (SELECT 1) LEFT JOIN names n ON n.id = ?
            WHERE true
            ON CONFLICT(id) DO UPDATE SET
                rollout_path = CASE WHEN ? THEN excluded.rollout_path ELSE threads.rollout_path END,
                archived = CASE WHEN ? THEN excluded.archived ELSE threads.archived END,
                updated_at_ms = max(threads.updated_at_ms, excluded.updated_at_ms),
                model = coalesce(threads.model, excluded.model),
                preview = CASE WHEN threads.preview = '' THEN excluded.preview ELSE threads.preview END,
                has_user_event = max(threads.has_user_event, excluded.has_user_event),
                first_turn_id = coalesce(threads.first_turn_id, excluded.first_turn_id),
                file_size = excluded.file_size,
                file_mtime_ns = excluded.file_mtime_ns
            """,
            (
                scanned.thread_id,
                path,
                created,
                max(mtime_ms, created),
                source_text(source),
                source_kind(source),
                scanned.model_provider,
                scanned.model,
                scanned.cwd,
                scanned.cli_version,
                scanned.originator,
                scanned.preview or "",
                int(scanned.preview is not None),
                scanned.first_turn_id,
                int(archived),
                mtime_ms if archived else None,
                git.get("commit_hash"),
                git.get("branch"),
                git.get("repository_url"),
                scanned.forked_from_id,
                st.st_size,
                st.st_mtime_ns,
                scanned.thread_id,
                follow,
                follow,
            ),
        )
        return cursor.rowcount

    def path_of(self, thread_id: str | None) -> str | None:
        if thread_id is None:
            return None
        row = self.db.execute("SELECT rollout_path FROM threads WHERE id = ?", (thread_id,)).fetchone()
        return None if row is None else str(row[0])


def file_stat(path: str) -> tuple[int, int]:
    """(size, mtime ns) of a file, zeros when it is gone."""
    try:
        st = os.stat(path)
    except OSError:
        return 0, 0
    return st.st_size, st.st_mtime_ns
