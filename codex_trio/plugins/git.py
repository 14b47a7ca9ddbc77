"""Git marketplaces through the `git` program: clone (sparse when asked), fetch + fast-forward.

Every command runs with no terminal prompt and a deadline, so an unreachable or private host is
an error, never a hang. Git runs as a process group of its own (`codex_trio.process.spawn`): a
deadline or a cancelled request (a client that disconnects, a server that shuts down) kills git
and the helpers it started (`git-remote-http`…), not only the `git` process.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path

import trio

from codex_trio.process import SpawnError, SpawnSpec, StreamName, run_to_exit, spawn

#: seconds one git command may take (a clone of a large marketplace is slow, never endless).
GIT_TIMEOUT = 120.0
#: bytes of a git command's stdout or stderr kept (for its result and error message).
MAX_OUTPUT = 256 * 1024

_GIT_URL = re.compile(r"^(https?://|ssh://|git@[^:]+:)\S+$")
_OWNER_REPO = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*$")


class GitError(Exception):
    """A git command that failed; the message carries its output (the reference's format)."""


def git_url(source: str) -> str | None:
    """The clone URL of a git marketplace source (`owner/repo` is GitHub), or None."""
    if _GIT_URL.match(source):
        return source
    if _OWNER_REPO.match(source) and not source.startswith("."):
        return f"https://github.com/{source.removesuffix('.git')}.git"
    return None


def _env() -> dict[str, str]:
    return {**os.environ, "GIT_TERMINAL_PROMPT": "0", "GCM_INTERACTIVE": "never", "LC_ALL": "C"}


async def run_git(args: Sequence[str], *, cwd: Path | None = None, timeout: float = GIT_TIMEOUT) -> str:
    """`git args…`; its stdout, or `GitError` with the command, status and output."""
    command = ["git", *args]
    output: dict[StreamName, bytearray] = {"stdout": bytearray(), "stderr": bytearray()}

    async def keep(name: StreamName, data: bytes) -> None:
        if len(output[name]) < MAX_OUTPUT:
            output[name] += data[: MAX_OUTPUT - len(output[name])]

    stop = trio.CancelScope(deadline=trio.current_time() + timeout)
    try:
        async with spawn(SpawnSpec(command, cwd or Path.cwd(), _env())) as child:
            finished = await run_to_exit(child, keep, stop=stop)
    except SpawnError as exc:
        raise GitError(f"failed to run git: {exc}") from None
    if finished.stopped:
        raise GitError(f"{' '.join(command)} timed out after {timeout:g}s")
    stdout = output["stdout"].decode(errors="replace")
    if finished.exit_code != 0:
        stderr = output["stderr"].decode(errors="replace").strip()
        raise GitError(
            f"{' '.join(command)} failed with status exit status: {finished.exit_code}\n"
            f"stdout:\n{stdout.strip()}\nstderr:\n{stderr}"
        )
    return stdout


async def clone(url: str, dest: Path, ref: str | None, sparse_paths: Sequence[str]) -> None:
    """Clone `url` into `dest` (which must not exist); sparse (cone mode) when paths are given."""
    args = ["clone"]
    if ref:
        args += ["--branch", ref]
    if sparse_paths:
        args.append("--sparse")
    await run_git([*args, url, str(dest)])
    if sparse_paths:
        await run_git(["-C", str(dest), "sparse-checkout", "set", "--", *sparse_paths])


async def head(root: Path) -> str:
    return (await run_git(["-C", str(root), "rev-parse", "HEAD"])).strip()


async def fast_forward(root: Path, ref: str | None) -> tuple[str, str]:
    """Fetch origin and fast-forward the checkout; the HEAD before and after."""
    before = await head(root)
    await run_git(["-C", str(root), "fetch", "--quiet", "origin"])
    if ref:
        target = f"origin/{ref}"
    else:
        target = "FETCH_HEAD"
        branch = (await run_git(["-C", str(root), "rev-parse", "--abbrev-ref", "HEAD"])).strip()
        if branch != "HEAD":
            target = f"origin/{branch}"
    await run_git(["-C", str(root), "merge", "--ff-only", "--quiet", target])
    return before, await head(root)
