"""The one way a turn runs tools: `ToolProvider`s.

A `ToolProvider` offers Responses-API tool definitions to every model request of a turn and
runs the calls it claims. The turn engine (`codex_trio.core.turn`) knows nothing else about
it: it asks each provider for its tools once per turn, hands each call to the first provider
that `handles` it, and puts the returned output into the history as the call's
`function_call_output`. The built-in tools (`core.builtin_tools`: exec_command, write_stdin,
apply_patch) come first; MCP servers' tools (`mcp.provider`) and any other family follow.

Contract for a provider's `call`:
* it emits its own items (`item/started` … `item/completed`) to the thread's subscribers and
  writes the completed item to the rollout; it asks approvals itself when the policy says so;
* it runs in the turn's task, inside the turn's cancel scope: `turn/interrupt` cancels it.
  Before the cancellation propagates it must have resolved every server->client request it
  caused (each asked client gets `serverRequest/resolved` before `turn/completed`);
* it returns the output the model sees: a string, or a list of input content items;
* it raises `TurnInterrupted` when the user cancels (an approval answered `cancel`).

Item notifications and rollout lines go through `core.item_events`.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import attrs
import trio

from codex_trio.records import by_value

if TYPE_CHECKING:
    from codex_trio.threads import LoadedThread

#: what a call returns to the model: text, or content items (`input_text`, `input_image`).
ToolOutput = str | list[dict[str, Any]]

#: blocking file work (patches, local images) of all turns at once.
FILE_WORK = trio.CapacityLimiter(4)


class TurnInterrupted(Exception):
    """The user cancelled an approval: the turn ends as interrupted."""


@by_value
@attrs.frozen(repr=False, eq=False)
class ToolCall:
    """A call the model made: `namespace` is set for a tool inside a namespace; `kind` is
    `function_call` (JSON arguments) or `custom_tool_call` (free-form input)."""

    call_id: str
    name: str
    arguments: str
    namespace: str | None = None
    kind: str = "function_call"


@by_value
@attrs.frozen(repr=False, eq=False)
class ToolTurn:
    """What a provider may know of the turn that calls it."""

    thread: LoadedThread
    turn_id: str
    approval_policy: Any
    sandbox_policy: Mapping[str, Any]
    cwd: Path


class ToolProvider(Protocol):
    """A family of tools offered to turns (see the module docstring for the call contract)."""

    async def tool_specs(self, turn: ToolTurn) -> list[dict[str, Any]]:
        """Tool definitions for this turn's model requests (may wait for the tools to start)."""
        ...

    def handles(self, turn: ToolTurn, call: ToolCall) -> bool:
        """Whether this provider runs `call`."""
        ...

    async def call(self, turn: ToolTurn, call: ToolCall) -> ToolOutput:
        """Run `call` to its end and return what the model sees."""
        ...
