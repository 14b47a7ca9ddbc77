"""Embed the app server in a Trio program and run one turn against a local Responses endpoint.

    python examples/embed_turn.py                       # a tiny built-in endpoint answers
    python examples/embed_turn.py --base-url http://localhost:11434/v1 --model gpt-oss:20b   # Ollama
    python examples/embed_turn.py --base-url http://localhost:8000/v1 --model Qwen/Qwen3-8B   # vLLM

The server runs inside this program (`open_app_server`, no transport), with its own
CODEX_HOME in a temporary folder whose config.toml points at the endpoint. The program talks
to it through an in-process client, exactly as a remote client would over stdio or a socket:
`initialize`, `thread/start`, `turn/start`, then it prints the streamed answer
(`item/agentMessage/delta`) until `turn/completed`.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import trio

from codex_trio.server import open_app_server
from codex_trio.settings import ServerSettings
from codex_trio.transport.listen import NoListen

CONFIG = """\
model = "{model}"
model_provider = "local"

[model_providers.local]
name = "Local Responses endpoint"
base_url = "{base_url}"
wire_api = "responses"
stream_max_retries = 1
request_max_retries = 1
"""


async def run_turn(base_url: str, model: str, prompt: str) -> str:
    with tempfile.TemporaryDirectory(prefix="codex-trio-example-") as folder:
        home = Path(folder) / "home"
        home.mkdir()
        (home / "config.toml").write_text(CONFIG.format(model=model, base_url=base_url))
        settings = ServerSettings(codex_home=home, listen=NoListen(), cwd=Path.cwd())
        async with open_app_server(settings) as server:
            client = await server.connect()
            await client.initialize("embed-example")
            started = await client.call("thread/start", {"approvalPolicy": "never", "sandbox": "read-only"})
            thread_id = started["thread"]["id"]
            turn = await client.call(
                "turn/start", {"threadId": thread_id, "input": [{"type": "text", "text": prompt}]}
            )
            turn_id = turn["turn"]["id"]
            answer = ""
            while True:
                message = await client.receive()
                method, params = message.get("method"), message.get("params") or {}
                if method == "item/agentMessage/delta":
                    sys.stdout.write(params["delta"])
                    sys.stdout.flush()
                elif method == "item/completed" and params["item"]["type"] == "agentMessage":
                    answer = params["item"]["text"]
                elif method == "error" and not params.get("willRetry"):
                    print(f"\nerror: {params['error']['message']}", file=sys.stderr)
                elif method == "turn/completed" and params["turn"]["id"] == turn_id:
                    print(f"\n[turn {params['turn']['status']}]")
                    break
            await client.aclose()
            return answer


# ---------------------------------------------------------------------------- a tiny endpoint
async def tiny_endpoint(task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED) -> None:
    """A minimal Responses API: every POST is answered with one streamed sentence."""
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listeners[0].socket.getsockname()[1]
    task_status.started(f"http://127.0.0.1:{port}/v1")

    async def serve(stream: trio.SocketStream) -> None:
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = await stream.receive_some(65536)
            if not chunk:
                return
            data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        length = next(
            (
                int(line.split(b":")[1])
                for line in head.split(b"\r\n")
                if line.lower().startswith(b"content-length")
            ),
            0,
        )
        while len(body) < length:
            body += await stream.receive_some(65536)
        words = ["Hello ", "from ", "a ", "Responses ", "endpoint ", "on ", "127.0.0.1."]

        def event(payload: dict[str, object]) -> bytes:
            frame = f"event: {payload['type']}\ndata: {json.dumps(payload)}\n\n".encode()
            return b"%X\r\n%s\r\n" % (len(frame), frame)

        await stream.send_all(
            b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n"
            b"connection: close\r\n\r\n"
        )
        item = {"id": "msg_example", "type": "message", "role": "assistant", "content": []}
        await stream.send_all(event({"type": "response.output_item.added", "item": item}))
        for word in words:
            await stream.send_all(
                event({"type": "response.output_text.delta", "item_id": "msg_example", "delta": word})
            )
            await trio.sleep(0.05)
        done = {**item, "content": [{"type": "output_text", "text": "".join(words)}]}
        await stream.send_all(event({"type": "response.output_item.done", "item": done}))
        await stream.send_all(event({"type": "response.completed", "response": {"id": "resp_example"}}))
        await stream.send_all(b"0\r\n\r\n")
        await stream.aclose()

    await trio.serve_listeners(serve, listeners)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base-url", help="a Responses API base URL (default: a built-in endpoint)")
    parser.add_argument("--model", default="local-model")
    parser.add_argument("--prompt", default="Say hello in one short sentence.")
    args = parser.parse_args()
    async with trio.open_nursery() as nursery:
        base_url = args.base_url or await nursery.start(tiny_endpoint)
        await run_turn(base_url, args.model, args.prompt)
        nursery.cancel_scope.cancel()


if __name__ == "__main__":
    trio.run(main)
