"""The local ThreadStore: rollout JSONL files under CODEX_HOME plus the SQLite index.

Blocking work never runs on the event loop: file I/O goes to worker threads through a bounded
`CapacityLimiter(IO_WORKERS)`, SQLite through its own `CapacityLimiter(1)` lane (one statement
at a time, so the connection is never shared by two threads at once). Worker calls are not
abandoned on cancellation, so a cancelled request never leaves half a line behind: the write
finishes, then the cancellation is delivered.

Ordering of writes to one thread is the caller's job (the thread manager's per-thread lane);
this module makes each append a single `write` of whole lines.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import attrs
import orjson
import trio

from codex_trio.ids import now_ms
from codex_trio.records import by_value
from codex_trio.store import GitInfoPatch, InvalidCursor, ListPage, ListQuery, NoRollout, ThreadRecord
from codex_trio.store.index import ThreadIndex, scan_file
from codex_trio.store.rollout import (
    ARCHIVED_DIR,
    ScannedRollout,
    day_dir_of_filename,
    encode_lines,
    full_line,
    parse_lines,
    rollout_relpath,
)
from codex_trio.store.rows import ThreadRows

log = logging.getLogger(__name__)

T = TypeVar("T")

#: worker threads doing rollout file I/O at once (appends, reads, moves).
IO_WORKERS = 8
SESSION_INDEX_FILE = "session_index.jsonl"
#: rollouts indexed per background step; a list or read waits for at most one step.
BACKFILL_CHUNK = 256


@by_value
@attrs.frozen(repr=False, eq=False)
class FileState:
    size: int
    mtime_ns: int


class LocalThreadStore:
    """Threads as the reference stores them: see the module docstring for the concurrency rules."""

    def __init__(self, codex_home: Path) -> None:
        self.home = codex_home
        self.rows = ThreadRows(codex_home)
        self.index = ThreadIndex(self.rows)
        self._db_lane = trio.CapacityLimiter(1)
        self._io = trio.CapacityLimiter(IO_WORKERS)
        self._backfill_scopes: set[trio.CancelScope] = set()

    async def _db(self, fn: Callable[..., T], *args: Any) -> T:
        return await trio.to_thread.run_sync(fn, *args, limiter=self._db_lane)

    async def _file(self, fn: Callable[..., T], *args: Any) -> T:
        return await trio.to_thread.run_sync(fn, *args, limiter=self._io)

    # ------------------------------------------------------------------ lifecycle
    async def open(self) -> None:
        await self._db(self.rows.open)

    async def aclose(self) -> None:
        """Close the SQLite handle until the next use (the rows reopen themselves lazily).

        A running backfill is cancelled, so a closed store is not reopened behind its owner's back.
        """
        for scope in self._backfill_scopes:
            scope.cancel()
        with trio.CancelScope(shield=True):
            await self._db(self.rows.close)

    def new_rollout_path(self, created_at_ms: int, thread_id: str) -> str | None:
        return str(self.home / rollout_relpath(created_at_ms, thread_id))

    # ------------------------------------------------------------------ leases
    # One server per CODEX_HOME: there is nobody to share a thread with.
    lease_interval: float | None = None

    async def acquire_lease(self, thread_id: str) -> None:
        return None

    async def release_lease(self, thread_id: str) -> None:
        return None

    async def renew_leases(self) -> None:
        return None

    # ------------------------------------------------------------------ writing
    async def materialize(
        self, record: ThreadRecord, session_meta: dict[str, Any], ordinal: int = 0
    ) -> ThreadRecord:
        """Create the rollout with its `session_meta` line (fsync'd) and index the thread."""
        assert record.rollout_path is not None
        data = encode_lines([full_line(ordinal, session_meta, now_ms())])
        state = await self._file(_create, record.rollout_path, data)
        stored = attrs.evolve(record, materialized=True)
        await self._db(self.rows.upsert, stored, state.size, state.mtime_ns)
        return stored

    async def append(self, record: ThreadRecord, lines: Sequence[dict[str, Any]], *, durable: bool) -> None:
        """Append whole lines with one write (flushed, fsync'd when `durable`), then index `record`."""
        assert record.rollout_path is not None
        state = await self._file(_append, record.rollout_path, encode_lines(lines), durable)
        await self._db(self.rows.upsert, record, state.size, state.mtime_ns)

    async def read_lines(self, record: ThreadRecord) -> list[dict[str, Any]]:
        if record.rollout_path is None:
            return []
        try:
            return await self._file(_read_lines, record.rollout_path)
        except FileNotFoundError:
            return []

    # ------------------------------------------------------------------ lookups
    async def repair(self, *, full: bool = False) -> int:
        """Reconcile the index with the rollout files (see `ThreadIndex.repair`)."""
        return await self._db(functools.partial(self.index.repair, full=full))

    async def backfill(self) -> None:
        """Index every pending rollout, a chunk at a time (other index calls run in between).

        `release` cancels it, so a released store is not reopened behind its owner's back.
        """
        with trio.CancelScope() as scope:
            self._backfill_scopes.add(scope)
            try:
                while await self._db(self.index.backfill_step, BACKFILL_CHUNK):
                    await trio.lowlevel.checkpoint()
            finally:
                self._backfill_scopes.discard(scope)

    async def get(self, thread_id: str) -> ThreadRecord | None:
        """A thread by id; a rollout the index has not seen yet is indexed first."""
        return await self._db(self.index.find, thread_id)

    async def find_by_path(self, path: str) -> ThreadRecord | None:
        """The thread a rollout file holds (indexed, or read from a file outside the index)."""
        record = await self._db(self.index.find_path, path)
        if record is not None:
            return record
        scanned = await self._file(scan_file, path)
        if scanned is None or scanned.thread_id is None:
            return None
        indexed = await self.get(scanned.thread_id)
        if indexed is not None and indexed.rollout_path == path:
            return indexed
        return _record_from_scan(path, scanned)

    async def all_records(self) -> list[ThreadRecord]:
        """Every thread under CODEX_HOME, after a full reconcile with the files (for migrations)."""
        await self.repair(full=True)
        return await self._db(self.rows.all_records)

    async def list(self, query: ListQuery) -> ListPage:
        """A page of threads; the index reconciles what the page needs first."""
        try:
            return await self._db(self.index.list_threads, query)
        except ValueError:
            raise InvalidCursor(query.cursor or "") from None

    # ------------------------------------------------------------------ metadata
    async def set_name(self, record: ThreadRecord, name: str) -> ThreadRecord:
        """Append to `session_index.jsonl` (as the reference) and store the name in the index."""
        at = datetime.now(UTC)
        stamp = at.strftime("%Y-%m-%dT%H:%M:%S.") + f"{at.microsecond:06d}000Z"
        entry = orjson.dumps({"id": record.id, "thread_name": name, "updated_at": stamp}) + b"\n"
        await self._file(_append, str(self.home / SESSION_INDEX_FILE), entry, True)
        at_ms = int(at.timestamp() * 1000)
        await self._db(self.rows.set_name, record.id, name, at_ms)
        return attrs.evolve(record, name=name)

    async def update_git(self, thread_id: str, patch: GitInfoPatch) -> ThreadRecord:
        if await self._db(self.rows.update_git, thread_id, patch) is None:
            raise NoRollout(thread_id)
        record = await self._db(self.rows.get, thread_id)
        assert record is not None
        return record

    async def archive(self, thread_id: str) -> ThreadRecord:
        record = await self.get(thread_id)
        if record is None or record.archived or record.rollout_path is None:
            raise NoRollout(thread_id)
        source = record.rollout_path
        target = str(self.home / ARCHIVED_DIR / os.path.basename(source))
        if not await self._file(_move, source, target):
            raise NoRollout(thread_id)
        at = now_ms()
        await self._db(
            functools.partial(
                self.rows.set_location,
                thread_id,
                target,
                archived=True,
                archived_at_ms=at,
                updated_at_ms=None,
            )
        )
        return attrs.evolve(record, rollout_path=target, archived=True, archived_at_ms=at)

    async def unarchive(self, thread_id: str) -> ThreadRecord:
        record = await self.get(thread_id)
        if record is None or not record.archived or record.rollout_path is None:
            raise NoRollout(thread_id)
        name = os.path.basename(record.rollout_path)
        day = day_dir_of_filename(name)
        if day is None:
            raise NoRollout(thread_id)
        target = str(self.home / day / name)
        if not await self._file(_move, record.rollout_path, target):
            raise NoRollout(thread_id)
        at = now_ms()
        await self._file(_touch, target)
        await self._db(
            functools.partial(
                self.rows.set_location,
                thread_id,
                target,
                archived=False,
                archived_at_ms=None,
                updated_at_ms=at,
            )
        )
        refreshed = await self._db(self.rows.get, thread_id)
        assert refreshed is not None
        return refreshed

    async def delete(self, thread_id: str) -> None:
        record = await self.get(thread_id)
        if record is None or record.rollout_path is None:
            raise NoRollout(thread_id)
        await self._file(_remove, record.rollout_path)
        await self._db(self.rows.delete, thread_id)


# ---------------------------------------------------------------------------- blocking helpers
def _create(path: str, data: bytes) -> FileState:
    """A new rollout: create its folders, write the first line, fsync file and folder."""
    folder = os.path.dirname(path)
    os.makedirs(folder, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        os.write(fd, data)
        os.fsync(fd)
        st = os.fstat(fd)
    finally:
        os.close(fd)
    _fsync_dir(folder)
    return FileState(st.st_size, st.st_mtime_ns)


def _append(path: str, data: bytes, durable: bool) -> FileState:
    """One O_APPEND write of whole lines, so concurrent readers never see a torn line."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        view = memoryview(data)
        while view:
            written = os.write(fd, view)
            view = view[written:]
        if durable:
            os.fsync(fd)
        st = os.fstat(fd)
    finally:
        os.close(fd)
    return FileState(st.st_size, st.st_mtime_ns)


def _fsync_dir(folder: str) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _read_bytes(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def _read_lines(path: str) -> list[dict[str, Any]]:
    """A whole rollout, read and parsed in the worker (a long one takes a while to parse)."""
    return parse_lines(_read_bytes(path))


def _move(source: str, target: str) -> bool:
    """Move a rollout (archive/unarchive); False when the source is gone."""
    os.makedirs(os.path.dirname(target), exist_ok=True)
    try:
        os.replace(source, target)
    except FileNotFoundError:
        return False
    _fsync_dir(os.path.dirname(target))
    _fsync_dir(os.path.dirname(source))
    return True


def _touch(path: str) -> None:
    with contextlib.suppress(OSError):
        os.utime(path)


def _remove(path: str) -> None:
    try:
        os.remove(path)
    except FileNotFoundError:
        return
    _fsync_dir(os.path.dirname(path))


def _record_from_scan(path: str, scanned: ScannedRollout) -> ThreadRecord:
    try:
        mtime_ms = os.stat(path).st_mtime_ns // 1_000_000
    except OSError:
        mtime_ms = now_ms()
    created = scanned.created_at_ms if scanned.created_at_ms is not None else mtime_ms
    assert scanned.thread_id is not None
    return ThreadRecord(
        id=scanned.thread_id,
        rollout_path=path,
        created_at_ms=created,
        updated_at_ms=max(created, mtime_ms),
        cwd=scanned.cwd,
        model_provider=scanned.model_provider,
        model=scanned.model,
        source=scanned.source,
        cli_version=scanned.cli_version,
        originator=scanned.originator,
        preview=scanned.preview or "",
        has_user_event=scanned.preview is not None,
        forked_from_id=scanned.forked_from_id,
        archived=Path(path).parent.name == ARCHIVED_DIR,
        first_turn_id=scanned.first_turn_id,
        materialized=True,
    )
