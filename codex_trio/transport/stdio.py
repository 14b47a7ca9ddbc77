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

from codex_trio.pipes import widen_pipe
from codex_trio.transport.base import NowaitResult

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
        #: the rest of a line `send_messages_nowait` could not write at once
        self._tail: memoryview | None = None
        self._tail_written = trio.lowlevel.ParkingLot()

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

    def send_messages_nowait(self, batch: Sequence[bytes]) -> NowaitResult:
        """Write lines from the caller's task when the pipe takes them (the writer task is
        idle: see `Connection.send`); a partial write leaves the rest to `finish_send`."""
        fd = self._send.fileno() if isinstance(self._send, trio.lowlevel.FdStream) else -1
        if fd < 0 or self._tail is not None:
            return "refused"
        if len(batch) == 1:
            if len(batch[0]) >= SEPARATE_NEWLINE_BYTES:
                return "refused"  # the writer sends it without a copy
            line = batch[0] + b"\n"
        else:
            line = b"\n".join(batch) + b"\n"
        try:
            written = os.write(fd, line)
        except BlockingIOError:
            return "refused"
        except OSError as exc:
            raise trio.BrokenResourceError(f"write failed: {exc}") from exc
        if written == len(line):
            return "sent"
        self._tail = memoryview(line)[written:]
        return "partial"

    async def finish_send(self) -> None:
        try:
            if self._tail is not None:
                await self._send.send_all(self._tail)
        finally:
            self._tail = None
            self._tail_written.unpark_all()

    async def _after_tail(self) -> None:
        while self._tail is not None:
            await self._tail_written.park()

    async def send_message(self, data: bytes) -> None:
        await self._after_tail()
        if len(data) >= SEPARATE_NEWLINE_BYTES:
            # Copying a large message to append one byte costs more than a second write.
            await self._send.send_all(data)
            await self._send.send_all(b"\n")
        else:
            await self._send.send_all(data + b"\n")

    async def send_messages(self, batch: Sequence[bytes]) -> None:
        await self._after_tail()
        await self._send.send_all(b"\n".join(batch) + b"\n")

    async def aclose(self) -> None:
        try:
            await self._send.aclose()
        finally:
            await self._receive.aclose()


def open_stdio() -> LineStream:
    """Wrap private duplicates of the process's stdin and stdout; a stdout pipe is widened,
    so a client decoding one large message can already receive the next (`pipes`)."""
    reader = trio.lowlevel.FdStream(os.dup(0))
    writer = trio.lowlevel.FdStream(os.dup(1))
    widen_pipe(writer.fileno())
    return LineStream(reader, writer)
