"""The model conversation (`history`) and token usage, in the shapes each side wants.

* a thread's history rebuilt from its rollout (`from_rollout`), with every tool call answered;
* the user's input as the model receives it (`user_input_item`, local images as data URLs);
* a tool's output as a `function_call_output` / `custom_tool_call_output` (`call_output`);
* token usage for the wire (`usage_breakdown`) and for the rollout (`usage_record`).

Pure but for `user_input_item`, which reads local images (call it off the event loop).
"""

from __future__ import annotations

import base64
import mimetypes
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from codex_trio.core.model_client import TokenUsage
from codex_trio.core.tools import ToolOutput
from codex_trio.protocol.turns import TokenUsageBreakdown, UserInput

#: bytes of a local image sent to the model.
MAX_IMAGE_BYTES = 20 * 1024 * 1024

History = list[dict[str, Any]]


def from_rollout(lines: Sequence[Mapping[str, Any]]) -> tuple[History, TokenUsage | None]:
    """The conversation recorded in a rollout and the thread's last total token usage.

    A `compacted` line replaces what came before; a review's own conversation (between its
    entered- and exited-review-mode items) is not the thread's; `thread_reverted` cuts the
    history back to where the named turn started (turns since the last compaction).
    """
    history: History = []
    total: TokenUsage | None = None
    turn_starts: dict[str, int] = {}
    reviewing = False
    for line in lines:
        payload = line.get("payload") or {}
        if not isinstance(payload, dict):
            continue
        kind = line.get("type")
        if kind == "response_item":
            if not reviewing:
                history.append(dict(payload))
        elif kind == "compacted" and isinstance(payload.get("replacement_history"), list):
            history = [dict(i) for i in payload["replacement_history"] if isinstance(i, dict)]
            turn_starts.clear()
        elif kind == "event_msg":
            event = payload.get("type")
            if event == "token_count":
                info = payload.get("info") or {}
                usage = info.get("total_token_usage") if isinstance(info, dict) else None
                if isinstance(usage, dict):
                    total = usage_from_record(usage)
            elif event == "task_started" and isinstance(payload.get("turn_id"), str):
                turn_starts[payload["turn_id"]] = len(history)
            elif event in ("task_complete", "turn_aborted"):
                reviewing = False
            elif event == "item_completed":
                item = payload.get("item") or {}
                if item.get("type") == "EnteredReviewMode":
                    reviewing = True
                elif item.get("type") == "ExitedReviewMode":
                    reviewing = False
            elif event == "thread_reverted":
                start = turn_starts.get(str(payload.get("before_turn_id")))
                if start is not None:
                    history = history[:start]
    return close_dangling_calls(history), total


def close_dangling_calls(history: History) -> History:
    """Every tool call needs an output before the model sees the history again."""
    answered = {
        i.get("call_id")
        for i in history
        if i.get("type") in ("function_call_output", "custom_tool_call_output")
    }
    out: History = []
    for item in history:
        out.append(item)
        kind = item.get("type")
        if kind in ("function_call", "custom_tool_call") and item.get("call_id") not in answered:
            out.append(call_output(kind, str(item.get("call_id")), "aborted"))
    return out


def call_output(kind: str, call_id: str, output: ToolOutput) -> dict[str, Any]:
    """The history item answering a call of `kind` (`function_call` or `custom_tool_call`)."""
    output_type = "custom_tool_call_output" if kind == "custom_tool_call" else "function_call_output"
    return {"type": output_type, "call_id": call_id, "output": output}


def user_input_item(inputs: list[UserInput], cwd: Path) -> dict[str, Any] | None:
    """The user message as the model receives it (text, images); None for empty input."""
    content: list[dict[str, Any]] = []
    for entry in inputs:
        wire = entry.wire
        if entry.type == "text":
            content.append({"type": "input_text", "text": wire["text"]})
        elif entry.type == "image" and isinstance(wire.get("url"), str):
            content.append({"type": "input_image", "image_url": wire["url"]})
        elif entry.type == "localImage":
            url = _data_url(Path(wire["path"]) if os.path.isabs(wire["path"]) else cwd / wire["path"])
            if url is not None:
                content.append({"type": "input_image", "image_url": url})
        elif entry.type in ("skill", "mention"):
            content.append({"type": "input_text", "text": f"[{entry.type}: {wire['name']} ({wire['path']})]"})
    if not content:
        return None
    return {"type": "message", "role": "user", "content": content}


def _data_url(path: Path) -> str | None:
    try:
        if path.stat().st_size > MAX_IMAGE_BYTES:
            return None
        data = path.read_bytes()
    except OSError:
        return None
    mime = mimetypes.guess_type(path.name)[0] or "image/png"
    return f"data:{mime};base64,{base64.b64encode(data).decode()}"


# ---------------------------------------------------------------------------- token usage
def usage_from_record(usage: Mapping[str, Any]) -> TokenUsage:
    """A rollout's `total_token_usage` (snake_case) as a `TokenUsage`."""

    def num(key: str) -> int:
        value = usage.get(key)
        return value if isinstance(value, int) else 0

    return TokenUsage(
        num("input_tokens"),
        num("cached_input_tokens"),
        num("output_tokens"),
        num("reasoning_output_tokens"),
        num("total_tokens"),
    )


def usage_record(usage: TokenUsage) -> dict[str, int]:
    """Usage as the rollout's `token_count` records it (the reference's snake_case)."""
    return {
        "input_tokens": usage.input_tokens,
        "cached_input_tokens": usage.cached_input_tokens,
        "cache_write_input_tokens": 0,
        "output_tokens": usage.output_tokens,
        "reasoning_output_tokens": usage.reasoning_output_tokens,
        "total_tokens": usage.total_tokens,
    }


def usage_breakdown(usage: TokenUsage) -> TokenUsageBreakdown:
    """Usage as `thread/tokenUsage/updated` sends it."""
    return TokenUsageBreakdown(
        total_tokens=usage.total_tokens,
        input_tokens=usage.input_tokens,
        cached_input_tokens=usage.cached_input_tokens,
        cache_write_input_tokens=0,
        output_tokens=usage.output_tokens,
        reasoning_output_tokens=usage.reasoning_output_tokens,
    )
