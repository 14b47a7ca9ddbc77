"""Drive codex-trio with the official Python SDK (`pip install openai-codex`).

    python examples/sdk_turn.py                     # against a tiny built-in Responses endpoint
    python examples/sdk_turn.py --base-url http://localhost:11434/v1 --model gpt-oss:20b

The SDK starts `python -m codex_trio` as its app server (`CodexConfig.launch_args_override`),
starts a thread and runs one turn; the program prints the turn's final answer.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import threading
from pathlib import Path

import trio
from embed_turn import CONFIG, tiny_endpoint  # examples/embed_turn.py


def serve_in_background() -> str:
    """Run the tiny endpoint on its own Trio loop in a daemon thread; returns its base URL."""
    ready = threading.Event()
    url: list[str] = []

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            url.append(await nursery.start(tiny_endpoint))
            ready.set()

    threading.Thread(target=trio.run, args=(main,), daemon=True).start()
    ready.wait()
    return url[0]


def main() -> None:
    from openai_codex import Codex, CodexConfig

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base-url")
    parser.add_argument("--model", default="local-model")
    args = parser.parse_args()
    base_url = args.base_url or serve_in_background()
    with tempfile.TemporaryDirectory(prefix="codex-trio-sdk-") as folder:
        home = Path(folder)
        (home / "config.toml").write_text(CONFIG.format(model=args.model, base_url=base_url))
        config = CodexConfig(
            launch_args_override=(sys.executable, "-m", "codex_trio"),
            env={**os.environ, "CODEX_HOME": str(home)},
        )
        with Codex(config=config) as codex:
            thread = codex.thread_start()
            result = thread.run("Say hello in one short sentence.")
            print(result.final_response)


if __name__ == "__main__":
    main()
