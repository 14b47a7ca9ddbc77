"""The pytest plugin (entry point `codex_trio`): servers and clients for tests, and a leak check.

Fixtures:
* `codex_home`: an empty CODEX_HOME directory.
* `server_settings`: ServerSettings for an in-process server in `tmp_path`.
* `app_server`: an in-process AppServer, drained at teardown.
* `client`: an initialized in-process ClientConnection to `app_server`.
* `stdio_server`: `python -m codex_trio` as a subprocess, with a ClientConnection over its pipes.
* `leak_check`: fails the test if a child process, a file descriptor or a codex_trio task
  outlives the server. `app_server` and `stdio_server` use it, so every test that uses them
  proves its own cleanup.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import attrs
import pytest
import trio
import trio.lowlevel

from codex_trio.client import ClientConnection
from codex_trio.procfs import descendants, fd_target, open_fds
from codex_trio.server import AppServer, open_app_server
from codex_trio.settings import ServerSettings
from codex_trio.transport.listen import NoListen
from codex_trio.transport.stdio import LineStream

#: seconds a child process may take to disappear after its server stopped.
REAP_TIMEOUT = 5.0
PACKAGE_DIR = str(Path(__file__).parent)


def package_tasks() -> list[trio.lowlevel.Task]:
    """Live trio tasks running code of this package."""
    found: list[trio.lowlevel.Task] = []
    stack = [trio.lowlevel.current_root_task()]
    while stack:
        task = stack.pop()
        if task is None:
            continue
        code = getattr(task.coro, "cr_code", None)
        if code is not None and code.co_filename.startswith(PACKAGE_DIR):
            found.append(task)
        for nursery in task.child_nurseries:
            stack.extend(nursery.child_tasks)
    return found


@attrs.define
class LeakCheck:
    """A snapshot of what existed before the server; `check()` compares the present to it."""

    fds: set[int] = attrs.Factory(open_fds)
    children: set[int] = attrs.Factory(lambda: descendants(os.getpid()))

    async def leftovers(self) -> list[str]:
        problems: list[str] = []
        with trio.move_on_after(REAP_TIMEOUT):
            # Another process's exit has no trio event to wait on: poll /proc briefly.
            while descendants(os.getpid()) - self.children:  # noqa: ASYNC110
                await trio.sleep(0.02)
        extra_children = descendants(os.getpid()) - self.children
        if extra_children:
            problems.append(f"child processes left: {sorted(extra_children)}")
        extra_fds = open_fds() - self.fds
        if extra_fds:
            targets = {fd: target for fd in sorted(extra_fds) if (target := fd_target(fd)) is not None}
            if targets:
                problems.append(f"file descriptors left: {targets}")
        tasks = [t.name for t in package_tasks()]
        if tasks:
            problems.append(f"tasks left: {tasks}")
        return problems

    async def check(self) -> None:
        problems = await self.leftovers()
        if problems:
            pytest.fail("; ".join(problems))


@pytest.fixture
async def leak_check() -> AsyncIterator[LeakCheck]:
    check = LeakCheck()
    yield check
    await check.check()


@pytest.fixture
def codex_home(tmp_path: Path) -> Path:
    home = tmp_path / "codex_home"
    home.mkdir()
    return home


@pytest.fixture
def server_settings(codex_home: Path, tmp_path: Path) -> ServerSettings:
    workspace = tmp_path / "workspace"
    workspace.mkdir(exist_ok=True)
    # No SQLite log store: its writer works in a worker thread, and a MockClock that sees every
    # task blocked on that thread would jump to the next deadline (tests that want it opt in).
    return ServerSettings(codex_home=codex_home, listen=NoListen(), cwd=workspace, log_store=False)


@pytest.fixture
async def app_server(leak_check: LeakCheck, server_settings: ServerSettings) -> AsyncIterator[AppServer]:
    async with open_app_server(server_settings) as server:
        yield server


@pytest.fixture
async def client(app_server: AppServer) -> AsyncIterator[ClientConnection]:
    connection = await app_server.connect()
    await connection.initialize("pytest")
    yield connection
    await connection.aclose()


@attrs.define
class StdioServer:
    """A server subprocess speaking JSON lines on its stdin/stdout."""

    process: trio.Process
    client: ClientConnection
    codex_home: Path

    async def close_stdin(self) -> None:
        assert self.process.stdin is not None
        await self.process.stdin.aclose()

    async def wait(self, timeout: float = 10.0) -> int:
        with trio.fail_after(timeout):
            return await self.process.wait()


def server_env(codex_home: Path) -> dict[str, str]:
    env = {
        k: v for k, v in os.environ.items() if k not in ("OPENAI_API_KEY", "CODEX_API_KEY", "OPENAI_BASE_URL")
    }
    env["CODEX_HOME"] = str(codex_home)
    return env


@pytest.fixture
async def stdio_server(
    leak_check: LeakCheck, codex_home: Path, tmp_path: Path, nursery: trio.Nursery
) -> AsyncIterator[StdioServer]:
    workspace = tmp_path / "workspace"
    workspace.mkdir(exist_ok=True)
    async with spawn_stdio_server(codex_home, workspace, nursery) as server:
        yield server


@asynccontextmanager
async def spawn_stdio_server(
    codex_home: Path, workspace: Path, nursery: trio.Nursery
) -> AsyncIterator[StdioServer]:
    """`python -m codex_trio` over stdio; SIGTERM (then SIGKILL to its group) when the block ends."""
    process = await trio.lowlevel.open_process(
        [sys.executable, "-m", "codex_trio"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        cwd=workspace,
        env=server_env(codex_home),
        start_new_session=True,
    )
    assert process.stdin is not None and process.stdout is not None
    client = ClientConnection(LineStream(process.stdout, process.stdin))
    nursery.start_soon(client.run)
    try:
        yield StdioServer(process, client, codex_home)
    finally:
        with trio.CancelScope(shield=True):
            if process.returncode is None:
                with trio.move_on_after(5):
                    process.send_signal(signal.SIGTERM)
                    await process.wait()
            if process.returncode is None:
                os.killpg(process.pid, signal.SIGKILL)
                await process.wait()
            with trio.move_on_after(1):
                await client.closed.wait()
            await client.aclose()
