"""Benchmarked servers as processes: their commands, sandboxes, start, memory and teardown.

Every script compares our server with a reference in one run, so both are chosen, started,
measured and killed the same way here. /proc is read through `codex_trio.procfs`. Scripts
import this as a sibling module, so each stays runnable as ``python benchmarks/<name>.py``.
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypedDict

import trio

from codex_trio.procfs import process_name, process_tree, rss_kib

#: a mock Responses provider nobody listens on: no measured request may talk to a model.
CONFIG_TOML = """\
model = "gpt-5.5"
model_provider = "mock"
[features]
plugins=false
apps=false
[model_providers.mock]
name="mock"
base_url="http://127.0.0.1:9/v1"
wire_api="responses"
supports_websockets=false
request_max_retries=0
stream_max_retries=0
"""


@dataclass(frozen=True)
class ServerSpec:
    """How to start one server: a label, an argv and extra environment."""

    label: str
    argv: list[str]
    extra_env: dict[str, str] = field(default_factory=dict)


class ProcessRss(TypedDict):
    """Resident memory of one process of a server's tree."""

    pid: int
    name: str
    rss_kib: int


def tree_rss(root: int) -> tuple[int, list[ProcessRss]]:
    """Summed VmRSS (KiB) of ``root``'s tree and a per-process breakdown."""
    parts = [ProcessRss(pid=pid, name=process_name(pid), rss_kib=rss_kib(pid)) for pid in process_tree(root)]
    return sum(p["rss_kib"] for p in parts), parts


def kill_tree(root: int, pids: Sequence[int] | None = None) -> None:
    """SIGKILL ``root``'s process group and every descendant, so no phase leaks load into the next.

    ``pids`` is a tree listed earlier, for when ``root`` may already have exited (its
    children are then reparented and no longer found from it).
    """
    pids = process_tree(root) if pids is None else pids
    with suppress(OSError):
        os.killpg(root, signal.SIGKILL)
    for pid in pids:
        with suppress(OSError):
            os.kill(pid, signal.SIGKILL)


class Sandbox:
    """Fresh temporary HOME, CODEX_HOME (with config.toml) and cwd: no state shared between runs."""

    def __init__(self, config_toml: str = CONFIG_TOML) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="codex-bench-"))
        self.home = self.root / "home"
        self.codex_home = self.root / "codex_home"
        self.cwd = self.root / "cwd"
        for path in (self.home, self.codex_home, self.cwd):
            path.mkdir()
        (self.codex_home / "config.toml").write_text(config_toml)
        self.stderr_path = self.root / "stderr.log"

    def env(self, extra: dict[str, str], drop: Sequence[str] = ()) -> dict[str, str]:
        """Environment for the server: ours minus ``drop``, plus ``extra``, HOME and CODEX_HOME replaced."""
        env = {k: v for k, v in os.environ.items() if k not in drop}
        env.update(extra)
        env["HOME"] = str(self.home)
        env["CODEX_HOME"] = str(self.codex_home)
        return env

    def stderr_tail(self, limit: int = 2000) -> str:
        """Last bytes of the server's stderr, for error messages."""
        try:
            return self.stderr_path.read_bytes()[-limit:].decode(errors="replace")
        except OSError:
            return ""

    def remove(self) -> None:
        """Delete the temporary tree."""
        shutil.rmtree(self.root, ignore_errors=True)


async def spawn(
    spec: ServerSpec,
    sandbox: Sandbox,
    *,
    extra_args: Sequence[str] = (),
    stdio: int = subprocess.PIPE,
    drop_env: Sequence[str] = (),
) -> tuple[trio.Process, float]:
    """Start ``spec`` in ``sandbox``, in its own session (so the whole group can be killed).

    stderr goes to ``sandbox.stderr_path`` (never a pipe nobody reads). Also returns the
    ``perf_counter`` taken just before the spawn, where cold start timing begins.
    """
    with sandbox.stderr_path.open("wb") as stderr:
        spawned_at = time.perf_counter()
        process = await trio.lowlevel.open_process(
            [*spec.argv, *extra_args],
            stdin=stdio,
            stdout=stdio,
            stderr=stderr,
            cwd=str(sandbox.cwd),
            env=sandbox.env(spec.extra_env, drop_env),
            start_new_session=True,
        )
    return process, spawned_at


async def reap(process: trio.Process, pids: Sequence[int] | None = None) -> None:
    """Kill the server's tree, wait for it and close its pipes, even when cancelled."""
    with trio.CancelScope(shield=True):
        kill_tree(process.pid, pids)
        await process.wait()
        for stream in (process.stdin, process.stdout):
            if stream is not None:
                await stream.aclose()


# --------------------------------------------------------------------------- command line

PYTHON_NAME = re.compile(r"python[0-9.]*$")


def resolve_python(argv: list[str]) -> list[str]:
    """Replace a ``python`` launcher (e.g. a pyenv shim) by the real interpreter path.

    A pyenv shim costs ~60 ms of bash start-up that must not be charged to the server.
    """
    if not argv or not PYTHON_NAME.match(os.path.basename(argv[0])):
        return argv
    try:
        real = subprocess.run(
            [argv[0], "-c", "import sys; print(sys.executable)"],
            capture_output=True,
            text=True,
            check=True,
            timeout=30,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return argv
    return [real, *argv[1:]] if real else argv


def this_python(argv: list[str]) -> list[str]:
    """Replace a bare ``python``/``python3`` by this interpreter (turns.py: same env as its imports)."""
    return [sys.executable, *argv[1:]] if argv and argv[0] in ("python", "python3") else argv


def native_reference(argv: list[str]) -> tuple[list[str], dict[str, str]]:
    """Swap the npm ``codex`` node launcher for the native binary it would run (no node in the numbers)."""
    launcher = shutil.which(argv[0]) or argv[0]
    package_root = Path(os.path.realpath(launcher)).parent.parent  # .../@openai/codex
    candidates = sorted(package_root.parent.glob("codex-*/vendor/*/bin/codex")) + sorted(
        package_root.glob("vendor/*/bin/codex")
    )
    if not candidates:
        raise SystemExit(f"--reference-native: no native codex binary found near {package_root}")
    env = {"CODEX_MANAGED_PACKAGE_ROOT": str(package_root), "CODEX_MANAGED_BY_NPM": "1"}
    return [str(candidates[0]), *argv[1:]], env


def add_server_options(
    parser: argparse.ArgumentParser, *, server_default: str | None = None, native_help: str | None = None
) -> None:
    """``--server``, ``--reference`` and ``--reference-native``, the same in every script."""
    if server_default is None:
        parser.add_argument("--server", required=True, help="our server command (shell-split)")
    else:
        parser.add_argument("--server", default=server_default, help="our server command (shell-split)")
    parser.add_argument("--reference", help="reference server command (shell-split)")
    parser.add_argument(
        "--reference-native",
        action="store_true",
        help=native_help or "run the native codex binary instead of the npm node launcher",
    )


def server_specs(
    args: argparse.Namespace,
    *,
    resolve_ours: bool = True,
    resolve_reference: bool = False,
    reference_pythonpath: bool = False,
) -> list[ServerSpec]:
    """Specs for ours and (optionally) the reference from :func:`add_server_options`' flags.

    The current directory is prepended to our PYTHONPATH, so ``python -m codex_trio`` works
    from a checkout although the server runs in an empty cwd. The keyword flags keep each
    script's historical choices (core.py also resolves and exports PYTHONPATH to the reference).
    """
    pythonpath = os.pathsep.join(filter(None, [os.getcwd(), os.environ.get("PYTHONPATH")]))
    ours_argv = shlex.split(args.server)
    if resolve_ours:
        ours_argv = resolve_python(ours_argv)
    specs = [ServerSpec("ours", ours_argv, {"PYTHONPATH": pythonpath})]
    if args.reference:
        ref_argv, ref_env = shlex.split(args.reference), dict[str, str]()
        if args.reference_native:
            ref_argv, ref_env = native_reference(ref_argv)
        elif resolve_reference:
            ref_argv = resolve_python(ref_argv)
        if reference_pythonpath:
            ref_env = {"PYTHONPATH": pythonpath, **ref_env}
        specs.append(ServerSpec("reference", ref_argv, ref_env))
    return specs
