#!/usr/bin/env python3
"""Turn streaming latency: from the model's SSE delta to the client's `item/agentMessage/delta`.

For each server command (ours, and optionally the reference) the script starts the server on
stdio with a fresh CODEX_HOME whose provider points at a scripted Responses server running in
this process (tests/responses_server.py), runs `--turns` turns whose answer is streamed as
`--deltas` text deltas `--gap` ms apart, and records for every delta the time between the
moment the SSE event is written to the socket and the moment the matching notification line
is read from the server's stdout. Both timestamps come from this process's monotonic clock.
The first turn is a warm-up and is not counted.

Usage::

    python benchmarks/turns.py --server "python -m codex_trio" \\
        --reference "/work/scratch/ref/node_modules/.bin/codex app-server"
"""

from __future__ import annotations

import argparse
import json
import shlex
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import trio

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from report import log, percentile_floor
from servers import Sandbox, ServerSpec, reap, spawn, this_python

from tests.responses_server import Paced, ResponsesServer

TIMEOUT = 60.0
#: the server must talk to the scripted model only, never to a real one.
API_KEYS = ("OPENAI_API_KEY", "CODEX_API_KEY")


class Server:
    """A server subprocess on stdio; `receive` returns (message, perf_counter at read)."""

    def __init__(self, process: trio.Process) -> None:
        self.process = process
        self.buffer = b""
        self.ids = 0

    async def send(self, message: dict[str, Any]) -> None:
        assert self.process.stdin is not None
        await self.process.stdin.send_all(json.dumps(message).encode() + b"\n")

    async def receive(self) -> tuple[dict[str, Any], float]:
        assert self.process.stdout is not None
        while b"\n" not in self.buffer:
            chunk = await self.process.stdout.receive_some(1 << 16)
            if not chunk:
                raise RuntimeError("server closed its stdout")
            self.buffer += chunk
        at = time.perf_counter()
        line, self.buffer = self.buffer.split(b"\n", 1)
        return json.loads(line), at

    async def call(self, method: str, params: Any) -> Any:
        self.ids += 1
        request_id = self.ids
        await self.send({"id": request_id, "method": method, "params": params})
        while True:
            message, _ = await self.receive()
            if message.get("id") == request_id and "method" not in message:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message["result"]


async def measure(command: list[str], turns: int, deltas: int, gap: float) -> list[float]:
    """Latencies (seconds) of every counted delta for one server."""
    model = ResponsesServer()
    async with trio.open_nursery() as nursery:
        await nursery.start(model.run)
        sandbox = Sandbox(model.config_toml() + "\n[features]\nplugins = false\napps = false\n")
        workspace = sandbox.cwd
        try:
            process, _ = await spawn(ServerSpec("server", command), sandbox, drop_env=API_KEYS)
            server = Server(process)
            samples: list[float] = []
            try:
                with trio.fail_after(TIMEOUT):
                    await server.call("initialize", {"clientInfo": {"name": "bench", "version": "1"}})
                    thread = await server.call(
                        "thread/start",
                        {"cwd": str(workspace), "approvalPolicy": "never", "sandbox": "danger-full-access"},
                    )
                    thread_id = thread["thread"]["id"]
                for turn in range(turns + 1):
                    reply = Paced([f"w{i} " for i in range(deltas)], gap=gap)
                    model.enqueue(reply)
                    received: list[float] = []
                    with trio.fail_after(TIMEOUT):
                        await server.send(
                            {
                                "id": f"t{turn}",
                                "method": "turn/start",
                                "params": {
                                    "threadId": thread_id,
                                    "input": [{"type": "text", "text": "go", "text_elements": []}],
                                },
                            }
                        )
                        while True:
                            message, at = await server.receive()
                            method = message.get("method")
                            if method == "item/agentMessage/delta":
                                received.append(at)
                            elif method == "turn/completed":
                                break
                    if turn == 0:
                        continue  # warm-up: connection set-up, first rollout write
                    if len(received) != len(reply.sent_at):
                        raise RuntimeError(f"got {len(received)} deltas for {len(reply.sent_at)} sent")
                    samples.extend(r - s for r, s in zip(received, reply.sent_at, strict=True))
            finally:
                with trio.move_on_after(5):
                    assert process.stdin is not None
                    await process.stdin.aclose()
                    await process.wait()
                await reap(process)
        finally:
            sandbox.remove()
        nursery.cancel_scope.cancel()
    return samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--server", default=f"{sys.executable} -m codex_trio")
    parser.add_argument("--reference", default=None)
    parser.add_argument("--turns", type=int, default=20)
    parser.add_argument("--deltas", type=int, default=25)
    parser.add_argument("--gap", type=float, default=20.0, help="milliseconds between deltas")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds (evens out machine noise)")
    args = parser.parse_args()
    rows = []
    results: dict[str, list[float]] = {}
    servers = [
        (name, command)
        for name, command in (("codex-trio", args.server), ("reference", args.reference))
        if command
    ]
    for round_number in range(args.rounds):
        for name, command in servers:
            argv = this_python(shlex.split(command))
            log(f"round {round_number + 1}: measuring {name}: {command}")
            samples = trio.run(measure, argv, args.turns, args.deltas, args.gap / 1000)
            results.setdefault(name, []).extend(samples)
    for name, values in results.items():
        rows.append(
            (
                name,
                len(values),
                statistics.median(values) * 1000,
                percentile_floor(values, 0.9) * 1000,
                percentile_floor(values, 0.99) * 1000,
            )
        )
    print("| server | deltas | p50 (ms) | p90 (ms) | p99 (ms) |")
    print("|---|---|---|---|---|")
    for name, count, p50, p90, p99 in rows:
        print(f"| {name} | {count} | {p50:.3f} | {p90:.3f} | {p99:.3f} |")
    if "codex-trio" in results and "reference" in results:
        ours, ref = statistics.median(results["codex-trio"]), statistics.median(results["reference"])
        print(f"\np50 ratio ours/reference: {ours / ref:.2f}x")


if __name__ == "__main__":
    main()
