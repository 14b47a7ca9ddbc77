"""Fixtures shared by the turn-level test modules: a scripted model, a configured CODEX_HOME,
the workspace and an initialized client."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import trio

from codex_trio.client import ClientConnection
from codex_trio.settings import ServerSettings
from tests.responses_server import ResponsesServer


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
