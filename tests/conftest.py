"""Project-wide test setup.

Every async test runs under an absolute deadline, so a hang fails fast instead of stalling CI.
The deadline is wall-clock time, not Trio time: tests that use `MockClock(autojump_threshold=0)`
would otherwise jump straight to it whenever every task waits on a worker thread. A test that
needs longer says so with `@pytest.mark.deadline(seconds)`.

One throwaway PostgreSQL cluster per test session, a database per test. The cluster starts on
first use only (tests that never touch PostgreSQL never pay for it). When PostgreSQL truly
cannot start, the tests that need it are skipped with the reason; under CI (`CI` set to
anything but "false"/"0") that is a failure instead.

Turn-level tests share a scripted model (`model`), a CODEX_HOME configured for it
(`configured`), the workspace and an initialized client (`rpc`).
"""

from __future__ import annotations

import contextlib
import inspect
import os
import sys
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import trio

sys.path.insert(0, str(Path(__file__).resolve().parent))

from pg_cluster import Cluster, ClusterUnavailable, running_cluster

from codex_trio.client import ClientConnection
from codex_trio.settings import ServerSettings
from tests.responses_server import ResponsesServer

#: seconds an async test (its fixtures included) may run.
DEFAULT_DEADLINE = float(os.environ.get("CODEX_TRIO_TEST_DEADLINE", "120"))


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "deadline(seconds): wall-clock deadline of an async test")


def _run_with_deadline(seconds: float, name: str) -> Callable[..., Any]:
    def run(fn: Callable[[], Any], *, clock: Any = None, instruments: Any = ()) -> Any:
        async def main() -> Any:
            token = trio.lowlevel.current_trio_token()
            with trio.CancelScope() as scope:

                def expire() -> None:
                    with contextlib.suppress(trio.RunFinishedError):
                        token.run_sync_soon(scope.cancel)

                timer = threading.Timer(seconds, expire)
                timer.daemon = True
                timer.start()
                try:
                    result = await fn()
                finally:
                    timer.cancel()
            if scope.cancelled_caught:
                pytest.fail(f"{name} did not finish within its {seconds:g}s deadline", pytrace=False)
            return result

        return trio.run(main, clock=clock, instruments=list(instruments))

    return run


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        function = getattr(item, "function", None)
        if function is None or not inspect.iscoroutinefunction(function):
            continue
        marker = item.get_closest_marker("deadline")
        seconds = float(marker.args[0]) if marker is not None else DEFAULT_DEADLINE
        # pytest-trio takes the runner from the closest `trio` marker that names one.
        item.add_marker(pytest.mark.trio(run=_run_with_deadline(seconds, item.nodeid)))


def pytest_report_header(config: pytest.Config) -> str:
    from tests.faults import SEED, SEED_ENV

    return f"fault-injection seed: {SEED} (replay with {SEED_ENV}={SEED})"


def _in_ci() -> bool:
    return os.environ.get("CI", "").lower() not in ("", "0", "false")


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[Cluster]:
    try:
        with running_cluster() as cluster:
            yield cluster
    except ClusterUnavailable as exc:
        message = f"PostgreSQL could not start, PostgreSQL thread-store tests NOT RUN: {exc}"
        if _in_ci():
            pytest.fail(message)
        sys.stderr.write(f"\n*** {message}\n")
        pytest.skip(message)


@pytest.fixture
def pg_url(pg_cluster: Cluster) -> Iterator[str]:
    """The URL of a fresh, empty database, dropped after the test."""
    url = pg_cluster.create_database()
    yield url
    pg_cluster.drop_database(url)


# ---------------------------------------------------------------------------- turn-level tests
@pytest.fixture
async def model(nursery: trio.Nursery) -> AsyncIterator[ResponsesServer]:
    server = ResponsesServer()
    await nursery.start(server.run)
    yield server


@pytest.fixture
def configured(codex_home: Path, model: ResponsesServer) -> Path:
    (codex_home / "config.toml").write_text(model.config_toml())
    return codex_home


@pytest.fixture
def workspace(server_settings: ServerSettings) -> Path:
    return server_settings.cwd


@pytest.fixture
async def rpc(configured: Path, client: ClientConnection) -> ClientConnection:
    return client
