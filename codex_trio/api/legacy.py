"""Legacy v1 methods and file search: `gitDiffToRemote`, `fuzzyFileSearch` and the
experimental `fuzzyFileSearch/session*`.

Blocking work never runs on the event loop: git runs through `trio.run_process`, tree listing
and scoring in worker threads behind `SEARCH_THREADS`.

Ownership: search sessions belong to the connection that started them (keyed by connection
id and session id) and their tasks run in that connection's nursery, so they end with it. Each
session has one cancel scope for its current work; a new `sessionUpdate` cancels the previous
search, `sessionStop` or a restart cancels everything the session runs. A one-shot search with
a `cancellationToken` cancels the earlier search that used the same token (which then answers
with no files).
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
from pathlib import Path
from typing import Any

import attrs
import trio

from codex_trio.api.fuzzy import Candidate, list_candidates, search
from codex_trio.connection import Connection
from codex_trio.protocol.converter import unstructure
from codex_trio.protocol.errors import internal_error, invalid_request
from codex_trio.protocol.legacy import (
    FuzzyFileSearchParams,
    FuzzyFileSearchSessionCompleted,
    FuzzyFileSearchSessionStartParams,
    FuzzyFileSearchSessionStopParams,
    FuzzyFileSearchSessionUpdated,
    FuzzyFileSearchSessionUpdateParams,
    GitDiffToRemoteParams,
    GitDiffToRemoteResponse,
)
from codex_trio.routing import RequestContext, Route, route
from codex_trio.services import Services

log = logging.getLogger(__name__)

#: worker threads for listing trees and scoring (CPU-bound: a few are plenty).
SEARCH_THREADS = 2
#: seconds one git command of `gitDiffToRemote` may take.
GIT_TIMEOUT = 30.0
#: bytes of diff output kept; a larger diff is cut here (a client cannot use more).
MAX_DIFF_BYTES = 32 * 1024 * 1024


class GitError(Exception):
    """A git step failed; the method answers with the reference's one error text."""


async def _git(
    cwd: Path, *args: str, check: bool = True, ok_codes: tuple[int, ...] = (0,)
) -> tuple[int, bytes]:
    env = {**os.environ, "GIT_OPTIONAL_LOCKS": "0", "GIT_TERMINAL_PROMPT": "0", "LC_ALL": "C"}
    try:
        with trio.fail_after(GIT_TIMEOUT):
            result = await trio.run_process(
                ["git", *args],
                cwd=cwd,
                env=env,
                capture_stdout=True,
                capture_stderr=True,
                stdin=subprocess.DEVNULL,
                check=False,
            )
    except (OSError, trio.TooSlowError) as exc:
        raise GitError(f"git {args[0]}: {exc}") from None
    if check and result.returncode not in ok_codes:
        raise GitError(f"git {args[0]} exited with {result.returncode}")
    return result.returncode, result.stdout


async def _ref_sha(cwd: Path, ref: str) -> str | None:
    code, out = await _git(cwd, "rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}", check=False)
    return out.decode().strip() if code == 0 and out.strip() else None


async def remote_base(cwd: Path) -> str:
    """The remote-tracking commit the local work is based on (origin's branch head first)."""
    _, out = await _git(cwd, "remote")
    remotes = out.decode().split()
    if not remotes:
        raise GitError("no remote")
    remotes.sort(key=lambda r: r != "origin")
    _, head_out = await _git(cwd, "rev-parse", "--abbrev-ref", "HEAD")
    branch = head_out.decode().strip()
    for remote in remotes:
        if branch and branch != "HEAD":
            sha = await _ref_sha(cwd, f"refs/remotes/{remote}/{branch}")
            if sha is not None:
                return sha
    # Otherwise the closest remote branch that HEAD descends from.
    best: tuple[int, str] | None = None
    for remote in remotes:
        _, refs = await _git(cwd, "for-each-ref", "--format=%(objectname)", f"refs/remotes/{remote}")
        for sha in dict.fromkeys(refs.decode().split()):
            code, _ = await _git(cwd, "merge-base", "--is-ancestor", sha, "HEAD", check=False)
            if code != 0:
                continue
            _, count = await _git(cwd, "rev-list", "--count", f"{sha}..HEAD")
            distance = int(count.decode().strip() or 0)
            if best is None or distance < best[0]:
                best = (distance, sha)
        if best is not None:
            return best[1]
    raise GitError("no remote-tracking base commit")


async def diff_to_remote(cwd: Path) -> GitDiffToRemoteResponse:
    """Base commit vs the working tree, untracked files included as new-file diffs."""
    _, top = await _git(cwd, "rev-parse", "--is-inside-work-tree")
    if top.decode().strip() != "true":
        raise GitError("not a work tree")
    sha = await remote_base(cwd)
    # `git diff` exits 1 when there are differences with --exit-code; without it 0 means ok.
    _, tracked = await _git(cwd, "diff", "--binary", "--no-color", "--no-ext-diff", "--no-textconv", sha)
    parts = [tracked]
    _, untracked = await _git(cwd, "ls-files", "-z", "--others", "--exclude-standard")
    size = len(tracked)
    for raw in untracked.split(b"\0"):
        if not raw or size > MAX_DIFF_BYTES:
            continue
        name = os.fsdecode(raw)
        _, out = await _git(
            cwd, "diff", "--binary", "--no-color", "--no-index", "--", os.devnull, name, ok_codes=(0, 1)
        )
        parts.append(out)
        size += len(out)
    diff = b"".join(parts)[:MAX_DIFF_BYTES]
    return GitDiffToRemoteResponse(sha, diff.decode("utf-8", errors="replace"))


@attrs.define(eq=False)
class SearchSession:
    """One `fuzzyFileSearch/session*`, run by one task (`LegacyApi._run_session`).

    Updates do not queue: only the latest query matters, so `sessionUpdate` stores it in
    `latest`, cancels the search in progress (`search_scope`) and wakes the task.
    """

    session_id: str
    roots: list[str]
    connection: Connection
    #: cancels everything the session runs (stop, restart, disconnect).
    scope: trio.CancelScope = attrs.Factory(trio.CancelScope)
    latest: str | None = None
    wakeup: trio.Event = attrs.Factory(trio.Event)
    search_scope: trio.CancelScope | None = None


class LegacyApi:
    """`gitDiffToRemote`, `fuzzyFileSearch` and its sessions."""

    def __init__(self, services: Services) -> None:
        self._settings = services.settings
        self._limiter = trio.CapacityLimiter(SEARCH_THREADS)
        self._sessions: dict[tuple[int, str], SearchSession] = {}
        self._tokens: dict[tuple[int, str], trio.CancelScope] = {}

    def routes(self) -> list[Route]:
        """The family's methods."""
        return [
            route("gitDiffToRemote", GitDiffToRemoteParams, self.git_diff_to_remote),
            route("fuzzyFileSearch", FuzzyFileSearchParams, self.fuzzy_file_search),
            route(
                "fuzzyFileSearch/sessionStart",
                FuzzyFileSearchSessionStartParams,
                self.session_start,
                experimental=True,
            ),
            route(
                "fuzzyFileSearch/sessionUpdate",
                FuzzyFileSearchSessionUpdateParams,
                self.session_update,
                experimental=True,
            ),
            route(
                "fuzzyFileSearch/sessionStop",
                FuzzyFileSearchSessionStopParams,
                self.session_stop,
                experimental=True,
            ),
        ]

    async def connection_closed(self, connection: Connection) -> None:
        """Stop the connection's search sessions and forget its tokens."""
        for key in [k for k in self._sessions if k[0] == connection.id]:
            self._sessions.pop(key).scope.cancel()
        for key in [k for k in self._tokens if k[0] == connection.id]:
            self._tokens.pop(key).cancel()

    def _resolve(self, path: str) -> Path:
        return (self._settings.cwd / path).absolute()

    # ------------------------------------------------------------------ gitDiffToRemote
    async def git_diff_to_remote(
        self, ctx: RequestContext, params: GitDiffToRemoteParams
    ) -> GitDiffToRemoteResponse:
        """`gitDiffToRemote`: the work tree against its remote-tracking base."""
        cwd = self._resolve(params.cwd)
        try:
            if not await trio.Path(cwd).is_dir():
                raise GitError("no such directory")
            return await diff_to_remote(cwd)
        except GitError as exc:
            log.debug("gitDiffToRemote %s: %s", cwd, exc)
            raise invalid_request(
                f"failed to compute git diff to remote for cwd: {json.dumps(str(cwd))}"
            ) from None

    # ------------------------------------------------------------------ one-shot search
    async def _candidates(self, roots: list[str]) -> list[tuple[str, list[Candidate]]]:
        listed = []
        for root in roots:
            found = await trio.to_thread.run_sync(list_candidates, self._resolve(root), limiter=self._limiter)
            listed.append((root, found))
        return listed

    async def _search(self, query: str, roots: list[tuple[str, list[Candidate]]]) -> list[dict[str, Any]]:
        matches = await trio.to_thread.run_sync(search, query, roots, limiter=self._limiter)
        return [m.to_wire() for m in matches]

    async def fuzzy_file_search(self, ctx: RequestContext, params: FuzzyFileSearchParams) -> dict[str, Any]:
        """`fuzzyFileSearch`: one search; a newer one with the same token cancels it."""
        if not params.query.strip() or not params.roots:
            return {"files": []}
        files: list[dict[str, Any]] = []
        scope = trio.CancelScope()
        key = (ctx.connection.id, params.cancellation_token) if params.cancellation_token else None
        if key is not None:
            previous = self._tokens.pop(key, None)
            if previous is not None:
                previous.cancel()
            self._tokens[key] = scope
        try:
            with scope:
                files = await self._search(params.query, await self._candidates(params.roots))
        finally:
            if key is not None and self._tokens.get(key) is scope:
                del self._tokens[key]
        return {"files": files}

    # ------------------------------------------------------------------ sessions
    async def session_start(
        self, ctx: RequestContext, params: FuzzyFileSearchSessionStartParams
    ) -> dict[str, Any]:
        """`fuzzyFileSearch/sessionStart`: list the roots once, then answer queries."""
        if not params.roots:
            raise internal_error(
                "failed to start fuzzy file search session: at least one search directory is required"
            )
        key = (ctx.connection.id, params.session_id)
        old = self._sessions.pop(key, None)
        if old is not None:
            old.scope.cancel()
        session = SearchSession(params.session_id, list(params.roots), ctx.connection)
        self._sessions[key] = session
        ctx.connection.nursery.start_soon(self._run_session, session)
        return {}

    async def _run_session(self, session: SearchSession) -> None:
        with session.scope:
            candidates = await self._candidates(session.roots)
            await self._notify(session, FuzzyFileSearchSessionUpdated(session.session_id, "", []))
            await self._notify(session, FuzzyFileSearchSessionCompleted(session.session_id))
            while True:
                await session.wakeup.wait()
                session.wakeup = trio.Event()
                query, session.latest = session.latest or "", None
                with trio.CancelScope() as session.search_scope:
                    files = await self._search(query, candidates) if query.strip() else []
                    updated = FuzzyFileSearchSessionUpdated(session.session_id, query, files)
                    await self._notify(session, updated)
                    await self._notify(session, FuzzyFileSearchSessionCompleted(session.session_id))

    async def _notify(self, session: SearchSession, params: Any) -> None:
        method = (
            "fuzzyFileSearch/sessionUpdated"
            if isinstance(params, FuzzyFileSearchSessionUpdated)
            else "fuzzyFileSearch/sessionCompleted"
        )
        await session.connection.notify(method, unstructure(params))

    async def session_update(
        self, ctx: RequestContext, params: FuzzyFileSearchSessionUpdateParams
    ) -> dict[str, Any]:
        """`fuzzyFileSearch/sessionUpdate`: search for the latest query only."""
        session = self._sessions.get((ctx.connection.id, params.session_id))
        if session is None:
            raise invalid_request(f"fuzzy file search session not found: {params.session_id}")
        session.latest = params.query
        if session.search_scope is not None:
            session.search_scope.cancel()
        session.wakeup.set()
        return {}

    async def session_stop(
        self, ctx: RequestContext, params: FuzzyFileSearchSessionStopParams
    ) -> dict[str, Any]:
        """`fuzzyFileSearch/sessionStop`."""
        session = self._sessions.pop((ctx.connection.id, params.session_id), None)
        if session is not None:
            session.scope.cancel()
        return {}
