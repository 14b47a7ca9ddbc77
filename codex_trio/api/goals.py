"""`thread/goal/get|set|clear`, the goal tools, and automatic continuation turns.

A thread has at most one goal (objective, status, optional token budget, usage), stored in
`codex_trio.store.thread_state` so it survives restarts. While the goal is `active`, every
turn that completes is followed by an automatic continuation turn (its context is a
`<codex_internal_context source="goal">` message, no user message) until the model calls
`update_goal` with `complete` (or `blocked` / `paused`), the goal is cleared or changed to
another status, or the budget is spent. It is bounded: after `MAX_AUTOMATIC_TURNS`
continuations in a row the goal is paused. It is interruptible: an interrupted or failed turn
starts no continuation (the goal stays as it was; `thread/goal/set` resumes it).

Ownership: the continuation is started by a task in the server's detached nursery that waits
for the finished turn to be done; the turn then runs in the thread's runtime like any other.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

import attrs
import orjson

from codex_trio.core import goal_prompt
from codex_trio.core.prompt import message
from codex_trio.core.tools import ToolCall, ToolOutput, ToolTurn
from codex_trio.core.turn import RunningTurn, ThreadRuntime
from codex_trio.ids import now_ms
from codex_trio.protocol.errors import invalid_request
from codex_trio.protocol.thread_state import ThreadGoalClearParams, ThreadGoalGetParams, ThreadGoalSetParams
from codex_trio.routing import RequestContext, Route, route
from codex_trio.services import Services
from codex_trio.store.thread_state import GoalRow
from codex_trio.threads import LoadedThread, ThreadManager, TurnEnd, parse_thread_id

log = logging.getLogger(__name__)

#: the longest objective accepted (the reference's limit).
MAX_OBJECTIVE_CHARS = 4000
#: automatic continuation turns in a row before the goal is paused.
MAX_AUTOMATIC_TURNS = 50
STATUSES = ("active", "paused", "blocked", "usageLimited", "budgetLimited", "complete")

StartTurn = Callable[[LoadedThread, list[dict[str, Any]]], Awaitable[RunningTurn | None]]


def goal_wire(goal: GoalRow) -> dict[str, Any]:
    """The wire `ThreadGoal` (times in seconds)."""
    return {
        "threadId": goal.thread_id,
        "objective": goal.objective,
        "status": goal.status,
        "tokenBudget": goal.token_budget,
        "tokensUsed": goal.tokens_used,
        "timeUsedSeconds": goal.time_used_seconds,
        "createdAt": goal.created_at_ms // 1000,
        "updatedAt": goal.updated_at_ms // 1000,
    }


def _tool_result(goal: GoalRow | None) -> str:
    """What the goal tools return to the model (the reference's shape)."""
    wire = None
    remaining = None
    if goal is not None:
        wire = {k: v for k, v in goal_wire(goal).items() if not (k == "tokenBudget" and v is None)}
        if goal.token_budget is not None:
            remaining = max(goal.token_budget - goal.tokens_used, 0)
    result = {"goal": wire, "remainingTokens": remaining, "completionBudgetReport": None}
    return orjson.dumps(result).decode()


def _check_objective(objective: str) -> str:
    if not objective.strip():
        raise invalid_request("goal objective must not be empty")
    if len(objective) > MAX_OBJECTIVE_CHARS:
        raise invalid_request(f"goal objective must be at most {MAX_OBJECTIVE_CHARS} characters")
    return objective


class GoalTools:
    """`get_goal`, `create_goal`, `update_goal`: the goal as a `ToolProvider` for turns."""

    def __init__(self, api: GoalsApi) -> None:
        self._api = api

    async def tool_specs(self, turn: ToolTurn) -> list[dict[str, Any]]:
        return [dict(spec) for spec in goal_prompt.TOOL_SPECS]

    def handles(self, turn: ToolTurn, call: ToolCall) -> bool:
        return call.namespace is None and call.name in goal_prompt.TOOL_NAMES

    async def call(self, turn: ToolTurn, call: ToolCall) -> ToolOutput:
        try:
            args = orjson.loads(call.arguments or "{}")
        except orjson.JSONDecodeError as exc:
            return f"failed to parse function arguments: {exc}"
        if not isinstance(args, dict):
            return "failed to parse function arguments: expected an object"
        api = self._api
        thread_id = turn.thread.id
        goal = await api.load(thread_id)
        if call.name == "get_goal":
            return _tool_result(goal)
        if call.name == "create_goal":
            objective = args.get("objective")
            budget = args.get("token_budget")
            if not isinstance(objective, str) or not objective.strip():
                return "create_goal requires a non-empty objective"
            if len(objective) > MAX_OBJECTIVE_CHARS:
                return f"goal objective must be at most {MAX_OBJECTIVE_CHARS} characters"
            if budget is not None and (not isinstance(budget, int) or budget <= 0):
                return "token_budget must be a positive integer"
            if goal is not None and goal.status != "complete":
                return (
                    f"cannot create a goal for thread {thread_id}: an unfinished goal exists; use update_goal"
                )
            at = now_ms()
            goal = GoalRow(thread_id, objective, "active", budget, 0, 0, at, at)
        else:
            status = args.get("status")
            if status not in goal_prompt.MODEL_STATUSES:
                return f"update_goal status must be one of {', '.join(goal_prompt.MODEL_STATUSES)}"
            if goal is None:
                return f"cannot update goal for thread {thread_id}: no goal exists"
            goal = attrs.evolve(goal, status=status, updated_at_ms=now_ms())
        await api.save(goal, turn.turn_id)
        return _tool_result(goal)


class GoalsApi:
    """The goals family; see the module docstring."""

    def __init__(self, services: Services, manager: ThreadManager) -> None:
        self.services = services
        self.manager = manager
        self.tools = GoalTools(self)
        #: starts a continuation turn (the turns family's `start_automatic_turn`).
        self.start_turn: StartTurn | None = None
        #: automatic turns in a row, per thread.
        self._streak: dict[str, int] = {}
        manager.on_turn_end.append(self._turn_ended)

    def routes(self) -> list[Route]:
        """The family's methods."""
        return [
            route("thread/goal/get", ThreadGoalGetParams, self.goal_get),
            route("thread/goal/set", ThreadGoalSetParams, self.goal_set),
            route("thread/goal/clear", ThreadGoalClearParams, self.goal_clear),
        ]

    # ------------------------------------------------------------------ storage
    async def load(self, thread_id: str) -> GoalRow | None:
        state = self.manager.state
        return await state.run(state.db.goal, thread_id)

    async def save(self, goal: GoalRow, turn_id: str | None) -> None:
        """Store the goal (committed), then `thread/goal/updated` to every connection."""
        state = self.manager.state
        await state.run(state.db.put_goal, goal)
        self.services.broadcaster.broadcast(
            "thread/goal/updated", {"threadId": goal.thread_id, "turnId": turn_id, "goal": goal_wire(goal)}
        )

    async def _thread_id(self, raw: str) -> str:
        thread_id = parse_thread_id(raw)
        if self.manager.loaded(thread_id) is None and await self.manager.store.get(thread_id) is None:
            raise invalid_request(f"thread not found: {thread_id}")
        return thread_id

    # ------------------------------------------------------------------ methods
    async def goal_get(self, ctx: RequestContext, params: ThreadGoalGetParams) -> dict[str, Any]:
        """`thread/goal/get`: the goal, or null."""
        goal = await self.load(await self._thread_id(params.thread_id))
        return {"goal": goal_wire(goal) if goal is not None else None}

    async def goal_set(self, ctx: RequestContext, params: ThreadGoalSetParams) -> dict[str, Any]:
        """`thread/goal/set`: create or change the goal; an active goal on an idle thread starts work."""
        thread_id = await self._thread_id(params.thread_id)
        if params.objective is not None:
            _check_objective(params.objective)
        if params.status is not None and params.status not in STATUSES:
            raise invalid_request(f"Invalid request: unknown variant `{params.status}`")
        if params.token_budget is not None and params.token_budget <= 0:
            raise invalid_request("goal token budget must be positive")
        goal = await self.load(thread_id)
        at = now_ms()
        if goal is None:
            if params.objective is None:
                raise invalid_request(f"cannot update goal for thread {thread_id}: no goal exists")
            goal = GoalRow(
                thread_id, params.objective, params.status or "active", params.token_budget, 0, 0, at, at
            )
        else:
            changes: dict[str, Any] = {"updated_at_ms": at}
            if params.objective is not None:
                changes["objective"] = params.objective
            if params.status is not None:
                changes["status"] = params.status
            if params.token_budget is not None:
                changes["token_budget"] = params.token_budget
            goal = attrs.evolve(goal, **changes)
        state = self.manager.state
        await state.run(state.db.put_goal, goal)
        self._streak.pop(thread_id, None)
        wire = goal_wire(goal)
        ctx.notify_after_response(
            "thread/goal/updated", {"threadId": thread_id, "turnId": None, "goal": wire}
        )
        others = [c.id for c in self.services.broadcaster.connections if c.id != ctx.connection.id]
        if others:
            self.services.broadcaster.broadcast(
                "thread/goal/updated", {"threadId": thread_id, "turnId": None, "goal": wire}, only=others
            )
        thread = self.manager.loaded(thread_id)
        if thread is not None and goal.status == "active":
            hidden = [goal_prompt.objective_item(goal.objective)] if params.objective is not None else []
            ctx.call_after_response(
                lambda: self.services.start_detached(self._continue, thread, hidden, name=f"goal {thread_id}")
            )
        return {"goal": wire}

    async def goal_clear(self, ctx: RequestContext, params: ThreadGoalClearParams) -> dict[str, Any]:
        """`thread/goal/clear`: forget the goal; no further continuation turns."""
        thread_id = await self._thread_id(params.thread_id)
        state = self.manager.state
        cleared = await state.run(state.db.delete_goal, thread_id)
        self._streak.pop(thread_id, None)
        if cleared:
            self.services.broadcaster.broadcast("thread/goal/cleared", {"threadId": thread_id})
        return {"cleared": cleared}

    # ------------------------------------------------------------------ continuation
    async def _turn_ended(self, thread: LoadedThread, end: TurnEnd) -> None:
        """Account the turn to an active goal; schedule the next continuation turn."""
        goal = await self.load(thread.id)
        if goal is None or goal.status != "active":
            self._streak.pop(thread.id, None)
            return
        goal = attrs.evolve(
            goal,
            tokens_used=goal.tokens_used + end.tokens_used,
            time_used_seconds=goal.time_used_seconds + end.duration_ms // 1000,
            updated_at_ms=now_ms(),
        )
        streak = self._streak.get(thread.id, 0) + 1 if end.automatic else 0
        if goal.token_budget is not None and goal.tokens_used >= goal.token_budget:
            goal = attrs.evolve(goal, status="budgetLimited")
        elif end.status == "completed" and streak >= MAX_AUTOMATIC_TURNS:
            log.warning("goal of thread %s paused after %d automatic turns", thread.id, streak)
            goal = attrs.evolve(goal, status="paused")
        await self.save(goal, end.turn_id)
        if end.status != "completed" or goal.status != "active":
            self._streak.pop(thread.id, None)
            return
        self._streak[thread.id] = streak
        end.continues = True
        self.services.start_detached(self._continue_after, thread, end.turn_id, name=f"goal {thread.id}")

    async def _continue_after(self, thread: LoadedThread, turn_id: str) -> None:
        runtime = thread.turn_state
        current = runtime.current if isinstance(runtime, ThreadRuntime) else None
        if current is not None and current.id == turn_id:
            await current.done.wait()
        await self._continue(thread, [])

    async def _continue(self, thread: LoadedThread, hidden: list[dict[str, Any]]) -> None:
        """Start a continuation turn if the goal is still active and the thread is idle."""
        goal = await self.load(thread.id)
        if goal is None or goal.status != "active" or self.start_turn is None:
            return
        text = goal_prompt.continuation_text(goal.tokens_used, goal.token_budget)
        await self.start_turn(thread, [*hidden, message("user", text)])
