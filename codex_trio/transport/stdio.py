"""stdio: one JSON message per `\n`-terminated line.

Reads and writes go through private dups of fds 0 and 1 wrapped in `trio.lowlevel.FdStream`,
so a pending read is cancellable at shutdown (a thread reading `sys.stdin` is not) and nothing
else in the process can write protocol bytes by accident.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence

import trio
import trio.lowlevel

log = logging.getLogger(__name__)

READ_CHUNK = 256 * 1024  # bytes per read(); large lines are assembled from several
SEPARATE_NEWLINE_BYTES = 256 * 1024  # messages this large get their newline in a write of its own
MAX_LINE = 512 * 1024 * 1024  # a longer line is discarded, not buffered without limit


class LineStream:
    """A `MessageStream` over a pair of byte streams with newline framing."""

    transport_name = "stdio"

    def __init__(self, receive: trio.abc.ReceiveStream, send: trio.abc.SendStream) -> None:
        self._receive = receive
        self._send = send
        self._buffer = bytearray()
        self._scanned = 0
        self._discarding = False
        self._eof = False

    async def receive_message(self) -> bytes:
        while True:
            newline = self._buffer.find(b"\n", self._scanned)
            if newline >= 0:
                line = bytes(self._buffer[:newline])
                del self._buffer[: newline + 1]
                self._scanned = 0
                if self._discarding:
                    self._discarding = False
                    continue
                return line
            self._scanned = len(self._buffer)
            if self._eof:
                if self._buffer and not self._discarding:
                    line = bytes(self._buffer)
                    self._buffer.clear()
                    return line
                raise trio.EndOfChannel
            if self._scanned > MAX_LINE:
                log.error("discarding an input line longer than %d bytes", MAX_LINE)
                self._buffer.clear()
                self._scanned = 0
                self._discarding = True
            chunk = await self._receive.receive_some(READ_CHUNK)
            if not chunk:
                self._eof = True
            else:
                self._buffer += chunk

    async def send_message(self, data: bytes) -> None:
        if len(data) >= SEPARATE_NEWLINE_BYTES:
            # Copying a large message to append one byte costs more than a second write.
            await self._send.send_all(data)
            await self._send.send_all(b"\n")
        else:
            await self._send.send_all(data + b"\n")

    async def send_messages(self, batch: Sequence[bytes]) -> None:
        await self._send.send_all(b"\n".join(batch) + b"\n")

    async def aclose(self) -> None:
        try:
            await self._send.aclose()
        finally:
            await self._receive.aclose()


def open_stdio() -> LineStream:
    """Wrap private duplicates of the process's stdin and stdout."""
    reader = trio.lowlevel.FdStream(os.dup(0))
    writer = trio.lowlevel.FdStream(os.dup(1))
    return LineStream(reader, writer)
