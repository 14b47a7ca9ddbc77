"""Embed codex-trio in a Trio program: an in-process server and client, no subprocess.

    python examples/embed.py

Starts a server with its own CODEX_HOME in a temporary directory, connects in-process, writes
and reads a file through the fs API, runs a command, and leaves the block, which drains the
server (nothing it started is left running).
"""

from __future__ import annotations

import base64
import tempfile
from pathlib import Path

import trio

from codex_trio import ServerSettings, open_app_server
from codex_trio.transport.listen import NoListen


async def main() -> None:
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        settings = ServerSettings(codex_home=root / "home", listen=NoListen(), cwd=root)
        async with open_app_server(settings) as server:
            client = await server.connect()
            info = await client.initialize("embed-example")
            print("server:", info["userAgent"])

            path = str(root / "hello.txt")
            data = base64.b64encode(b"hello from trio\n").decode()
            await client.call("fs/writeFile", {"path": path, "dataBase64": data})
            read = await client.call("fs/readFile", {"path": path})
            print("read back:", base64.b64decode(read["dataBase64"]).decode().strip())

            result = await client.call(
                "command/exec",
                {"command": ["sh", "-c", "echo $((6 * 7))"], "sandboxPolicy": {"type": "dangerFullAccess"}},
            )
            print("command said:", result["stdout"].strip(), "exit", result["exitCode"])
            await client.aclose()
        print("server drained:", server.stopped.is_set())


if __name__ == "__main__":
    trio.run(main)
