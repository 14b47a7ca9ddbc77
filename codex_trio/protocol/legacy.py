"""Wire types of the legacy and search methods: `gitDiffToRemote`, `fuzzyFileSearch` and its
experimental sessions (pure)."""

from __future__ import annotations

from typing import Any

import attrs

from codex_trio.records import by_value


@by_value
@attrs.frozen(repr=False, eq=False)
class GitDiffToRemoteParams:
    """`gitDiffToRemote` params: the work tree to diff."""

    cwd: str


@by_value
@attrs.frozen(repr=False, eq=False)
class GitDiffToRemoteResponse:
    """`gitDiffToRemote` result: the base commit and the diff from it."""

    sha: str
    diff: str


@by_value
@attrs.frozen(repr=False, eq=False)
class FuzzyFileSearchParams:
    """`fuzzyFileSearch` params: a one-shot search, cancellable by token."""

    query: str
    roots: list[str]
    cancellation_token: str | None = None


@by_value
@attrs.frozen(repr=False, eq=False)
class FuzzyFileSearchSessionStartParams:
    """`fuzzyFileSearch/sessionStart` params: the roots a session searches."""

    session_id: str
    roots: list[str]


@by_value
@attrs.frozen(repr=False, eq=False)
class FuzzyFileSearchSessionUpdateParams:
    """`fuzzyFileSearch/sessionUpdate` params: the latest query."""

    session_id: str
    query: str


@by_value
@attrs.frozen(repr=False, eq=False)
class FuzzyFileSearchSessionStopParams:
    """`fuzzyFileSearch/sessionStop` params."""

    session_id: str


@by_value
@attrs.frozen(repr=False, eq=False)
class FuzzyFileSearchSessionUpdated:
    """`fuzzyFileSearch/sessionUpdated`: the matches of one query."""

    session_id: str
    query: str
    #: result entries in the reference's snake_case shape.
    files: list[dict[str, Any]]


@by_value
@attrs.frozen(repr=False, eq=False)
class FuzzyFileSearchSessionCompleted:
    """`fuzzyFileSearch/sessionCompleted`: a query's search is over."""

    session_id: str
