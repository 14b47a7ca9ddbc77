"""MCP tools in turns: the `ToolProvider` the turn engine consults (`codex_trio.core.tools`).

Each turn offers every connected server's tools as one Responses-API namespace tool
`mcp__<server>` (waiting for the thread's servers to finish starting first). A call the
model makes in such a namespace (or with a flat `mcp__<server>__<tool>` name) becomes an
`mcpToolCall` item:

    item/started (inProgress)
    [mcpServer/elicitation/request  — "Allow the … MCP server to run tool …?" when the policy asks]
    [item/mcpToolCall/progress      — the server's progress messages]
    [mcpServer/elicitation/request  — the server's own elicitations, answered by the client]
    item/completed (completed | failed, with the result or the error)

A declined or cancelled approval fails the item (`user rejected MCP tool call` / `user
cancelled MCP tool call`) and the turn goes on, as in the reference.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import attrs
import orjson
import trio

from codex_trio.core import item_events
from codex_trio.core.approvals import policy_name
from codex_trio.core.tools import ToolCall, ToolOutput, ToolTurn
from codex_trio.ids import now_ms
from codex_trio.mcp.manager import McpRegistry, ThreadMcp, session_module
from codex_trio.mcp.state import ServerState
from codex_trio.protocol import mcp as wire
from codex_trio.protocol.errors import RpcError

log = logging.getLogger(__name__)




def needs_approval(mcp: ThreadMcp, state: ServerState, tool: str, approval_policy: Any) -> bool:
    """Ask before a call unless the policy never asks, the user allowed this tool for the
    session, the config approves it, or the tool says it only reads."""
    mode = state.config.approval_modes.get(tool, "auto")
    if mode == "approve" or policy_name(approval_policy) == "never":
        return False
    if mode == "prompt":
        return True
    if (state.name, tool) in mcp.approved:
        return False
    annotations = (state.tool(tool) or {}).get("annotations")
    return not (isinstance(annotations, dict) and annotations.get("readOnlyHint") is True)


class McpToolProvider:
    """Offers the thread's MCP tools to its turns and runs the calls."""

    def __init__(self, registry: McpRegistry) -> None:
        self.registry = registry

    async def tool_specs(self, turn: ToolTurn) -> list[dict[str, Any]]:
        """One namespace tool per connected server (waits for the thread's servers to start)."""
        try:
            mcp = await self.registry.for_thread(turn.thread)
        except RpcError:  # the server is draining: this turn runs without MCP tools
            return []
        if not mcp.has_servers:
            return []
        await mcp.wait_settled()
        return [
            wire.namespace_tool(state.name, state.instructions, state.tools)
            for state in mcp.states.values()
            if state.session is not None and state.tools
        ]

    def handles(self, turn: ToolTurn, call: ToolCall) -> bool:
        """Calls in an `mcp__<server>` namespace, or with a flat `mcp__<server>__<tool>` name."""
        return wire.split_call_name(call.name, call.namespace) is not None

    async def call(self, turn: ToolTurn, call: ToolCall) -> ToolOutput:
        """Run the call as an `mcpToolCall` item, asking approval when needed."""
        names = wire.split_call_name(call.name, call.namespace)
        assert names is not None, "handles() claimed the call"
        server, tool = names
        began = time.monotonic()
        try:
            arguments = orjson.loads(call.arguments) if call.arguments.strip() else None
        except orjson.JSONDecodeError as exc:
            return f"failed to parse function arguments: {exc}"
        if arguments is not None and not isinstance(arguments, dict):
            return "failed to parse function arguments: expected a JSON object"
        mcp = self.registry.current(turn.thread.id)
        state = mcp.connected(server) if mcp is not None else None
        definition = state.tool(tool) if state is not None else None
        annotations = (definition or {}).get("annotations")
        read_only = annotations.get("readOnlyHint") if isinstance(annotations, dict) else None
        item = wire.McpToolCallItem(
            call.call_id,
            server,
            tool,
            arguments if arguments is not None else {},
            read_only_hint=read_only if isinstance(read_only, bool) else None,
            started_at_ms=now_ms(),
        )
        await item_events.started(turn.thread, turn.turn_id, item)
        if mcp is None or state is None:
            message = f"unknown MCP server '{server}'"
            await self._finish(turn, item, began, error=message)
            return wire.error_output(message, time.monotonic() - began)
        if needs_approval(mcp, state, tool, turn.approval_policy):
            description = (definition or {}).get("description")
            params = wire.approval_params(turn.thread.id, turn.turn_id, server, tool, description, arguments)
            answer = await mcp.ask(params)
            if answer.action != "accept":
                verb = "rejected" if answer.action == "decline" else "cancelled"
                message = f"user {verb} MCP tool call"
                await self._finish(turn, item, began, error=message)
                return wire.error_output(message, time.monotonic() - began)
            if answer.persist is not None:
                mcp.approved.add((server, tool))

        async def on_progress(progress: float, total: float | None, message: str | None) -> None:
            if message:
                await turn.thread.notify_subscribers(
                    "item/mcpToolCall/progress",
                    wire.McpToolCallProgress(turn.thread.id, turn.turn_id, item.id, message),
                )

        calls = session_module()
        try:
            result = await mcp.call_tool(
                state,
                tool,
                arguments,
                turn_id=turn.turn_id,
                approval_policy=turn.approval_policy,
                progress=on_progress,
            )
        except trio.TooSlowError:
            message = f"tool call timed out after {state.config.tool_timeout:g}s"
        except calls.CallFailed as exc:
            message = f"tool call error: {exc.message}"
        else:
            failed = bool(result.get("isError"))
            await self._finish(turn, item, began, result=wire.item_result(result), failed=failed)
            return wire.model_output(result, time.monotonic() - began)
        await self._finish(turn, item, began, error=message)
        return wire.error_output(message, time.monotonic() - began)

    async def _finish(
        self,
        turn: ToolTurn,
        item: wire.McpToolCallItem,
        began: float,
        *,
        result: dict[str, Any] | None = None,
        error: str | None = None,
        failed: bool = False,
    ) -> None:
        done = attrs.evolve(
            item,
            status="failed" if failed or error is not None else "completed",
            result=result,
            error=wire.McpToolCallError(error) if error is not None else None,
            duration_ms=0 if result is None else int((time.monotonic() - began) * 1000),
            completed_at_ms=now_ms(),
        )
        await item_events.finished(turn.thread, turn.turn_id, done)
