"""The built-in tools as a `ToolProvider`: `exec_command`, `write_stdin` and `apply_patch`.

One `BuiltinTools` per turn: it runs commands in the thread runtime's `ExecSessions` (a command
still running when its call yields outlives the call), asks approvals when the policy says so,
emits the `commandExecution` / `fileChange` items, runs every command in the sandbox of the
turn's policy (codex_trio.sandbox) with the environment of `[shell_environment_policy]`, and
keeps the turn's file baselines so every patch is followed by `turn/diff/updated` with the
turn's whole diff. A new built-in tool is a
new entry in `_handlers` and in `prompt.tools_for`, not a branch of the turn loop.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import attrs
import orjson
import trio

from codex_trio import sandbox, sandbox_support
from codex_trio.config.shell_env import ShellEnvironmentPolicy
from codex_trio.core import approvals as approvals_mod
from codex_trio.core import item_events
from codex_trio.core.apply_patch import FilePlan, PatchError, apply_plan, git_diff, parse_patch, plan_patch
from codex_trio.core.approvals import SessionApprovals
from codex_trio.core.exec_tool import (
    DEFAULT_MAX_OUTPUT_TOKENS,
    DEFAULT_POLL_YIELD_MS,
    DEFAULT_WRITE_YIELD_MS,
    MAX_POLL_YIELD_MS,
    MAX_YIELD_MS,
    MIN_YIELD_MS,
    STOP_TIMEOUT,
    ExecArgs,
    ExecResult,
    ExecSession,
    ExecSessions,
    ExecToolError,
    command_actions,
    parse_exec_args,
    wait_for,
)
from codex_trio.core.prompt import ModelFamily, tools_for
from codex_trio.core.tools import FILE_WORK, ToolCall, ToolOutput, ToolTurn, TurnInterrupted
from codex_trio.ids import now_ms
from codex_trio.outgoing import Broadcaster
from codex_trio.protocol.converter import unstructure
from codex_trio.protocol.items import (
    CommandApprovalParams,
    CommandExecutionItem,
    CommandStatus,
    FileChange,
    FileChangeApprovalParams,
    FileChangeItem,
    ItemDelta,
)
from codex_trio.protocol.thread import ACTIVE, WAITING_ON_APPROVAL
from codex_trio.protocol.turns import TurnDiffUpdated
from codex_trio.sandbox import Confinement, looks_like_denial
from codex_trio.settings import ServerSettings

#: what the model gets for a patch the sandbox would refuse, when nobody may be asked.
PATCH_OUTSIDE_ROOTS = "patch rejected: writing outside of the project; rejected by user approval settings"
#: tools this provider runs (outside any namespace).
BUILTIN_TOOLS = frozenset({"exec_command", "write_stdin", "apply_patch"})


class BuiltinTools:
    """The built-in tools of one turn (see the module docstring)."""

    def __init__(
        self,
        *,
        sessions: ExecSessions,
        approvals: SessionApprovals,
        broadcaster: Broadcaster,
        family: ModelFamily,
        settings: ServerSettings,
        shell_environment: ShellEnvironmentPolicy,
    ) -> None:
        self.sessions = sessions
        self.approvals = approvals
        self.broadcaster = broadcaster
        self.family = family
        #: the server's settings: the bubblewrap program, the secrets to hide from commands.
        self.settings = settings
        self.shell_environment = shell_environment
        #: each file's content before this turn first patched it (None: it did not exist).
        self._baselines: dict[Path, str | None] = {}
        self._handlers: dict[str, Callable[[ToolTurn, ToolCall], Awaitable[str]]] = {
            "exec_command": self._exec_command,
            "write_stdin": self._write_stdin,
            "apply_patch": self._apply_patch,
        }

    async def tool_specs(self, turn: ToolTurn) -> list[dict[str, Any]]:
        """The built-in tools in the model family's shapes."""
        return tools_for(self.family)

    def handles(self, turn: ToolTurn, call: ToolCall) -> bool:
        """Calls to a built-in tool name outside any namespace."""
        return call.namespace is None and call.name in self._handlers

    async def call(self, turn: ToolTurn, call: ToolCall) -> ToolOutput:
        """Run the call with its tool's handler."""
        return await self._handlers[call.name](turn, call)

    # ------------------------------------------------------------------ exec_command
    async def _exec_command(self, turn: ToolTurn, call: ToolCall) -> str:
        try:
            raw = orjson.loads(call.arguments or "{}")
            args = parse_exec_args(raw if isinstance(raw, dict) else {})
        except (orjson.JSONDecodeError, ExecToolError) as exc:
            return f"failed to parse function arguments: {exc}"
        thread = turn.thread
        cwd = args.cwd(turn.cwd)
        display = args.display()
        item = CommandExecutionItem(
            call.call_id, display, str(cwd), command_actions(args.cmd), started_at_ms=now_ms()
        )
        argv = args.argv()
        confinement, problem = await self._confinement(turn)
        if problem is not None and approvals_mod.policy_name(turn.approval_policy) == "never":
            # Nobody may be asked and the policy cannot be enforced: refuse, loudly.
            await item_events.started(thread, turn.turn_id, item)
            failed = attrs.evolve(item, status="failed", completed_at_ms=now_ms())
            await item_events.finished(thread, turn.turn_id, failed)
            return f"exec_command failed: sandbox unavailable: {problem}"
        session_allowed = self.approvals.allows_command(argv, display)
        needs = approvals_mod.command_needs_approval(
            turn.approval_policy,
            turn.sandbox_policy,
            args.cmd,
            argv,
            display,
            escalated=args.escalated,
            approvals=self.approvals,
            sandboxed=confinement is not None,
        )
        if needs:
            await thread.set_status(WAITING_ON_APPROVAL)
            await item_events.started(thread, turn.turn_id, item)
            refused = await self._ask_command(turn, item, args, argv, args.justification)
            if refused is not None:
                return refused
        else:
            await item_events.started(thread, turn.turn_id, item)
        if args.escalated and (needs or session_allowed):
            confinement = None  # a person allowed it to run outside the sandbox
        began = time.monotonic()
        session, result = await self._run_command(turn, call, item, args, cwd, confinement, began)
        if (
            session is not None
            and confinement is not None
            and result.error is None
            and approvals_mod.offers_unsandboxed_retry(turn.approval_policy)
            and looks_like_denial(result.exit_code, result.output.decode("utf-8", "replace"))
        ):
            await thread.set_status(WAITING_ON_APPROVAL)
            retry = await self._ask_command(
                turn, item, args, argv, "command failed; retry without sandbox?", retry=True
            )
            if retry is None:
                session, result = await self._run_command(turn, call, item, args, cwd, None, began)
        if session is None:
            failed = attrs.evolve(item, status="failed", completed_at_ms=now_ms())
            await item_events.completed(thread, turn.turn_id, failed)
            return f"exec_command failed: {result.error}"
        duration = int((time.monotonic() - began) * 1000)
        status: CommandStatus = "completed"
        if result.error is not None or result.exit_code not in (None, 0):
            status = "failed"
        done = attrs.evolve(
            item,
            status=status,
            source="unifiedExecStartup",
            process_id=str(session.pid) if session.pid is not None else None,
            aggregated_output=result.output.decode("utf-8", "replace")
            if result.error is None
            else result.error,
            exit_code=result.exit_code,
            duration_ms=duration,
            completed_at_ms=now_ms(),
        )
        await item_events.finished(thread, turn.turn_id, done)
        return result.text_for_model(args.max_output_tokens)

    async def _confinement(self, turn: ToolTurn) -> tuple[Confinement | None, str | None]:
        """The sandbox for the turn's commands, or why its confining policy cannot be enforced."""
        policy = sandbox.policy_of(turn.sandbox_policy)
        if not sandbox.confines(policy):
            return None, None
        support = await sandbox_support.check_support(self.settings.bwrap)
        try:
            return sandbox.confinement_for(policy, support, sandbox.hidden_paths(self.settings)), None
        except sandbox.SandboxUnavailable as exc:
            return None, str(exc)

    async def _ask_command(
        self,
        turn: ToolTurn,
        item: CommandExecutionItem,
        args: ExecArgs,
        argv: list[str],
        reason: str | None,
        *,
        retry: bool = False,
    ) -> str | None:
        """Ask to run the command (with `retry`: to run it again outside the sandbox).

        None when allowed. A declined first ask completes the item as declined and returns the
        model's text; a declined retry returns "" (the caller keeps the sandboxed result); a
        cancel completes the item as declined and interrupts the turn.
        """
        thread = turn.thread
        amendment = args.prefix_rule or approvals_mod.proposed_amendment(args.cmd, argv)
        params = CommandApprovalParams(
            thread.id,
            turn.turn_id,
            item.id,
            item.started_at_ms or now_ms(),
            item.command,
            item.cwd,
            item.command_actions,
            amendment,
            ["accept", {"acceptWithExecpolicyAmendment": {"execpolicy_amendment": amendment}}, "cancel"],
            reason=reason,
        )
        answer = await approvals_mod.ask(
            thread,
            self.broadcaster,
            "item/commandExecution/requestApproval",
            unstructure(params),
            set_waiting=False,
        )
        await thread.set_status(ACTIVE)
        if answer.decision == "cancel" or (answer.decision == "decline" and not retry):
            return await _refused(
                turn, item, answer.decision, "exec_command failed: the user rejected this command"
            )
        if answer.decision == "decline":
            return ""
        if answer.decision == "acceptForSession":
            self.approvals.commands.add(item.command)
        if answer.amendment:
            self.approvals.prefixes.append(tuple(answer.amendment))
        return None

    async def _run_command(
        self,
        turn: ToolTurn,
        call: ToolCall,
        item: CommandExecutionItem,
        args: ExecArgs,
        cwd: Path,
        confinement: Confinement | None,
        began: float,
    ) -> tuple[ExecSession | None, ExecResult]:
        """Start the command as a session owned by the turn and wait up to its yield time,
        streaming its output. Cancelled (interrupt, unload, shutdown), it kills the command and
        fails its item as the reference reports a killed command (exit code -1)."""
        thread = turn.thread
        output_parts: list[str] = []

        async def stream(text: str) -> None:
            output_parts.append(text)
            await thread.notify_subscribers(
                "item/commandExecution/outputDelta", ItemDelta(thread.id, turn.turn_id, call.call_id, text)
            )

        try:
            session = await self.sessions.start(
                args,
                cwd,
                owner=turn.turn_id,
                base_env=self.shell_environment.apply(),
                confinement=confinement,
            )
        except ExecToolError as exc:
            return None, ExecResult(b"", 0.0, None, None, None, error=str(exc))
        self.sessions.item_ids[session.id] = call.call_id
        session.listen(stream)
        try:
            return session, await wait_for(session, args.yield_time_ms)
        except BaseException:
            with trio.CancelScope(shield=True, deadline=trio.current_time() + 2 * STOP_TIMEOUT):
                await self.sessions.stop(session)
                killed = attrs.evolve(
                    item,
                    status="failed",
                    source="unifiedExecStartup",
                    process_id=str(session.pid) if session.pid is not None else None,
                    aggregated_output="".join(output_parts) or None,
                    exit_code=-1,
                    duration_ms=int((time.monotonic() - began) * 1000),
                    completed_at_ms=now_ms(),
                )
                await item_events.finished(thread, turn.turn_id, killed)
            raise
        finally:
            session.listen(None)

    # ------------------------------------------------------------------ write_stdin
    async def _write_stdin(self, turn: ToolTurn, call: ToolCall) -> str:
        try:
            raw = orjson.loads(call.arguments or "{}")
        except orjson.JSONDecodeError as exc:
            return f"failed to parse function arguments: {exc}"
        if not isinstance(raw, dict) or not isinstance(raw.get("session_id"), int | float):
            return "failed to parse function arguments: missing field `session_id`"
        session = self.sessions.get(int(raw["session_id"]))
        if session is None:
            return f"write_stdin failed: Unknown session id {int(raw['session_id'])}"
        chars = raw.get("chars") if isinstance(raw.get("chars"), str) else ""
        if chars:
            try:
                await session.write(chars)
            except ExecToolError as exc:
                return f"write_stdin failed: {exc}"
            default, high = DEFAULT_WRITE_YIELD_MS, MAX_YIELD_MS
        else:
            default, high = DEFAULT_POLL_YIELD_MS, MAX_POLL_YIELD_MS
        value = raw.get("yield_time_ms")
        yield_ms = int(min(max(value, MIN_YIELD_MS), high)) if isinstance(value, int | float) else default
        tokens = raw.get("max_output_tokens")
        budget = int(tokens) if isinstance(tokens, int | float) and tokens > 0 else DEFAULT_MAX_OUTPUT_TOKENS
        result = await wait_for(session, yield_ms)
        return result.text_for_model(budget)

    # ------------------------------------------------------------------ apply_patch
    async def _apply_patch(self, turn: ToolTurn, call: ToolCall) -> str:
        text = call.arguments
        if call.kind == "function_call":
            try:
                raw = orjson.loads(text or "{}")
            except orjson.JSONDecodeError as exc:
                return f"failed to parse function arguments: {exc}"
            text = raw.get("input", "") if isinstance(raw, dict) else ""
        thread = turn.thread
        began = time.monotonic()
        cwd = turn.cwd
        try:
            hunks = parse_patch(text)
            plans = await trio.to_thread.run_sync(plan_patch, hunks, cwd, limiter=FILE_WORK)
        except PatchError as exc:
            return f"apply_patch verification failed: {exc}"
        item = FileChangeItem(call.call_id, [_file_change(p) for p in plans], started_at_ms=now_ms())
        await item_events.started(thread, turn.turn_id, item)
        targets = [p.path for p in plans] + [p.move_to for p in plans if p.move_to is not None]
        if approvals_mod.patch_refused(turn.approval_policy, turn.sandbox_policy, targets, cwd):
            return await _refused(turn, item, "decline", PATCH_OUTSIDE_ROOTS)
        if approvals_mod.patch_needs_approval(
            turn.approval_policy, turn.sandbox_policy, targets, cwd, self.approvals
        ):
            params = FileChangeApprovalParams(thread.id, turn.turn_id, call.call_id, now_ms())
            answer = await approvals_mod.ask(
                thread, self.broadcaster, "item/fileChange/requestApproval", unstructure(params)
            )
            if answer.decision in ("decline", "cancel"):
                return await _refused(
                    turn, item, answer.decision, "patch rejected: the user declined these changes"
                )
            if answer.decision == "acceptForSession":
                self.approvals.paths.update(targets)
        for plan in plans:
            self._baselines.setdefault(plan.path, plan.old_content)
            if plan.move_to is not None:
                self._baselines.setdefault(plan.move_to, None)
        try:
            summary = await trio.to_thread.run_sync(apply_plan, plans, limiter=FILE_WORK)
        except OSError as exc:
            failed = attrs.evolve(item, status="failed", completed_at_ms=now_ms())
            await item_events.finished(thread, turn.turn_id, failed)
            return f"apply_patch failed: {exc}"
        done = attrs.evolve(item, status="completed", completed_at_ms=now_ms())
        await item_events.finished(thread, turn.turn_id, done)
        diff = await trio.to_thread.run_sync(_turn_diff, dict(self._baselines), cwd, limiter=FILE_WORK)
        if diff:
            await thread.notify_subscribers(
                "turn/diff/updated", TurnDiffUpdated(thread.id, turn.turn_id, diff)
            )
        wall = time.monotonic() - began
        return f"Exit code: 0\nWall time: {wall:.1f} seconds\nOutput:\n{summary}"


async def _refused(turn: ToolTurn, item: Any, decision: str, output: str) -> str:
    """The user declined (the model gets `output`) or cancelled (the turn is interrupted)."""
    declined = attrs.evolve(item, status="declined", completed_at_ms=now_ms())
    await item_events.finished(turn.thread, turn.turn_id, declined)
    if decision == "cancel":
        raise TurnInterrupted()
    return output


def _file_change(plan: FilePlan) -> FileChange:
    kind: dict[str, Any] = {"type": plan.kind}
    if plan.kind == "update":
        kind["move_path"] = str(plan.move_to) if plan.move_to is not None else None
    return FileChange(str(plan.path), kind, plan.diff)


def _turn_diff(baselines: dict[Path, str | None], cwd: Path) -> str:
    """The turn's changes so far: each touched file from its baseline to what is on disk now."""
    plans = []
    for path, before in sorted(baselines.items()):
        try:
            after: str | None = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            after = None
        if before == after:
            continue
        if before is None:
            plans.append(FilePlan("add", path, None, after))
        elif after is None:
            plans.append(FilePlan("delete", path, before, None))
        else:
            plans.append(FilePlan("update", path, before, after))
    return git_diff(plans, cwd)
