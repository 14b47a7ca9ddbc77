"""A small stdio MCP server for the MCP tests, written with the `mcp` package (its MCPServer).

Run as `python tests/mcp_fixture_server.py [--crash]`. Tools:

* `echo(text)`          returns the text
* `peek(key)`           a read-only tool (annotated `readOnlyHint`)
* `plain(text)`         text content only (no structured content)
* `add(a, b)`           returns the sum, also as structured content
* `ask_name()`          elicits a form `{name}` from the client and reports the answer
* `visit_url()`         a URL-mode elicitation
* `slow(steps)`         reports `steps` progress notifications, then returns
* `wait_forever()`      never returns (cancelled by its caller)
* `boom()`              fails (an `isError` result)

and one resource, `fixture://greeting`. With `--crash` it exits with status 3 before the
MCP handshake (a server that crashes at startup). With `--pidfile PATH` it writes its pid
there first, so tests can check that the process is gone afterwards. With `--http PORT` it
serves streamable HTTP on 127.0.0.1:PORT/mcp instead of stdio.
"""

from __future__ import annotations

import os
import sys
from typing import Literal

import anyio
from mcp.server.mcpserver import Context, MCPServer
from mcp.types import ToolAnnotations
from pydantic import Field

server = MCPServer("fixture", version="1.2.3", instructions="A test server.")


@server.tool(description="Echo the text back.")
def echo(text: str) -> str:
    return text


@server.tool(
    description="Read a value without changing anything.", annotations=ToolAnnotations(read_only_hint=True)
)
def peek(key: str) -> str:
    return f"value of {key}"


@server.tool(description="Plain text content, no structured output.", structured_output=False)
def plain(text: str) -> str:
    return f"plain {text}"


@server.tool(description="A tool with a richer input schema.")
def rich(
    mode: Literal["fast", "slow"],
    tags: list[str],
    limit: int | None = None,
    note: str = Field("none", description="A note", max_length=40),
) -> str:
    return f"{mode} {tags} {limit} {note}"


@server.tool(description="Add two integers.")
def add(a: int, b: int) -> dict[str, int]:
    return {"sum": a + b}


#: the form `ask_name` sends (the shape the reference accepts: no top-level `title`).
NAME_FORM = {
    "type": "object",
    "properties": {"name": {"type": "string", "title": "Name", "description": "Your name"}},
    "required": ["name"],
}


@server.tool(description="Ask the user for their name.")
async def ask_name(ctx: Context) -> str:
    session = ctx.request_context.session
    result = await session.elicit_form("What is your name?", NAME_FORM, ctx.request_context.request_id)
    if result.action == "accept":
        return f"hello {(result.content or {}).get('name')}"
    return f"elicitation {result.action}"


@server.tool(description="Send the user to a web page.")
async def visit_url(ctx: Context) -> str:
    result = await ctx.elicit_url("Please sign in", "https://example.com/login", "elicit-1")
    return f"url elicitation {result.action}"


@server.tool(description="Report progress, then finish.")
async def slow(steps: int, ctx: Context) -> str:
    for step in range(steps):
        await ctx.report_progress(step + 1, steps, f"step {step + 1}")
    return "done"


@server.tool(description="Never return.")
async def wait_forever() -> str:
    await anyio.sleep_forever()
    return "unreachable"


@server.tool(description="Always fail.")
def boom() -> str:
    raise RuntimeError("boom failed")


@server.resource("fixture://greeting", description="A greeting.", mime_type="text/plain")
def greeting() -> str:
    return "hello from the fixture"


def main() -> None:
    args = sys.argv[1:]
    if "--pidfile" in args:
        path = args[args.index("--pidfile") + 1]
        with open(path, "a") as f:
            f.write(f"{os.getpid()}\n")
    if "--crash" in args:
        sys.stderr.write("fixture: crashing on purpose\n")
        sys.exit(3)
    if "--http" in args:
        server.run("streamable-http", port=int(args[args.index("--http") + 1]))
    else:
        server.run("stdio")


if __name__ == "__main__":
    main()
