"""A throwaway PostgreSQL cluster from Debian's `postgresql` package, for tests and benchmarks.

`initdb` in a fresh temp dir with trust auth, `pg_ctl start` on a free loopback port (and a
private unix socket dir), `pg_ctl stop` and the dir removed at the end. PostgreSQL refuses to
run as root, so under root (CI) the cluster runs as the `postgres` user via `runuser`.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import attrs

SUPERUSER = "codex"


class ClusterUnavailable(RuntimeError):
    """PostgreSQL is not installed or would not start (the message says why)."""


def _bindir() -> str:
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4]))
    if candidates:
        return os.path.dirname(candidates[-1])
    initdb = shutil.which("initdb")
    if initdb is None:
        raise ClusterUnavailable("initdb not found: apt-get install postgresql")
    return os.path.dirname(initdb)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@attrs.frozen
class Cluster:
    host: str
    port: int
    socket_dir: str

    def url(self, dbname: str = "postgres") -> str:
        return f"postgresql://{SUPERUSER}@{self.host}:{self.port}/{dbname}"

    def create_database(self) -> str:
        """A fresh, empty database; returns its URL."""
        import psycopg

        name = f"t_{uuid.uuid4().hex[:16]}"
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def drop_database(self, url: str) -> None:
        import psycopg

        name = url.rsplit("/", 1)[1]
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextmanager
def running_cluster(*, fsync: bool = False) -> Iterator[Cluster]:
    """Start a cluster for the block; raises `ClusterUnavailable` when it cannot start.

    `fsync=False` (tests) trades crash safety of the throwaway data for speed; benchmarks
    keep PostgreSQL's defaults.
    """
    bindir = _bindir()
    # Under root the cluster's user must reach the folder: /tmp, whatever TMPDIR says.
    root = tempfile.mkdtemp(prefix="codex-trio-pg-", dir="/tmp" if os.geteuid() == 0 else None)
    prefix: list[str] = []
    if os.geteuid() == 0:
        try:
            user = pwd.getpwnam("postgres")
        except KeyError:
            shutil.rmtree(root, ignore_errors=True)
            raise ClusterUnavailable("running as root and there is no `postgres` user to run as") from None
        os.chown(root, user.pw_uid, user.pw_gid)
        prefix = ["runuser", "-u", "postgres", "--"]
    data = os.path.join(root, "data")
    log = os.path.join(root, "log")
    port = _free_port()

    def run(*args: str) -> None:
        # cwd: a folder the cluster's user can enter (CI's checkout may be root-only).
        result = subprocess.run(
            [*prefix, *args], capture_output=True, text=True, stdin=subprocess.DEVNULL, cwd=root
        )
        if result.returncode != 0:
            tail = ""
            try:
                with open(log) as f:
                    tail = f.read()[-2000:]
            except OSError:
                pass
            raise ClusterUnavailable(f"{args[0]} failed: {result.stderr.strip()} {tail}".strip())

    options = f"-c listen_addresses=127.0.0.1 -c port={port} -c unix_socket_directories={root}"
    if not fsync:
        options += " -c fsync=off -c full_page_writes=off"
    started = False
    try:
        run(
            f"{bindir}/initdb", "-D", data, "-A", "trust", "-U", SUPERUSER, "-E", "UTF8", "--no-sync",
        )  # fmt: skip
        run(f"{bindir}/pg_ctl", "-D", data, "-l", log, "-o", options, "-w", "-t", "60", "start")
        started = True
        yield Cluster("127.0.0.1", port, root)
    finally:
        if started:
            subprocess.run(
                [*prefix, f"{bindir}/pg_ctl", "-D", data, "-m", "immediate", "-w", "stop"],
                capture_output=True,
                stdin=subprocess.DEVNULL,
                cwd=root,
            )
        shutil.rmtree(root, ignore_errors=True)
