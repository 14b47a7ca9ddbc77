"""Params of the per-thread state methods: read markers, goals and background terminals."""

from __future__ import annotations

from typing import Any

import attrs

from codex_trio.records import by_value


@by_value
@attrs.frozen(repr=False, eq=False)
class ThreadReadStateUpdateParams:
    """`thread/readState/update`: mark read or unread, guarded by the revision the caller saw."""

    thread_id: str
    operation: dict[str, Any]
    expected_revision: str


@by_value
@attrs.frozen(repr=False, eq=False)
class ThreadGoalGetParams:
    """`thread/goal/get` params."""

    thread_id: str


@by_value
@attrs.frozen(repr=False, eq=False)
class ThreadGoalSetParams:
    """`thread/goal/set`: create the goal, or change its objective, status or budget."""

    thread_id: str
    objective: str | None = None
    status: str | None = None
    token_budget: int | None = None
    origin: str | None = None


@by_value
@attrs.frozen(repr=False, eq=False)
class ThreadGoalClearParams:
    """`thread/goal/clear` params."""

    thread_id: str
    origin: str | None = None


@by_value
@attrs.frozen(repr=False, eq=False)
class BackgroundTerminalsListParams:
    """`thread/backgroundTerminals/list` params (offset cursor paging)."""

    thread_id: str
    cursor: str | None = None
    limit: int | None = None


@by_value
@attrs.frozen(repr=False, eq=False)
class BackgroundTerminalsTerminateParams:
    """`thread/backgroundTerminals/terminate` params."""

    thread_id: str
    process_id: str


@by_value
@attrs.frozen(repr=False, eq=False)
class BackgroundTerminalsCleanParams:
    """`thread/backgroundTerminals/clean` params."""

    thread_id: str


@by_value
@attrs.frozen(repr=False, eq=False)
class ThreadSearchParams:
    """`thread/search`: threads whose visible messages contain `search_term`."""

    search_term: str
    archived: bool | None = None
    current_account_only: bool = False
    cursor: str | None = None
    include_attached_threads: bool = False
    limit: int | None = None
    sort_direction: str | None = None
    sort_key: str | None = None
    source_kinds: list[str] | None = None
