"""codex-trio: a Trio-native Codex app-server.

The public surface: run the server in-process (`open_app_server`), serve it from a nursery
(`serve`), and the one error type handlers raise (`RpcError`). Names are loaded on first use,
so `python -m codex_trio proxy` and other light entry points do not import the whole server.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from codex_trio._version import VERSION

if TYPE_CHECKING:
    from codex_trio.protocol.errors import RpcError
    from codex_trio.server import AppServer, open_app_server, serve
    from codex_trio.settings import ServerSettings

__version__ = VERSION

_OWNERS = {
    "AppServer": "codex_trio.server",
    "open_app_server": "codex_trio.server",
    "serve": "codex_trio.server",
    "RpcError": "codex_trio.protocol.errors",
    "ServerSettings": "codex_trio.settings",
}

__all__ = ["AppServer", "RpcError", "ServerSettings", "__version__", "open_app_server", "serve"]


def __getattr__(name: str) -> Any:
    owner = _OWNERS.get(name)
    if owner is None:
        raise AttributeError(f"module 'codex_trio' has no attribute {name!r}")
    return getattr(importlib.import_module(owner), name)
