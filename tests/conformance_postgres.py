#!/usr/bin/env python3
"""Run the shared conformance suite's `area_threads` against the PostgreSQL store.

The suite writes its own config.toml, so the store is chosen on the command line instead:
`CONFORMANCE_SERVER` points at this file run with `--serve`, which picks (creating it once) a
database named after the case's CODEX_HOME, so a case that restarts its server sees its threads
again, and execs `python -m codex_trio -c thread_store.kind="postgres" -c thread_store.url=…`.
The cluster is a throwaway one (tests/pg_cluster.py). Not part of CI's budget: run by hand,

    python tests/conformance_postgres.py [extra pytest args]
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def serve(argv: list[str]) -> None:
    import psycopg

    base = os.environ["CODEX_TRIO_PG_BASE_URL"]
    name = "c_" + hashlib.sha1(os.environ.get("CODEX_HOME", "").encode()).hexdigest()[:16]
    with psycopg.connect(f"{base}/postgres", autocommit=True) as conn:
        if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone() is None:
            conn.execute(f'CREATE DATABASE "{name}"')
    store = ["-c", 'thread_store.kind="postgres"', "-c", f'thread_store.url="{base}/{name}"']
    os.execv(sys.executable, [sys.executable, "-m", "codex_trio", *store, *argv])


def main(argv: list[str]) -> int:
    sys.path.insert(0, str(HERE))
    from pg_cluster import running_cluster

    with running_cluster() as cluster:
        env = dict(
            os.environ,
            CODEX_TRIO_PG_BASE_URL=f"postgresql://codex@{cluster.host}:{cluster.port}",
            CONFORMANCE_SERVER=f"{sys.executable} {Path(__file__).resolve()} --serve",
        )
        command = [sys.executable, "-m", "pytest", "../shared/conformance", "-m", "area_threads", *argv]
        return subprocess.run(command, cwd=HERE.parent, env=env).returncode


if __name__ == "__main__":
    if sys.argv[1:2] == ["--serve"]:
        serve(sys.argv[2:])
    sys.exit(main(sys.argv[1:]))
