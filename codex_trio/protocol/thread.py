"""`thread/*` wire types: params, the Thread object, responses and notifications.

Field order follows what the reference sends. Items and turns are plain JSON here (the turn
engine owns their shapes). Params whose fields are three-state on the wire (`gitInfo`: absent /
null / value) or untagged unions (`getConversationSummary`) are read as raw JSON and checked by
the helpers below, which raise `WireError` with serde's wording.

Pure: no trio, no I/O.
"""

from __future__ import annotations

import os
from typing import Any, Literal

import attrs

from codex_trio.protocol.converter import WireError, describe, expected_variants, register_unstructure_hook
from codex_trio.records import by_value

# The wire ThreadStatus values; callers copy them (`dict(IDLE)`) before changing one.
IDLE: dict[str, Any] = {"type": "idle"}
NOT_LOADED: dict[str, Any] = {"type": "notLoaded"}
SYSTEM_ERROR: dict[str, Any] = {"type": "systemError"}
ACTIVE: dict[str, Any] = {"type": "active", "activeFlags": []}
WAITING_ON_APPROVAL: dict[str, Any] = {"type": "active", "activeFlags": ["waitingOnApproval"]}

SandboxMode = Literal["read-only", "workspace-write", "danger-full-access"]
ApprovalsReviewer = Literal["user", "auto_review", "guardian_subagent"]
Personality = Literal["none", "friendly", "pragmatic"]
ThreadStartSource = Literal["startup", "clear"]
SortKey = Literal["created_at", "updated_at", "recency_at", "section_position"]
SortDirection = Literal["asc", "desc"]
ItemsView = Literal["notLoaded", "summary", "full"]
SourceKind = Literal[
    "cli",
    "vscode",
    "exec",
    "appServer",
    "subAgent",
    "subAgentReview",
    "subAgentCompact",
    "subAgentThreadSpawn",
    "subAgentOther",
    "unknown",
]


class _Absent:
    """A param the request left out (distinct from an explicit null)."""

    def __repr__(self) -> str:
        return "ABSENT"


ABSENT: Any = _Absent()

APPROVAL_POLICIES = ("untrusted", "on-request", "never")
#: the variant names serde lists for a bad `approvalPolicy` (granular is the map form).
APPROVAL_VARIANTS = ("untrusted", "on-request", "granular", "never")


def read_approval_policy(value: Any) -> Any:
    """An AskForApproval value: a kebab-case name or `{"granular": {...}}`."""
    if isinstance(value, str):
        if value not in APPROVAL_POLICIES:
            raise WireError(f"unknown variant `{value}`, {expected_variants(APPROVAL_VARIANTS)}")
        return value
    if isinstance(value, dict) and len(value) == 1 and "granular" in value:
        granular = value["granular"]
        if not isinstance(granular, dict):
            raise WireError(f"invalid type: {describe(granular)}, expected struct GranularApprovalConfig")
        for key in ("mcp_elicitations", "rules", "sandbox_approval"):
            if key not in granular:
                raise WireError(f"missing field `{key}`")
        return value
    raise WireError(f"invalid type: {describe(value)}, expected enum AskForApproval")


def sandbox_policy(mode: str, workspace: Any = None) -> dict[str, Any]:
    """The camelCase SandboxPolicy a kebab-case SandboxMode stands for.

    `workspace` is config's `[sandbox_workspace_write]` table, which completes workspace-write.
    """
    if mode == "danger-full-access":
        return {"type": "dangerFullAccess"}
    if mode == "workspace-write":
        table = workspace if isinstance(workspace, dict) else {}
        roots = table.get("writable_roots")
        roots = roots if isinstance(roots, list) else []
        return {
            "type": "workspaceWrite",
            "writableRoots": [r for r in roots if isinstance(r, str) and os.path.isabs(r)],
            "networkAccess": table.get("network_access") is True,
            "excludeTmpdirEnvVar": table.get("exclude_tmpdir_env_var") is True,
            "excludeSlashTmp": table.get("exclude_slash_tmp") is True,
        }
    return {"type": "readOnly", "networkAccess": False}


# ---------------------------------------------------------------------------- params
def _thread_id_then_by_name(cls: type, fields: list[attrs.Attribute[Any]]) -> list[attrs.Attribute[Any]]:
    """Field order of the thread/start|resume|fork params: `threadId` first, the rest by name.

    The inherited override fields interleave with each class's own ones, so the order the
    converter reads (and reports the first bad field in) stays the declared wire order.
    """
    return sorted(fields, key=lambda field: (field.name != "thread_id", field.name))


@by_value
@attrs.frozen(repr=False, eq=False)
class ThreadOverrides:
    """The settings thread/start, thread/resume and thread/fork all take over config.toml."""

    approval_policy: Any = None
    approvals_reviewer: ApprovalsReviewer | None = None
    base_instructions: str | None = None
    config: dict[str, Any] | None = None
    cwd: str | None = None
    developer_instructions: str | None = None
    model: str | None = None
    model_provider: str | None = None
    sandbox: SandboxMode | None = None
    service_tier: str | None = None


@by_value
@attrs.frozen(repr=False, eq=False, field_transformer=_thread_id_then_by_name)
class ThreadStartParams(ThreadOverrides):
    ephemeral: bool | None = None
    personality: Personality | None = None
    service_name: str | None = None
    session_start_source: ThreadStartSource | None = None
    thread_source: str | None = None


@by_value
@attrs.frozen(repr=False, eq=False, field_transformer=_thread_id_then_by_name)
class ThreadResumeParams(ThreadOverrides):
    thread_id: str = attrs.field(kw_only=True)
    exclude_turns: bool = False
    personality: Personality | None = None


@by_value
@attrs.frozen(repr=False, eq=False, field_transformer=_thread_id_then_by_name)
class ThreadForkParams(ThreadOverrides):
    thread_id: str = attrs.field(kw_only=True)
    ephemeral: bool = False
    exclude_turns: bool = False
    last_turn_id: str | None = None
    thread_source: str | None = None


@by_value
@attrs.frozen(repr=False, eq=False)
class ThreadIdParams:
    """Params of the methods that take only a thread id (archive, delete, unsubscribe…)."""

    thread_id: str


@by_value
@attrs.frozen(repr=False, eq=False)
class ThreadReadParams:
    thread_id: str
    include_turns: bool = False


@by_value
@attrs.frozen(repr=False, eq=False)
class ThreadSetNameParams:
    thread_id: str
    name: str


@by_value
@attrs.frozen(repr=False, eq=False)
class ThreadMetadataUpdateParams:
    """`gitInfo` stays raw: absent, null and each field's absent/null/value all differ."""

    thread_id: str
    git_info: Any = ABSENT


@by_value
@attrs.frozen(repr=False, eq=False)
class GetConversationSummaryParams:
    """Untagged on the wire: `{conversationId}` or `{rolloutPath}`; checked by the handler."""

    conversation_id: Any = ABSENT
    rollout_path: Any = ABSENT


@by_value
@attrs.frozen(repr=False, eq=False)
class ThreadListParams:
    archived: bool | None = None
    current_account_only: bool = False
    cursor: str | None = None
    cwd: Any = None
    excluded_thread_ids: list[str] | None = None
    limit: int | None = None
    model_providers: list[str] | None = None
    originators: list[str] | None = None
    search_term: str | None = None
    section_id: str | None = None
    sort_direction: SortDirection | None = None
    sort_key: SortKey | None = None
    source_kinds: list[SourceKind] | None = None
    use_state_db_only: bool = False


@by_value
@attrs.frozen(repr=False, eq=False)
class ThreadLoadedListParams:
    cursor: str | None = None
    limit: int | None = None


@by_value
@attrs.frozen(repr=False, eq=False)
class ThreadTurnsListParams:
    thread_id: str
    cursor: str | None = None
    items_view: ItemsView | None = None
    limit: int | None = None
    sort_direction: SortDirection | None = None


@by_value
@attrs.frozen(repr=False, eq=False)
class ThreadItemsListParams:
    thread_id: str
    cursor: Any = None
    defer_output: Any = None
    limit: int | None = None
    sort_direction: SortDirection | None = None
    turn_id: str | None = None


# ---------------------------------------------------------------------------- the Thread object
@by_value
@attrs.frozen(repr=False, eq=False)
class GitInfoWire:
    sha: str | None
    branch: str | None
    origin_url: str | None


@by_value
@attrs.frozen(repr=False, eq=False)
class Environment:
    environment_id: str
    cwd: str
    runtime_workspace_roots: list[str]


@by_value
@attrs.frozen(repr=False, eq=False)
class Thread:
    id: str
    environments: list[Environment] | None
    extra: Any
    session_id: str
    forked_from_id: str | None
    attached_to_thread_id: str | None
    parent_thread_id: str | None
    preview: str
    ephemeral: bool
    section: Any
    section_entered_at: int | None
    project_id: str | None
    history_mode: str
    model_provider: str
    model: str | None
    reasoning_effort: str | None
    created_at: int
    updated_at: int
    recency_at: int
    status: dict[str, Any]
    path: str | None
    cwd: str
    cli_version: str
    originator: str
    source: Any
    can_accept_direct_input: bool | None
    thread_source: str | None
    agent_nickname: str | None
    agent_role: str | None
    git_info: GitInfoWire | None
    name: str | None
    daybreak_enabled: bool | None
    turns: list[Any]


# ---------------------------------------------------------------------------- responses
@by_value
@attrs.frozen(repr=False, eq=False)
class ThreadSessionResponse:
    """What `thread/start`, `thread/fork` and `thread/resume` all answer: the thread and the
    settings it runs with."""

    thread: Thread
    model: str
    model_provider: str
    service_tier: str | None
    disabled_plugin_ids: list[str]
    cwd: str
    runtime_workspace_roots: list[str]
    instruction_sources: list[str]
    approval_policy: Any
    approvals_reviewer: str
    sandbox: dict[str, Any]
    active_permission_profile: dict[str, Any] | None
    reasoning_effort: str | None


@by_value
@attrs.frozen(repr=False, eq=False)
class ThreadStartResponse(ThreadSessionResponse):
    multi_agent_mode: str = "explicitRequestOnly"


@by_value
@attrs.frozen(repr=False, eq=False)
class ThreadResumeResponse(ThreadSessionResponse):
    collaboration_mode: dict[str, Any] | None
    multi_agent_mode: str
    initial_turns_page: Any
    turns_backwards_cursor: str | None
    items_backwards_cursor: str | None


@by_value
@attrs.frozen(repr=False, eq=False)
class ThreadReadResponse:
    thread: Thread
    read_state: dict[str, Any] | None


@by_value
@attrs.frozen(repr=False, eq=False)
class ThreadResponse:
    """`{thread}`: unarchive and metadata/update."""

    thread: Thread


@by_value
@attrs.frozen(repr=False, eq=False)
class ThreadListResponse:
    data: list[Thread]
    read_states: dict[str, Any]
    next_cursor: str | None
    backwards_cursor: str | None


@by_value
@attrs.frozen(repr=False, eq=False)
class ThreadLoadedListResponse:
    data: list[str]
    next_cursor: str | None


@by_value
@attrs.frozen(repr=False, eq=False)
class ThreadUnsubscribeResponse:
    status: Literal["unsubscribed", "notSubscribed", "notLoaded"]


@by_value
@attrs.frozen(repr=False, eq=False)
class PageResponse:
    """`thread/turns/list` and `thread/items/list`."""

    data: list[Any]
    next_cursor: str | None
    backwards_cursor: str | None


@by_value
@attrs.frozen(repr=False, eq=False)
class ConversationSummary:
    conversation_id: str
    path: str
    preview: str
    timestamp: str | None
    updated_at: str | None
    model_provider: str
    cwd: str
    cli_version: str
    source: Any
    #: snake_case inside, as the reference sends it (`origin_url`).
    git_info: dict[str, Any] | None


@by_value
@attrs.frozen(repr=False, eq=False)
class GetConversationSummaryResponse:
    summary: ConversationSummary


def thread_to_wire(thread: Thread) -> dict[str, Any]:
    """The Thread object as sent, in the reference's key order.

    Registered as the converter's hook for `Thread`: a list page holds up to 100 of them, and a
    plain function avoids generating (and then running) the generic code path for each field.
    """
    git = thread.git_info
    return {
        "id": thread.id,
        "environments": None
        if thread.environments is None
        else [
            {
                "environmentId": e.environment_id,
                "cwd": e.cwd,
                "runtimeWorkspaceRoots": list(e.runtime_workspace_roots),
            }
            for e in thread.environments
        ],
        "extra": thread.extra,
        "sessionId": thread.session_id,
        "forkedFromId": thread.forked_from_id,
        "attachedToThreadId": thread.attached_to_thread_id,
        "parentThreadId": thread.parent_thread_id,
        "preview": thread.preview,
        "ephemeral": thread.ephemeral,
        "section": thread.section,
        "sectionEnteredAt": thread.section_entered_at,
        "projectId": thread.project_id,
        "historyMode": thread.history_mode,
        "modelProvider": thread.model_provider,
        "model": thread.model,
        "reasoningEffort": thread.reasoning_effort,
        "createdAt": thread.created_at,
        "updatedAt": thread.updated_at,
        "recencyAt": thread.recency_at,
        "status": thread.status,
        "path": thread.path,
        "cwd": thread.cwd,
        "cliVersion": thread.cli_version,
        "originator": thread.originator,
        "source": thread.source,
        "canAcceptDirectInput": thread.can_accept_direct_input,
        "threadSource": thread.thread_source,
        "agentNickname": thread.agent_nickname,
        "agentRole": thread.agent_role,
        "gitInfo": None
        if git is None
        else {"sha": git.sha, "branch": git.branch, "originUrl": git.origin_url},
        "name": thread.name,
        "daybreakEnabled": thread.daybreak_enabled,
        "turns": thread.turns,
    }


register_unstructure_hook(Thread, thread_to_wire)
