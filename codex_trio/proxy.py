"""`python -m codex_trio proxy [--sock PATH]`: a raw byte pipe to the control socket.

Exactly like the reference's `codex app-server proxy`: stdin bytes go to the unix socket and
socket bytes go to stdout, untouched. It does not speak websocket itself; the client writes the
HTTP upgrade and masked frames through it (this is how a remote client reaches a server over
SSH). It never starts a server.

Exit status: 0 when stdin reaches EOF (or the server closes the connection), 1 when the socket
cannot be reached or a write fails.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

import trio
import trio.lowlevel

from codex_trio.settings import default_codex_home
from codex_trio.transport.unix import connectable_path, default_socket_path

#: bytes moved per read in either direction.
CHUNK = 64 * 1024


class _Done(Exception):
    def __init__(self, status: int) -> None:
        super().__init__(status)
        self.status = status


async def _pump(
    source: trio.abc.ReceiveStream, sink: trio.abc.SendStream, on_eof: int, on_error: int
) -> None:
    try:
        while chunk := await source.receive_some(CHUNK):
            await sink.send_all(chunk)
    except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
        raise _Done(on_error) from None
    raise _Done(on_eof)


async def run_proxy(path: Path) -> int:
    """Pipe stdin/stdout to the socket at `path` until one side ends; returns the exit status."""
    try:
        sock = await trio.open_unix_socket(connectable_path(path))
    except OSError as exc:
        sys.stderr.write(
            f"Error: failed to connect to socket at {path}\n\nCaused by:\n"
            f"    {exc.strerror} (os error {exc.errno})\n"
        )
        return 1
    stdin = trio.lowlevel.FdStream(os.dup(0))
    stdout = trio.lowlevel.FdStream(os.dup(1))
    status = 0
    try:
        async with sock, stdin, stdout, trio.open_nursery() as nursery:
            nursery.start_soon(_pump, stdin, sock, 0, 1)
            nursery.start_soon(_pump, sock, stdout, 0, 1)
    except* _Done as group:
        status = max(exc.status for exc in group.exceptions if isinstance(exc, _Done))
    return status


def main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="codex-trio proxy", description="A raw byte pipe between stdin/stdout and the control socket."
    )
    parser.add_argument(
        "--sock",
        type=Path,
        metavar="PATH",
        help="control socket (default: $CODEX_HOME/app-server-control/app-server-control.sock)",
    )
    args = parser.parse_args(argv)
    path = args.sock if args.sock is not None else default_socket_path(default_codex_home())
    return trio.run(run_proxy, path)
