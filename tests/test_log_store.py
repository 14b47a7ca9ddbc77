"""The SQLite log store: batched off the loop, bounded, retained, flushed and closed at shutdown."""

from __future__ import annotations

import logging
import sqlite3
import time
from pathlib import Path
from typing import Any

import attrs
import trio
import trio.testing

from codex_trio import log_store
from codex_trio.log_store import LogStore
from codex_trio.server import open_app_server
from codex_trio.settings import ServerSettings

log = logging.getLogger("codex_trio.tests.log_store")


def rows(codex_home: Path, where: str = "1=1") -> list[tuple[Any, ...]]:
    with sqlite3.connect(codex_home / log_store.FILENAME) as db:
        return db.execute(
            f"SELECT level, target, feedback_log_body, thread_id, process_uuid FROM logs WHERE {where} "
            "ORDER BY id"
        ).fetchall()


async def test_records_are_written_in_batches_with_thread_and_run_ids(tmp_path: Path) -> None:
    store = LogStore(tmp_path)
    async with trio.open_nursery() as nursery:
        store.attach()
        nursery.start_soon(store.run)
        log.warning("plain %d", 1)
        with log_store.thread_scope("thread-a"):
            log.error("in a thread")
        await trio.to_thread.run_sync(lambda: log.warning("from a worker thread"))
        await store.flush()
        found = rows(tmp_path, "target = 'codex_trio.tests.log_store'")
        store.stop()
    store.detach()
    await store.close()
    assert found == [
        ("WARN", "codex_trio.tests.log_store", "plain 1", None, store.process_uuid),
        ("ERROR", "codex_trio.tests.log_store", "in a thread", "thread-a", store.process_uuid),
        ("WARN", "codex_trio.tests.log_store", "from a worker thread", None, store.process_uuid),
    ]


async def test_a_full_queue_drops_and_counts(tmp_path: Path) -> None:
    store = LogStore(tmp_path, capacity=5)
    store.attach()
    try:
        for i in range(8):
            log.warning("record %d", i)
    finally:
        store.detach()
    assert store.dropped == 3
    await store.open()
    await store.close()
    assert [r[2] for r in rows(tmp_path)] == [f"record {i}" for i in range(5)]


async def test_retention_by_age_and_size(tmp_path: Path) -> None:
    store = LogStore(tmp_path, max_bytes=10_000, max_age=3600)
    await store.open()
    now = int(time.time())
    old = (now - 7200, 0, "INFO", "t", "old", "m", "f", 1, None, store.process_uuid, 100)
    fresh = [
        (now, i, "INFO", "t", f"fresh {i}", "m", "f", 1, None, store.process_uuid, 1000) for i in range(20)
    ]
    for row in [old, *fresh]:
        store.put(row)
    await store.flush()
    await trio.to_thread.run_sync(store._retain_sync)
    kept = [r[2] for r in rows(tmp_path)]
    await store.close()
    assert "old" not in kept
    assert kept == [f"fresh {i}" for i in range(10, 20)]


async def test_feedback_rows_are_the_threads_and_this_runs_threadless_newest_first(tmp_path: Path) -> None:
    store = LogStore(tmp_path)
    await store.open()
    now = int(time.time())
    for i, (thread, run) in enumerate(
        [
            (None, store.process_uuid),
            ("t1", "other"),
            ("t2", store.process_uuid),
            (None, "other"),
            ("t1", "x"),
        ]
    ):
        store.put((now, i, "INFO", "t", f"r{i}", "m", "f", 1, thread, run, 10))
    picked = await store.rows_for_feedback("t1", budget=1000)
    assert [r[4] for r in picked] == ["r4", "r1", "r0"]
    assert [r[4] for r in await store.rows_for_feedback("t1", budget=25)] == ["r4", "r1"]
    assert [r[4] for r in await store.rows_for_feedback(None, budget=1000)] == ["r0"]
    await store.close()


async def test_the_server_flushes_its_last_records_at_shutdown(server_settings: ServerSettings) -> None:
    server_settings = attrs.evolve(server_settings, log_store=True)
    async with open_app_server(server_settings) as server:
        client = await server.connect()
        await client.initialize("logs")
        await client.aclose()
        assert server.log_store is not None
        log.error("the very last record")
    assert ("ERROR", "codex_trio.tests.log_store", "the very last record") in [
        r[:3] for r in rows(server_settings.codex_home)
    ]


async def test_stop_ends_the_writer_even_while_it_waits_for_a_batch(
    tmp_path: Path, mock_clock: trio.testing.MockClock
) -> None:
    # Time does not move by itself here: the writer's batching sleep never ends on its own.
    store = LogStore(tmp_path)
    store.attach()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(store.run)
        await store._opened.wait()
        log.warning("queued while the writer waits")
        await trio.testing.wait_all_tasks_blocked()
        store.stop()
    store.detach()
    await store.close()
    assert "queued while the writer waits" in [r[2] for r in rows(tmp_path)]
