"""Server-wide fan-out: notifications meant for every initialized connection.

Fan-out loops over each connection's own queue (channel clones do not broadcast) and never
waits on one client: see `Connection.broadcast_nowait` for the slow-consumer rule.
Imports `connection` and `protocol` only.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from codex_trio.connection import Connection
from codex_trio.protocol import envelope
from codex_trio.protocol.converter import unstructure


class Broadcaster:
    """The registry of live connections, and the one way to reach all of them."""

    def __init__(self) -> None:
        self._connections: dict[int, Connection] = {}

    def add(self, connection: Connection) -> None:
        self._connections[connection.id] = connection

    def remove(self, connection: Connection) -> None:
        self._connections.pop(connection.id, None)

    @property
    def connections(self) -> list[Connection]:
        return list(self._connections.values())

    def get(self, connection_id: int) -> Connection | None:
        return self._connections.get(connection_id)

    def broadcast(self, method: str, params: Any, *, only: Iterable[int] | None = None) -> None:
        """Queue a notification for every initialized connection (or those in `only`)."""
        encoded = envelope.encode_notification(method, unstructure(params))
        targets = (
            self._connections.values()
            if only is None
            else (c for i in only if (c := self._connections.get(i)) is not None)
        )
        for connection in list(targets):
            if connection.session.initialized:
                connection.broadcast_nowait(method, encoded)
