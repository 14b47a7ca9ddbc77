"""What the model sees of a thread goal: the goal tools and the continuation context.

The shapes follow the reference (tool names and parameters, a `goal_objective` context item,
a `<codex_internal_context source="goal">` user message per continuation turn, the budget
lines); the wording is ours.
"""

from __future__ import annotations

from typing import Any

#: statuses the model may set with `update_goal`.
MODEL_STATUSES = ("complete", "blocked", "paused")

TOOL_SPECS: tuple[dict[str, Any], ...] = (
    {
        "type": "function",
        "name": "get_goal",
        "description": "Get this thread's goal: objective, status, token budget and usage so far.",
        "strict": False,
        "parameters": {"type": "object", "properties": {}, "required": [], "additionalProperties": False},
    },
    {
        "type": "function",
        "name": "create_goal",
        "description": (
            "Create a goal, only when the user or the instructions explicitly ask for one. "
            "Fails while an unfinished goal exists. Set token_budget only when a budget was asked for."
        ),
        "strict": False,
        "parameters": {
            "type": "object",
            "properties": {
                "objective": {"type": "string", "description": "The concrete objective to pursue."},
                "token_budget": {"type": "integer", "description": "Optional positive token budget."},
            },
            "required": ["objective"],
            "additionalProperties": False,
        },
    },
    {
        "type": "function",
        "name": "update_goal",
        "description": (
            "Update the goal's status. `complete` only once the objective is achieved and verified; "
            "`blocked` only after the same blocker stopped several consecutive goal turns; "
            "`paused` only when the user asks to pause."
        ),
        "strict": False,
        "parameters": {
            "type": "object",
            "properties": {
                "status": {
                    "type": "string",
                    "enum": list(MODEL_STATUSES),
                    "description": "complete, blocked or paused.",
                }
            },
            "required": ["status"],
            "additionalProperties": False,
        },
    },
)

TOOL_NAMES = frozenset(spec["name"] for spec in TOOL_SPECS)


def objective_item(objective: str) -> dict[str, Any]:
    """The context item carrying the objective (sent once, when the goal is set)."""
    return {
        "type": "function_call_output",
        "name": "goal_objective",
        "namespace": "agent",
        "output": objective,
    }


def continuation_text(tokens_used: int, token_budget: int | None) -> str:
    """The user message that starts an automatic continuation turn."""
    budget = "none" if token_budget is None else str(token_budget)
    remaining = "unbounded" if token_budget is None else str(max(token_budget - tokens_used, 0))
    return (
        '<codex_internal_context source="goal">\n'
        "Continue working toward the active thread goal (the goal_objective context; call get_goal "
        "if it is missing).\n\n"
        "Budget:\n"
        f"- Tokens used: {tokens_used}\n"
        f"- Token budget: {budget}\n"
        f"- Tokens remaining: {remaining}\n\n"
        "Inspect the current state of the work before relying on earlier turns, and make concrete "
        "progress toward the full objective; do not narrow it. When the current evidence proves every "
        'requirement is met, call update_goal with status "complete". Use "blocked" only when the same '
        'blocker has stopped at least three consecutive goal turns, and "paused" only when the user asks.\n'
        "</codex_internal_context>"
    )
