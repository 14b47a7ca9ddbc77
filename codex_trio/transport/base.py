"""The one interface every transport gives a connection, and how a server refuses one.

A leaf: imports nothing of ours, so every transport and the server can share these types.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal, Protocol, runtime_checkable


class MessageStream(Protocol):
    """A bidirectional stream of whole JSON-RPC messages (undecoded bytes).

    `receive_message` raises `trio.EndOfChannel` when the peer is done and
    `trio.BrokenResourceError` when the transport failed; `send_message` raises
    `trio.BrokenResourceError` or `trio.ClosedResourceError` when the peer is gone.
    """

    #: The name the reference logs for the transport: stdio, websocket, unix_socket, in_process.
    transport_name: str

    async def receive_message(self) -> bytes: ...

    async def send_message(self, data: bytes) -> None: ...

    async def send_messages(self, batch: Sequence[bytes]) -> None:
        """Send several messages in order, in as few writes as the transport allows."""
        ...

    async def aclose(self) -> None: ...


#: what `send_messages_nowait` did: nothing ("refused"), all of it ("sent"), or a part, with
#: the rest to be written by `finish_send` before anything else ("partial").
NowaitResult = Literal["refused", "sent", "partial"]


@runtime_checkable
class NowaitSender(Protocol):
    """A transport that can write a message from a broadcast loop, without a writer task.

    Used by `Connection.broadcast_nowait` only while its writer is idle and nothing is queued,
    so the message keeps its place; it saves a task wake-up per connection per broadcast.
    """

    def send_messages_nowait(self, batch: Sequence[bytes]) -> NowaitResult:
        """Write `batch` (one or more messages) in one write, if the transport takes it now."""
        ...

    async def finish_send(self) -> None:
        """After "partial": write the rest; later sends wait for it."""
        ...


class ServerClosed(Exception):
    """The server is draining or stopped and takes no new connections (raised by `adopt`)."""
