"""One MCP server's connection, run start to end in one task (the only module that imports `mcp`).

`serve(state, hooks, cwd)` starts the server (a stdio child, or a streamable HTTP endpoint),
initializes the MCP session, lists its tools (and resources), marks `state` ready, then holds
the session open until the task is cancelled or the server goes away. The `mcp` package is
anyio-based; under Trio, anyio runs on Trio's own primitives, so its `ClientSession` is an
ordinary context manager here. The rule it imposes — enter and exit it in the same task — is
why a server's whole life is one task. Other tasks only *use* the open session (tool calls,
resource reads): requests are correlated by the session's own dispatcher task.

The stdio transport is built on `codex_trio.process.spawn`: the server is the leader of a new
process group, and whatever way its task ends, the group is SIGKILLed and reaped in a
shielded, bounded cleanup (after closing its stdin and a short grace to exit on its own), so
no server process outlives its owner.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import attrs
import trio
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream
from mcp import types
from mcp.client.session import ClientRequestContext, ClientSession
from mcp.shared.dispatcher import ProgressFnT
from mcp.shared.exceptions import MCPError
from mcp.shared.message import SessionMessage

from codex_trio._version import VERSION
from codex_trio.mcp.config import McpServerConfig
from codex_trio.mcp.state import Hooks, ServerState
from codex_trio.process import SpawnError, SpawnSpec, spawn
from codex_trio.records import by_value

log = logging.getLogger(__name__)

#: messages from the server buffered before its reader waits (the session consumes them).
INBOUND_CAPACITY = 32
#: messages to the server buffered before a caller waits (the writer drains them).
OUTBOUND_CAPACITY = 32
#: bytes one JSON-RPC line from a server may take; beyond this the connection is dropped.
MAX_LINE = 32 * 1024 * 1024
#: seconds a stdio server gets to exit on its own once its stdin is closed, before SIGKILL.
STOP_GRACE = 2.0
#: stderr lines of a server kept for the failure message and the log.
STDERR_TAIL = 20
#: tool / resource list pages fetched at most (a server that pages forever is cut off).
MAX_PAGES = 100


class StartupFailed(Exception):
    """The server could not be started; the text is the status list's `toolsError`."""


def dump(model: Any) -> dict[str, Any]:
    """An `mcp` model as wire JSON (aliases, nulls left out)."""
    data = model.model_dump(by_alias=True, mode="json", exclude_none=True)
    assert isinstance(data, dict)
    return data


# ---------------------------------------------------------------------------- transports
@by_value
@attrs.frozen(repr=False, eq=False)
class Transport:
    read: MemoryObjectReceiveStream[SessionMessage | Exception]
    write: MemoryObjectSendStream[SessionMessage]
    #: set when the server went away (stdio: its stdout closed).
    closed: trio.Event


@asynccontextmanager
async def open_stdio(config: McpServerConfig, cwd: Path) -> AsyncIterator[Transport]:
    assert config.command is not None
    spec = SpawnSpec([config.command, *config.args], config.cwd or cwd, dict(config.env), stdin=True)
    async with spawn(spec) as child:
        read_send, read_recv = anyio.create_memory_object_stream[SessionMessage | Exception](INBOUND_CAPACITY)
        write_send, write_recv = anyio.create_memory_object_stream[SessionMessage](OUTBOUND_CAPACITY)
        closed = trio.Event()
        tail: deque[str] = deque(maxlen=STDERR_TAIL)

        async def read_stdout() -> None:
            buffer = b""
            async with read_send:
                while True:
                    chunk = await child.stdout.receive_some()
                    if not chunk:
                        break
                    buffer += chunk
                    *lines, buffer = buffer.split(b"\n")
                    for line in lines:
                        if line.strip():
                            await read_send.send(_parse(line))
                    if len(buffer) > MAX_LINE:
                        log.warning("MCP server %s sent a line over %d bytes; closing", config.name, MAX_LINE)
                        break
            closed.set()

        async def write_stdin() -> None:
            async with write_recv:
                async for message in write_recv:
                    data = message.message.model_dump_json(by_alias=True, exclude_unset=True)
                    await child.write(data.encode() + b"\n")

        async def log_stderr() -> None:
            assert child.stderr is not None
            pending = b""
            while chunk := await child.stderr.receive_some():
                *lines, pending = (pending + chunk).split(b"\n")
                for line in lines:
                    text = line.decode("utf-8", "replace")
                    tail.append(text)
                    log.debug("MCP server %s: %s", config.name, text)
                pending = pending[-MAX_LINE:]

        async with trio.open_nursery() as nursery:
            nursery.start_soon(read_stdout, name=f"mcp {config.name} stdout")
            nursery.start_soon(write_stdin, name=f"mcp {config.name} stdin")
            nursery.start_soon(log_stderr, name=f"mcp {config.name} stderr")
            try:
                yield Transport(read_recv, write_send, closed)
            finally:
                # The MCP shutdown sequence: close stdin, give the server a moment to exit;
                # `spawn`'s own cleanup then SIGKILLs whatever is left of the group.
                with trio.CancelScope(shield=True):
                    await child.close_stdin()
                    with trio.move_on_after(STOP_GRACE):
                        await child.wait()
                nursery.cancel_scope.cancel()
                if tail:
                    log.debug("MCP server %s stderr tail: %s", config.name, " | ".join(tail))


def _parse(line: bytes) -> SessionMessage | Exception:
    try:
        return SessionMessage(types.jsonrpc_message_adapter.validate_json(line, by_name=False))
    except ValueError as exc:
        log.warning("unreadable message from an MCP server: %s", exc)
        return exc


@asynccontextmanager
async def open_http(config: McpServerConfig) -> AsyncIterator[Transport]:
    import httpx2
    from mcp.client.streamable_http import streamable_http_client

    assert config.url is not None
    headers = dict(config.headers)
    if config.bearer_token is not None:
        headers["Authorization"] = f"Bearer {config.bearer_token}"
    client = httpx2.AsyncClient(headers=headers, timeout=httpx2.Timeout(30.0, read=300.0))
    async with client, streamable_http_client(config.url, http_client=client) as (read, write):
        yield Transport(read, write, trio.Event())  # type: ignore[arg-type]


def _transport(config: McpServerConfig, cwd: Path) -> Any:
    return open_http(config) if config.is_http else open_stdio(config, cwd)


# ---------------------------------------------------------------------------- the session
async def serve(state: ServerState, hooks: Hooks, cwd: Path, *, resources: bool = True) -> None:
    """Run `state.config`'s server until cancelled; every outcome lands in `state`."""
    config = state.config

    async def on_elicit(
        context: ClientRequestContext, params: types.ElicitRequestParams
    ) -> types.ElicitResult | types.ErrorData:
        answer = await hooks.elicit(state, dump(params))
        return types.ElicitResult.model_validate(answer)

    ready = False
    detail: str | None = None
    try:
        async with _transport(config, cwd) as transport:
            session = ClientSession(
                transport.read,
                transport.write,
                elicitation_callback=on_elicit,
                client_info=types.Implementation(name="codex-trio", version=VERSION),
            )
            async with session:
                with trio.move_on_after(config.startup_timeout) as startup:
                    await _handshake(state, session, resources)
                if startup.cancelled_caught:
                    raise StartupFailed(_timeout_text(config))
                state.session = session
                state.status = "ready"
                ready = True
                state.settled.set()
                await hooks.status_changed(state)
                if config.is_http:
                    await trio.sleep_forever()
                await transport.closed.wait()
                detail = "MCP server closed the connection"
    except StartupFailed as exc:
        detail = str(exc)
    except SpawnError as exc:
        detail = f"MCP startup failed: {exc}"
    except Exception as exc:
        detail = f"MCP startup failed: {_describe(exc)}" if not ready else f"MCP connection failed: {exc}"
    finally:
        state.session = None
        if state.status == "starting" and detail is None:
            state.status = "cancelled"
        state.settled.set()
    if detail is not None:
        log.warning("MCP server %s: %s", state.name, detail)
        state.status, state.detail = "failed", detail
        if not ready:
            await hooks.status_changed(state)


def _timeout_text(config: McpServerConfig) -> str:
    seconds = f"{config.startup_timeout:g}"
    return (
        f"MCP client for `{config.name}` timed out after {seconds} seconds. Add or adjust "
        f"`startup_timeout_sec` in your config.toml:\n[mcp_servers.{config.name}]\nstartup_timeout_sec = XX"
    )


def _describe(exc: BaseException) -> str:
    """A failure during the handshake, worded like the reference's."""
    leaves: list[BaseException] = []

    def walk(e: BaseException) -> None:
        if isinstance(e, BaseExceptionGroup):
            for inner in e.exceptions:
                walk(inner)
        else:
            leaves.append(e)

    walk(exc)
    first = leaves[0] if leaves else exc
    if isinstance(first, MCPError) and first.error.code == types.CONNECTION_CLOSED:
        return "handshaking with MCP server failed: connection closed: initialize response"
    if isinstance(first, MCPError):
        return f"handshaking with MCP server failed: {first.error.message}"
    return f"handshaking with MCP server failed: {first}"


async def _handshake(state: ServerState, session: ClientSession, resources: bool) -> None:
    init = await session.initialize()
    state.server_info = dump(init.server_info)
    state.capabilities = dump(init.capabilities)
    state.instructions = init.instructions
    tools: list[dict[str, Any]] = []
    cursor: str | None = None
    for page in range(MAX_PAGES):
        params = types.PaginatedRequestParams(cursor=cursor) if cursor else None
        listed = await session.list_tools(params=params)
        if page == 0:
            state.tool_list_meta = listed.meta
        tools.extend(dump(t) for t in listed.tools)
        cursor = listed.next_cursor
        if cursor is None:
            break
    state.tools = [t for t in tools if state.config.offers(str(t.get("name", "")))]
    if resources and init.capabilities.resources is not None:
        try:
            listed_resources = await session.list_resources()
            state.resources = [dump(r) for r in listed_resources.resources]
            templates = await session.list_resource_templates()
            state.resource_templates = [dump(t) for t in templates.resource_templates]
        except MCPError as exc:
            log.info("MCP server %s: resources not listed: %s", state.name, exc)


# ---------------------------------------------------------------------------- calls
class CallFailed(Exception):
    """A request to a connected server failed (transport or protocol), with its MCP error."""

    def __init__(self, message: str, code: int | None = None, data: Any = None) -> None:
        super().__init__(message)
        self.message, self.code, self.data = message, code, data


#: `(progress, total, message)` of a `notifications/progress` for a call.
ProgressCallback = ProgressFnT


async def call_tool(
    session: Any,
    tool: str,
    arguments: Mapping[str, Any] | None,
    meta: Mapping[str, Any] | None = None,
    progress: ProgressCallback | None = None,
) -> dict[str, Any]:
    """`tools/call` on an open session; the `CallToolResult` as wire JSON."""
    assert isinstance(session, ClientSession)
    try:
        result = await session.call_tool(
            tool,
            dict(arguments) if arguments is not None else None,
            progress_callback=progress,
            meta=dict(meta) if meta is not None else None,  # type: ignore[arg-type]
        )
    except MCPError as exc:
        raise CallFailed(exc.error.message, exc.error.code, exc.error.data) from None
    out = dump(result)
    out.pop("resultType", None)
    return out


async def read_resource(session: Any, uri: str) -> list[dict[str, Any]]:
    """`resources/read` on an open session; the contents as wire JSON."""
    assert isinstance(session, ClientSession)
    try:
        result = await session.read_resource(uri)
    except MCPError as exc:
        raise CallFailed(exc.error.message, exc.error.code, exc.error.data) from None
    return [dump(c) for c in result.contents]
