#!/usr/bin/env python3
"""The two thread stores side by side: local (JSONL + SQLite) and PostgreSQL.

One in-process server per store (the same dispatch path a client uses, over memory streams),
each seeded with ``--threads`` threads of one text turn. Measured per store:

1. turn append: a turn's five rollout lines appended through the thread's lane, the last
   batch durable (fsync / synchronous commit), as the turn loop writes them: sequential on
   one thread, and ``--concurrency`` threads at once;
2. ``thread/list {limit: 25}``: median latency and requests per second;
3. ``thread/read {includeTurns: true}`` of a thread not loaded: median latency and rate.

PostgreSQL is a throwaway cluster from Debian's package (tests/pg_cluster.py) with its default
durability settings (fsync on), on loopback TCP. Prints a markdown table with the ratio
PostgreSQL / local for each figure.

Usage::

    python benchmarks/thread_store.py [--threads 300] [--appends 200] [--reads 200]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import trio

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT))

from pg_cluster import running_cluster  # noqa: E402

from codex_trio.api.threads import ThreadsApi  # noqa: E402
from codex_trio.client import ClientConnection  # noqa: E402
from codex_trio.ids import now_ms, uuid7  # noqa: E402
from codex_trio.server import AppServer, open_app_server  # noqa: E402
from codex_trio.settings import ServerSettings  # noqa: E402
from codex_trio.store import rollout  # noqa: E402
from codex_trio.transport.listen import NoListen  # noqa: E402

CONFIG = """\
model = "gpt-5.5"
model_provider = "mock"

[model_providers.mock]
name = "m"
base_url = "http://127.0.0.1:9/v1"
"""


def turn_lines(thread_id: str, text: str) -> list[dict[str, Any]]:
    turn = uuid7()
    now = now_ms()
    user = {"type": "userMessage", "id": uuid7(), "content": [{"type": "text", "text": text}]}
    return [
        rollout.task_started(turn, now // 1000),
        rollout.response_item(
            {"type": "message", "role": "user", "content": [{"type": "input_text", "text": text}]}
        ),
        rollout.item_completed(thread_id, turn, user, now, now),
        rollout.item_completed(
            thread_id, turn, {"type": "agentMessage", "id": f"m{turn}", "text": "ok"}, now, now
        ),
        rollout.task_complete(turn, "ok", now // 1000, now // 1000, 5),
    ]


async def append_turn(server: AppServer, thread_id: str, text: str) -> None:
    thread = await (await server.family(ThreadsApi)).manager.get_loaded(thread_id)
    thread.mark_user_content(text)
    lines = turn_lines(thread_id, text)
    # As the turn loop: items as they complete, the end of the turn durable.
    await thread.append_rollout(lines[:2])
    await thread.append_rollout(lines[2:4])
    await thread.append_rollout(lines[4:], durable=True)


async def timed(count: int, fn: Callable[[int], Awaitable[Any]]) -> list[float]:
    samples = []
    for n in range(count):
        start = time.perf_counter()
        await fn(n)
        samples.append(time.perf_counter() - start)
    return samples


async def measure(config: str, args: argparse.Namespace) -> dict[str, float]:
    home = Path(tempfile.mkdtemp(prefix="bench-store-"))
    (home / "config.toml").write_text(config)
    settings = ServerSettings(codex_home=home, listen=NoListen(), cwd=home)
    out: dict[str, float] = {}
    async with open_app_server(settings) as server:
        client: ClientConnection = await server.connect()
        await client.initialize("bench")
        ids = [(await client.call("thread/start", {}))["thread"]["id"] for _ in range(args.threads)]
        for n, thread_id in enumerate(ids):
            await append_turn(server, thread_id, f"seed {n}")

        target = ids[0]
        samples = await timed(args.appends, lambda n: append_turn(server, target, f"again {n}"))
        out["append_seq"] = len(samples) / sum(samples)

        start = time.perf_counter()
        per_task = args.appends // args.concurrency

        async def worker(thread_id: str) -> None:
            for n in range(per_task):
                await append_turn(server, thread_id, f"parallel {n}")

        async with trio.open_nursery() as nursery:
            for thread_id in ids[1 : 1 + args.concurrency]:
                nursery.start_soon(worker, thread_id)
        out["append_par"] = per_task * args.concurrency / (time.perf_counter() - start)

        samples = await timed(args.reads, lambda n: client.call("thread/list", {"limit": 25}))
        out["list_p50_ms"] = statistics.median(samples) * 1000
        out["list_rate"] = len(samples) / sum(samples)

        # Reads of threads that are not loaded: every one goes to the store.
        for thread_id in ids:
            await client.call("thread/unsubscribe", {"threadId": thread_id})
        await trio.sleep(0.1)
        reads = ids[args.concurrency + 1 :] or ids

        async def read(n: int) -> None:
            await client.call("thread/read", {"threadId": reads[n % len(reads)], "includeTurns": True})

        samples = await timed(args.reads, read)
        out["read_p50_ms"] = statistics.median(samples) * 1000
        out["read_rate"] = len(samples) / sum(samples)
        await client.aclose()
    return out


ROWS = [
    ("turn append, one thread (turns/s)", "append_seq"),
    ("turn append, concurrent threads (turns/s)", "append_par"),
    ("thread/list limit 25, p50 (ms)", "list_p50_ms"),
    ("thread/list limit 25 (req/s)", "list_rate"),
    ("thread/read includeTurns, p50 (ms)", "read_p50_ms"),
    ("thread/read includeTurns (req/s)", "read_rate"),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=300)
    parser.add_argument("--appends", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--reads", type=int, default=200)
    args = parser.parse_args()
    local = trio.run(measure, CONFIG + "thread_unload_delay_secs = 0\n", args)
    with running_cluster(fsync=True) as cluster:
        url = cluster.create_database()
        config = CONFIG + f'thread_unload_delay_secs = 0\n[thread_store]\nkind = "postgres"\nurl = "{url}"\n'
        postgres = trio.run(measure, config, args)
    print(
        f"{args.threads} threads, {args.appends} appends, {args.reads} reads, "
        f"concurrency {args.concurrency}\n"
    )
    print("| measure | local (JSONL + SQLite) | PostgreSQL | PostgreSQL / local |")
    print("|---|---:|---:|---:|")
    for label, key in ROWS:
        print(f"| {label} | {local[key]:.1f} | {postgres[key]:.1f} | {postgres[key] / local[key]:.2f} |")


if __name__ == "__main__":
    main()
