"""The embedding example keeps working: a Trio program runs a turn against a local endpoint."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import trio

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "embed_turn.py"


async def test_the_embedding_example_runs_a_turn_against_its_local_endpoint() -> None:
    spec = importlib.util.spec_from_file_location("embed_turn", EXAMPLE)
    assert spec is not None and spec.loader is not None
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            base_url = await nursery.start(example.tiny_endpoint)
            answer = await example.run_turn(base_url, "local-model", "hello")
            nursery.cancel_scope.cancel()
    assert answer == "Hello from a Responses endpoint on 127.0.0.1."
