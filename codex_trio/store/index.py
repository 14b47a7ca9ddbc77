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
from collections.abc import Iterable, Sequence
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
    thread_id_of_filename,
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
        #: day folder -> mtime_ns at the last scan; folders that did not change are not listed.
        self._dir_mtimes: dict[str, int] = {}
        self._scanned = False
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
    def list(self, query: ListQuery) -> ListPage:
        column = _SORT_COLUMNS[query.sort_key]
        desc = query.direction == "desc"
        where = ["archived = ?", "has_user_event = 1"]
        args: list[Any] = [int(query.archived)]
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
        args.append(query.limit + 1)
        rows = self.db.execute(sql, args).fetchall()
        more = len(rows) > query.limit
        rows = rows[: query.limit]
        records = [_row_to_record(r) for r in rows]
        next_cursor = f"{iso_s(rows[-1]['sort_key'])}|{rows[-1]['id']}" if more and rows else None
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
        return ms + 999, cursor_id, False

    # ------------------------------------------------------------------ repair
    def repair(self, *, full: bool = False) -> int:
        """Bring the index up to the rollout files; returns how many rows changed.

        The first call (and `full=True`) looks at every rollout file; later calls only at day
        folders whose listing changed since the last scan (new, moved or removed files).
        Files this server writes are indexed as they are written, so they never need a scan.
        """
        full = full or not self._scanned
        known = {
            row[0]: (row[1], row[2], row[3], row[4])
            for row in self.db.execute(
                "SELECT rollout_path, file_size, file_mtime_ns, id, "
                "preview <> '' AND first_turn_id IS NOT NULL AND model IS NOT NULL FROM threads"
            )
        }
        changed = 0
        seen_dirs: list[str] = []
        found: dict[str, os.stat_result] = {}
        for folder in self._rollout_dirs():
            try:
                mtime = os.stat(folder).st_mtime_ns
            except OSError:
                continue
            if not full and self._dir_mtimes.get(folder) == mtime:
                continue
            seen_dirs.append(folder)
            self._dir_mtimes[folder] = mtime
            try:
                entries = list(os.scandir(folder))
            except OSError:
                continue
            for entry in entries:
                if not entry.is_file() or thread_id_of_filename(entry.name) is None:
                    continue
                try:
                    found[entry.path] = entry.stat()
                except OSError:
                    continue
        db = self.db
        db.execute("BEGIN")
        try:
            for path, st in found.items():
                prior = known.get(path)
                if prior is not None and prior[0] == st.st_size and prior[1] == st.st_mtime_ns:
                    continue
                if prior is not None and prior[3]:
                    # Everything the index derives from the file is known: only times move.
                    db.execute(
                        "UPDATE threads SET updated_at_ms = max(updated_at_ms, ?), file_size = ?, "
                        "file_mtime_ns = ? WHERE id = ?",
                        (st.st_mtime_ns // 1_000_000, st.st_size, st.st_mtime_ns, prior[2]),
                    )
                    changed += 1
                    continue
                scanned = _scan_file(path)
                if scanned is None or scanned.thread_id is None:
                    continue
                changed += self._merge_scanned(path, st, scanned)
            if seen_dirs:
                changed += self._drop_missing(seen_dirs, found, known)
            changed += self._apply_session_index()
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise
        self._scanned = True
        return changed

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

    def _drop_missing(
        self,
        dirs: Sequence[str],
        found: dict[str, os.stat_result],
        known: dict[str, tuple[int, int, str, int]],
    ) -> int:
        """Rows whose file left a scanned folder and exists nowhere else: the thread is gone."""
        scanned_dirs = set(dirs)
        dropped = 0
        for path, (_, _, thread_id, _) in known.items():
            if os.path.dirname(path) in scanned_dirs and path not in found and not os.path.exists(path):
                current = self._path_of(thread_id)
                if current == path:
                    self.db.execute("DELETE FROM threads WHERE id = ?", (thread_id,))
                    dropped += 1
        return dropped

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


def _scan_file(path: str) -> ScannedRollout | None:
    """Read a rollout from the start until its metadata is known (usually the first few lines)."""
    scanned = ScannedRollout()
    try:
        with open(path, "rb") as f:
            for raw in f:
                scan_lines((raw,), scanned)
                if scanned.thread_id is None or scanned.complete:
                    break
    except OSError:
        return None
    return scanned
