"""Thread items (`ThreadItem`) as the server sends them in `item/*` and in turns.

Pure: frozen attrs classes unstructured by the one converter. Field order follows the
reference's output; `startedAtMs` / `completedAtMs` are experimental fields it always sends.
`item_from_wire` turns a stored wire item (a dict) back into its class, for items rebuilt from
a rollout.
"""

from __future__ import annotations

from typing import Any, Literal

import attrs

from codex_trio.protocol.converter import WIRE, structure, unstructure

CommandStatus = Literal["inProgress", "completed", "failed", "declined"]
PatchStatus = Literal["inProgress", "completed", "failed", "declined"]
CommandSource = Literal["agent", "userShell", "unifiedExecStartup", "unifiedExecInteraction"]


@attrs.frozen
class TextInput:
    """A `text` user input (the only kind whose text reaches the model verbatim)."""

    text: str
    text_elements: list[Any] = attrs.field(factory=list, metadata={WIRE: "text_elements"})
    type: Literal["text"] = "text"

    def to_wire(self) -> dict[str, Any]:
        return {"type": "text", "text": self.text, "text_elements": list(self.text_elements)}


@attrs.frozen
class UserMessageItem:
    id: str
    content: list[dict[str, Any]]
    client_id: str | None = None
    started_at_ms: int | None = None
    completed_at_ms: int | None = None
    type: Literal["userMessage"] = "userMessage"

    def to_wire(self) -> dict[str, Any]:
        return {
            "type": "userMessage",
            "id": self.id,
            "clientId": self.client_id,
            "content": self.content,
            "startedAtMs": self.started_at_ms,
            "completedAtMs": self.completed_at_ms,
        }


@attrs.frozen
class AgentMessageItem:
    id: str
    text: str = ""
    phase: str | None = None
    started_at_ms: int | None = None
    completed_at_ms: int | None = None
    type: Literal["agentMessage"] = "agentMessage"

    def to_wire(self) -> dict[str, Any]:
        return {
            "type": "agentMessage",
            "moderation": None,
            "id": self.id,
            "text": self.text,
            "phase": self.phase,
            "memoryCitation": None,
            "delivery": None,
            "questions": None,
            "startedAtMs": self.started_at_ms,
            "completedAtMs": self.completed_at_ms,
        }


@attrs.frozen
class ReasoningItem:
    id: str
    summary: list[str] = attrs.Factory(list)
    content: list[str] = attrs.Factory(list)
    started_at_ms: int | None = None
    completed_at_ms: int | None = None
    type: Literal["reasoning"] = "reasoning"

    def to_wire(self) -> dict[str, Any]:
        return {
            "type": "reasoning",
            "id": self.id,
            "summary": list(self.summary),
            "content": list(self.content),
            "startedAtMs": self.started_at_ms,
            "completedAtMs": self.completed_at_ms,
        }


@attrs.frozen
class CommandExecutionItem:
    id: str
    command: str
    cwd: str
    command_actions: list[dict[str, Any]]
    status: CommandStatus = "inProgress"
    source: CommandSource = "agent"
    process_id: str | None = None
    aggregated_output: str | None = None
    exit_code: int | None = None
    duration_ms: int | None = None
    started_at_ms: int | None = None
    completed_at_ms: int | None = None
    type: Literal["commandExecution"] = "commandExecution"

    def to_wire(self) -> dict[str, Any]:
        return {
            "type": "commandExecution",
            "id": self.id,
            "pluginId": None,
            "scriptPath": None,
            "command": self.command,
            "cwd": self.cwd,
            "processId": self.process_id,
            "source": self.source,
            "status": self.status,
            "commandActions": self.command_actions,
            "aggregatedOutput": self.aggregated_output,
            "exitCode": self.exit_code,
            "durationMs": self.duration_ms,
            "startedAtMs": self.started_at_ms,
            "completedAtMs": self.completed_at_ms,
        }


@attrs.frozen
class FileChange:
    """One file of a patch: `kind` is `{"type": "add" | "delete" | "update", "move_path"?}`."""

    path: str
    kind: dict[str, Any]
    diff: str

    def to_wire(self) -> dict[str, Any]:
        return {"path": self.path, "kind": dict(self.kind), "diff": self.diff}


@attrs.frozen
class FileChangeItem:
    id: str
    changes: list[FileChange]
    status: PatchStatus = "inProgress"
    started_at_ms: int | None = None
    completed_at_ms: int | None = None
    type: Literal["fileChange"] = "fileChange"

    def to_wire(self) -> dict[str, Any]:
        return {
            "type": "fileChange",
            "id": self.id,
            "changes": [c.to_wire() for c in self.changes],
            "status": self.status,
            "startedAtMs": self.started_at_ms,
            "completedAtMs": self.completed_at_ms,
        }


ThreadItem = UserMessageItem | AgentMessageItem | ReasoningItem | CommandExecutionItem | FileChangeItem


# ---------------------------------------------------------------------------- approvals
@attrs.frozen
class CommandApprovalParams:
    """`item/commandExecution/requestApproval` params (server -> client)."""

    thread_id: str
    turn_id: str
    item_id: str
    started_at_ms: int
    command: str
    cwd: str
    command_actions: list[dict[str, Any]]
    proposed_execpolicy_amendment: list[str] | None
    available_decisions: list[Any]
    reason: str | None = None

    def to_wire(self) -> dict[str, Any]:
        params: dict[str, Any] = {
            "kind": "command",
            "threadId": self.thread_id,
            "turnId": self.turn_id,
            "itemId": self.item_id,
            "startedAtMs": self.started_at_ms,
            "environmentId": "local",
            "command": self.command,
            "cwd": self.cwd,
            "commandActions": self.command_actions,
            "proposedExecpolicyAmendment": self.proposed_execpolicy_amendment,
            "availableDecisions": self.available_decisions,
        }
        if self.reason is not None:
            params["reason"] = self.reason
        return params


@attrs.frozen
class FileChangeApprovalParams:
    """`item/fileChange/requestApproval` params (server -> client)."""

    thread_id: str
    turn_id: str
    item_id: str
    started_at_ms: int
    reason: str | None = None
    grant_root: str | None = None

    def to_wire(self) -> dict[str, Any]:
        wire: dict[str, Any] = unstructure(self)
        return wire


Decision = Literal["accept", "acceptForSession", "decline", "cancel"]


@attrs.frozen
class ApprovalAnswer:
    """The client's answer, reduced to what the turn acts on.

    `decision` is one of accept / acceptForSession / decline / cancel; an
    `acceptWithExecpolicyAmendment` answer is `accept` with `amendment` set.
    """

    decision: Decision
    amendment: list[str] | None = None


def parse_approval_answer(result: Any) -> ApprovalAnswer:
    """A client's `{"decision": …}` result; anything unreadable counts as `decline`."""
    decision = result.get("decision") if isinstance(result, dict) else None
    if decision in ("accept", "acceptForSession", "decline", "cancel"):
        return ApprovalAnswer(decision)
    if decision in ("approved", "approved_for_session", "denied", "abort"):
        # the legacy v1 spelling, still accepted by the reference
        legacy: dict[str, Decision] = {
            "approved": "accept",
            "approved_for_session": "acceptForSession",
            "denied": "decline",
            "abort": "cancel",
        }
        return ApprovalAnswer(legacy[decision])
    if isinstance(decision, dict):
        amendment = decision.get("acceptWithExecpolicyAmendment")
        if isinstance(amendment, dict):
            prefix = amendment.get("execpolicy_amendment")
            if isinstance(prefix, list) and all(isinstance(p, str) for p in prefix):
                return ApprovalAnswer("accept", list(prefix))
            return ApprovalAnswer("accept")
    return ApprovalAnswer("decline")


def item_to_wire(item: ThreadItem) -> dict[str, Any]:
    return item.to_wire()


def text_inputs(content: list[dict[str, Any]]) -> list[TextInput]:
    """The text parts of a userMessage's content (other inputs are kept on the item only)."""
    out = []
    for part in content:
        if part.get("type") == "text" and isinstance(part.get("text"), str):
            out.append(structure(part, TextInput))
    return out
