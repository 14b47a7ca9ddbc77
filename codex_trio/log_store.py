"""The SQLite log store: every log record of the server, for feedback bundles.

Like the reference's `logs` database: one row per record with its level, target, message,
the thread it concerns (when known) and this process's run id. Records are queued by a
logging handler (any thread may log) and written in batches by one task of the server
through `trio.to_thread`, so logging never waits on the disk. The queue is bounded: when it
is full a record is dropped and counted (`dropped`), never buffered without limit.
Retention keeps the database under `max_bytes` (by the rows' estimated sizes) and drops rows
older than `max_age`; it runs when the store opens and every `RETENTION_EVERY` rows.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import threading
import time
import uuid
from collections import deque
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import trio

if TYPE_CHECKING:
    import sqlite3

log = logging.getLogger(__name__)

FILENAME = "logs_codex_trio_1.sqlite"
#: records held in memory waiting for the writer; more are dropped and counted.
QUEUE_CAPACITY = 10_000
#: rows written in one transaction.
BATCH_ROWS = 1_000
#: seconds the writer waits after the first queued record, to gather a batch.
BATCH_DELAY = 0.05
MAX_BYTES = 64 * 1024 * 1024
MAX_AGE = 7 * 24 * 3600.0
RETENTION_EVERY = 10_000

SCHEMA = """
CREATE TABLE IF NOT EXISTS logs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    ts INTEGER NOT NULL,
    ts_nanos INTEGER NOT NULL,
    level TEXT NOT NULL,
    target TEXT NOT NULL,
    feedback_log_body TEXT,
    module_path TEXT,
    file TEXT,
    line INTEGER,
    thread_id TEXT,
    process_uuid TEXT,
    estimated_bytes INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS idx_logs_ts ON logs(ts DESC, ts_nanos DESC, id DESC);
CREATE INDEX IF NOT EXISTS idx_logs_thread_id_ts ON logs(thread_id, ts DESC, ts_nanos DESC, id DESC);
CREATE INDEX IF NOT EXISTS idx_logs_process_uuid_threadless_ts
    ON logs(process_uuid, ts DESC, ts_nanos DESC, id DESC) WHERE thread_id IS NULL;
"""

#: the thread (conversation) the current task works for; set by the turn that runs.
current_thread_id: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "codex_trio_log_thread_id", default=None
)

_LEVELS = {"DEBUG": "DEBUG", "INFO": "INFO", "WARNING": "WARN", "ERROR": "ERROR", "CRITICAL": "ERROR"}

Row = tuple[int, int, str, str, str, str, str, int, "str | None", str, int]


@contextlib.contextmanager
def thread_scope(thread_id: str) -> Iterator[None]:
    """Records logged in the block (and tasks it starts) belong to `thread_id`."""
    token = current_thread_id.set(thread_id)
    try:
        yield
    finally:
        current_thread_id.reset(token)


class _Handler(logging.Handler):
    def __init__(self, store: LogStore) -> None:
        super().__init__(logging.DEBUG)
        self.store = store

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = record.getMessage()
            if record.exc_info:
                message = f"{message}\n{logging.Formatter().formatException(record.exc_info)}"
        except Exception:
            message = str(record.msg)
        thread_id = getattr(record, "thread_id", None) or current_thread_id.get()
        seconds = int(record.created)
        self.store.put(
            (
                seconds,
                int((record.created - seconds) * 1e9),
                _LEVELS.get(record.levelname, record.levelname),
                record.name,
                message,
                record.module,
                record.pathname,
                record.lineno,
                thread_id,
                self.store.process_uuid,
                len(message) + len(record.name) + 64,
            )
        )


class LogStore:
    """Owned by the server: `run` is its writer task; `close` flushes and closes the database."""

    def __init__(
        self,
        codex_home: Path,
        *,
        capacity: int = QUEUE_CAPACITY,
        max_bytes: int = MAX_BYTES,
        max_age: float = MAX_AGE,
    ) -> None:
        self.path = codex_home / FILENAME
        self.process_uuid = str(uuid.uuid4())
        self.capacity = capacity
        self.max_bytes = max_bytes
        self.max_age = max_age
        #: records dropped because the queue was full.
        self.dropped = 0
        self.handler = _Handler(self)
        self._queue: deque[Row] = deque()
        self._lock = threading.Lock()
        self._write_lock = trio.Lock()
        self._db: sqlite3.Connection | None = None
        self._token: trio.lowlevel.TrioToken | None = None
        self._wake = trio.Event()
        self._wake_pending = False
        self._since_retention = 0
        self._closed = False
        self._stopping = False
        self._run_scope = trio.CancelScope()
        self._opened = trio.Event()

    def attach(self) -> None:
        """Start taking records (of the root logger) from now on; call from the Trio thread."""
        self._token = trio.lowlevel.current_trio_token()
        logging.getLogger().addHandler(self.handler)

    def detach(self) -> None:
        logging.getLogger().removeHandler(self.handler)

    # ------------------------------------------------------------------ producers (any thread)
    def put(self, row: Row) -> None:
        with self._lock:
            if len(self._queue) >= self.capacity or self._closed:
                self.dropped += 1
                return
            self._queue.append(row)
            if self._wake_pending or self._token is None:
                return
            self._wake_pending = True
        with contextlib.suppress(trio.RunFinishedError):
            self._token.run_sync_soon(self._wake.set)

    # ------------------------------------------------------------------ the writer
    async def open(self) -> None:
        try:
            self._db = await trio.to_thread.run_sync(self._open_sync)
            await trio.to_thread.run_sync(self._retain_sync)
        finally:
            self._opened.set()

    def _open_sync(self) -> sqlite3.Connection:
        import sqlite3

        db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        db.executescript(SCHEMA)
        return db

    def stop(self) -> None:
        """End `run` now, even mid-wait (records still queued are written by `close`)."""
        self._stopping = True
        self._run_scope.cancel()

    async def run(self) -> None:
        """Open the database, then write queued records in batches until `stop`."""
        try:
            await self.open()
        except Exception as exc:
            log.warning("log store %s unavailable: %s", self.path, exc)
            with self._lock:
                self._closed = True
                self._queue.clear()
            return
        with self._run_scope:
            while not self._stopping:
                await self._wake.wait()
                await trio.sleep(BATCH_DELAY)
                with self._lock:
                    self._wake = trio.Event()
                    self._wake_pending = False
                # rows taken from the queue are written even if `stop` comes meanwhile
                with trio.CancelScope(shield=True):
                    await self.flush()

    async def flush(self) -> None:
        """Write everything queued so far (a feedback bundle then sees the latest records)."""
        await self._opened.wait()
        async with self._write_lock:
            while True:
                with self._lock:
                    batch = [self._queue.popleft() for _ in range(min(BATCH_ROWS, len(self._queue)))]
                if not batch or self._db is None:
                    return
                await trio.to_thread.run_sync(self._insert_sync, batch)

    def _insert_sync(self, batch: list[Row]) -> None:
        assert self._db is not None
        with self._db:
            self._db.executemany(
                "INSERT INTO logs (ts, ts_nanos, level, target, feedback_log_body, module_path, file, line, "
                "thread_id, process_uuid, estimated_bytes) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                batch,
            )
        self._since_retention += len(batch)
        if self._since_retention >= RETENTION_EVERY:
            self._retain_sync()

    def _retain_sync(self) -> None:
        """Drop rows past `max_age`, then the oldest until the estimated size fits `max_bytes`."""
        assert self._db is not None
        self._since_retention = 0
        with self._db:
            self._db.execute("DELETE FROM logs WHERE ts < ?", (int(time.time() - self.max_age),))
            (total,) = self._db.execute("SELECT COALESCE(SUM(estimated_bytes), 0) FROM logs").fetchone()
            if total > self.max_bytes:
                self._db.execute(
                    "DELETE FROM logs WHERE id <= (SELECT id FROM (SELECT id, SUM(estimated_bytes) "
                    "OVER (ORDER BY id) AS running FROM logs) WHERE running >= ? ORDER BY id LIMIT 1)",
                    (total - self.max_bytes,),
                )

    async def close(self) -> None:
        """Write what is queued and close the database (shielded by the caller)."""
        with self._lock:
            self._closed = True
        if not self._opened.is_set():
            return
        await self.flush()
        db, self._db = self._db, None
        if db is not None:
            await trio.to_thread.run_sync(db.close)

    # ------------------------------------------------------------------ readers
    async def rows_for_feedback(self, thread_id: str | None, budget: int) -> list[tuple[Any, ...]]:
        """The thread's rows plus this process's threadless rows, newest first, within `budget`
        estimated bytes."""
        await self.flush()
        if self._db is None:
            return []
        return await trio.to_thread.run_sync(self._feedback_sync, thread_id, budget)

    def _feedback_sync(self, thread_id: str | None, budget: int) -> list[tuple[Any, ...]]:
        assert self._db is not None
        cursor = self._db.execute(
            "SELECT ts, ts_nanos, level, target, feedback_log_body, thread_id, estimated_bytes FROM logs "
            "WHERE (thread_id = ? AND ? IS NOT NULL) OR (thread_id IS NULL AND process_uuid = ?) "
            "ORDER BY ts DESC, ts_nanos DESC, id DESC",
            (thread_id, thread_id, self.process_uuid),
        )
        rows = []
        used = 0
        for row in cursor:
            used += row[6]
            if used > budget:
                break
            rows.append(row)
        return rows
