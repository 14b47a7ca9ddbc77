"""Shared plumbing of the benchmark scripts: servers, stdio clients, /proc, statistics, reports.

Every script compares our server with a reference in one run, so both must be started,
talked to, measured and torn down the same way; keeping that in one module keeps the
comparison fair when one of them changes. Scripts import it as a sibling module
(``sys.path`` gets the script's directory), so each stays runnable as
``python benchmarks/<name>.py``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, TypedDict

import trio

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

INIT_LINE = b'{"id":1,"method":"initialize","params":{"clientInfo":{"name":"bench","version":"1"}}}\n'
INITIALIZED_LINE = b'{"method":"initialized"}\n'
OVERLOADED = -32001
INIT_TIMEOUT = 30.0
FIRST_BULK_ID = 1000

JSON = dict[str, Any]


def log(message: str) -> None:
    """Progress goes to stderr so stdout holds only the report."""
    print(message, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- /proc


@dataclass(frozen=True)
class ServerSpec:
    """How to start one server: a label, an argv and extra environment."""

    label: str
    argv: list[str]
    extra_env: dict[str, str] = field(default_factory=dict)


class ServerGone(Exception):
    """The server closed stdout (exited) while a reply was still expected."""


def process_table() -> dict[int, int]:
    """Map every pid in /proc to its parent pid (the only portable way to find descendants)."""
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        # The command name may contain spaces and parentheses; fields follow the last ')'.
        fields = stat[stat.rindex(")") + 2 :].split()
        parents[int(entry)] = int(fields[1])
    return parents


def process_tree(root: int) -> list[int]:
    """``root`` and its live descendants: a launcher's RSS and children count too."""
    children: dict[int, list[int]] = {}
    for pid, ppid in process_table().items():
        children.setdefault(ppid, []).append(pid)
    tree, todo = [], [root]
    while todo:
        pid = todo.pop()
        tree.append(pid)
        todo.extend(children.get(pid, []))
    return tree


def rss_kib(pid: int) -> int:
    """VmRSS of one process in KiB (0 if it is gone or has no memory)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def process_name(pid: int, missing: str = "?") -> str:
    """Short command name of a process (``missing`` if it is gone)."""
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return missing


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


# --------------------------------------------------------------------------- servers


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


class Pending:
    """One request waiting for its response (parsed in ``reply`` or raw in ``raw``)."""

    __slots__ = ("event", "raw", "reply")

    def __init__(self) -> None:
        self.event = trio.Event()
        self.reply: JSON | None = None
        self.raw: bytes | None = None


class Connection:
    """A running server process and its line-delimited JSON-RPC stdio link.

    A background task reads stdout continuously (so the server never blocks on
    a full pipe) and hands every response to ``on_response``. The default
    handler completes requests made with :meth:`request`; bulk phases install
    their own counting handler instead.
    """

    def __init__(self, process: trio.Process, sandbox: Sandbox, spawned_at: float) -> None:
        assert process.stdin is not None and process.stdout is not None
        self.process = process
        self.sandbox = sandbox
        self.spawned_at = spawned_at
        self.stdin = process.stdin
        self.stdout = process.stdout
        self.on_response: Callable[[JSON], None] = self._complete
        self.last_rx = spawned_at
        self.closed = trio.Event()
        self.notifications = 0
        self.server_requests = 0
        self.garbage_lines = 0
        self._pending: dict[Any, Pending] = {}
        self._next_id = FIRST_BULK_ID

    def new_id(self) -> int:
        """A request id not used before on this connection."""
        self._next_id += 1
        return self._next_id

    async def send(self, data: bytes) -> None:
        """Write raw bytes (one or more complete lines) to stdin."""
        try:
            await self.stdin.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            raise ServerGone(f"stdin closed: {exc!r}") from exc

    async def request_line(self, request_id: Any, line: bytes) -> JSON:
        """Send a pre-encoded request and wait for the response with that id."""
        pending = Pending()
        self._pending[request_id] = pending
        await self.send(line)
        await pending.event.wait()
        if pending.reply is None:
            raise ServerGone("server exited before replying\n" + self.sandbox.stderr_tail())
        return pending.reply

    async def request(self, method: str, params: Any) -> JSON:
        """Send one request and return its response message."""
        request_id = self.new_id()
        line = json.dumps({"id": request_id, "method": method, "params": params}, separators=(",", ":"))
        return await self.request_line(request_id, line.encode() + b"\n")

    def _complete(self, message: JSON) -> None:
        pending = self._pending.pop(message.get("id"), None)
        if pending is not None:
            pending.reply = message
            pending.event.set()

    def _dispatch(self, line: bytes) -> None:
        try:
            message = json.loads(line)
        except ValueError:
            self.garbage_lines += 1
            return
        if not isinstance(message, dict):
            self.garbage_lines += 1
        elif "method" in message:
            if "id" in message:
                self.server_requests += 1
            else:
                self.notifications += 1
        elif "id" in message and ("result" in message or "error" in message):
            self.on_response(message)
        else:
            self.garbage_lines += 1

    def _finish(self) -> None:
        """stdout ended: wake every waiter (they see no reply and raise)."""
        self.closed.set()
        for pending in self._pending.values():
            pending.event.set()
        self._pending.clear()

    async def read_loop(self) -> None:
        """Read stdout until EOF, dispatching each complete line."""
        buffer = b""
        try:
            while True:
                chunk = await self.stdout.receive_some(1 << 16)
                if not chunk:
                    break
                self.last_rx = time.perf_counter()
                buffer += chunk
                if b"\n" not in chunk:
                    continue
                *lines, buffer = buffer.split(b"\n")
                for line in lines:
                    if line.strip():
                        self._dispatch(line)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        finally:
            self._finish()

    def rss(self) -> tuple[int, list[ProcessRss]]:
        """Summed VmRSS (KiB) of the server tree and a per-process breakdown."""
        return tree_rss(self.process.pid)

    def kill(self) -> None:
        """SIGKILL the server's process group and every descendant."""
        kill_tree(self.process.pid)


class LineConnection(Connection):
    """A :class:`Connection` whose reader stays linear on multi-megabyte lines.

    (Appending each 64 KiB read to one growing bytes object is quadratic in the line
    length, which made the client, not the server, the bottleneck for big responses.)
    """

    async def read_loop(self) -> None:
        parts: list[bytes] = []
        try:
            while True:
                chunk = bytes(await self.stdout.receive_some(1 << 20))
                if not chunk:
                    break
                self.last_rx = time.perf_counter()
                start = 0
                while (newline := chunk.find(b"\n", start)) >= 0:
                    parts.append(chunk[start:newline])
                    line = b"".join(parts)
                    parts.clear()
                    if line.strip():
                        self._dispatch(line)
                    start = newline + 1
                if start < len(chunk):
                    parts.append(chunk[start:])
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        finally:
            self._finish()


@asynccontextmanager
async def running_server(
    spec: ServerSpec, *, sandbox: Sandbox | None = None, connection: type[Connection] = Connection
) -> AsyncIterator[Connection]:
    """Start ``spec`` with a reader task; kill its process group on exit.

    Without ``sandbox`` a fresh one is made and deleted afterwards; a given one is kept
    (so a restarted server sees the same CODEX_HOME).
    """
    own = sandbox is None
    box = Sandbox() if sandbox is None else sandbox
    try:
        process, spawned_at = await spawn(spec, box)
        conn = connection(process, box, spawned_at)
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(conn.read_loop)
                try:
                    yield conn
                finally:
                    conn.kill()
                    nursery.cancel_scope.cancel()
        finally:
            await reap(process)
    finally:
        if own:
            box.remove()


async def initialize(conn: Connection) -> float:
    """Send ``initialize`` + ``initialized``; return seconds from spawn to the response."""
    with trio.fail_after(INIT_TIMEOUT):
        reply = await conn.request_line(1, INIT_LINE)
    elapsed = time.perf_counter() - conn.spawned_at
    if "result" not in reply:
        raise RuntimeError(f"initialize failed: {reply}")
    await conn.send(INITIALIZED_LINE)
    return elapsed


class Outcome(Protocol):
    """A per-server result that collects failed phases."""

    label: str
    failures: list[str]


async def guarded(result: Outcome, what: str, job: Callable[[], Awaitable[None]], timeout: float) -> None:
    """Run one phase under a deadline; a failure is recorded, so the other server still runs."""
    try:
        with trio.fail_after(timeout):
            await job()
    except Exception as exc:  # a failing server must not stop the other one
        result.failures.append(f"{what}: {type(exc).__name__}: {exc}")
        log(f"  [{result.label}] {what} FAILED: {exc}")


# --------------------------------------------------------------------------- statistics


def percentile(sorted_values: list[float], fraction: float) -> float:
    """Nearest-rank percentile of an already sorted list."""
    rank = max(1, math.ceil(fraction * len(sorted_values)))
    return sorted_values[rank - 1]


def percentile_floor(values: list[float], fraction: float) -> float:
    """The sample at index ``floor(fraction * n)`` of the sorted values.

    turns.py's convention, kept so its numbers stay comparable with earlier runs; it is one
    sample above nearest rank when ``fraction * n`` is whole.
    """
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


# --------------------------------------------------------------------------- reports


def ratio(ours: float | None, ref: float | None) -> float | None:
    """ours / reference, or None when either is missing or the reference is 0."""
    if ours is None or ref is None or ref == 0:
        return None
    return ours / ref


def verdict(value: float | None, limit: float, higher_is_better: bool) -> str:
    """'pass'/'FAIL' for a ratio against its limit."""
    if value is None:
        return "n/a"
    ok = value >= limit if higher_is_better else value <= limit
    return "pass" if ok else "FAIL"


def fmt(value: float | None, unit: str, digits: int = 1) -> str:
    """Format a number with a unit, or an em dash when missing."""
    return "—" if value is None else f"{value:,.{digits}f} {unit}"


def fmt_ratio(value: float | None) -> str:
    """A ratio with its times sign, or an em dash when missing."""
    return "—" if value is None else f"{value:.2f}×"  # noqa: RUF001


def report_header(title: str, ours: list[str], reference: list[str] | None) -> list[str]:
    """Title, date, machine and load, and both commands: numbers mean little without them."""
    lines = [
        f"# {title}",
        "",
        f"- date: {time.strftime('%Y-%m-%d %H:%M:%S %Z')}",
        f"- machine: {platform.platform()}, {os.cpu_count()} CPUs, Python {platform.python_version()}, "
        f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())} at the end",
        f"- ours: `{shlex.join(ours)}`",
    ]
    if reference is not None:
        lines.append(f"- reference: `{shlex.join(reference)}`")
    return lines


def publish(report: str, markdown: Path | None) -> None:
    """The report goes to stdout and, with ``--markdown``, to a file."""
    print(report)
    write_file(markdown, report)


def write_file(path: Path | None, text: str) -> None:
    """Write an optional output file (``--markdown``, ``--json``), creating its folder."""
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


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
