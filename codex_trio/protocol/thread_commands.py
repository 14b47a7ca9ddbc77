"""Params of the thread commands the TUI sends beyond turns: shell escapes, compaction,
review, settings, permission profiles, revert and injected items.

Pure: attrs classes the one converter structures (camelCase on the wire). Results are small
dicts built by `codex_trio.api.thread_commands`.
"""

from __future__ import annotations

from typing import Any

import attrs

from codex_trio.records import by_value


@by_value
@attrs.frozen(repr=False, eq=False)
class ThreadShellCommandParams:
    """`thread/shellCommand`: a command line for the user's shell, run in the thread's cwd."""

    thread_id: str
    command: str
    timeout_ms: int | None = None


@by_value
@attrs.frozen(repr=False, eq=False)
class ThreadCompactStartParams:
    """`thread/compact/start`."""

    thread_id: str


@by_value
@attrs.frozen(repr=False, eq=False)
class ReviewStartParams:
    """`review/start`: `target` is a `ReviewTarget` (`type` plus its fields)."""

    thread_id: str
    target: dict[str, Any]
    delivery: str | None = None


@by_value
@attrs.frozen(repr=False, eq=False)
class ThreadSettingsUpdateParams:
    """`thread/settings/update`: overrides for the thread's next turns (None: unchanged)."""

    thread_id: str
    cwd: str | None = None
    approval_policy: Any = None
    approvals_reviewer: str | None = None
    sandbox_policy: Any = None
    permissions: str | None = None
    model: str | None = None
    service_tier: str | None = None
    effort: str | None = None
    summary: str | None = None
    collaboration_mode: dict[str, Any] | None = None
    personality: str | None = None
    multi_agent_mode: Any = None
    disabled_plugin_ids: list[str] | None = None
    environments: list[Any] | None = None


@by_value
@attrs.frozen(repr=False, eq=False)
class PermissionProfileListParams:
    """`permissionProfile/list` (offset cursor paging)."""

    cursor: str | None = None
    limit: int | None = None
    cwd: str | None = None


@by_value
@attrs.frozen(repr=False, eq=False)
class ThreadRevertParams:
    """`thread/revert`: drop `before_turn_id` and every later turn from the model's history."""

    thread_id: str
    before_turn_id: str


@by_value
@attrs.frozen(repr=False, eq=False)
class ThreadInjectItemsParams:
    """`thread/inject_items`: raw Responses API items appended to the model-visible history."""

    thread_id: str
    items: list[Any]
