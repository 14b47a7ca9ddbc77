"""MCP servers for threads: configuration, connections, the per-thread manager, the tool
provider that offers their tools to turns.

The `mcp` package is an optional dependency (`pip install codex-trio[mcp]`), imported only
when a server is actually started, so a server without `[mcp_servers]` pays nothing for it.
Wire shapes live in `codex_trio.protocol.mcp`; the API family in `codex_trio.api.mcp`.
Imports `core` (tools, approvals) and the layers below it; never an API family.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def configures_servers(config: Mapping[str, Any]) -> bool:
    """True when a thread's config may name MCP servers (its own tables or its plugins').

    Here, not in `config`, so the server can ask it of every loaded thread without importing
    the MCP code."""
    return bool(config.get("mcp_servers") or config.get("plugins"))
