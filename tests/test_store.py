"""The local thread store: rollout files, the SQLite index, repair and metadata writes."""

from __future__ import annotations

import os
import sqlite3
import uuid
from pathlib import Path
from typing import Any

import orjson
import pytest
import trio

from codex_trio.store import GitInfoPatch, ListQuery, NoRollout, ThreadRecord, history, rollout
from codex_trio.store.local import LocalThreadStore
from codex_trio.store.rows import INDEX_FILE

BASE_MS = 1_795_600_000_000


def reference_rollout(
    home: Path, thread_id: str, created_ms: int, text: str, *, provider: str = "mock", cwd: str = "/ws"
) -> Path:
    """A rollout laid out exactly like the reference writes one (a single text turn)."""
    path = home / rollout.rollout_relpath(created_ms, thread_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    turn = str(uuid.uuid4())
    records: list[dict[str, Any]] = [
        rollout.session_meta(
            thread_id=thread_id,
            created_at_ms=created_ms,
            cwd=cwd,
            originator="codex_vscode",
            model_provider=provider,
            base_instructions="You are Codex." * 100,
            model="gpt-5.5",
        ),
        rollout.task_started(turn, created_ms // 1000),
        rollout.response_item(
            {"type": "message", "role": "user", "content": [{"type": "input_text", "text": text}]}
        ),
        {"type": "turn_context", "payload": {"turn_id": turn, "cwd": cwd, "model": "gpt-5.5"}},
        rollout.item_completed(
            thread_id,
            turn,
            {"type": "userMessage", "id": str(uuid.uuid4()), "content": [{"type": "text", "text": text}]},
            created_ms,
            created_ms,
        ),
        rollout.item_completed(
            thread_id, turn, {"type": "agentMessage", "id": "msg_1", "text": "ok"}, None, None
        ),
        rollout.task_complete(turn, "ok", created_ms // 1000, created_ms // 1000, 10),
    ]
    lines = [rollout.full_line(n, r, created_ms + n) for n, r in enumerate(records)]
    path.write_bytes(rollout.encode_lines(lines))
    stamp = (created_ms + 1000) / 1000
    os.utime(path, (stamp, stamp))
    return path


def append_bytes(path: Path, data: bytes) -> None:
    """What another process appending to a rollout looks like."""
    with open(path, "ab") as f:
        f.write(data)


def exists(path: Path) -> bool:
    return path.exists()


def read_lines(path: Path) -> list[bytes]:
    return path.read_bytes().splitlines()


def query(**kwargs: Any) -> ListQuery:
    return ListQuery(**{"limit": 100, **kwargs})


async def open_store(home: Path) -> LocalThreadStore:
    store = LocalThreadStore(home)
    await store.open()
    return store


async def test_a_fresh_index_is_backfilled_from_rollout_files(tmp_path: Path) -> None:
    with trio.fail_after(10):
        ids = [str(uuid.uuid4()) for _ in range(5)]
        for n, thread_id in enumerate(ids):
            reference_rollout(tmp_path, thread_id, BASE_MS + n * 1000, f"question {n}")
        store = await open_store(tmp_path)
        page = await store.list(query())
        assert [r.id for r in page.records] == ids[::-1]
        assert page.records[0].preview == "question 4"
        assert page.records[0].model == "gpt-5.5"
        assert page.records[0].created_at_ms == BASE_MS + 4000
        await store.aclose()


async def test_a_deleted_index_is_rebuilt_and_names_come_back_from_the_session_index(tmp_path: Path) -> None:
    with trio.fail_after(10):
        thread_id = str(uuid.uuid4())
        reference_rollout(tmp_path, thread_id, BASE_MS, "hello")
        store = await open_store(tmp_path)
        record = await store.get(thread_id)
        assert record is not None
        await store.set_name(record, "My name")
        await store.aclose()
        for suffix in ("", "-wal", "-shm"):
            (tmp_path / (INDEX_FILE + suffix)).unlink(missing_ok=True)

        store = await open_store(tmp_path)
        page = await store.list(query())
        assert [(r.id, r.name, r.preview) for r in page.records] == [(thread_id, "My name", "hello")]
        assert (await store.list(query(search="My"))).records[0].id == thread_id
        await store.aclose()


async def test_repair_inserts_new_files_without_clobbering_newer_metadata(tmp_path: Path) -> None:
    with trio.fail_after(10):
        first = str(uuid.uuid4())
        path = reference_rollout(tmp_path, first, BASE_MS, "first")
        store = await open_store(tmp_path)
        assert [r.id for r in (await store.list(query())).records] == [first]
        await store.update_git(first, GitInfoPatch(sha="abc", branch="main", origin_url="https://x/r.git"))
        record = await store.get(first)
        assert record is not None
        await store.set_name(record, "kept")

        # Another process appends to the thread and writes a second thread meanwhile.
        append_bytes(
            path, rollout.encode_lines([rollout.full_line(7, rollout.task_started("t2", 1), BASE_MS)])
        )
        later = os.stat(path).st_mtime + 10
        os.utime(path, (later, later))
        second = str(uuid.uuid4())
        reference_rollout(tmp_path, second, BASE_MS + 60_000, "second")
        await store.repair(full=True)

        records = {r.id: r for r in (await store.list(query())).records}
        assert set(records) == {first, second}
        kept = records[first]
        assert (kept.name, kept.git.sha, kept.git.branch, kept.preview) == ("kept", "abc", "main", "first")
        assert kept.updated_at_ms >= int(later * 1000) - 1
        await store.aclose()


async def test_a_torn_last_line_is_ignored(tmp_path: Path) -> None:
    with trio.fail_after(10):
        thread_id = str(uuid.uuid4())
        path = reference_rollout(tmp_path, thread_id, BASE_MS, "torn")
        append_bytes(path, b'{"timestamp":"2026-01-01T00:00:00.000Z","ordinal":7,"type":"event_ms')
        store = await open_store(tmp_path)
        record = await store.get(thread_id)
        assert record is not None
        lines = await store.read_lines(record)
        assert [line["ordinal"] for line in lines] == list(range(7))
        turns = history.build_turns(lines)
        assert [t.status for t in turns] == ["completed"]
        await store.aclose()


async def test_archive_moves_the_rollout_and_unarchive_puts_it_back(tmp_path: Path) -> None:
    with trio.fail_after(10):
        thread_id = str(uuid.uuid4())
        path = reference_rollout(tmp_path, thread_id, BASE_MS, "archive me")
        store = await open_store(tmp_path)
        archived = await store.archive(thread_id)
        assert archived.rollout_path == str(tmp_path / "archived_sessions" / path.name)
        assert not exists(path) and exists(Path(archived.rollout_path))
        assert (await store.list(query())).records == []
        assert [r.id for r in (await store.list(query(archived=True))).records] == [thread_id]
        with pytest.raises(NoRollout):
            await store.archive(thread_id)

        restored = await store.unarchive(thread_id)
        assert restored.rollout_path == str(path) and exists(path)
        assert not restored.archived
        assert [r.id for r in (await store.list(query())).records] == [thread_id]
        with pytest.raises(NoRollout):
            await store.unarchive(thread_id)
        await store.aclose()


async def test_delete_removes_the_file_and_the_row(tmp_path: Path) -> None:
    with trio.fail_after(10):
        thread_id = str(uuid.uuid4())
        path = reference_rollout(tmp_path, thread_id, BASE_MS, "delete me")
        store = await open_store(tmp_path)
        await store.delete(thread_id)
        assert not exists(path)
        assert await store.get(thread_id) is None
        assert (await store.list(query())).records == []
        with pytest.raises(NoRollout):
            await store.delete(thread_id)
        await store.aclose()


async def test_a_file_deleted_by_another_process_leaves_the_list(tmp_path: Path) -> None:
    with trio.fail_after(10):
        gone, kept = str(uuid.uuid4()), str(uuid.uuid4())
        path = reference_rollout(tmp_path, gone, BASE_MS, "gone")
        reference_rollout(tmp_path, kept, BASE_MS + 1000, "kept")
        store = await open_store(tmp_path)
        assert len((await store.list(query())).records) == 2
        path.unlink()
        # A day folder's listing changed: the next list notices without a full rescan.
        folder = path.parent
        later = os.stat(folder).st_mtime + 5
        os.utime(folder, (later, later))
        assert [r.id for r in (await store.list(query())).records] == [kept]
        await store.aclose()


async def test_concurrent_git_patches_to_one_thread_all_land(tmp_path: Path) -> None:
    with trio.fail_after(10):
        thread_id = str(uuid.uuid4())
        reference_rollout(tmp_path, thread_id, BASE_MS, "git")
        store = await open_store(tmp_path)
        await store.get(thread_id)
        async with trio.open_nursery() as nursery:
            for n in range(20):
                nursery.start_soon(store.update_git, thread_id, GitInfoPatch(branch=f"b{n}"))
                nursery.start_soon(store.update_git, thread_id, GitInfoPatch(sha=f"s{n}"))
            nursery.start_soon(store.update_git, thread_id, GitInfoPatch(origin_url="https://o"))
        record = await store.get(thread_id)
        assert record is not None
        assert record.git.branch is not None and record.git.branch.startswith("b")
        assert record.git.sha is not None and record.git.sha.startswith("s")
        assert record.git.origin_url == "https://o"
        await store.aclose()


async def test_list_pages_through_threads_created_in_the_same_second(tmp_path: Path) -> None:
    with trio.fail_after(10):
        store = await open_store(tmp_path)
        ids = []
        for n in range(7):
            thread_id = str(uuid.UUID(int=(n + 1) << 64))
            ids.append(thread_id)
            reference_rollout(tmp_path, thread_id, BASE_MS + n * 10, f"q{n}")
        seen: list[str] = []
        cursor = None
        for _ in range(10):
            page = await store.list(query(limit=2, cursor=cursor))
            seen += [r.id for r in page.records]
            cursor = page.next_cursor
            if cursor is None:
                break
        assert seen == ids[::-1]
        asc = await store.list(query(direction="asc"))
        assert [r.id for r in asc.records] == ids
        await store.aclose()


async def test_materialize_and_append_write_reference_lines(tmp_path: Path) -> None:
    with trio.fail_after(10):
        store = await open_store(tmp_path)
        thread_id = str(uuid.uuid4())
        path = str(tmp_path / rollout.rollout_relpath(BASE_MS, thread_id))
        record = ThreadRecord(
            id=thread_id,
            rollout_path=path,
            created_at_ms=BASE_MS,
            updated_at_ms=BASE_MS,
            cwd="/ws",
            model_provider="p",
        )
        meta = rollout.session_meta(
            thread_id=thread_id, created_at_ms=BASE_MS, cwd="/ws", originator="o", model_provider="p"
        )
        record = await store.materialize(record, meta)
        await store.append(
            record, [rollout.full_line(1, rollout.task_started("t", 1), BASE_MS)], durable=True
        )
        raw = read_lines(Path(path))
        first = orjson.loads(raw[0])
        assert list(first) == ["timestamp", "ordinal", "type", "payload"]
        assert first["type"] == "session_meta" and first["payload"]["id"] == thread_id
        assert orjson.loads(raw[1])["payload"]["type"] == "task_started"
        assert b" " not in raw[1], "lines are compact JSON, as the reference writes them"
        with sqlite3.connect(tmp_path / INDEX_FILE) as db:
            assert db.execute("SELECT count(*) FROM threads").fetchone()[0] == 1
        await store.aclose()


async def test_lazy_pages_after_a_cold_start_match_a_fully_built_index(tmp_path: Path) -> None:
    with trio.fail_after(20):
        day = 86_400_000
        for n in range(120):
            # five day folders, newest last; a few threads per hour
            reference_rollout(
                tmp_path, str(uuid.uuid4()), BASE_MS + (n // 24) * day + (n % 24) * 3_600_000, f"q{n}"
            )
        store = await open_store(tmp_path)
        lazy: list[str] = []
        cursor = None
        for _ in range(20):
            page = await store.list(query(limit=7, cursor=cursor))
            lazy += [r.id for r in page.records]
            cursor = page.next_cursor
            if cursor is None:
                break
        await store.aclose()
        for suffix in ("", "-wal", "-shm"):
            (tmp_path / (INDEX_FILE + suffix)).unlink(missing_ok=True)
        store = await open_store(tmp_path)
        await store.repair(full=True)
        full = [r.id for r in (await store.list(query(limit=200))).records]
        assert lazy == full and len(lazy) == 120
        await store.aclose()


async def test_a_cold_first_page_reads_only_the_newest_rollouts(tmp_path: Path) -> None:
    with trio.fail_after(20):
        day = 86_400_000
        for n in range(60):
            reference_rollout(tmp_path, str(uuid.uuid4()), BASE_MS + (n // 20) * day + n * 60_000, f"q{n}")
        store = await open_store(tmp_path)
        page = await store.list(query(limit=5))
        assert [r.preview for r in page.records] == [f"q{n}" for n in range(59, 54, -1)]
        with sqlite3.connect(tmp_path / INDEX_FILE) as db:
            indexed = db.execute("SELECT count(*) FROM threads").fetchone()[0]
        assert indexed < 60, "older day folders are not read for the first page"
        await store.backfill()
        with sqlite3.connect(tmp_path / INDEX_FILE) as db:
            assert db.execute("SELECT count(*) FROM threads").fetchone()[0] == 60
        await store.aclose()
