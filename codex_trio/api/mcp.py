"""`mcpServerStatus/list`, `config/mcpServer/reload`, `mcpServer/tool/call`, `mcpServer/resource/read`.

The family owns the `McpRegistry` (every thread's MCP servers, see `codex_trio.mcp.manager`)
and the `McpToolProvider` the turns engine consults. With a `threadId`, requests use that
thread's servers (started on first use). Without one, the servers of the server-level config
are started for the request alone, in the request's own task, and stopped before it answers
(the reference does the same; `runtimeStatus` is then null).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import trio

from codex_trio.mcp.manager import RUNTIME_STATUS, McpRegistry, session_module, temporary_servers
from codex_trio.mcp.provider import McpToolProvider
from codex_trio.mcp.state import ServerState
from codex_trio.protocol import mcp as wire
from codex_trio.protocol.errors import INTERNAL_ERROR, RpcError, internal_error, invalid_request
from codex_trio.protocol.paging import page
from codex_trio.routing import RequestContext, Route, route
from codex_trio.services import Services
from codex_trio.threads import ThreadManager


def _unknown(server: str) -> RpcError:
    return internal_error(f"unknown MCP server '{server}'")


def _call_error(exc: Any) -> RpcError:
    """A failed MCP request as the reference answers it: the server's own error passed on."""
    return RpcError(exc.code if exc.code is not None else INTERNAL_ERROR, exc.message, exc.data)


def status_entry(state: ServerState, *, runtime: bool, full: bool) -> dict[str, Any]:
    """One `McpServerStatus` of `mcpServerStatus/list`."""
    config = state.config
    return {
        "name": state.name,
        "runtimeStatus": RUNTIME_STATUS.get(state.status) if runtime else None,
        "pluginId": None,
        "httpOrigin": config.http_origin,
        "serverInfo": wire.server_info_wire(state.server_info),
        "serverCapabilities": state.capabilities,
        "toolListMeta": state.tool_list_meta,
        "tools": {str(t.get("name")): t for t in state.tools},
        "toolsError": state.detail if state.status == "failed" else None,
        "resources": list(state.resources) if full else [],
        "resourceTemplates": list(state.resource_templates) if full else [],
        "authStatus": config.auth_status,
    }


class McpApi:
    """The MCP family; see the module docstring."""

    def __init__(self, services: Services, manager: ThreadManager) -> None:
        self.services = services
        self.manager = manager
        self.registry = McpRegistry(services)
        manager.on_loaded.append(self.registry.prestart)
        # Threads loaded before this family was built (thread/start builds only the thread family).
        for thread in manager.threads:
            self.registry.prestart(thread)
        #: handed to the turns family: MCP tools in turns.
        self.tools = McpToolProvider(self.registry)

    def routes(self) -> list[Route]:
        """The family's methods."""
        return [
            route("mcpServerStatus/list", wire.McpServerStatusListParams, self.status_list),
            route("config/mcpServer/reload", None, self.reload),
            route("mcpServer/tool/call", wire.McpServerToolCallParams, self.tool_call),
            route("mcpServer/resource/read", wire.McpResourceReadParams, self.resource_read),
        ]

    def drain_started(self) -> None:
        """The server drains: MCP servers are not work to finish, stop them at once."""
        self.registry.stop_all()

    @property
    def _cwd(self) -> Path:
        return Path(self.services.settings.cwd)

    async def status_list(
        self, ctx: RequestContext, params: wire.McpServerStatusListParams
    ) -> dict[str, Any]:
        """`mcpServerStatus/list`: configured servers, their tools and auth state, paged."""
        full = params.detail != "toolsAndAuthOnly"
        if params.thread_id is not None:
            thread = await self.manager.get_loaded(params.thread_id)
            mcp = await self.registry.for_thread(thread)
            await mcp.wait_settled()
            states = [s for s in mcp.states.values() if params.server_name in (None, s.name)]
            entries, next_cursor = page(states, params.cursor, params.limit, "servers")
            data = [status_entry(s, runtime=True, full=full) for s in entries]
            return {"data": data, "nextCursor": next_cursor}
        configs = [
            c for c in await self.registry.server_configs() if params.server_name in (None, c.name)
        ]
        # Only the servers of the requested page are started.
        chosen, next_cursor = page(configs, params.cursor, params.limit, "servers")
        async with temporary_servers(chosen, self._cwd, resources=full) as started:
            data = [status_entry(started[c.name], runtime=False, full=full) for c in chosen]
        return {"data": data, "nextCursor": next_cursor}

    async def reload(self, ctx: RequestContext, params: None) -> dict[str, Any]:
        """`config/mcpServer/reload`: every thread's servers restart, from the current config, on next use."""
        self.registry.reload()
        return {}

    async def tool_call(self, ctx: RequestContext, params: wire.McpServerToolCallParams) -> dict[str, Any]:
        """`mcpServer/tool/call`: call a thread's server tool outside a turn."""
        thread = await self.manager.get_loaded(params.thread_id)
        if params.arguments is not None and not isinstance(params.arguments, dict):
            raise invalid_request("Invalid request: arguments must be an object")
        mcp = await self.registry.for_thread(thread)
        await mcp.wait_settled()
        state = mcp.connected(params.server)
        if state is None:
            raise _unknown(params.server)
        calls = session_module()
        try:
            result = await mcp.call_tool(
                state,
                params.tool,
                params.arguments,
                turn_id=None,
                approval_policy=thread.approval_policy,
                meta=params.meta if isinstance(params.meta, dict) else None,
            )
        except trio.TooSlowError:
            raise internal_error(f"tool call timed out after {state.config.tool_timeout:g}s") from None
        except calls.CallFailed as exc:
            raise _call_error(exc) from None
        return wire.tool_call_response(result)

    async def resource_read(self, ctx: RequestContext, params: wire.McpResourceReadParams) -> dict[str, Any]:
        """`mcpServer/resource/read`: read a resource from a thread's server."""
        if params.thread_id is not None:
            thread = await self.manager.get_loaded(params.thread_id)
            mcp = await self.registry.for_thread(thread)
            await mcp.wait_settled()
            state = mcp.connected(params.server)
            if state is None:
                raise _unknown(params.server)
            return await self._read(state, params.uri)
        configs = [c for c in await self.registry.server_configs() if c.name == params.server and c.enabled]
        if not configs:
            raise _unknown(params.server)
        async with temporary_servers(configs, self._cwd, resources=False) as started:
            state = started[params.server]
            if state.session is None:
                raise _unknown(params.server)
            return await self._read(state, params.uri)

    async def _read(self, state: ServerState, uri: str) -> dict[str, Any]:
        calls = session_module()
        try:
            contents = await calls.read_resource(state.session, uri)
        except calls.CallFailed as exc:
            raise _call_error(exc) from None
        return {"contents": contents, "originCallId": None}
