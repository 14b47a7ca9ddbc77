"""A configured MCP server's state as its owner sees it (no `mcp` import: usable for servers
that are disabled, failed, or when the optional package is missing)."""

from __future__ import annotations

from typing import Any, Protocol

import attrs
import trio

from codex_trio.mcp.config import McpServerConfig


class Hooks(Protocol):
    """What the owner of a connection learns and is asked."""

    async def status_changed(self, state: ServerState) -> None: ...

    async def elicit(self, state: ServerState, request: dict[str, Any]) -> dict[str, Any]:
        """Answer an `elicitation/create` (wire JSON in, an ElicitResult as wire JSON out)."""
        ...


@attrs.define(eq=False)
class ServerState:
    """A configured server as its owner sees it; `session` is set while it is connected."""

    config: McpServerConfig
    status: str = "starting"  # starting | ready | failed | cancelled | disabled
    #: why the start failed (the status list's `toolsError`).
    detail: str | None = None
    session: Any = None
    server_info: dict[str, Any] | None = None
    capabilities: dict[str, Any] | None = None
    instructions: str | None = None
    tools: list[dict[str, Any]] = attrs.Factory(list)
    tool_list_meta: Any = None
    resources: list[dict[str, Any]] = attrs.Factory(list)
    resource_templates: list[dict[str, Any]] = attrs.Factory(list)
    #: set once the start succeeded or failed.
    settled: trio.Event = attrs.Factory(trio.Event)

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def error(self) -> str | None:
        """The startup notification's error text."""
        if self.detail is None:
            return None
        if self.detail.startswith("MCP client for"):
            return self.detail
        return f"MCP client for `{self.name}` failed to start: {self.detail}"

    def tool(self, name: str) -> dict[str, Any] | None:
        return next((t for t in self.tools if t.get("name") == name), None)
