"""The PostgreSQL store on a real database: migrations, leases, durability, the migration command."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import attrs
import psycopg
import pytest
import trio

from codex_trio import migrate
from codex_trio.config.thread_store import ThreadStoreConfig, ThreadStoreConfigError, thread_store_config
from codex_trio.server import open_app_server
from codex_trio.settings import ServerSettings
from codex_trio.store import LeaseHeld, ListQuery, ThreadRecord, rollout
from codex_trio.store.local import LocalThreadStore
from codex_trio.store.postgres import SCHEMA_VERSION, PostgresThreadStore, redacted_url
from codex_trio.transport.listen import NoListen

BASE_MS = 1_795_600_000_000


def record_of(thread_id: str, created_ms: int = BASE_MS, path: str | None = None) -> ThreadRecord:
    return ThreadRecord(
        id=thread_id,
        rollout_path=path,
        created_at_ms=created_ms,
        updated_at_ms=created_ms,
        cwd="/ws",
        model_provider="p",
    )


def meta_of(thread_id: str) -> dict[str, Any]:
    return rollout.session_meta(
        thread_id=thread_id, created_at_ms=BASE_MS, cwd="/ws", originator="o", model_provider="p"
    )


def user_turn(ordinal: int, text: str) -> list[dict[str, Any]]:
    item = {
        "type": "userMessage",
        "id": "u",
        "content": [{"type": "text", "text": text, "text_elements": []}],
    }
    lines = [rollout.task_started("t", 1), rollout.item_completed("x", "t", item, BASE_MS, BASE_MS)]
    return [rollout.full_line(ordinal + n, line, BASE_MS) for n, line in enumerate(lines)]


async def written_thread(store: PostgresThreadStore, text: str) -> ThreadRecord:
    thread_id = str(uuid.uuid4())
    record = await store.materialize(record_of(thread_id), meta_of(thread_id))
    updated = attrs.evolve(record, preview=text, has_user_event=True)
    await store.append(updated, user_turn(1, text), durable=True)
    return updated


async def test_migrations_apply_once_even_when_servers_start_together(pg_url: str) -> None:
    with trio.fail_after(20):
        stores = [PostgresThreadStore(pg_url) for _ in range(3)]
        async with trio.open_nursery() as nursery:
            for store in stores:
                nursery.start_soon(store.open)
        for store in stores:
            await store.aclose()
        with psycopg.connect(pg_url) as conn:
            versions = [row[0] for row in conn.execute("SELECT version FROM codex_schema_migrations")]
        assert versions == [SCHEMA_VERSION]


async def test_appends_are_committed_when_they_return(pg_url: str) -> None:
    with trio.fail_after(20):
        store = PostgresThreadStore(pg_url)
        await store.open()
        record = await written_thread(store, "hello")
        await store.append(record, user_turn(3, "second"), durable=False)
        # Another connection (another server) sees every line at once, in order.
        with psycopg.connect(pg_url) as conn:
            seqs = [row[0] for row in conn.execute(
                "SELECT seq FROM codex_thread_items WHERE thread_id = %s ORDER BY seq", (record.id,)
            )]  # fmt: skip
        assert seqs == [0, 1, 2, 3, 4]
        lines = await store.read_lines(record)
        assert [line["ordinal"] for line in lines] == seqs and lines[0]["type"] == "session_meta"
        page = await store.list(ListQuery(limit=10))
        assert [r.id for r in page.records] == [record.id] and page.records[0].preview == "hello"
        await store.aclose()


async def test_a_lease_is_exclusive_fenced_and_expires(pg_url: str) -> None:
    with trio.fail_after(20):
        a = PostgresThreadStore(pg_url, lease_ttl=0.5, owner="server-a")
        b = PostgresThreadStore(pg_url, lease_ttl=0.5, owner="server-b")
        await a.open()
        await b.open()
        record = await written_thread(a, "leased")
        with pytest.raises(LeaseHeld) as held:
            await b.acquire_lease(record.id)
        assert held.value.owner == "server-a"
        with pytest.raises(LeaseHeld):
            await b.append(record, user_turn(3, "not b's"), durable=True)
        with pytest.raises(LeaseHeld):
            await b.delete(record.id)
        await a.release_lease(record.id)
        await b.acquire_lease(record.id)
        # A lost it: its writes are refused (fencing), so it cannot interleave with B's.
        with pytest.raises(LeaseHeld):
            await a.append(record, user_turn(3, "stale a"), durable=True)
        # B stops renewing (as if killed): after the TTL, by the database's clock, A may take it.
        await trio.sleep(0.6)
        await a.acquire_lease(record.id)
        await a.renew_leases()
        await b.renew_leases()
        assert len(await a.read_lines(record)) == 3
        await a.aclose()
        await b.aclose()


async def test_migration_copies_a_codex_home_idempotently_and_resumably(
    pg_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with trio.fail_after(30):
        local = LocalThreadStore(tmp_path)
        await local.open()
        ids = []
        for n in range(3):
            thread_id = str(uuid.uuid4())
            path = local.new_rollout_path(BASE_MS + n * 1000, thread_id)
            record = await local.materialize(
                record_of(thread_id, BASE_MS + n * 1000, path), meta_of(thread_id)
            )
            updated = attrs.evolve(record, preview=f"q{n}", has_user_event=True)
            await local.append(updated, user_turn(1, f"q{n}"), durable=True)
            ids.append(thread_id)
        await local.set_name(updated, "named")
        await local.aclose()

        first = await migrate.migrate_threads(tmp_path, pg_url)
        assert (first.threads, first.copied, first.lines, first.failed) == (3, 3, 9, [])
        again = await migrate.migrate_threads(tmp_path, pg_url)
        assert (again.copied, again.lines) == (0, 0)

        # The local server wrote more to one thread: a re-run adds just those lines.
        local = LocalThreadStore(tmp_path)
        extra = await local.get(ids[0])
        assert extra is not None
        await local.append(extra, user_turn(3, "more"), durable=True)
        await local.aclose()
        resumed = await migrate.migrate_threads(tmp_path, pg_url)
        assert (resumed.copied, resumed.lines) == (1, 2)

        store = PostgresThreadStore(pg_url)
        await store.open()
        page = await store.list(ListQuery(limit=10))
        assert [r.id for r in page.records] == ids[::-1]
        assert page.records[0].name == "named"
        moved = await store.find_by_path(str(page.records[0].rollout_path))
        assert moved is not None and moved.id == ids[2]
        first_thread = await store.get(ids[0])
        assert first_thread is not None and len(await store.read_lines(first_thread)) == 5
        await store.aclose()

        with_password = pg_url.replace("codex@", "codex:s3cret@")
        assert (
            await trio.to_thread.run_sync(
                migrate.main, ["--to", with_password, "--codex-home", str(tmp_path)]
            )
            == 0
        )
        out = capsys.readouterr().out
        assert "3 threads" in out and "s3cret" not in out and "codex:***@" in out


def test_thread_store_config_is_validated_and_urls_redacted() -> None:
    assert thread_store_config({}) == ThreadStoreConfig()
    assert thread_store_config({"thread_store": {"kind": "local"}}).kind == "local"
    config = thread_store_config(
        {"thread_store": {"kind": "postgres", "url": "postgresql://u:pw@h:5432/d", "lease_ttl_secs": 5}}
    )
    assert config.kind == "postgres" and config.lease_ttl_secs == 5.0 and "pw" not in repr(config)
    bad = [
        {"kind": "mysql"},
        {"kind": "postgres"},
        {"kind": "postgres", "url": "http://x"},
        {"kind": "postgres", "url": "postgresql://h/d", "lease_ttl_secs": 0},
        {"kind": "postgres", "url": "postgresql://h/d", "pool_size": True},
    ]
    for table in bad:
        with pytest.raises(ThreadStoreConfigError):
            thread_store_config({"thread_store": table})
    assert redacted_url("postgresql://u:pw@h:5432/d") == "postgresql://u:***@h:5432/d"
    assert redacted_url("postgresql://u@h/d") == "postgresql://u@h/d"


async def test_an_unreachable_database_is_a_clear_error_without_the_password(
    codex_home: Path, tmp_path: Path
) -> None:
    with trio.fail_after(30):
        with trio.socket.socket() as sock:
            await sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        (codex_home / "config.toml").write_text(
            'model_provider = "mock"\n[model_providers.mock]\nname = "m"\nbase_url = "http://127.0.0.1:9/v1"\n'
            f'[thread_store]\nkind = "postgres"\nurl = "postgresql://u:topsecret@127.0.0.1:{port}/d"\n'
        )
        settings = ServerSettings(codex_home=codex_home, listen=NoListen(), cwd=tmp_path)
        async with open_app_server(settings) as server:
            client = await server.connect()
            await client.initialize("tests")
            response = await client.request("thread/start", {})
            error = response["error"]
            assert error["code"] == -32600 and error["message"].startswith("thread store unavailable: ")
            assert "topsecret" not in error["message"] and "u:***@" in error["message"]
            await client.aclose()
