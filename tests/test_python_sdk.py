"""The official Python SDK (PyPI `openai-codex`) drives our server unchanged."""

from __future__ import annotations

import sys
from pathlib import Path

import trio
from openai_codex import CodexConfig
from openai_codex.client import CodexClient
from openai_codex.models import InitializeResponse


def _initialize(codex_home: Path, cwd: Path) -> InitializeResponse:
    config = CodexConfig(
        launch_args_override=(sys.executable, "-m", "codex_trio"),
        env={"CODEX_HOME": str(codex_home)},
        cwd=str(cwd),
    )
    with CodexClient(config) as client:
        return client.initialize()


async def test_the_sdk_gets_a_validated_initialize_response(codex_home: Path, tmp_path: Path) -> None:
    with trio.fail_after(60):
        response = await trio.to_thread.run_sync(_initialize, codex_home, tmp_path)
    assert isinstance(response, InitializeResponse)
    assert response.platformFamily == "unix"
    assert response.userAgent is not None and response.userAgent.startswith("codex_python_sdk/0.169.0 ")
