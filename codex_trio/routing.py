"""The routing vocabulary API families speak: `RequestContext`, `Route` and `route`.

A family describes its methods with `route(...)` and its handlers take a `RequestContext`;
`dispatch.Router` runs them. Living below the API layer, this module lets families declare
routes without importing the router. Imports: `connection` and `protocol` only.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import attrs

from codex_trio.connection import Connection
from codex_trio.protocol import envelope
from codex_trio.protocol.registry import MethodSpec
from codex_trio.records import by_value

Handler = Callable[["RequestContext", Any], Awaitable[Any]]


@attrs.define(eq=False)
class RequestContext:
    """What a handler knows about the request it serves."""

    connection: Connection
    request_id: envelope.RequestId
    method: str
    _after: list[tuple[str, Any]] = attrs.Factory(list)
    _on_sent: list[Callable[[], None]] = attrs.Factory(list)

    def notify_after_response(self, method: str, params: Any) -> None:
        """Queue a notification for this connection, sent right after the response."""
        self._after.append((method, params))

    def call_after_response(self, callback: Callable[[], None]) -> None:
        """Run `callback` once the response is queued (or could not be): work the handler
        started may then emit notifications that must follow the response."""
        self._on_sent.append(callback)

    @property
    def after_response(self) -> list[tuple[str, Any]]:
        """Notifications queued by `notify_after_response`, in order (read by the router)."""
        return self._after

    @property
    def on_sent(self) -> list[Callable[[], None]]:
        """Callbacks queued by `call_after_response`, in order (run by the router)."""
        return self._on_sent


@by_value
@attrs.frozen(repr=False, eq=False)
class Route:
    """One method: its spec (name, params type, experimental), its handler and its gates."""

    spec: MethodSpec
    handler: Handler
    #: handled by the reader itself, so later requests see its effect (initialize).
    inline: bool = False
    #: allowed before `initialize`.
    before_initialize: bool = False
    #: refused on remote transports (ws, unix) before the handler runs (device keys).
    local_only: bool = False


def route(
    name: str,
    params: type[Any] | None,
    handler: Handler,
    *,
    experimental: bool = False,
    inline: bool = False,
    before_initialize: bool = False,
    local_only: bool = False,
) -> Route:
    """A `Route` for `name`, whose params are structured into `params` (None: no params)."""
    return Route(MethodSpec(name, params, experimental), handler, inline, before_initialize, local_only)
