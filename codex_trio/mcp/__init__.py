"""MCP servers for threads: configuration, connections, the per-thread manager, the tool
provider that offers their tools to turns.

The `mcp` package is an optional dependency (`pip install codex-trio[mcp]`), imported only
when a server is actually started, so a server without `[mcp_servers]` pays nothing for it.
Wire shapes live in `codex_trio.protocol.mcp`; the API family in `codex_trio.api.mcp`.
Imports `core` (tools, approvals) and the layers below it; never an API family.
"""
