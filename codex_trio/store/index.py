"""The SQLite thread index: one row per persisted thread, for listing and search.

Synchronous and not thread-safe by design: `LocalThreadStore` calls it only from worker threads,
one call at a time (a `CapacityLimiter(1)` lane), so the event loop never waits on SQLite and
statements never interleave. The file is ours (`codex_trio_threads_1.sqlite`); the reference's
`state_5.sqlite` is left alone, so both servers can share a CODEX_HOME.

The index is a cache of the rollout files plus the metadata that lives only here (git info)
or in `session_index.jsonl` (names). `repair` reconciles it with the files: rows are inserted
if absent and file-derived fields only ever move forward; names and git info are never
overwritten by a scan.
"""

from __future__ import annotations

import os
import sqlite3
import uuid
from collections.abc import Iterable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import orjson

from codex_trio.store import GitInfo, GitInfoPatch, ListPage, ListQuery, ThreadRecord
from codex_trio.store.rollout import (
    ARCHIVED_DIR,
    SESSIONS_DIR,
    ScannedRollout,
    iso_ms,
    iso_s,
    parse_iso_ms,
    scan_lines,
)

INDEX_FILE = "codex_trio_threads_1.sqlite"
SCHEMA_VERSION = 1
#: bytes read at a time while looking for a rollout's first user message.
SCAN_CHUNK = 64 * 1024

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

_COLUMNS = (
    "id, rollout_path, created_at_ms, updated_at_ms, source, model_provider, model, reasoning_effort, cwd, "
    "cli_version, originator, preview, has_user_event, first_turn_id, name, archived, archived_at_ms, "
    "git_sha, "
    "git_branch, git_origin_url, forked_from_id, history_mode, thread_source, agent_nickname, agent_role"
)

_SORT_COLUMNS = {
    "created_at": "created_at_ms",
    "updated_at": "updated_at_ms",
    "recency_at": "updated_at_ms",
    "section_position": "created_at_ms",
}

SOURCE_KINDS = {"cli": "cli", "vscode": "vscode", "exec": "exec", "mcp": "appServer", "unknown": "unknown"}
#: what `thread/list` shows when `sourceKinds` is absent or empty.
INTERACTIVE_SOURCE_KINDS = ("cli", "vscode")


def source_kind(source: Any) -> str:
    """The `ThreadSourceKind` of a session_meta `source` value."""
    if isinstance(source, str):
        return SOURCE_KINDS.get(source, "unknown")
    if isinstance(source, dict) and "subagent" in source:
        sub = source["subagent"]
        if sub == "review":
            return "subAgentReview"
        if sub == "compact":
            return "subAgentCompact"
        if isinstance(sub, dict) and "thread_spawn" in sub:
            return "subAgentThreadSpawn"
        return "subAgentOther"
    return "unknown"


def _row_to_record(row: sqlite3.Row) -> ThreadRecord:
    source = row["source"]
    return ThreadRecord(
        id=row["id"],
        rollout_path=row["rollout_path"],
        created_at_ms=row["created_at_ms"],
        updated_at_ms=row["updated_at_ms"],
        cwd=row["cwd"],
        model_provider=row["model_provider"],
        model=row["model"],
        reasoning_effort=row["reasoning_effort"],
        source=source if not source.startswith("{") else orjson.loads(source),
        cli_version=row["cli_version"],
        originator=row["originator"],
        preview=row["preview"],
        name=row["name"],
        archived=bool(row["archived"]),
        archived_at_ms=row["archived_at_ms"],
        git=GitInfo(row["git_sha"], row["git_branch"], row["git_origin_url"]),
        has_user_event=bool(row["has_user_event"]),
        forked_from_id=row["forked_from_id"],
        history_mode=row["history_mode"],
        thread_source=row["thread_source"],
        agent_nickname=row["agent_nickname"],
        agent_role=row["agent_role"],
        first_turn_id=row["first_turn_id"],
        materialized=True,
    )


def _source_text(source: Any) -> str:
    return source if isinstance(source, str) else orjson.dumps(source).decode()


class ThreadIndex:
    """The SQLite index. Every method runs in a worker thread, one at a time."""

    def __init__(self, codex_home: Path) -> None:
        self.home = codex_home
        self.path = codex_home / INDEX_FILE
        self._db: sqlite3.Connection | None = None
        #: changed folders not listed yet -> their mtime when noticed.
        self._unscanned: dict[str, int] = {}
        #: rollout files still to reconcile, newest first, as (file name, path).
        self._pending: list[tuple[str, str]] = []
        #: pending file -> its folder; folder -> [mtime when queued, files still pending].
        self._pending_folder: dict[str, str] = {}
        self._folders: dict[str, list[int]] = {}
        self._names_offset = 0

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
            """
            INSERT INTO threads (id, rollout_path, created_at_ms, updated_at_ms, source, source_kind,
                model_provider, model, reasoning_effort, cwd, cli_version, originator, preview,
                has_user_event, first_turn_id, name, archived, archived_at_ms, git_sha, git_branch,
                git_origin_url, forked_from_id, history_mode, thread_source, agent_nickname, agent_role,
                file_size, file_mtime_ns)
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
            (
                record.id,
                record.rollout_path,
                record.created_at_ms,
                record.updated_at_ms,
                _source_text(record.source),
                source_kind(record.source),
                record.model_provider,
                record.model,
                record.reasoning_effort,
                record.cwd,
                record.cli_version,
                record.originator,
                record.preview,
                int(record.has_user_event),
                record.first_turn_id,
                record.name,
                int(record.archived),
                record.archived_at_ms,
                record.git.sha,
                record.git.branch,
                record.git.origin_url,
                record.forked_from_id,
                record.history_mode,
                record.thread_source,
                record.agent_nickname,
                record.agent_role,
                file_size,
                file_mtime_ns,
            ),
        )

    def get(self, thread_id: str) -> ThreadRecord | None:
        row = self.db.execute(f"SELECT {_COLUMNS} FROM threads WHERE id = ?", (thread_id,)).fetchone()
        return _row_to_record(row) if row is not None else None

    def get_by_path(self, path: str) -> ThreadRecord | None:
        row = self.db.execute(f"SELECT {_COLUMNS} FROM threads WHERE rollout_path = ?", (path,)).fetchone()
        return _row_to_record(row) if row is not None else None

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
        st = _stat(path)
        self.db.execute(
            "UPDATE threads SET rollout_path = ?, archived = ?, archived_at_ms = ?, "
            "updated_at_ms = max(updated_at_ms, coalesce(?, updated_at_ms)), file_size = ?, "
            "file_mtime_ns = ? WHERE id = ?",
            (path, int(archived), archived_at_ms, updated_at_ms, st[0], st[1], thread_id),
        )

    def delete(self, thread_id: str) -> None:
        self.db.execute("DELETE FROM threads WHERE id = ?", (thread_id,))

    # ------------------------------------------------------------------ listing
    def list_threads(self, query: ListQuery) -> ListPage:
        """One page, after reconciling just enough rollout files to make it exact (see `reconcile`)."""
        self.refresh()
        if self._pending or self._unscanned:
            if query.sort_key in ("created_at", "section_position") and query.direction == "desc":
                self._reconcile_for_page(query)
            else:
                self.reconcile_all()
        return self._page(query, self._rows(query, query.limit + 1))

    # The reference's cursors: `created_at` keys to the second, the others to the millisecond.

    def _rows(self, query: ListQuery, count: int) -> list[sqlite3.Row]:
        column = _SORT_COLUMNS[query.sort_key]
        desc = query.direction == "desc"
        where = ["archived = ?"]
        args: list[Any] = [int(query.archived)]
        if not query.archived:
            where.append("has_user_event = 1")
        if query.model_providers is not None:
            where.append(f"model_provider IN ({','.join('?' * len(query.model_providers))})")
            args.extend(query.model_providers)
        if query.cwds is not None:
            where.append(f"cwd IN ({','.join('?' * len(query.cwds))})")
            args.extend(query.cwds)
        kinds = query.source_kinds or INTERACTIVE_SOURCE_KINDS
        where.append(f"source_kind IN ({','.join('?' * len(kinds))})")
        args.extend(kinds)
        if query.excluded_ids:
            where.append(f"id NOT IN ({','.join('?' * len(query.excluded_ids))})")
            args.extend(query.excluded_ids)
        if query.search:
            # instr() is a case-sensitive substring test, like the reference's search.
            where.append("(instr(preview, ?) > 0 OR instr(coalesce(name, ''), ?) > 0)")
            args.extend([query.search, query.search])
        if query.cursor is not None:
            key, cursor_id, inclusive = self._cursor_position(query.cursor, column)
            op = "<" if desc else ">"
            if cursor_id is None:
                where.append(f"{column} {op}{'=' if inclusive else ''} ?")
                args.append(key)
            else:
                where.append(f"({column} {op} ? OR ({column} = ? AND id {op} ?))")
                args.extend([key, key, cursor_id])
        order = "DESC" if desc else "ASC"
        sql = (
            f"SELECT {_COLUMNS}, {column} AS sort_key FROM threads WHERE {' AND '.join(where)} "
            f"ORDER BY {column} {order}, id {order} LIMIT ?"
        )
        args.append(count)
        return self.db.execute(sql, args).fetchall()

    @staticmethod
    def _page(query: ListQuery, rows: list[sqlite3.Row]) -> ListPage:
        more = len(rows) > query.limit
        rows = rows[: query.limit]
        records = [_row_to_record(r) for r in rows]
        stamp = iso_s if query.sort_key in ("created_at", "section_position") else iso_ms
        next_cursor = f"{stamp(rows[-1]['sort_key'])}|{rows[-1]['id']}" if more and rows else None
        backwards = iso_ms(rows[0]["sort_key"]) if rows else None
        return ListPage(records, next_cursor, backwards)

    def _cursor_position(self, cursor: str, column: str) -> tuple[int, str | None, bool]:
        """(sort key in ms, id or None, inclusive) for a `ts|id` or a bare `ts` cursor.

        The wire cursor carries the key to the second only; the row it names gives the exact
        millisecond key, so pages never skip or repeat rows created within one second.
        """
        stamp, sep, cursor_id = cursor.partition("|")
        ms = parse_iso_ms(stamp)
        if ms is None:
            raise ValueError(cursor)
        if not sep:
            return ms, None, True
        try:
            cursor_id = str(uuid.UUID(cursor_id))
        except ValueError:
            raise ValueError(cursor) from None
        row = self.db.execute(f"SELECT {column} FROM threads WHERE id = ?", (cursor_id,)).fetchone()
        if row is not None and row[0] // 1000 == ms // 1000:
            return int(row[0]), cursor_id, False
        return (ms + 999 if ms % 1000 == 0 else ms), cursor_id, False

    # ------------------------------------------------------------------ repair
    #
    # The index is brought up to the files in two steps:
    # * `refresh` compares each rollout folder's mtime with the one recorded when the folder was
    #   last fully reconciled. A folder whose listing did not change (no file added, moved or
    #   removed) is skipped without touching its files. For a changed folder, rows whose file
    #   is gone are dropped and every file in it is queued as pending.
    # * pending files are reconciled newest first (rollout names sort by creation time): stat,
    #   and read the head of the file only when it is new or its metadata is incomplete. A
    #   `thread/list` sorted by creation, newest first, stops as soon as its page is provably
    #   exact (its last row is newer than any pending file can be); other queries reconcile
    #   everything pending. A folder's mtime is recorded once all its files are reconciled, so
    #   a crash midway leaves the folder to be looked at again.
    #
    # Files this server writes are indexed as they are written and never need a scan. An append
    # by another process to a file whose folder listing did not change is not noticed (its
    # thread keeps its indexed metadata); new, moved and deleted rollouts always are.

    def refresh(self, *, full: bool = False) -> None:
        """Note the folders whose listing changed since they were reconciled (one stat each)."""
        recorded = {} if full else dict(self.db.execute("SELECT path, mtime_ns FROM dirs").fetchall())
        for folder in self._rollout_dirs():
            if folder in self._folders or folder in self._unscanned:
                continue
            try:
                mtime = os.stat(folder).st_mtime_ns
            except OSError:
                continue
            if recorded.get(folder) != mtime:
                self._unscanned[folder] = mtime
        self._apply_session_index()

    def _scan_folder(self, folder: str) -> None:
        """Queue a changed folder's files and drop rows whose file left it."""
        mtime = self._unscanned.pop(folder)
        try:
            with os.scandir(folder) as entries:
                found = [(e.name, e.path) for e in entries if _is_rollout_name(e.name)]
        except OSError:
            return
        on_disk = {path for _, path in found}
        self._drop_vanished(folder, on_disk)
        if not found:
            self._folder_done(folder, mtime)
            return
        self._folders[folder] = [mtime, len(found)]
        self._pending_folder.update(dict.fromkeys(on_disk, folder))
        # Names start with `rollout-YYYY-MM-DDTHH-MM-SS`: sorting the names sorts by age.
        self._pending.extend(found)
        self._pending.sort(reverse=True)

    def _scan_all(self) -> None:
        for folder in sorted(self._unscanned):
            self._scan_folder(folder)

    def _newest_unscanned(self) -> str | None:
        """The unscanned folder that may hold the newest files (archived ones come first)."""
        if not self._unscanned:
            return None
        archived = str(self.home / ARCHIVED_DIR)
        if archived in self._unscanned:
            return archived
        return max(self._unscanned)

    def _folder_done(self, folder: str, mtime: int) -> None:
        self.db.execute(
            "INSERT INTO dirs(path, mtime_ns) VALUES (?, ?) "
            "ON CONFLICT(path) DO UPDATE SET mtime_ns = excluded.mtime_ns",
            (folder, mtime),
        )
        self._folders.pop(folder, None)

    def _drop_vanished(self, folder: str, on_disk: set[str]) -> None:
        """Rows whose file left `folder` and exists nowhere else: the thread is gone."""
        prefix = folder + os.sep
        rows = self.db.execute(
            "SELECT id, rollout_path FROM threads WHERE rollout_path > ? AND rollout_path < ?",
            (prefix, prefix + "\uffff"),
        ).fetchall()
        for thread_id, path in rows:
            if os.path.dirname(path) == folder and path not in on_disk and not os.path.exists(path):
                self.db.execute("DELETE FROM threads WHERE id = ?", (thread_id,))

    def _reconcile_for_page(self, query: ListQuery) -> None:
        """Scan and reconcile newest first until `query`'s page cannot change any more.

        Day folders are scanned only when they could hold files newer than everything pending,
        so the first page after a start reads the newest folder and a few dozen files.
        """
        chunk = query.limit + 1
        while self._unscanned or self._pending:
            folder = self._newest_unscanned()
            newest_file = _name_time_ms(self._pending[0][0]) if self._pending else None
            if folder is not None:
                folder_end = _folder_end_ms(folder)
                if folder_end is None or newest_file is None or folder_end >= newest_file:
                    self._scan_folder(folder)
                    continue
            if newest_file is not None:
                rows = self._rows(query, query.limit + 1)
                if len(rows) > query.limit and rows[-1]["created_at_ms"] > newest_file + NAME_TIME_SLACK_MS:
                    return
            self._reconcile(chunk)
            chunk = min(chunk * 2, 4096)

    def _reconcile(self, count: int) -> int:
        """Reconcile the `count` newest pending files; returns how many rows changed."""
        batch = [path for _, path in self._pending[:count]]
        del self._pending[:count]
        if not batch:
            return 0
        marks = ",".join("?" * len(batch))
        known = {
            row[0]: row[1:]
            for row in self.db.execute(
                "SELECT rollout_path, file_size, file_mtime_ns, id, "
                "preview <> '' AND first_turn_id IS NOT NULL AND model IS NOT NULL "
                f"FROM threads WHERE rollout_path IN ({marks})",
                batch,
            )
        }
        changed = 0
        db = self.db
        db.execute("BEGIN")
        try:
            for path in batch:
                changed += self._reconcile_file(path, known.get(path))
                folder = self._pending_folder.pop(path, None)
                entry = self._folders.get(folder) if folder is not None else None
                if folder is not None and entry is not None:
                    entry[1] -= 1
                    if entry[1] <= 0:
                        self._folder_done(folder, entry[0])
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise
        return changed

    def _reconcile_file(self, path: str, prior: tuple[int, int, str, int] | None) -> int:
        try:
            st = os.stat(path)
        except OSError:
            return 0
        if prior is not None and prior[0] == st.st_size and prior[1] == st.st_mtime_ns:
            return 0
        if prior is not None and prior[3]:
            # Everything the index derives from the file is known: only its times move.
            self.db.execute(
                "UPDATE threads SET updated_at_ms = max(updated_at_ms, ?), file_size = ?, file_mtime_ns = ? "
                "WHERE id = ?",
                (st.st_mtime_ns // 1_000_000, st.st_size, st.st_mtime_ns, prior[2]),
            )
            return 1
        scanned = scan_file(path)
        if scanned is None or scanned.thread_id is None:
            return 0
        return self._merge_scanned(path, st, scanned)

    def _reconcile_first(self, wanted: list[tuple[str, str]]) -> None:
        """Move `wanted` pending entries to the front and reconcile them now."""
        if not wanted:
            return
        chosen = set(wanted)
        self._pending = wanted + [entry for entry in self._pending if entry not in chosen]
        self._reconcile(len(wanted))

    def find(self, thread_id: str) -> ThreadRecord | None:
        """A thread by id, reconciling its rollout first if it is new or pending."""
        record = self.get(thread_id)
        if record is None:
            self.refresh()
            self._scan_all()
            suffix = f"-{thread_id}.jsonl"
            wanted = [entry for entry in self._pending if entry[0].endswith(suffix)]
            if wanted:
                self._reconcile_first(wanted)
                record = self.get(thread_id)
        return record

    def find_path(self, path: str) -> ThreadRecord | None:
        """The thread indexed for a rollout path, reconciling that file first if pending."""
        record = self.get_by_path(path)
        if record is None:
            self.refresh()
            self._scan_all()
            self._reconcile_first([entry for entry in self._pending if entry[1] == path])
            record = self.get_by_path(path)
        return record

    def backfill_step(self, count: int) -> int:
        """Scan what is left and reconcile up to `count` pending files; returns how many remain."""
        self._scan_all()
        self._reconcile(count)
        return len(self._pending)

    def reconcile_all(self) -> None:
        self._scan_all()
        self._reconcile(len(self._pending))

    def repair(self, *, full: bool = False) -> int:
        """Reconcile everything now (`full`: every folder, changed or not); returns rows changed."""
        self.refresh(full=full)
        self._scan_all()
        return self._reconcile(len(self._pending))

    def _rollout_dirs(self) -> Iterable[str]:
        sessions = self.home / SESSIONS_DIR
        for year in _subdirs(str(sessions)):
            for month in _subdirs(year):
                yield from _subdirs(month)
        yield str(self.home / ARCHIVED_DIR)

    def _merge_scanned(self, path: str, st: os.stat_result, scanned: ScannedRollout) -> int:
        """Insert-if-absent; for an existing row, only fill what it lacks and move times forward."""
        archived = Path(path).parent.name == ARCHIVED_DIR
        existing = self._path_of(scanned.thread_id)
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
                _source_text(source),
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

    def _path_of(self, thread_id: str | None) -> str | None:
        if thread_id is None:
            return None
        row = self.db.execute("SELECT rollout_path FROM threads WHERE id = ?", (thread_id,)).fetchone()
        return None if row is None else str(row[0])

    def _apply_session_index(self) -> int:
        """Names from `session_index.jsonl` (appended by name/set), read incrementally."""
        path = self.home / "session_index.jsonl"
        try:
            size = path.stat().st_size
        except OSError:
            return 0
        if size < self._names_offset:
            self._names_offset = 0
        if size == self._names_offset:
            return 0
        with open(path, "rb") as f:
            f.seek(self._names_offset)
            data = f.read(size - self._names_offset)
        end = data.rfind(b"\n") + 1
        self._names_offset += end
        changed = 0
        for raw in data[:end].splitlines():
            try:
                entry = orjson.loads(raw)
            except orjson.JSONDecodeError:
                continue
            if not isinstance(entry, dict):
                continue
            thread_id, name, stamp = entry.get("id"), entry.get("thread_name"), entry.get("updated_at")
            if not isinstance(thread_id, str) or not isinstance(name, str) or not isinstance(stamp, str):
                continue
            at_ms = parse_iso_ms(stamp[:23] + "Z" if len(stamp) > 24 else stamp) or 0
            self.set_name(thread_id, name, at_ms)
            changed += 1
        return changed


#: how much later than its file name's time a rollout's `created_at` can be (names have
#: second precision and are written in this machine's local time).
NAME_TIME_SLACK_MS = 2_000


def _name_time_ms(filename: str) -> int | None:
    """Creation time (ms) from `rollout-YYYY-MM-DDTHH-MM-SS-<id>.jsonl`, read as local time."""
    stamp = filename[len("rollout-") : len("rollout-") + 19]
    try:
        local = datetime.strptime(stamp, "%Y-%m-%dT%H-%M-%S")
    except ValueError:
        return None
    return int(local.astimezone().timestamp() * 1000)


def _is_rollout_name(name: str) -> bool:
    return name.startswith("rollout-") and name.endswith(".jsonl") and len(name) > 48


def _folder_end_ms(folder: str) -> int | None:
    """The latest creation time a `sessions/YYYY/MM/DD` folder can hold (local midnight after it)."""
    parts = folder.rstrip(os.sep).split(os.sep)[-3:]
    try:
        day = datetime(int(parts[0]), int(parts[1]), int(parts[2]))
    except (ValueError, IndexError):
        return None
    return int((day + timedelta(days=1)).astimezone().timestamp() * 1000) + NAME_TIME_SLACK_MS


def _subdirs(path: str) -> list[str]:
    try:
        return sorted(e.path for e in os.scandir(path) if e.is_dir(follow_symlinks=False))
    except OSError:
        return []


def _stat(path: str) -> tuple[int, int]:
    try:
        st = os.stat(path)
    except OSError:
        return 0, 0
    return st.st_size, st.st_mtime_ns


#: bytes of a rollout read at once while looking for its metadata (the reference's first
#: line alone is ~22 KB of instructions).
HEAD_BYTES = 128 * 1024


def scan_file(path: str) -> ScannedRollout | None:
    """Metadata from the head of a rollout: read in large blocks until everything is known."""
    scanned = ScannedRollout()
    try:
        with open(path, "rb") as f:
            rest = b""
            while True:
                block = f.read(HEAD_BYTES)
                if not block:
                    if rest:
                        scan_lines((rest,), scanned)
                    break
                lines = (rest + block).split(b"\n")
                rest = lines.pop()
                scan_lines(lines, scanned)
                if scanned.thread_id is None or scanned.complete:
                    break
    except OSError:
        return None
    return scanned
