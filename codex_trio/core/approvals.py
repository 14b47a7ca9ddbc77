"""When to ask before a tool acts, and how the question reaches the client.

`command_needs_approval` / `patch_needs_approval` are pure decisions from the approval
policy, the sandbox policy and what the user already allowed in this thread
(`SessionApprovals`). `ask` sends the server->client request (`item/commandExecution/
requestApproval` or `item/fileChange/requestApproval`) to every subscriber of the thread, with
a deadline; the first answer wins. The request belongs to the thread, not to a connection: when
the asked client disconnects it stays open, and a client that subscribes with `thread/resume`
is asked the same request (same id, same item). Whatever way the question ends — an answer,
the deadline, or the turn cancelled (interrupt, unload, shutdown) — every asked connection and
subscriber gets `serverRequest/resolved` and the thread leaves `waitingOnApproval` before `ask`
returns or raises, so no request is left hanging.

Commands run in the bubblewrap sandbox of their policy (codex_trio.sandbox), so the decisions
follow the reference: under `on-request` a plain command runs confined without asking and
`require_escalated` asks (and runs unconfined once approved); under `on-failure` and
`untrusted` a confined command that fails because of the sandbox is offered for an unconfined
retry. Where bubblewrap is unusable, a confining policy falls back to asking before any
command that is not known to be read-only (and `never` refuses such commands), so nothing
runs unconfined under a confining policy without a person's consent.
"""

from __future__ import annotations

import logging
import math
import os
import re
import shlex
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import attrs
import trio

from codex_trio import sandbox, tracing
from codex_trio.connection import Connection, ConnectionClosed
from codex_trio.outgoing import Broadcaster
from codex_trio.protocol.envelope import RequestId
from codex_trio.protocol.errors import RpcError
from codex_trio.protocol.items import ApprovalAnswer, parse_approval_answer
from codex_trio.protocol.thread import ACTIVE, WAITING_ON_APPROVAL
from codex_trio.threads import LoadedThread

log = logging.getLogger(__name__)

#: seconds a person has to answer an approval before it counts as cancelled.
APPROVAL_TIMEOUT = 30 * 60.0

#: programs that only read (the reference's known-safe list): under `on-request` they run
#: without asking, since this server has no sandbox to run anything else in.
_SAFE_PROGRAMS = frozenset(
    {
        "cat", "cd", "cut", "echo", "expr", "false", "grep", "head", "id", "ls", "nl", "paste",
        "pwd", "rev", "seq", "stat", "tail", "tr", "true", "uname", "uniq", "wc", "which",
        "whoami", "numfmt", "tac",
    }
)  # fmt: skip
#: flags that make an otherwise read-only program write files or run other programs.
_UNSAFE_FIND = frozenset(
    {"-exec", "-execdir", "-ok", "-okdir", "-delete", "-fls", "-fprint", "-fprint0", "-fprintf"}
)
_UNSAFE_RG = frozenset({"--search-zip", "-z"})
_UNSAFE_RG_VALUED = ("--pre", "--hostname-bin")
#: operators that only sequence or pipe commands; anything else (redirection, subshell,
#: background, substitution) makes a script unknown.
_SEQUENCE_OPERATORS = frozenset({"&&", "||", ";", "|"})
_SHELL_OPERATORS = ("&&", "||", ";", "|", ">", "<", "`", "$(", "&")
_SED_RANGE = re.compile(r"(\d+,)?\d+p")


def is_known_safe(cmd: str) -> bool:
    """True for a script of plain read-only commands joined by `&&`, `||`, `;` or `|`.

    Plain means bare or quoted words only: no expansion (`$`, backticks, globs), no
    redirection, no subshell, no background job.
    """
    commands = _plain_commands(cmd)
    return commands is not None and all(_safe_words(words) for words in commands)


def _plain_commands(cmd: str) -> list[list[str]] | None:
    lexer = shlex.shlex(cmd, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    lexer.commenters = ""
    try:
        tokens = list(lexer)
    except ValueError:
        return None
    commands: list[list[str]] = [[]]
    for token in tokens:
        if token and all(c in "();<>|&" for c in token):
            if token not in _SEQUENCE_OPERATORS or not commands[-1]:
                return None
            commands.append([])
        elif any(c in token for c in "$`*?[{~\n") or token.startswith("#"):
            return None
        else:
            commands[-1].append(token)
    return commands if commands[-1] else None


def _safe_words(words: list[str]) -> bool:
    program, args = os.path.basename(words[0]), words[1:]
    if program in _SAFE_PROGRAMS:
        return True
    if program == "base64":
        return not any(
            a in ("-o", "--output") or a.startswith("--output=") or (a.startswith("-o") and a != "-o")
            for a in args
        )
    if program == "find":
        return not any(a in _UNSAFE_FIND for a in args)
    if program == "rg":
        return not any(
            a in _UNSAFE_RG or any(a == o or a.startswith(o + "=") for o in _UNSAFE_RG_VALUED) for a in args
        )
    if program == "sed":
        return 2 <= len(args) <= 3 and args[0] == "-n" and bool(_SED_RANGE.fullmatch(args[1]))
    return False


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
    sandboxed: bool = False,
) -> bool:
    """`sandboxed`: the command would run confined (a confining policy, bubblewrap usable)."""
    policy = policy_name(approval_policy)
    if policy == "never" or approvals.allows_command(argv, display):
        return False
    if policy == "untrusted":
        # As the reference's exec_command: under `untrusted` every command is asked, even
        # `true` or `ls` (probed: docs/turns.md lists what was tried).
        return True
    if escalated:
        return True
    if sandboxed or sandbox_policy.get("type") in ("dangerFullAccess", "externalSandbox"):
        return False
    # A confining policy without a usable sandbox: ask rather than run it unconfined.
    return not is_known_safe(cmd)


def offers_unsandboxed_retry(approval_policy: Any) -> bool:
    """Whether a command the sandbox stopped is offered for an unconfined retry."""
    return policy_name(approval_policy) in ("on-failure", "untrusted")


def patch_refused(
    approval_policy: Any, sandbox_policy: Mapping[str, Any], paths: Iterable[Path], cwd: Path
) -> bool:
    """Under `never`, a patch that writes where the sandbox would not allow is refused."""
    if policy_name(approval_policy) != "never":
        return False
    policy = sandbox.policy_of(sandbox_policy)
    return not all(sandbox.can_write(p, policy, cwd) for p in paths)


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
    confined = sandbox.policy_of(sandbox_policy)
    return not all(sandbox.can_write(p, confined, cwd) for p in targets)


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

    The deadline, an error answer, or `null` from every connection still asked count as
    `cancel` (the turn is interrupted: nothing runs without consent and nothing waits
    forever). With nobody subscribed the question waits for a subscriber until the deadline.
    Cancellation of the caller propagates after the cleanup.
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
    """Ask the thread's subscribers one server request; the first answer wins.

    The request belongs to the thread (`ThreadRequest`): it stays open when every asked
    connection is gone, and a connection that subscribes later (`thread/resume`) is asked
    too, under the same request id. Returns the winning answer's raw result, or NO_ANSWER
    when the deadline passed, a client answered with an error, or (with `null_is_gone`)
    every connection still being asked answered `null`. Whatever way it ends (cancellation
    by interrupt, unload or shutdown included), each asked connection and every subscriber
    gets `serverRequest/resolved` before this returns or raises. With `set_waiting` the
    thread shows `waitingOnApproval` meanwhile.
    """
    request = ThreadRequest(thread, broadcaster, method, params, null_is_gone=null_is_gone)
    if set_waiting:
        await thread.set_status(WAITING_ON_APPROVAL)
    try:
        return await request.run(deadline)
    finally:
        with trio.CancelScope(shield=True):
            request.announce_resolved()
            if set_waiting:
                await thread.set_status(ACTIVE)


class ThreadRequest:
    """One server->client request owned by a thread, asked of each subscriber once.

    Every asked connection waits in a task of `run`'s nursery, with the request in that
    connection's own pending table: an answer is accepted only from a connection that was
    sent the request (a stray answer with a guessed id is logged and dropped there).
    """

    def __init__(
        self,
        thread: LoadedThread,
        broadcaster: Broadcaster,
        method: str,
        params: dict[str, Any],
        *,
        null_is_gone: bool = False,
    ) -> None:
        self.thread = thread
        self.broadcaster = broadcaster
        self.method = method
        self.params = params
        self.null_is_gone = null_is_gone
        #: allocated from the server-wide counter when first sent; re-sends reuse it.
        self.id: RequestId | None = None
        #: connections that were sent the request, in order.
        self.asked: list[int] = []
        self.answer: Any = NO_ANSWER
        self._nursery: trio.Nursery | None = None
        self._waiting = 0

    async def run(self, deadline: float) -> Any:
        """Ask every current subscriber, then whoever subscribes, until an answer or the deadline."""
        with trio.move_on_after(deadline) as timer:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                self.thread.open_requests.append(self)
                try:
                    for connection_id in sorted(self.thread.subscribers):
                        connection = self.broadcaster.get(connection_id)
                        if connection is not None:
                            self.offer(connection)
                    if not self.asked:
                        log.info("thread %s: %s waits for a subscriber", self.thread.id, self.method)
                    await trio.sleep_forever()
                finally:
                    self._close()
        if timer.cancelled_caught:
            log.info("thread %s: %s timed out after %.0fs", self.thread.id, self.method, deadline)
        return self.answer

    def offer(self, connection: Connection) -> None:
        """Send the request to `connection` too, unless it was already asked or cannot be."""
        if (
            self._nursery is None
            or connection.id in self.asked
            or not connection.session.initialized
            or connection.disconnect.cancel_called
        ):
            return
        if self.id is None:
            self.id = connection.new_request_id()
        self.asked.append(connection.id)
        self._waiting += 1
        self._nursery.start_soon(self._ask, connection, self.id, name=f"{self.method} to {connection.id}")

    async def _ask(self, connection: Connection, request_id: RequestId) -> None:
        try:
            result = await connection.request(
                self.method, self.params, timeout=math.inf, request_id=request_id
            )
        except (ConnectionClosed, trio.BrokenResourceError, trio.ClosedResourceError):
            # That client is gone; the question stays open for the others and later subscribers.
            self._waiting -= 1
            return
        except RpcError as exc:
            log.info("thread %s: client answered %s with an error: %s", self.thread.id, self.method, exc)
            self._end(NO_ANSWER)
            return
        self._waiting -= 1
        if self.null_is_gone and result is None:
            # A `null` answer: that client will not answer; end only when nobody else can.
            if self._waiting == 0:
                self._end(NO_ANSWER)
            return
        self._end(result)

    def _end(self, answer: Any) -> None:
        if self._nursery is None:
            return
        self.answer = answer
        self._nursery.cancel_scope.cancel()
        self._close()

    def _close(self) -> None:
        """No more offers: the question is settled (or being torn down)."""
        self._nursery = None
        if self in self.thread.open_requests:
            self.thread.open_requests.remove(self)

    def announce_resolved(self) -> None:
        """`serverRequest/resolved` to every asked connection and every subscriber."""
        if self.id is None:
            return
        targets = [*self.asked, *(c for c in sorted(self.thread.subscribers) if c not in self.asked)]
        self.broadcaster.broadcast(
            "serverRequest/resolved", {"threadId": self.thread.id, "requestId": self.id}, only=targets
        )
