#!/usr/bin/env python3
"""Thread-store benchmarks: `thread/list` and search over many stored threads, `thread/start`.

Generates ``--threads`` rollout files in the reference's on-disk format (one text turn each,
with the ~21 KB ``base_instructions`` the reference writes into ``session_meta``) once, then
hard-links the same files into a fresh CODEX_HOME for each server, so both servers read the
very same bytes. Per server:

1. cold list: spawn, ``initialize``, then the first ``thread/list {limit: 25}`` (the server
   has no index yet: this includes building it from the rollout files); then the first
   search (``searchTerm`` matching one thread), which needs every thread's preview;
2. warm list: median of ``--repeat`` further ``thread/list {limit: 25}``;
3. search: median of ``--repeat`` ``thread/list {searchTerm, limit: 25}`` matching one thread;
4. restart list: a second server on the same CODEX_HOME (index present), first list;
5. ``thread/start {}`` latency (median and p90 of ``--starts``), on the restarted server and
   on a server with an empty CODEX_HOME.

Prints a markdown table with ratios ours / reference. Uses the process helpers of `servers.py`.

Usage::

    python benchmarks/threads.py --server "python -m codex_trio" \\
        --reference "/work/scratch/ref/node_modules/.bin/codex app-server"
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import trio

sys.path.insert(0, str(Path(__file__).resolve().parent))

from report import log, percentile, write_file
from servers import Sandbox, ServerSpec, add_server_options, server_specs
from stdio_client import Connection, initialize, running_server

LIST_LIMIT = 25
PHASE_TIMEOUT = 600.0
#: the size of the prompt the reference stores in every session_meta line.
INSTRUCTIONS = ("You are Codex, a coding agent. " * 700)[:21_000]


# --------------------------------------------------------------------------- data set
def iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"


def uuid7(ms: int, n: int) -> str:
    value = (ms << 80) | (0x7 << 76) | ((n & 0xFFF) << 64) | (0b10 << 62) | (n * 2654435761 & ((1 << 62) - 1))
    return str(uuid.UUID(int=value))


def rollout_lines(thread_id: str, created_ms: int, cwd: str, text: str) -> bytes:
    """One reference-format rollout: session_meta and a completed text turn."""
    turn = uuid7(created_ms + 5, 1)
    user_item = {
        "type": "UserMessage",
        "id": uuid7(created_ms + 6, 2),
        "content": [{"type": "text", "text": text, "text_elements": []}],
    }
    records: list[tuple[str, dict[str, Any]]] = [
        (
            "session_meta",
            {
                "account_scoped": True,
                "session_id": thread_id,
                "id": thread_id,
                "timestamp": iso(created_ms),
                "cwd": cwd,
                "runtime_workspace_roots": [cwd],
                "originator": "bench",
                "cli_version": "0.169.0",
                "source": "vscode",
                "model_provider": "mock",
                "base_instructions": {
                    "text": INSTRUCTIONS,
                    "provenance": {"type": "model", "model": "gpt-5.5"},
                },
                "history_mode": "paginated",
                "context_window": {"window_id": uuid7(created_ms + 1, 3)},
            },
        ),
        (
            "event_msg",
            {
                "type": "task_started",
                "turn_id": turn,
                "root_turn_id": turn,
                "started_at": created_ms // 1000,
                "model_context_window": 258400,
                "collaboration_mode_kind": "default",
            },
        ),
        (
            "turn_context",
            {
                "turn_id": turn,
                "root_turn_id": turn,
                "cwd": cwd,
                "approval_policy": "on-request",
                "model": "gpt-5.5",
                "summary": "none",
                "sandbox_policy": {"type": "read-only"},
            },
        ),
        (
            "response_item",
            {"type": "message", "role": "user", "content": [{"type": "input_text", "text": text}]},
        ),
        (
            "event_msg",
            {
                "type": "item_completed",
                "thread_id": thread_id,
                "turn_id": turn,
                "item": user_item,
                "started_at_ms": created_ms + 6,
                "completed_at_ms": created_ms + 6,
            },
        ),
        (
            "event_msg",
            {
                "type": "item_completed",
                "thread_id": thread_id,
                "turn_id": turn,
                "item": {
                    "type": "AgentMessage",
                    "id": f"msg_{n_hex(created_ms)}",
                    "content": [{"type": "Text", "text": "ok"}],
                },
                "started_at_ms": created_ms + 9,
                "completed_at_ms": created_ms + 9,
            },
        ),
        (
            "response_item",
            {
                "type": "message",
                "status": "completed",
                "id": f"msg_{n_hex(created_ms)}",
                "role": "assistant",
                "content": [{"type": "output_text", "text": "ok", "annotations": []}],
            },
        ),
        (
            "event_msg",
            {
                "type": "task_complete",
                "root_turn_id": turn,
                "turn_id": turn,
                "last_agent_message": "ok",
                "started_at": created_ms // 1000,
                "completed_at": created_ms // 1000,
                "duration_ms": 10,
            },
        ),
    ]
    out = []
    for ordinal, (kind, payload) in enumerate(records):
        line = {"timestamp": iso(created_ms + ordinal), "ordinal": ordinal, "type": kind, "payload": payload}
        out.append(json.dumps(line, separators=(",", ":")).encode())
    return b"\n".join(out) + b"\n"


def n_hex(value: int) -> str:
    return f"{value:020x}"


def generate(root: Path, count: int, cwd: str) -> None:
    """`count` rollouts spread over recent days, newest last; needle-N is in thread N's preview."""
    now_ms = int(time.time() * 1000) - 3600_000
    for n in range(count):
        created = now_ms - (count - n) * 37_000
        thread_id = uuid7(created, n)
        local = datetime.fromtimestamp(created / 1000).astimezone()
        folder = root / "sessions" / f"{local:%Y}" / f"{local:%m}" / f"{local:%d}"
        folder.mkdir(parents=True, exist_ok=True)
        name = f"rollout-{local:%Y-%m-%dT%H-%M-%S}-{thread_id}.jsonl"
        text = f"benchmark thread needle-{n}. please look at module {n % 97} and report"
        path = folder / name
        path.write_bytes(rollout_lines(thread_id, created, cwd, text))
        stamp = (created + 50) / 1000
        os.utime(path, (stamp, stamp))


def link_tree(source: Path, target: Path) -> None:
    """Hard-link every file of `source` under `target` (the rollouts are only read)."""
    for folder, _, files in os.walk(source):
        rel = Path(folder).relative_to(source)
        (target / rel).mkdir(parents=True, exist_ok=True)
        for name in files:
            os.link(Path(folder) / name, target / rel / name)


# --------------------------------------------------------------------------- servers
@asynccontextmanager
async def server_on(spec: ServerSpec, sandbox: Sandbox) -> AsyncIterator[Connection]:
    """Run `spec` on an existing sandbox (kept afterwards, so a restart sees the same home)."""
    sandbox.stderr_path = sandbox.root / f"stderr-{time.monotonic_ns()}.log"
    async with running_server(spec, sandbox=sandbox) as conn:
        yield conn


async def timed(conn: Connection, method: str, params: Any) -> tuple[float, dict[str, Any]]:
    start = time.perf_counter()
    reply = await conn.request(method, params)
    elapsed = time.perf_counter() - start
    if "result" not in reply:
        raise RuntimeError(f"{method} failed: {reply.get('error')}")
    return elapsed, reply["result"]


async def time_starts(conn: Connection, count: int) -> list[float]:
    """Sorted durations of `count` sequential `thread/start {}` calls."""
    starts = []
    for _ in range(count):
        elapsed, _ = await timed(conn, "thread/start", {})
        starts.append(elapsed)
    starts.sort()
    return starts


@dataclass
class ThreadResult:
    label: str
    cold_list: float | None = None
    cold_count: int = 0
    first_search: float | None = None
    warm_list: float | None = None
    search: float | None = None
    search_hits: int = 0
    restart_list: float | None = None
    restart_count: int = 0
    start_p50: float | None = None
    start_p90: float | None = None
    empty_start_p50: float | None = None
    empty_start_p90: float | None = None
    samples: dict[str, list[float]] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)


async def measure(spec: ServerSpec, template: Path, opts: argparse.Namespace) -> ThreadResult:
    result = ThreadResult(spec.label)
    sandbox = Sandbox()
    try:
        await trio.to_thread.run_sync(link_tree, template, sandbox.codex_home)
        with trio.fail_after(PHASE_TIMEOUT):
            async with server_on(spec, sandbox) as conn:
                await initialize(conn)
                result.cold_list, page = await timed(conn, "thread/list", {"limit": LIST_LIMIT})
                result.cold_count = len(page["data"])
                term = f"needle-{opts.threads // 2}."
                result.first_search, page = await timed(
                    conn, "thread/list", {"limit": LIST_LIMIT, "searchTerm": term}
                )
                warm = []
                for _ in range(opts.repeat):
                    elapsed, page = await timed(conn, "thread/list", {"limit": LIST_LIMIT})
                    warm.append(elapsed)
                result.warm_list = statistics.median(warm)
                searches = []
                for _ in range(opts.repeat):
                    elapsed, page = await timed(
                        conn, "thread/list", {"limit": LIST_LIMIT, "searchTerm": term}
                    )
                    searches.append(elapsed)
                result.search_hits = len(page["data"])
                result.search = statistics.median(searches)
                result.samples.update(warm_list=warm, search=searches)
            async with server_on(spec, sandbox) as conn:
                await initialize(conn)
                result.restart_list, page = await timed(conn, "thread/list", {"limit": LIST_LIMIT})
                result.restart_count = len(page["data"])
                starts = await time_starts(conn, opts.starts)
                result.start_p50 = statistics.median(starts)
                result.start_p90 = percentile(starts, 0.9)
                result.samples["thread_start"] = starts
        empty = Sandbox()
        try:
            async with server_on(spec, empty) as conn:
                await initialize(conn)
                starts = await time_starts(conn, opts.starts)
                result.empty_start_p50 = statistics.median(starts)
                result.empty_start_p90 = percentile(starts, 0.9)
                result.samples["thread_start_empty_home"] = starts
        finally:
            empty.remove()
    except Exception as exc:  # a failed phase is reported in the table, the other server still runs
        result.errors.append(f"{type(exc).__name__}: {exc}")
        log(f"{spec.label}: {exc!r}\n{sandbox.stderr_tail()}")
    finally:
        sandbox.remove()
    return result


# --------------------------------------------------------------------------- report
def ms(value: float | None) -> str:
    return "n/a" if value is None else f"{value * 1000:.1f} ms"


def ratio(ours: float | None, ref: float | None) -> str:
    if ours is None or ref is None or ref == 0:
        return "n/a"
    return f"{ours / ref:.2f}×"  # noqa: RUF001


def markdown(results: list[ThreadResult], opts: argparse.Namespace) -> str:
    ours = results[0]
    ref = results[1] if len(results) > 1 else None
    rows = [
        ("first `thread/list` after start (builds the index)", "cold_list", "cold_count"),
        ("first search after start (one hit)", "first_search", None),
        ("`thread/list` first page, warm (median)", "warm_list", None),
        ("`thread/list` search, one hit (median)", "search", "search_hits"),
        ("first `thread/list` after a restart", "restart_list", "restart_count"),
        ("`thread/start` p50 (10,000 stored threads)", "start_p50", None),
        ("`thread/start` p90 (10,000 stored threads)", "start_p90", None),
        ("`thread/start` p50 (empty CODEX_HOME)", "empty_start_p50", None),
        ("`thread/start` p90 (empty CODEX_HOME)", "empty_start_p90", None),
    ]
    lines = [
        f"{opts.threads} stored threads, page size {LIST_LIMIT}, {opts.repeat} repeats, {opts.starts} starts",
        "",
        "| measurement | ours | reference | ours / reference |",
        "|---|---|---|---|",
    ]
    for title, attr, count in rows:
        mine = getattr(ours, attr)
        theirs = getattr(ref, attr) if ref else None
        cell_ours = ms(mine) + (f" ({getattr(ours, count)} rows)" if count else "")
        cell_ref = ms(theirs) + (f" ({getattr(ref, count)} rows)" if count and ref else "")
        lines.append(f"| {title} | {cell_ours} | {cell_ref} | {ratio(mine, theirs)} |")
    for result in results:
        for error in result.errors:
            lines.append(f"\n{result.label} failed: {error}")
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    add_server_options(p, native_help="run the native codex binary")
    p.add_argument("--threads", type=int, default=10_000, help="stored threads to generate")
    p.add_argument("--repeat", type=int, default=20, help="warm list / search repetitions")
    p.add_argument("--starts", type=int, default=50, help="thread/start calls to time")
    p.add_argument("--json", type=Path, help="write raw results here")
    return p.parse_args(argv)


async def run(specs: list[ServerSpec], opts: argparse.Namespace) -> list[ThreadResult]:
    root = Path(tempfile.mkdtemp(prefix="codex-bench-threads-"))
    try:
        template = root / "template"
        log(f"generating {opts.threads} rollouts…")
        await trio.to_thread.run_sync(generate, template, opts.threads, str(root / "cwd"))
        results = []
        for spec in specs:
            log(f"measuring {spec.label}…")
            results.append(await measure(spec, template, opts))
        return results
    finally:
        shutil.rmtree(root, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    specs = server_specs(args)
    results = trio.run(run, specs, args)
    print(markdown(results, args))
    if args.json:
        write_file(args.json, json.dumps([asdict(r) for r in results], indent=1))
    return 1 if any(r.errors for r in results) else 0


if __name__ == "__main__":
    raise SystemExit(main())
