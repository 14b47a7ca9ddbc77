#!/usr/bin/env python3
"""Minimal stdio JSON-RPC responder used to calibrate the benchmark client.

Answers every request line with an empty-ish result as fast as a blocking
read/write loop can, so numbers measured against it show the floor set by
the client itself (``core.py`` overhead, pipes, scheduling)::

    python benchmarks/core.py --server "python $PWD/benchmarks/echo_server.py"
"""

from __future__ import annotations

import json
import os

METADATA = {"isDirectory": True, "isFile": False, "isSymlink": False, "createdAtMs": 0, "modifiedAtMs": 0}


def reply(line: bytes) -> bytes:
    """The response line for one request line (empty for notifications and junk)."""
    try:
        message = json.loads(line)
    except ValueError:
        return b""
    if not isinstance(message, dict) or "id" not in message or "method" not in message:
        return b""
    result = METADATA if message["method"] == "fs/getMetadata" else {}
    return json.dumps({"id": message["id"], "result": result}, separators=(",", ":")).encode() + b"\n"


def main() -> None:
    """Read stdin in chunks and answer each complete line; exit on EOF."""
    buffer = b""
    while chunk := os.read(0, 1 << 16):
        buffer += chunk
        *lines, buffer = buffer.split(b"\n")
        out = b"".join(reply(line) for line in lines if line.strip())
        while out:
            out = out[os.write(1, out) :]


if __name__ == "__main__":
    main()
