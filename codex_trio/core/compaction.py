"""Compaction: the conversation replaced by a summary the model wrote, so a long thread goes on.

`thread/compact/start` runs it as a turn of its own (`Compaction`); a regular turn runs it
before sampling when the last response used more tokens than the model's auto-compact limit
(`needs_compaction`), before its first request and between tool rounds.

As the reference does with a custom provider (local compaction; the remote `responses/compact`
endpoint is only the OpenAI provider's): one ordinary Responses request without tools, the whole
history followed by a user message asking for a handoff summary. The history then becomes the
earlier user messages (the most recent ones, within a budget) plus one user message introducing
the summary. It is recorded as a `compacted` rollout line holding the replacement history, which
`core.history.from_rollout` starts from when the thread is loaded again.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import attrs
import trio

from codex_trio.core import item_events, model_client
from codex_trio.core.model_client import Completed, ModelError, OutputItemDone, ResponseEvent, TokenUsage
from codex_trio.core.prompt import TURN_ABORTED_TEXT, message, model_family, request_body
from codex_trio.ids import now_ms, uuid7
from codex_trio.protocol.items import ContextCompactionItem
from codex_trio.records import by_value
from codex_trio.store import rollout

if TYPE_CHECKING:
    from codex_trio.core.turn import RunningTurn, ThreadRuntime

#: the request's last user message (the reference's wording, so models tuned for it respond alike).
SUMMARIZATION_PROMPT = (
    "You are performing a CONTEXT CHECKPOINT COMPACTION. "
    "Create a handoff summary for another LLM that will resume the task.\n"
    """
Include:
- Current progress and key decisions made
- Important context, constraints, or user preferences
- What remains to be done (clear next steps)
- Any critical data, examples, or references needed to continue

Be concise, structured, and focused on helping the next LLM seamlessly continue the work.
"""
)

#: what the summary message starts with (the reference's wording; clients hide such messages).
SUMMARY_PREFIX = (
    "Another language model started to solve this problem and produced a summary of its thinking "
    "process. You also have access to the state of the tools that were used by that language model. "
    "Use this to build on the work that has already been done and avoid duplicating work. Here is "
    "the summary produced by the other language model, use the information in this summary to "
    "assist with your own analysis:"
)

#: bytes of earlier user messages kept in the compacted history (about 20k tokens, as the reference).
MAX_KEPT_USER_BYTES = 20_000 * 4
#: share of the context window after which a turn compacts, when the config sets no limit.
AUTO_COMPACT_SHARE = 0.9

#: user messages that are context the server added, not something the user typed.
_CONTEXT_PREFIXES = (
    "<environment_context>",
    "<user_shell_command>",
    "<user_action>",
    "<user_instructions>",
    "# AGENTS.md instructions",
    TURN_ABORTED_TEXT.split("\n", 1)[0],
    SUMMARY_PREFIX,
)


def summary_text(summary: str) -> str:
    """The user message that introduces `summary` to the next request."""
    return f"{SUMMARY_PREFIX}\n{summary}"


def _text_of(item: Mapping[str, Any]) -> str:
    content = item.get("content")
    if isinstance(content, str):
        return content
    return "".join(str(part.get("text", "")) for part in content or [] if isinstance(part, Mapping))


def _typed_by_user(item: Mapping[str, Any]) -> bool:
    if item.get("type", "message") != "message" or item.get("role") != "user":
        return False
    return not _text_of(item).lstrip().startswith(_CONTEXT_PREFIXES)


def compacted_history(history: list[dict[str, Any]], summary: str) -> list[dict[str, Any]]:
    """The user's own messages (the most recent, within `MAX_KEPT_USER_BYTES`), then the summary."""
    kept: list[dict[str, Any]] = []
    budget = MAX_KEPT_USER_BYTES
    for item in reversed([i for i in history if _typed_by_user(i)]):
        size = len(_text_of(item).encode())
        if size > budget:
            break
        budget -= size
        kept.append({"type": "message", "role": "user", "content": list(item.get("content") or [])})
    kept.reverse()
    kept.append(message("user", summary_text(summary)))
    return kept


def auto_compact_limit(turn: RunningTurn) -> int:
    """Tokens of context that trigger compaction: configured, else 90% of the context window."""
    s = turn.settings
    if s.auto_compact_limit is not None and s.auto_compact_limit > 0:
        return s.auto_compact_limit
    window = s.context_window or model_family(s.model).context_window
    return int(window * AUTO_COMPACT_SHARE)


def needs_compaction(turn: RunningTurn, runtime: ThreadRuntime) -> bool:
    """The last response filled the context past the auto-compact limit."""
    last = runtime.last_usage
    return last is not None and last.total_tokens >= auto_compact_limit(turn)


async def compact(
    turn: RunningTurn, runtime: ThreadRuntime, client: model_client.ModelClient, *, trigger: str
) -> None:
    """Summarise the thread's history and replace it (in place), with its item and rollout line."""
    history = await runtime.load_history()
    thread = turn.thread
    item = ContextCompactionItem(uuid7(), started_at_ms=now_ms())
    await item_events.started(thread, turn.id, item)
    summary, usage = await _summarize(turn, client, history)
    replacement = compacted_history(history, summary)
    history[:] = replacement
    done = attrs.evolve(item, completed_at_ms=now_ms())
    await thread.append_rollout(
        [
            rollout.compacted(summary_text(summary), replacement),
            item_events.rollout_line(thread.id, turn.id, done),
        ],
        durable=True,
    )
    await item_events.completed(thread, turn.id, done)
    if usage is not None:
        await turn.report_usage(runtime, usage)
    runtime.last_usage = None  # the context is small again until the next response says otherwise


async def _summarize(
    turn: RunningTurn, client: model_client.ModelClient, history: list[dict[str, Any]]
) -> tuple[str, TokenUsage | None]:
    spec = attrs.evolve(turn.request_spec([*history, message("user", SUMMARIZATION_PROMPT)]), tools=[])
    body = request_body(spec)
    body["parallel_tool_calls"] = False
    headers = turn.request_headers("compaction")
    retries = turn.settings.provider.stream_max_retries
    attempt = 0
    texts: list[str] = []
    usage: list[TokenUsage] = []

    async def on_event(event: ResponseEvent) -> None:
        if isinstance(event, OutputItemDone):
            texts.extend(_assistant_text(event.item))
        elif isinstance(event, Completed) and event.usage is not None:
            usage.append(event.usage)

    while True:
        texts.clear()
        usage.clear()
        try:
            await client.stream(body, headers, on_event)
        except ModelError as exc:
            if not exc.retryable or attempt >= retries:
                raise
            attempt += 1
            await trio.sleep(model_client.backoff_delay(attempt))
            continue
        summary = "".join(texts).strip()
        if not summary:
            raise ModelError("compaction failed: the model returned no summary", "other")
        return summary, usage[-1] if usage else None


def _assistant_text(item: Mapping[str, Any]) -> list[str]:
    if item.get("type") != "message" or item.get("role", "assistant") != "assistant":
        return []
    return [
        str(part.get("text", ""))
        for part in item.get("content") or []
        if isinstance(part, Mapping) and part.get("type") in ("output_text", "text")
    ]


@by_value
@attrs.frozen(repr=False, eq=False)
class Compaction:
    """The body of a `thread/compact/start` turn."""

    async def run(self, turn: RunningTurn, runtime: ThreadRuntime) -> None:
        async with model_client.open_model_client(turn.settings.provider, turn.settings.login) as client:
            await compact(turn, runtime, client, trigger="manual")
