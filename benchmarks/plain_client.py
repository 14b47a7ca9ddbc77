#!/usr/bin/env python3
"""The issue-17 figures measured with a plain, blocking Python client (no Trio in the client).

The other scripts drive servers from a Trio client; an independent harness written with plain
blocking pipes sees different numbers (its wake-ups are cheaper, so the server's share of a round
trip weighs more). This script is that second harness, ours beside the reference in one run,
alternating servers run by run:

* ``fs/getMetadata`` p50/p99, one request at a time on stdio (``--requests`` after 200 warm-up);
* a ``command/exec`` stream of ``--stream-mib`` MiB (``head -c N /dev/zero``), PTY and pipes:
  MiB/s until the response, every delta decoded (``json`` + ``base64``) as a client would;
* start → ``initialize`` answered → exit on stdin EOF, against the reference and against the
  floor of any Trio server on this interpreter: ``python -c`` importing trio, reading the line
  in ``trio.run`` and answering it.

    python benchmarks/plain_client.py --reference "$REF/node_modules/.bin/codex app-server" --reference-native
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import IO, Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from report import fmt_ratio, log, publish, ratio
from servers import Sandbox, ServerSpec, add_server_options, server_specs

INIT = b'{"id":0,"method":"initialize","params":{"clientInfo":{"name":"plain","version":"1"}}}\n'
FLOOR = (
    "import sys, trio\n"
    "async def main():\n"
    "    stdin = trio.lowlevel.FdStream(0); stdout = trio.lowlevel.FdStream(1)\n"
    "    data = b''\n"
    "    while b'\\n' not in data:\n"
    "        data += await stdin.receive_some(65536)\n"
    '    await stdout.send_all(b\'{"id":0,"result":{}}\\n\')\n'
    "    while await stdin.receive_some(65536):\n"
    "        pass\n"
    "trio.run(main)\n"
)


class Plain:
    """A server on pipes, read with a buffered blocking file."""

    def __init__(self, spec: ServerSpec, sandbox: Sandbox) -> None:
        with sandbox.stderr_path.open("wb") as stderr:
            self.started = time.perf_counter()
            self.process = subprocess.Popen(
                spec.argv,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=stderr,
                cwd=sandbox.cwd,
                env=sandbox.env(spec.extra_env),
                bufsize=0,
            )
        assert self.process.stdin is not None and self.process.stdout is not None
        self.stdin: IO[bytes] = self.process.stdin
        # a large buffered reader over the pipe (readline on the raw pipe reads byte by byte)
        self.stdout: IO[bytes] = open(  # noqa: SIM115 - closed with the process
            self.process.stdout.fileno(), "rb", buffering=1 << 20, closefd=False
        )

    def call(self, request_id: int, method: str, params: Any) -> bytes:
        self.stdin.write(json.dumps({"id": request_id, "method": method, "params": params}).encode() + b"\n")
        prefix = b'{"id":%d,' % request_id
        while True:
            line = self.stdout.readline()
            if not line:
                raise RuntimeError("server closed stdout")
            if line.startswith(prefix):
                return line

    def close(self) -> float:
        self.stdin.close()
        self.process.wait(timeout=30)
        return time.perf_counter() - self.started


def latency(spec: ServerSpec, requests: int) -> tuple[float, float]:
    sandbox = Sandbox()
    try:
        server = Plain(spec, sandbox)
        server.call(0, "initialize", {"clientInfo": {"name": "plain", "version": "1"}})
        server.stdin.write(b'{"method":"initialized"}\n')
        samples = []
        for n in range(1, 200 + requests + 1):
            start = time.perf_counter()
            server.call(n, "fs/getMetadata", {"path": "/"})
            if n > 200:
                samples.append(time.perf_counter() - start)
        server.close()
    finally:
        sandbox.remove()
    samples.sort()
    return samples[len(samples) // 2], samples[int(len(samples) * 0.99)]


def stream(spec: ServerSpec, size: int, tty: bool) -> float:
    sandbox = Sandbox()
    try:
        server = Plain(spec, sandbox)
        server.call(0, "initialize", {"clientInfo": {"name": "plain", "version": "1"}})
        params = {
            "command": ["head", "-c", str(size), "/dev/zero"],
            "processId": "plain",
            "streamStdoutStderr": True,
            "tty": tty,
            "disableOutputCap": True,
            "disableTimeout": True,
            "sandboxPolicy": {"type": "dangerFullAccess"},
        }
        start = time.perf_counter()
        server.stdin.write(json.dumps({"id": 1, "method": "command/exec", "params": params}).encode() + b"\n")
        got = 0
        for line in server.stdout:
            if line.startswith(b'{"id":1,'):
                break
            if b"outputDelta" in line:
                got += len(base64.b64decode(json.loads(line)["params"]["deltaBase64"]))
        elapsed = time.perf_counter() - start
        server.close()
    finally:
        sandbox.remove()
    if got != size:
        raise RuntimeError(f"streamed {got} of {size} bytes")
    return size / elapsed / (1 << 20)


def lifecycle(spec: ServerSpec) -> float:
    """Seconds from spawn to exit, with initialize answered and stdin closed right after."""
    sandbox = Sandbox()
    try:
        server = Plain(spec, sandbox)
        server.stdin.write(INIT)
        while not server.stdout.readline().startswith(b'{"id":0,'):
            pass
        return server.close()
    finally:
        sandbox.remove()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    add_server_options(parser, server_default="python -m codex_trio")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--stream-mib", type=float, default=50)
    parser.add_argument("--markdown", type=Path)
    args = parser.parse_args(argv)
    specs = server_specs(args)
    floor = ServerSpec("floor", [specs[0].argv[0], "-c", FLOOR], specs[0].extra_env)
    results: dict[str, dict[str, list[float]]] = {spec.label: {} for spec in [*specs, floor]}

    def add(label: str, key: str, value: float) -> None:
        results[label].setdefault(key, []).append(value)

    size = int(args.stream_mib * (1 << 20))
    for run in range(args.runs):
        log(f"run {run + 1}/{args.runs}")
        for spec in [*specs, floor]:
            add(spec.label, "lifecycle", lifecycle(spec))
        for spec in specs:
            p50, p99 = latency(spec, args.requests)
            add(spec.label, "p50", p50)
            add(spec.label, "p99", p99)
            if run < max(1, args.runs // 2 + 1):
                add(spec.label, "pty", stream(spec, size, tty=True))
                add(spec.label, "pipe", stream(spec, size, tty=False))

    def med(label: str, key: str) -> float | None:
        values = results.get(label, {}).get(key)
        return statistics.median(values) if values else None

    rows = [
        ("`fs/getMetadata` p50", "p50", 1e6, "µs", False),
        ("`fs/getMetadata` p99", "p99", 1e6, "µs", False),
        (f"{args.stream_mib:g} MiB stream, PTY", "pty", 1, "MiB/s", True),
        (f"{args.stream_mib:g} MiB stream, pipes", "pipe", 1, "MiB/s", True),
        ("start → initialize → exit on EOF", "lifecycle", 1e3, "ms", False),
    ]
    lines = [
        "| figure | ours | reference | ours / reference | all runs (ours; reference) |",
        "|---|---|---|---|---|",
    ]
    for title, key, scale, unit, _ in rows:
        ours, ref = med("ours", key), med("reference", key)
        runs = "; ".join(
            ", ".join(f"{v * scale:.0f}" for v in results.get(label, {}).get(key, []))
            for label in ("ours", "reference")
        )
        cells = [f"{v * scale:.1f} {unit}" if v is not None else "—" for v in (ours, ref)]
        lines.append(f"| {title} | {cells[0]} | {cells[1]} | {fmt_ratio(ratio(ours, ref))} | {runs} |")
    floor_value, ours_value = med("floor", "lifecycle"), med("ours", "lifecycle")
    if floor_value and ours_value:
        lines.append(
            f"| start → initialize → exit, against the Python + Trio floor | {ours_value * 1e3:.1f} ms "
            f"| floor {floor_value * 1e3:.1f} ms | {fmt_ratio(ratio(ours_value, floor_value))} | |"
        )
    lines.append("")
    lines.append(f"load average at the end: {os.getloadavg()[0]:.2f}")
    publish("\n".join(lines), args.markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
