"""In-process connections: a pair of bounded message channels, no bytes on any wire.

Embedders and tests use this; it goes through the same connection and dispatch path as stdio.
"""

from __future__ import annotations

from collections.abc import Sequence

import trio

#: messages buffered each way; a reader that falls further behind blocks its peer's sends.
MEMORY_CAPACITY = 64


class MemoryMessageStream:
    """One end of an in-process message pipe."""

    transport_name = "in_process"

    def __init__(
        self, send: trio.MemorySendChannel[bytes], receive: trio.MemoryReceiveChannel[bytes]
    ) -> None:
        self._send = send
        self._receive = receive

    async def receive_message(self) -> bytes:
        return await self._receive.receive()

    async def send_message(self, data: bytes) -> None:
        await self._send.send(data)

    async def send_messages(self, batch: Sequence[bytes]) -> None:
        for data in batch:
            await self._send.send(data)

    async def aclose(self) -> None:
        await self._send.aclose()
        await self._receive.aclose()


def memory_message_stream_pair() -> tuple[MemoryMessageStream, MemoryMessageStream]:
    """(server end, client end)."""
    to_server_send, to_server_receive = trio.open_memory_channel[bytes](MEMORY_CAPACITY)
    to_client_send, to_client_receive = trio.open_memory_channel[bytes](MEMORY_CAPACITY)
    return (
        MemoryMessageStream(to_client_send, to_server_receive),
        MemoryMessageStream(to_server_send, to_client_receive),
    )
