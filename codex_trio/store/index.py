"""Keeping the SQLite rows in step with the rollout files: reconcile, backfill, lookups.

Synchronous, like `codex_trio.store.rows` (whose `ThreadRows` it drives): `LocalThreadStore`
calls it only from worker threads, one call at a time. The SQL lives there; the filesystem
walking (folders, file heads, `session_index.jsonl`) lives here.

The index is a cache of the rollout files plus the metadata that lives only here (git info)
or in `session_index.jsonl` (names). `repair` reconciles it with the files: rows are inserted
if absent and file-derived fields only ever move forward; names and git info are never
overwritten by a scan.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from datetime import datetime, timedelta

import orjson

from codex_trio.store import ListPage, ListQuery, ThreadRecord
from codex_trio.store.rollout import (
    ARCHIVED_DIR,
    SESSIONS_DIR,
    ScannedRollout,
    parse_iso_ms,
    scan_lines,
)
from codex_trio.store.rows import ThreadRows


class ThreadIndex:
    """The reconcile machinery over the rows. Every method runs in a worker thread, one at a time."""

    def __init__(self, rows: ThreadRows) -> None:
        self.rows = rows
        self.home = rows.home
        #: changed folders not listed yet -> their mtime when noticed.
        self._unscanned: dict[str, int] = {}
        #: rollout files still to reconcile, newest first, as (file name, path).
        self._pending: list[tuple[str, str]] = []
        #: pending file -> its folder; folder -> [mtime when queued, files still pending].
        self._pending_folder: dict[str, str] = {}
        self._folders: dict[str, list[int]] = {}
        self._names_offset = 0

    # ------------------------------------------------------------------ listing
    def list_threads(self, query: ListQuery) -> ListPage:
        """One page, after reconciling just enough rollout files to make it exact (see `reconcile`)."""
        self.refresh()
        if self._pending or self._unscanned:
            if query.sort_key in ("created_at", "section_position") and query.direction == "desc":
                self._reconcile_for_page(query)
            else:
                self.reconcile_all()
        return self.rows.page(query)

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
        recorded = {} if full else self.rows.reconciled_dirs()
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
        self.rows.dir_done(folder, mtime)
        self._folders.pop(folder, None)

    def _drop_vanished(self, folder: str, on_disk: set[str]) -> None:
        """Rows whose file left `folder` and exists nowhere else: the thread is gone."""
        for thread_id, path in self.rows.paths_under(folder):
            if os.path.dirname(path) == folder and path not in on_disk and not os.path.exists(path):
                self.rows.delete(thread_id)

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
                rows = self.rows.rows(query, query.limit + 1)
                if len(rows) > query.limit and rows[-1][0].created_at_ms > newest_file + NAME_TIME_SLACK_MS:
                    return
            self._reconcile(chunk)
            chunk = min(chunk * 2, 4096)

    def _reconcile(self, count: int) -> int:
        """Reconcile the `count` newest pending files; returns how many rows changed."""
        batch = [path for _, path in self._pending[:count]]
        del self._pending[:count]
        if not batch:
            return 0
        known = self.rows.known_files(batch)
        changed = 0
        with self.rows.transaction():
            for path in batch:
                changed += self._reconcile_file(path, known.get(path))
                folder = self._pending_folder.pop(path, None)
                entry = self._folders.get(folder) if folder is not None else None
                if folder is not None and entry is not None:
                    entry[1] -= 1
                    if entry[1] <= 0:
                        self._folder_done(folder, entry[0])
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
            self.rows.file_moved_on(prior[2], st)
            return 1
        scanned = scan_file(path)
        if scanned is None or scanned.thread_id is None:
            return 0
        return self.rows.merge_scanned(path, st, scanned)

    def _reconcile_first(self, wanted: list[tuple[str, str]]) -> None:
        """Move `wanted` pending entries to the front and reconcile them now."""
        if not wanted:
            return
        chosen = set(wanted)
        self._pending = wanted + [entry for entry in self._pending if entry not in chosen]
        self._reconcile(len(wanted))

    def find(self, thread_id: str) -> ThreadRecord | None:
        """A thread by id, reconciling its rollout first if it is new or pending."""
        record = self.rows.get(thread_id)
        if record is None:
            self.refresh()
            self._scan_all()
            suffix = f"-{thread_id}.jsonl"
            wanted = [entry for entry in self._pending if entry[0].endswith(suffix)]
            if wanted:
                self._reconcile_first(wanted)
                record = self.rows.get(thread_id)
        return record

    def find_path(self, path: str) -> ThreadRecord | None:
        """The thread indexed for a rollout path, reconciling that file first if pending."""
        record = self.rows.get_by_path(path)
        if record is None:
            self.refresh()
            self._scan_all()
            self._reconcile_first([entry for entry in self._pending if entry[1] == path])
            record = self.rows.get_by_path(path)
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
            self.rows.set_name(thread_id, name, at_ms)
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
