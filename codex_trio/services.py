"""What an API family may ask of the server, without importing the composition root.

`AppServer` implements this; families receive it in their constructor. A family may also
define these optional hooks:

* `async def connection_closed(self, connection)`: drop per-connection state;
* `def drain_started(self)`: stop detached work that never ends by itself (MCP servers), so the
  drain does not wait its whole grace for it;
* `async def aclose(self)`: called once the server has stopped, to release what it holds;
* `def warm(self)`: CPU work worth doing before the first call (building converter functions),
  run in a worker thread when a server builds the family ahead of use (pure, no I/O).

Imports `outgoing` and `settings` only, so every family can depend on it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from codex_trio.outgoing import Broadcaster
from codex_trio.settings import ServerSettings


class Services(Protocol):
    """What an API family may ask of the server (see the module docstring)."""

    settings: ServerSettings
    broadcaster: Broadcaster

    @property
    def draining(self) -> bool:
        """True once shutdown began: new threads and turns are refused."""
        ...

    def start_detached(self, fn: Callable[..., Awaitable[Any]], *args: Any, name: str) -> None:
        """Run work that outlives its request in the server-owned nursery."""
        ...
