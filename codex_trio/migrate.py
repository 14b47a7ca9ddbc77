"""`python -m codex_trio migrate-threads --to postgresql://…`: copy a CODEX_HOME's threads into PostgreSQL.

Idempotent and resumable: each thread is copied in its own transaction; a thread already in the
database keeps its row, and only the rollout lines it lacks are added (lines are keyed by
(thread id, position)). Run it again after an interruption, or after the local server wrote
more, and it picks up where it left off. Threads keep their rollout path, so
`getConversationSummary` by path still finds them. The password may come from PGPASSWORD;
the URL is never printed with it.

Exit status: 0 when every thread was copied, 1 when the database cannot be reached or a
thread failed (the others are still copied; the report names the failures).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import attrs
import trio

from codex_trio.settings import default_codex_home
from codex_trio.store import StoreError
from codex_trio.store.local import LocalThreadStore


@attrs.define
class MigrationReport:
    threads: int = 0
    copied: int = 0
    lines: int = 0
    failed: list[str] = attrs.Factory(list)


async def migrate_threads(codex_home: Path, url: str, *, pool_size: int = 2) -> MigrationReport:
    """Copy every thread of `codex_home` into the database at `url` (schema created if needed)."""
    from codex_trio.store.postgres import PostgresThreadStore

    local = LocalThreadStore(codex_home)
    target = PostgresThreadStore(url, pool_size=pool_size)
    report = MigrationReport()
    await local.open()
    try:
        await target.open()
        records = await local.all_records()
        report.threads = len(records)
        for record in records:
            try:
                lines = await local.read_lines(record)
                added = await target.import_thread(record, lines)
            except StoreError as exc:
                report.failed.append(f"{record.id}: {exc}")
                continue
            if added:
                report.copied += 1
                report.lines += added
    finally:
        await target.aclose()
        await local.aclose()
    return report


def main(argv: Sequence[str]) -> int:
    from codex_trio.store.postgres import redacted_url

    parser = argparse.ArgumentParser(
        prog="codex-trio migrate-threads", description="Copy a CODEX_HOME's threads into PostgreSQL."
    )
    parser.add_argument("--to", required=True, metavar="URL", help="postgresql://user@host:port/dbname")
    parser.add_argument("--codex-home", type=Path, default=None, help="default: $CODEX_HOME or ~/.codex")
    args = parser.parse_args(argv)
    home = args.codex_home or default_codex_home()
    try:
        report = trio.run(migrate_threads, home, args.to)
    except StoreError as exc:
        sys.stderr.write(f"Error: {exc}\n")
        return 1
    sys.stdout.write(
        f"{report.threads} threads in {home}: {report.copied} copied ({report.lines} lines) "
        f"to {redacted_url(args.to)}, {report.threads - report.copied - len(report.failed)} already there\n"
    )
    for failure in report.failed:
        sys.stderr.write(f"failed: {failure}\n")
    return 1 if report.failed else 0
