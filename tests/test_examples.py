"""The examples in examples/ run as documented."""

from __future__ import annotations

import sys
from pathlib import Path

import trio

EXAMPLES = Path(__file__).parent.parent / "examples"


async def test_the_embedding_example_runs_and_drains() -> None:
    with trio.fail_after(60):
        result = await trio.run_process(
            [sys.executable, str(EXAMPLES / "embed.py")], capture_stdout=True, capture_stderr=True
        )
    out = result.stdout.decode()
    assert "read back: hello from trio" in out
    assert "command said: 42 exit 0" in out
    assert "server drained: True" in out


async def test_the_python_sdk_runs_a_turn_through_our_server() -> None:
    """The official SDK starts a thread and gets a turn's final text (examples/sdk_turn.py)."""
    with trio.fail_after(120):
        result = await trio.run_process(
            [sys.executable, str(EXAMPLES / "sdk_turn.py")], capture_stdout=True, capture_stderr=True
        )
    assert result.stdout.decode().strip() == "Hello from a Responses endpoint on 127.0.0.1."
