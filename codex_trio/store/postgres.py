"""The PostgreSQL ThreadStore: threads shared by several servers.

Tables (created by versioned migrations at `open`, under an advisory lock so servers starting
together do not race): `codex_threads` (one row per thread, the columns and indexes
`thread/list` needs), `codex_thread_items` (the rollout lines, append-only, keyed by
(thread id, sequence = the line's ordinal)) and `codex_thread_leases` (which server has a
thread loaded, until when).

Concurrency: psycopg 3's blocking API in worker threads. Its async API needs asyncio, so under
Trio every statement goes through `trio.to_thread.run_sync`, at most `pool_size` at once (a
`CapacityLimiter`), each on a connection of this store's small pool: a free list the event loop
owns, no background threads of its own. A worker call is never abandoned, so a cancelled
request never leaves a transaction half done; a connection that broke is dropped.

Leases: a thread is appended to only by the server holding its lease. Every append or
materialize takes or renews the lease in its own transaction (a server that lost its lease
cannot write), so a crashed server's threads free up `lease_ttl` seconds after its last
heartbeat. Expiry is judged by the database's clock, never a server's. A durable append
commits with `synchronous_commit = on` (the WAL is flushed before the call returns); other
appends commit with it off (flushed by the WAL writer within a fraction of a second).
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
from collections.abc import Callable, Sequence
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

import attrs
import orjson
import psycopg
import trio
from psycopg.rows import dict_row

from codex_trio.ids import now_ms
from codex_trio.store import (
    GitInfo,
    GitInfoPatch,
    InvalidCursor,
    LeaseHeld,
    ListPage,
    ListQuery,
    NoRollout,
    StoreError,
    ThreadRecord,
)
from codex_trio.store.listing import (
    COLUMNS,
    SORT_COLUMNS,
    WRITE_COLUMNS,
    SqlDialect,
    make_page,
    row_to_record,
    row_values,
    where_clause,
)
from codex_trio.store.rollout import full_line

log = logging.getLogger(__name__)

T = TypeVar("T")

#: seconds a lease lasts without a heartbeat; connections (= worker threads) at most.
DEFAULT_LEASE_TTL = 30.0
DEFAULT_POOL_SIZE = 4

POSTGRES = SqlDialect(
    placeholder="%s", contains=lambda haystack, needle: f"strpos({haystack}, {needle}) > 0", true=True
)
#: `pg_advisory_xact_lock` key held while migrations run ("codex-tr" in ASCII).
MIGRATION_LOCK = 0x636F6465782D7472

#: (version, statements). Append new versions; never edit an applied one.
MIGRATIONS: tuple[tuple[int, tuple[str, ...]], ...] = (
    (
        1,
        (
            """
            CREATE TABLE codex_threads (
                id TEXT PRIMARY KEY,
                rollout_path TEXT,
                created_at_ms BIGINT NOT NULL,
                updated_at_ms BIGINT NOT NULL,
                source TEXT NOT NULL,
                source_kind TEXT NOT NULL,
                model_provider TEXT NOT NULL,
                model TEXT,
                reasoning_effort TEXT,
                cwd TEXT NOT NULL,
                cli_version TEXT NOT NULL DEFAULT '',
                originator TEXT NOT NULL DEFAULT '',
                preview TEXT NOT NULL DEFAULT '',
                has_user_event BOOLEAN NOT NULL DEFAULT false,
                first_turn_id TEXT,
                name TEXT,
                name_updated_at_ms BIGINT,
                archived BOOLEAN NOT NULL DEFAULT false,
                archived_at_ms BIGINT,
                git_sha TEXT,
                git_branch TEXT,
                git_origin_url TEXT,
                forked_from_id TEXT,
                history_mode TEXT NOT NULL DEFAULT 'paginated',
                thread_source TEXT,
                agent_nickname TEXT,
                agent_role TEXT
            )
            """,
            "CREATE INDEX codex_threads_list_created "
            "ON codex_threads (archived, has_user_event, created_at_ms DESC, id DESC)",
            "CREATE INDEX codex_threads_list_updated "
            "ON codex_threads (archived, has_user_event, updated_at_ms DESC, id DESC)",
            "CREATE INDEX codex_threads_path ON codex_threads (rollout_path)",
            """
            CREATE TABLE codex_thread_items (
                thread_id TEXT NOT NULL,
                seq BIGINT NOT NULL,
                line TEXT NOT NULL,
                PRIMARY KEY (thread_id, seq)
            )
            """,
            """
            CREATE TABLE codex_thread_leases (
                thread_id TEXT PRIMARY KEY,
                owner TEXT NOT NULL,
                expires_at TIMESTAMPTZ NOT NULL
            )
            """,
            "CREATE INDEX codex_thread_leases_owner ON codex_thread_leases (owner)",
        ),
    ),
)
SCHEMA_VERSION = MIGRATIONS[-1][0]

_PLACEHOLDERS = ", ".join(["%s"] * len(WRITE_COLUMNS.split(",")))
_INSERT_THREAD = f"INSERT INTO codex_threads ({WRITE_COLUMNS}) VALUES ({_PLACEHOLDERS})"

_ACQUIRE = """
INSERT INTO codex_thread_leases (thread_id, owner, expires_at)
VALUES (%(id)s, %(owner)s, now() + make_interval(secs => %(ttl)s))
ON CONFLICT (thread_id) DO UPDATE SET owner = excluded.owner, expires_at = excluded.expires_at
WHERE codex_thread_leases.owner = excluded.owner OR codex_thread_leases.expires_at < now()
RETURNING owner
"""


def redacted_url(url: str) -> str:
    """The URL with any password replaced by `***`: what logs and errors show."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


def migrate(conn: psycopg.Connection[Any]) -> list[int]:
    """Apply the migrations this database lacks, in order; returns the versions applied."""
    applied: list[int] = []
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))
        conn.execute(
            "CREATE TABLE IF NOT EXISTS codex_schema_migrations ("
            "version INTEGER PRIMARY KEY, applied_at TIMESTAMPTZ NOT NULL DEFAULT now())"
        )
        done = {row[0] for row in conn.execute("SELECT version FROM codex_schema_migrations")}
        newer = [v for v in done if v > SCHEMA_VERSION]
        if newer:
            log.warning(
                "thread store schema is newer (%d) than this server's (%d)", max(newer), SCHEMA_VERSION
            )
        for version, statements in MIGRATIONS:
            if version in done:
                continue
            for statement in statements:
                conn.execute(statement)
            conn.execute("INSERT INTO codex_schema_migrations (version) VALUES (%s)", (version,))
            applied.append(version)
    return applied


@attrs.define
class _Pool:
    """Connections the event loop hands to one worker thread at a time."""

    url: str
    size: int
    limiter: trio.CapacityLimiter = attrs.field(init=False)
    idle: list[psycopg.Connection[Any]] = attrs.Factory(list)

    def __attrs_post_init__(self) -> None:
        self.limiter = trio.CapacityLimiter(self.size)

    def connect(self) -> psycopg.Connection[Any]:
        try:
            return psycopg.connect(
                self.url, autocommit=True, connect_timeout=10, application_name="codex-trio"
            )
        except psycopg.Error as exc:
            raise StoreError(f"cannot connect to {redacted_url(self.url)}: {exc}".strip()) from None

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """`fn(connection, *args)` in a worker thread, on a pooled connection."""
        async with self.limiter:
            conn = self.idle.pop() if self.idle else None
            try:
                if conn is None:
                    conn = await trio.to_thread.run_sync(self.connect)
                return await trio.to_thread.run_sync(fn, conn, *args)
            except psycopg.OperationalError as exc:
                raise StoreError(f"thread store: {exc}".strip()) from exc
            finally:
                if conn is not None:
                    if (
                        conn.closed
                        or conn.broken
                        or conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE
                    ):
                        with trio.CancelScope(shield=True):
                            await trio.to_thread.run_sync(conn.close)
                    else:
                        self.idle.append(conn)

    async def aclose(self) -> None:
        idle, self.idle = self.idle, []
        with trio.CancelScope(shield=True):
            for conn in idle:
                await trio.to_thread.run_sync(conn.close)


class PostgresThreadStore:
    """Threads in PostgreSQL: see the module docstring."""

    def __init__(
        self,
        url: str,
        *,
        lease_ttl: float = DEFAULT_LEASE_TTL,
        pool_size: int = DEFAULT_POOL_SIZE,
        owner: str | None = None,
    ) -> None:
        self._pool = _Pool(url, pool_size)
        self.lease_ttl = lease_ttl
        #: who this server is in the lease table: host, process and a per-start token.
        self.owner = owner or f"{socket.gethostname()}/{os.getpid()}/{secrets.token_hex(4)}"
        self._held: set[str] = set()

    @property
    def lease_interval(self) -> float | None:
        return self.lease_ttl / 3

    # ------------------------------------------------------------------ lifecycle
    async def open(self) -> None:
        applied = await self._pool.run(migrate)
        if applied:
            log.info("thread store migrated to schema version %d", applied[-1])

    async def aclose(self) -> None:
        """Give back every lease this server holds, then close the connections."""
        held, self._held = self._held, set()
        if held:
            with trio.CancelScope(shield=True):
                try:
                    await self._pool.run(self._release_all)
                except StoreError:
                    log.warning("releasing thread leases failed; they expire in %.0fs", self.lease_ttl)
        await self._pool.aclose()

    def _release_all(self, conn: psycopg.Connection[Any]) -> None:
        conn.execute("DELETE FROM codex_thread_leases WHERE owner = %s", (self.owner,))

    def new_rollout_path(self, created_at_ms: int, thread_id: str) -> str | None:
        return None

    async def backfill(self) -> None:
        return None

    # ------------------------------------------------------------------ leases
    def _take(self, conn: psycopg.Connection[Any], thread_id: str) -> None:
        """Take or renew the lease inside the caller's transaction; raises `LeaseHeld`."""
        row = conn.execute(_ACQUIRE, {"id": thread_id, "owner": self.owner, "ttl": self.lease_ttl}).fetchone()
        if row is not None:
            return
        held = conn.execute(
            "SELECT owner, extract(epoch FROM expires_at - now()) FROM codex_thread_leases "
            "WHERE thread_id = %s",
            (thread_id,),
        ).fetchone()
        owner, remaining = (held[0], float(held[1])) if held is not None else ("?", 0.0)
        raise LeaseHeld(thread_id, owner, max(remaining, 0.0))

    async def acquire_lease(self, thread_id: str) -> None:
        await self._pool.run(self._take, thread_id)
        self._held.add(thread_id)

    async def release_lease(self, thread_id: str) -> None:
        self._held.discard(thread_id)
        await self._pool.run(self._release, thread_id)

    def _release(self, conn: psycopg.Connection[Any], thread_id: str) -> None:
        conn.execute(
            "DELETE FROM codex_thread_leases WHERE thread_id = %s AND owner = %s", (thread_id, self.owner)
        )

    async def renew_leases(self) -> None:
        held = sorted(self._held)
        if held:
            lost = await self._pool.run(self._renew, held)
            for thread_id in lost:
                log.warning("lost the lease of thread %s to another server", thread_id)
                self._held.discard(thread_id)

    def _renew(self, conn: psycopg.Connection[Any], held: list[str]) -> set[str]:
        rows = conn.execute(
            "UPDATE codex_thread_leases SET expires_at = now() + make_interval(secs => %s) "
            "WHERE owner = %s AND thread_id = ANY(%s) RETURNING thread_id",
            (self.lease_ttl, self.owner, held),
        ).fetchall()
        return set(held) - {row[0] for row in rows}

    def _check_not_leased_elsewhere(self, conn: psycopg.Connection[Any], thread_id: str) -> None:
        row = conn.execute(
            "SELECT owner, extract(epoch FROM expires_at - now()) FROM codex_thread_leases "
            "WHERE thread_id = %s AND owner <> %s AND expires_at > now()",
            (thread_id, self.owner),
        ).fetchone()
        if row is not None:
            raise LeaseHeld(thread_id, row[0], float(row[1]))

    # ------------------------------------------------------------------ writing
    async def materialize(
        self, record: ThreadRecord, session_meta: dict[str, Any], ordinal: int = 0
    ) -> ThreadRecord:
        """Insert the thread's row and its `session_meta` line in one durable transaction."""
        stored = attrs.evolve(record, materialized=True)
        line = orjson.dumps(full_line(ordinal, session_meta, now_ms())).decode()
        await self._pool.run(self._materialize, stored, ordinal, line)
        self._held.add(record.id)
        return stored

    def _materialize(self, conn: psycopg.Connection[Any], record: ThreadRecord, seq: int, line: str) -> None:
        with conn.transaction():
            self._take(conn, record.id)
            conn.execute(_INSERT_THREAD + " ON CONFLICT (id) DO NOTHING", row_values(record))
            conn.execute(
                "INSERT INTO codex_thread_items (thread_id, seq, line) VALUES (%s, %s, %s)",
                (record.id, seq, line),
            )

    async def append(self, record: ThreadRecord, lines: Sequence[dict[str, Any]], *, durable: bool) -> None:
        """Insert the lines and fold `record`'s file-derived fields into its row, in one transaction."""
        rows = [(record.id, int(line["ordinal"]), orjson.dumps(line).decode()) for line in lines]
        await self._pool.run(self._append, record, rows, durable)

    def _append(
        self,
        conn: psycopg.Connection[Any],
        record: ThreadRecord,
        rows: Sequence[tuple[str, int, str]],
        durable: bool,
    ) -> None:
        with conn.transaction():
            if not durable:
                conn.execute("SET LOCAL synchronous_commit = off")
            self._take(conn, record.id)
            with conn.cursor() as cursor:
                cursor.executemany(
                    "INSERT INTO codex_thread_items (thread_id, seq, line) VALUES (%s, %s, %s)", rows
                )
            # Names and git info are never written here: another server may be updating them.
            conn.execute(
                "UPDATE codex_threads SET updated_at_ms = greatest(updated_at_ms, %s), "
                "model = coalesce(%s, model), reasoning_effort = coalesce(%s, reasoning_effort), "
                "preview = CASE WHEN preview = '' THEN %s ELSE preview END, "
                "has_user_event = has_user_event OR %s, first_turn_id = coalesce(first_turn_id, %s) "
                "WHERE id = %s",
                (
                    record.updated_at_ms,
                    record.model,
                    record.reasoning_effort,
                    record.preview,
                    record.has_user_event,
                    record.first_turn_id,
                    record.id,
                ),
            )

    async def read_lines(self, record: ThreadRecord) -> list[dict[str, Any]]:
        return await self._pool.run(self._read_lines, record.id)

    @staticmethod
    def _read_lines(conn: psycopg.Connection[Any], thread_id: str) -> list[dict[str, Any]]:
        rows = conn.execute(
            "SELECT line FROM codex_thread_items WHERE thread_id = %s ORDER BY seq", (thread_id,)
        ).fetchall()
        return [orjson.loads(row[0]) for row in rows]

    # ------------------------------------------------------------------ lookups
    async def get(self, thread_id: str) -> ThreadRecord | None:
        return await self._pool.run(self._get, "id", thread_id)

    async def find_by_path(self, path: str) -> ThreadRecord | None:
        """Threads moved here from a CODEX_HOME keep their original rollout path."""
        return await self._pool.run(self._get, "rollout_path", path)

    @staticmethod
    def _get(conn: psycopg.Connection[Any], column: str, value: str) -> ThreadRecord | None:
        with conn.cursor(row_factory=dict_row) as cursor:
            row = cursor.execute(
                f"SELECT {COLUMNS} FROM codex_threads WHERE {column} = %s", (value,)
            ).fetchone()
        return None if row is None else row_to_record(row)

    async def list(self, query: ListQuery) -> ListPage:
        try:
            return await self._pool.run(self._list, query)
        except ValueError:
            raise InvalidCursor(query.cursor or "") from None

    @staticmethod
    def _list(conn: psycopg.Connection[Any], query: ListQuery) -> ListPage:
        column = SORT_COLUMNS[query.sort_key]

        def lookup(thread_id: str) -> int | None:
            row = conn.execute(f"SELECT {column} FROM codex_threads WHERE id = %s", (thread_id,)).fetchone()
            return None if row is None else int(row[0])

        clause, args = where_clause(query, POSTGRES, lookup)
        sql = f"SELECT {COLUMNS}, {column} AS sort_key FROM codex_threads {clause} LIMIT %s"
        with conn.cursor(row_factory=dict_row) as cursor:
            rows = cursor.execute(sql, [*args, query.limit + 1]).fetchall()
        return make_page(query, [(row_to_record(r), int(r["sort_key"])) for r in rows])

    # ------------------------------------------------------------------ metadata
    async def set_name(self, record: ThreadRecord, name: str) -> ThreadRecord:
        await self._pool.run(self._set_name, record.id, name, now_ms())
        return attrs.evolve(record, name=name)

    @staticmethod
    def _set_name(conn: psycopg.Connection[Any], thread_id: str, name: str, at_ms: int) -> None:
        conn.execute(
            "UPDATE codex_threads SET name = %s, name_updated_at_ms = %s WHERE id = %s "
            "AND (name_updated_at_ms IS NULL OR name_updated_at_ms <= %s)",
            (name, at_ms, thread_id, at_ms),
        )

    async def update_git(self, thread_id: str, patch: GitInfoPatch) -> ThreadRecord:
        record = await self._pool.run(self._update_git, thread_id, patch)
        if record is None:
            raise NoRollout(thread_id)
        return record

    @staticmethod
    def _update_git(
        conn: psycopg.Connection[Any], thread_id: str, patch: GitInfoPatch
    ) -> ThreadRecord | None:
        """Read-modify-write under a row lock: patches from several servers never lose a field."""
        with conn.transaction():
            row = conn.execute(
                "SELECT git_sha, git_branch, git_origin_url FROM codex_threads WHERE id = %s FOR UPDATE",
                (thread_id,),
            ).fetchone()
            if row is None:
                return None
            updated = patch.apply(GitInfo(row[0], row[1], row[2]))
            conn.execute(
                "UPDATE codex_threads SET git_sha = %s, git_branch = %s, git_origin_url = %s WHERE id = %s",
                (updated.sha, updated.branch, updated.origin_url, thread_id),
            )
        return PostgresThreadStore._get(conn, "id", thread_id)

    async def archive(self, thread_id: str) -> ThreadRecord:
        return await self._pool.run(self._set_archived, thread_id, True, now_ms())

    async def unarchive(self, thread_id: str) -> ThreadRecord:
        return await self._pool.run(self._set_archived, thread_id, False, now_ms())

    def _set_archived(
        self, conn: psycopg.Connection[Any], thread_id: str, archived: bool, at_ms: int
    ) -> ThreadRecord:
        with conn.transaction():
            if archived:
                self._check_not_leased_elsewhere(conn, thread_id)
                sql = (
                    "UPDATE codex_threads SET archived = true, archived_at_ms = %s "
                    "WHERE id = %s AND NOT archived"
                )
            else:
                sql = (
                    "UPDATE codex_threads SET archived = false, archived_at_ms = NULL, "
                    "updated_at_ms = greatest(updated_at_ms, %s) WHERE id = %s AND archived"
                )
            if conn.execute(sql + " RETURNING id", (at_ms, thread_id)).fetchone() is None:
                raise NoRollout(thread_id)
        record = self._get(conn, "id", thread_id)
        assert record is not None
        return record

    async def delete(self, thread_id: str) -> None:
        await self._pool.run(self._delete, thread_id)
        self._held.discard(thread_id)

    def _delete(self, conn: psycopg.Connection[Any], thread_id: str) -> None:
        with conn.transaction():
            self._check_not_leased_elsewhere(conn, thread_id)
            if (
                conn.execute("DELETE FROM codex_threads WHERE id = %s RETURNING id", (thread_id,)).fetchone()
                is None
            ):
                raise NoRollout(thread_id)
            conn.execute("DELETE FROM codex_thread_items WHERE thread_id = %s", (thread_id,))
            conn.execute("DELETE FROM codex_thread_leases WHERE thread_id = %s", (thread_id,))

    # ------------------------------------------------------------------ migration from a CODEX_HOME
    async def import_thread(self, record: ThreadRecord, lines: Sequence[dict[str, Any]]) -> int:
        """Copy one thread in (idempotent: rows and lines already here are kept); returns lines added."""
        rows = [(record.id, seq, orjson.dumps(line).decode()) for seq, line in enumerate(lines)]
        return await self._pool.run(self._import, record, rows)

    @staticmethod
    def _import(
        conn: psycopg.Connection[Any], record: ThreadRecord, rows: Sequence[tuple[str, int, str]]
    ) -> int:
        with conn.transaction():
            conn.execute(_INSERT_THREAD + " ON CONFLICT (id) DO NOTHING", row_values(record))
            have = conn.execute(
                "SELECT count(*) FROM codex_thread_items WHERE thread_id = %s", (record.id,)
            ).fetchone()
            if have is not None and have[0] >= len(rows):
                return 0
            with conn.cursor() as cursor:
                cursor.executemany(
                    "INSERT INTO codex_thread_items (thread_id, seq, line) VALUES (%s, %s, %s) "
                    "ON CONFLICT (thread_id, seq) DO NOTHING",
                    rows,
                )
            return len(rows) - (have[0] if have is not None else 0)
