#!/usr/bin/env python3
"""Start-up in instructions: start → ``initialize`` answered → exit on EOF, under callgrind.

Wall time on a shared 2-vCPU machine moves by ±30 % from run to run; the number of
instructions the process executes does not. This counts them (valgrind's callgrind, every
thread of the process, not its children) for our server and for the floor of any Trio server
on this interpreter (``FLOOR`` in plain_client.py), each run in a fresh sandbox with bytecode
cached, and prints the ratio. ``PYTHONHASHSEED`` is fixed: with random seeds the totals move
by ±10 M instructions.

    python benchmarks/startup_instructions.py [--runs 3] [--server "python -m codex_trio"]
"""

from __future__ import annotations

import argparse
import re
import shlex
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from plain_client import FLOOR, INIT
from report import fmt_ratio
from servers import Sandbox, precompile


def instructions(argv: list[str], pythonpath: str) -> int:
    """Instructions callgrind counted for one start → initialize → EOF → exit."""
    sandbox = Sandbox()
    try:
        env = sandbox.env({"PYTHONHASHSEED": "0", "PYTHONPATH": pythonpath})
        result = subprocess.run(
            ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null", *argv],
            input=INIT,
            capture_output=True,
            env=env,
            cwd=sandbox.cwd,
            check=False,
        )
    finally:
        sandbox.remove()
    found = re.search(rb"Collected : (\d+)", result.stderr)
    if found is None or not result.stdout.startswith(b'{"id":0,'):
        raise SystemExit(f"{argv}: no answer or no count\n{result.stderr[-2000:].decode(errors='replace')}")
    return int(found.group(1))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--server", default=f"{sys.executable} -m codex_trio")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args(argv)
    if shutil.which("valgrind") is None:
        raise SystemExit("valgrind is not installed")
    precompile()
    server = shlex.split(args.server)
    pythonpath = str(Path.cwd())
    ours = [instructions(server, pythonpath) for _ in range(args.runs)]
    floor = [instructions([server[0], "-c", FLOOR], pythonpath) for _ in range(args.runs)]
    o, f = statistics.median(ours), statistics.median(floor)
    print(f"ours  {o / 1e6:8.1f} M instructions")
    print(f"floor {f / 1e6:8.1f} M instructions")
    print(f"ours / floor {fmt_ratio(o / f)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
