"""Device-key bindings in the server's SQLite state: key id -> (accountUserId, clientId).

The file is ours (`codex_trio_state_1.sqlite` under CODEX_HOME), separate from the thread index
and from the reference's `state_5.sqlite`. Each call opens the database in a worker thread,
runs one statement in a transaction and closes it: bindings are written once per key and read
once per signature, so there is no handle to own between calls.
"""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import trio

from codex_trio.device_keys.store import Binding, DeviceKeyError

STATE_FILE = "codex_trio_state_1.sqlite"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS device_key_bindings (
    key_id TEXT PRIMARY KEY,
    account_user_id TEXT NOT NULL,
    client_id TEXT NOT NULL,
    created_at_ms INTEGER NOT NULL
)
"""


class SqliteBindingStore:
    """`BindingStore` over `$CODEX_HOME/codex_trio_state_1.sqlite`."""

    def __init__(self, codex_home: Path) -> None:
        self.path = codex_home / STATE_FILE
        #: one statement at a time: SQLite writers would otherwise wait on each other's locks.
        self._lane = trio.CapacityLimiter(1)

    async def get(self, key_id: str) -> Binding | None:
        return await trio.to_thread.run_sync(self._get, key_id, limiter=self._lane)

    async def put(self, key_id: str, binding: Binding) -> None:
        await trio.to_thread.run_sync(self._put, key_id, binding, limiter=self._lane)

    def _connect(self) -> sqlite3.Connection:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(self.path, timeout=5.0)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute(_SCHEMA)
        return db

    def _get(self, key_id: str) -> Binding | None:
        try:
            db = self._connect()
            try:
                row = db.execute(
                    "SELECT account_user_id, client_id FROM device_key_bindings WHERE key_id = ?", (key_id,)
                ).fetchone()
            finally:
                db.close()
        except sqlite3.Error as exc:
            raise DeviceKeyError.platform(f"sqlite state db: {exc}") from None
        return Binding(row[0], row[1]) if row is not None else None

    def _put(self, key_id: str, binding: Binding) -> None:
        try:
            db = self._connect()
            try:
                with db:
                    db.execute(
                        "INSERT INTO device_key_bindings (key_id, account_user_id, client_id, created_at_ms)"
                        " VALUES (?, ?, ?, ?) ON CONFLICT(key_id) DO UPDATE SET"
                        " account_user_id = excluded.account_user_id, client_id = excluded.client_id",
                        (key_id, binding.account_user_id, binding.client_id, int(time.time() * 1000)),
                    )
            finally:
                db.close()
        except sqlite3.Error as exc:
            raise DeviceKeyError.platform(f"sqlite state db: {exc}") from None
