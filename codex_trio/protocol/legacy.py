"""Wire types of the legacy and search methods: `gitDiffToRemote`, `fuzzyFileSearch` and its
experimental sessions (pure)."""

from __future__ import annotations

from typing import Any

import attrs


@attrs.frozen
class GitDiffToRemoteParams:
    """`gitDiffToRemote` params: the work tree to diff."""

    cwd: str


@attrs.frozen
class GitDiffToRemoteResponse:
    """`gitDiffToRemote` result: the base commit and the diff from it."""

    sha: str
    diff: str


@attrs.frozen
class FuzzyFileSearchParams:
    """`fuzzyFileSearch` params: a one-shot search, cancellable by token."""

    query: str
    roots: list[str]
    cancellation_token: str | None = None


@attrs.frozen
class FuzzyFileSearchSessionStartParams:
    """`fuzzyFileSearch/sessionStart` params: the roots a session searches."""

    session_id: str
    roots: list[str]


@attrs.frozen
class FuzzyFileSearchSessionUpdateParams:
    """`fuzzyFileSearch/sessionUpdate` params: the latest query."""

    session_id: str
    query: str


@attrs.frozen
class FuzzyFileSearchSessionStopParams:
    """`fuzzyFileSearch/sessionStop` params."""

    session_id: str


@attrs.frozen
class FuzzyFileSearchSessionUpdated:
    """`fuzzyFileSearch/sessionUpdated`: the matches of one query."""

    session_id: str
    query: str
    #: result entries in the reference's snake_case shape.
    files: list[dict[str, Any]]


@attrs.frozen
class FuzzyFileSearchSessionCompleted:
    """`fuzzyFileSearch/sessionCompleted`: a query's search is over."""

    session_id: str
