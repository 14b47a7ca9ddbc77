"""When to ask before a tool acts, and how the question reaches the client.

`command_needs_approval` / `patch_needs_approval` are pure decisions from the approval
policy, the sandbox policy and what the user already allowed in this thread
(`SessionApprovals`). `ask` sends the server->client request (`item/commandExecution/
requestApproval` or `item/fileChange/requestApproval`) to every subscriber of the thread, with
a deadline; the first answer wins. Whatever way the question ends — an answer, the deadline,
every asked connection gone, or the turn cancelled — each asked connection gets
`serverRequest/resolved` and the thread leaves `waitingOnApproval` before `ask` returns or
raises, so no request is left hanging.

This server has no OS sandbox: a command runs with the server's rights whatever the sandbox
policy says. So where the reference would run a command inside its sandbox without asking
(`on-request` with a read-only or workspace-write policy), this server asks instead, unless
the command is known to be read-only.
"""

from __future__ import annotations

import logging
import shlex
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import attrs
import trio

from codex_trio import tracing
from codex_trio.connection import ConnectionClosed
from codex_trio.outgoing import Broadcaster
from codex_trio.protocol.envelope import RequestId
from codex_trio.protocol.errors import RpcError
from codex_trio.protocol.items import ApprovalAnswer, parse_approval_answer
from codex_trio.protocol.thread import ACTIVE, WAITING_ON_APPROVAL
from codex_trio.threads import LoadedThread

log = logging.getLogger(__name__)

#: seconds a person has to answer an approval before it counts as cancelled.
APPROVAL_TIMEOUT = 30 * 60.0

#: programs that only read, run without asking under `untrusted`.
_SAFE_PROGRAMS = {
    "ls",
    "pwd",
    "cat",
    "head",
    "tail",
    "wc",
    "nl",
    "stat",
    "file",
    "which",
    "whoami",
    "id",
    "uname",
    "date",
    "true",
    "false",
    "grep",
    "rg",
    "tree",
    "du",
    "df",
    "basename",
    "dirname",
    "realpath",
    "readlink",
    "cut",
    "sort",
    "uniq",
    "diff",
    "cmp",
    "env",
    "printenv",
    "hostname",
}
_SAFE_GIT = {"status", "log", "diff", "show", "branch", "rev-parse", "ls-files", "blame", "remote"}
_UNSAFE_FLAGS = {"-exec", "-execdir", "-delete", "-ok", "-okdir", "-fprint", "-fprintf", "--output", "-o"}
_SHELL_OPERATORS = ("&&", "||", ";", "|", ">", "<", "`", "$(", "&")


def is_known_safe(cmd: str) -> bool:
    """True for a single read-only command (no redirection, no chaining, no writing flags)."""
    if any(op in cmd for op in _SHELL_OPERATORS):
        return False
    try:
        words = shlex.split(cmd)
    except ValueError:
        return False
    if not words:
        return False
    program = words[0]
    if program == "git":
        return len(words) > 1 and words[1] in _SAFE_GIT and not any(w in _UNSAFE_FLAGS for w in words)
    if program == "find":
        return not any(w in _UNSAFE_FLAGS for w in words)
    if program == "sed":
        return len(words) >= 2 and words[1] == "-n" and not any(w.startswith("-i") for w in words)
    if program in ("rg", "grep"):
        return not any(w in ("--pre", "--replace") or w.startswith("--pre=") for w in words)
    return program in _SAFE_PROGRAMS


@attrs.define
class SessionApprovals:
    """What the user allowed for the rest of this thread's life in memory."""

    commands: set[str] = attrs.Factory(set)
    prefixes: list[tuple[str, ...]] = attrs.Factory(list)
    paths: set[Path] = attrs.Factory(set)

    def allows_command(self, argv: list[str], display: str) -> bool:
        if display in self.commands:
            return True
        return any(tuple(argv[: len(p)]) == p for p in self.prefixes) or any(
            tuple(_words(argv[-1])[: len(p)]) == p for p in self.prefixes
        )


def _words(cmd: str) -> list[str]:
    try:
        return shlex.split(cmd)
    except ValueError:
        return [cmd]


def policy_name(approval_policy: Any) -> str:
    """The policy as one of untrusted / on-request / on-failure / never (granular → on-request)."""
    if isinstance(approval_policy, str) and approval_policy in (
        "untrusted",
        "on-request",
        "on-failure",
        "never",
    ):
        return approval_policy
    return "on-request"


def command_needs_approval(
    approval_policy: Any,
    sandbox_policy: Mapping[str, Any],
    cmd: str,
    argv: list[str],
    display: str,
    *,
    escalated: bool,
    approvals: SessionApprovals,
) -> bool:
    policy = policy_name(approval_policy)
    if policy == "never" or approvals.allows_command(argv, display):
        return False
    if policy == "untrusted":
        return not is_known_safe(cmd)
    if escalated:
        return True
    if sandbox_policy.get("type") in ("dangerFullAccess", "externalSandbox"):
        return False
    # No OS sandbox here: ask rather than run a possibly writing command unconfined.
    return not is_known_safe(cmd)


def patch_needs_approval(
    approval_policy: Any,
    sandbox_policy: Mapping[str, Any],
    paths: Iterable[Path],
    cwd: Path,
    approvals: SessionApprovals,
) -> bool:
    policy = policy_name(approval_policy)
    targets = list(paths)
    if policy == "never" or all(p in approvals.paths for p in targets):
        return False
    if policy == "untrusted":
        return True
    kind = sandbox_policy.get("type")
    if kind in ("dangerFullAccess", "externalSandbox"):
        return False
    if kind == "workspaceWrite":
        roots = [cwd, *(Path(r) for r in sandbox_policy.get("writableRoots", []) or [])]
        return not all(any(_inside(p, root) for root in roots) for p in targets)
    return True


def _inside(path: Path, root: Path) -> bool:
    try:
        path.resolve().relative_to(root.resolve())
    except ValueError:
        return False
    return True


def proposed_amendment(cmd: str, argv: list[str]) -> list[str]:
    """The prefix offered for "don't ask again": the command's words, or the whole argv."""
    if any(op in cmd for op in _SHELL_OPERATORS):
        return list(argv)
    words = _words(cmd)
    return words if words else list(argv)


# ---------------------------------------------------------------------------- asking


async def ask(
    thread: LoadedThread,
    broadcaster: Broadcaster,
    method: str,
    params: dict[str, Any],
    *,
    deadline: float = APPROVAL_TIMEOUT,
    set_waiting: bool = True,
) -> ApprovalAnswer:
    """Ask the thread's subscribers; the first answer wins.

    No subscriber, every asked connection closed, the deadline, or an error answer all count
    as `cancel` (the turn is interrupted: nothing runs without consent and nothing waits
    forever). Cancellation of the caller propagates after the cleanup.
    """
    # A `null` result counts as that connection going away: the others may still answer.
    with tracing.span("codex.approval", {"approval.method": method, "conversation.id": thread.id}):
        result = await ask_subscribers(
            thread, broadcaster, method, params, deadline=deadline, set_waiting=set_waiting, null_is_gone=True
        )
        answer = ApprovalAnswer("cancel") if result is NO_ANSWER else parse_approval_answer(result)
        tracing.set_attribute("approval.decision", str(answer.decision))
    return answer


#: What `ask_subscribers` returns when no connection answered.
NO_ANSWER: Any = object()


async def ask_subscribers(
    thread: LoadedThread,
    broadcaster: Broadcaster,
    method: str,
    params: dict[str, Any],
    *,
    deadline: float = APPROVAL_TIMEOUT,
    set_waiting: bool = False,
    null_is_gone: bool = False,
) -> Any:
    """Send one server request to each of the thread's subscribers; the first answer wins.

    Returns that answer's raw result, or NO_ANSWER when nobody could be asked, every asked
    connection closed (or, with `null_is_gone`, answered `null`), the deadline passed or a
    client answered with an error. Whatever way it ends (cancellation included), each asked
    connection gets `serverRequest/resolved` before this returns or raises. With `set_waiting`
    the thread shows `waitingOnApproval` while someone is being asked.
    """
    connections = [
        c
        for cid in sorted(thread.subscribers)
        if (c := broadcaster.get(cid)) is not None
        and c.session.initialized
        and not c.disconnect.cancel_called
    ]
    if not connections:
        log.info("thread %s: nobody to ask for %s; treating it as cancelled", thread.id, method)
        return NO_ANSWER
    if set_waiting:
        await thread.set_status(WAITING_ON_APPROVAL)
    asked: dict[int, RequestId] = {}
    answers: list[Any] = []
    try:
        async with trio.open_nursery() as nursery:
            remaining = len(connections)

            async def ask_one(connection: Any) -> None:
                nonlocal remaining

                def remember(request_id: RequestId) -> None:
                    asked[connection.id] = request_id

                try:
                    result = await connection.request(method, params, timeout=deadline, on_id=remember)
                except (ConnectionClosed, trio.BrokenResourceError, trio.ClosedResourceError):
                    result = NO_ANSWER
                except trio.TooSlowError:
                    log.info("thread %s: %s timed out after %.0fs", thread.id, method, deadline)
                    answers.append(NO_ANSWER)
                    nursery.cancel_scope.cancel()
                    return
                except RpcError as exc:
                    log.info("thread %s: client answered %s with an error: %s", thread.id, method, exc)
                    answers.append(NO_ANSWER)
                    nursery.cancel_scope.cancel()
                    return
                if result is NO_ANSWER or (null_is_gone and result is None):
                    remaining -= 1
                    if remaining == 0:
                        answers.append(NO_ANSWER)
                    return
                answers.append(result)
                nursery.cancel_scope.cancel()

            for connection in connections:
                nursery.start_soon(ask_one, connection)
    finally:
        with trio.CancelScope(shield=True):
            for connection_id, request_id in asked.items():
                broadcaster.broadcast(
                    "serverRequest/resolved",
                    {"threadId": thread.id, "requestId": request_id},
                    only=[connection_id],
                )
            if set_waiting:
                await thread.set_status(ACTIVE)
    return answers[0] if answers else NO_ANSWER
