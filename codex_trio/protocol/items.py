"""Thread items (`ThreadItem`), the `item/*` notifications and approval requests.

Pure: frozen attrs classes that the one converter unstructures (`unstructure(item)`). Field
order is the reference's key order; fields it always sends with one value, and those set only
by `attrs.evolve`, are keyword-only (out of the positional constructor, in their wire place).
`startedAtMs` / `completedAtMs` are experimental fields the reference always sends. Items
rebuilt from a rollout stay wire dicts (`store.history`).
"""

from __future__ import annotations

from typing import Any, Literal

import attrs

from codex_trio.protocol.converter import omittable
from codex_trio.records import by_value

CommandStatus = Literal["inProgress", "completed", "failed", "declined"]
PatchStatus = Literal["inProgress", "completed", "failed", "declined"]
CommandSource = Literal["agent", "userShell", "unifiedExecStartup", "unifiedExecInteraction"]


@by_value
@attrs.frozen(repr=False, eq=False)
class UserMessageItem:
    """The `userMessage` item: the user's input as the client sent it."""

    type: Literal["userMessage"] = attrs.field(default="userMessage", kw_only=True)
    id: str
    client_id: str | None = attrs.field(default=None, kw_only=True)
    content: list[dict[str, Any]]
    started_at_ms: int | None = None
    completed_at_ms: int | None = None


@by_value
@attrs.frozen(repr=False, eq=False)
class AgentMessageItem:
    """The `agentMessage` item: the model's answer (`text` is complete once the item is)."""

    type: Literal["agentMessage"] = attrs.field(default="agentMessage", kw_only=True)
    moderation: None = attrs.field(default=None, kw_only=True)
    id: str
    text: str = ""
    phase: str | None = None
    memory_citation: None = attrs.field(default=None, kw_only=True)
    delivery: None = attrs.field(default=None, kw_only=True)
    questions: None = attrs.field(default=None, kw_only=True)
    started_at_ms: int | None = None
    completed_at_ms: int | None = None


@by_value
@attrs.frozen(repr=False, eq=False)
class ReasoningItem:
    """The `reasoning` item: the model's reasoning summary and content parts."""

    type: Literal["reasoning"] = attrs.field(default="reasoning", kw_only=True)
    id: str
    summary: list[str] = attrs.Factory(list)
    content: list[str] = attrs.Factory(list)
    started_at_ms: int | None = None
    completed_at_ms: int | None = None


@by_value
@attrs.frozen(repr=False, eq=False)
class CommandExecutionItem:
    """The `commandExecution` item of an `exec_command` call."""

    type: Literal["commandExecution"] = attrs.field(default="commandExecution", kw_only=True)
    id: str
    plugin_id: None = attrs.field(default=None, kw_only=True)
    script_path: None = attrs.field(default=None, kw_only=True)
    command: str
    cwd: str
    process_id: str | None = attrs.field(default=None, kw_only=True)
    source: CommandSource = attrs.field(default="agent", kw_only=True)
    status: CommandStatus = attrs.field(default="inProgress", kw_only=True)
    command_actions: list[dict[str, Any]]
    aggregated_output: str | None = None
    exit_code: int | None = None
    duration_ms: int | None = None
    started_at_ms: int | None = None
    completed_at_ms: int | None = None


@by_value
@attrs.frozen(repr=False, eq=False)
class ContextCompactionItem:
    """The `contextCompaction` item: the history was replaced by a summary."""

    type: Literal["contextCompaction"] = attrs.field(default="contextCompaction", kw_only=True)
    id: str
    started_at_ms: int | None = None
    completed_at_ms: int | None = None


@by_value
@attrs.frozen(repr=False, eq=False)
class EnteredReviewModeItem:
    """The `enteredReviewMode` item: a review started; `review` is its user-facing label."""

    type: Literal["enteredReviewMode"] = attrs.field(default="enteredReviewMode", kw_only=True)
    id: str
    review: str
    started_at_ms: int | None = None
    completed_at_ms: int | None = None


@by_value
@attrs.frozen(repr=False, eq=False)
class ExitedReviewModeItem:
    """The `exitedReviewMode` item: the review ended; `review` is its rendered result."""

    type: Literal["exitedReviewMode"] = attrs.field(default="exitedReviewMode", kw_only=True)
    id: str
    review: str
    started_at_ms: int | None = None
    completed_at_ms: int | None = None


@by_value
@attrs.frozen(repr=False, eq=False)
class FileChange:
    """One file of a patch: `kind` is `{"type": "add" | "delete" | "update", "move_path"?}`."""

    path: str
    kind: dict[str, Any]
    diff: str


@by_value
@attrs.frozen(repr=False, eq=False)
class FileChangeItem:
    """The `fileChange` item of an `apply_patch` call."""

    type: Literal["fileChange"] = attrs.field(default="fileChange", kw_only=True)
    id: str
    changes: list[FileChange]
    status: PatchStatus = "inProgress"
    started_at_ms: int | None = None
    completed_at_ms: int | None = None


ThreadItem = UserMessageItem | AgentMessageItem | ReasoningItem | CommandExecutionItem | FileChangeItem


# ---------------------------------------------------------------------------- notifications
@by_value
@attrs.frozen(repr=False, eq=False)
class ItemStarted:
    """`item/started`: `item` is any item class (an attrs instance, unstructured by its type)."""

    item: Any
    thread_id: str
    turn_id: str
    started_at_ms: int | None


@by_value
@attrs.frozen(repr=False, eq=False)
class ItemCompleted:
    """`item/completed`: the item in its final state."""

    item: Any
    thread_id: str
    turn_id: str
    content_token_count: None = attrs.field(default=None, kw_only=True)
    completed_at_ms: int | None


@by_value
@attrs.frozen(repr=False, eq=False)
class ItemDelta:
    """`item/agentMessage/delta`, `item/commandExecution/outputDelta`: a piece of an item's text."""

    thread_id: str
    turn_id: str
    item_id: str
    delta: str


@by_value
@attrs.frozen(repr=False, eq=False)
class ReasoningSummaryTextDelta:
    """`item/reasoning/summaryTextDelta`."""

    thread_id: str
    turn_id: str
    item_id: str
    delta: str
    summary_index: int


@by_value
@attrs.frozen(repr=False, eq=False)
class ReasoningSummaryPartAdded:
    """`item/reasoning/summaryPartAdded`."""

    thread_id: str
    turn_id: str
    item_id: str
    summary_index: int


# ---------------------------------------------------------------------------- approvals
@by_value
@attrs.frozen(repr=False, eq=False)
class CommandApprovalParams:
    """`item/commandExecution/requestApproval` params (server -> client)."""

    kind: Literal["command"] = attrs.field(default="command", kw_only=True)
    thread_id: str
    turn_id: str
    item_id: str
    started_at_ms: int
    environment_id: Literal["local"] = attrs.field(default="local", kw_only=True)
    command: str
    cwd: str
    command_actions: list[dict[str, Any]]
    proposed_execpolicy_amendment: list[str] | None
    available_decisions: list[Any]
    reason: str | None = omittable()


@by_value
@attrs.frozen(repr=False, eq=False)
class FileChangeApprovalParams:
    """`item/fileChange/requestApproval` params (server -> client)."""

    thread_id: str
    turn_id: str
    item_id: str
    started_at_ms: int
    reason: str | None = None
    grant_root: str | None = None


Decision = Literal["accept", "acceptForSession", "decline", "cancel"]


@by_value
@attrs.frozen(repr=False, eq=False)
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
