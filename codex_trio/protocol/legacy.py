"""Wire types of the legacy and search methods: `gitDiffToRemote`, `fuzzyFileSearch` and its
experimental sessions (pure)."""

from __future__ import annotations

from typing import Any

import attrs


@attrs.frozen
class GitDiffToRemoteParams:
    cwd: str


@attrs.frozen
class GitDiffToRemoteResponse:
    sha: str
    diff: str


@attrs.frozen
class FuzzyFileSearchParams:
    query: str
    roots: list[str]
    cancellation_token: str | None = None


@attrs.frozen
class FuzzyFileSearchSessionStartParams:
    session_id: str
    roots: list[str]


@attrs.frozen
class FuzzyFileSearchSessionUpdateParams:
    session_id: str
    query: str


@attrs.frozen
class FuzzyFileSearchSessionStopParams:
    session_id: str


@attrs.frozen
class FuzzyFileSearchSessionUpdated:
    session_id: str
    query: str
    #: result entries in the reference's snake_case shape.
    files: list[dict[str, Any]]


@attrs.frozen
class FuzzyFileSearchSessionCompleted:
    session_id: str
