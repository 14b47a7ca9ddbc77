"""How a turn's items reach the thread's subscribers and its rollout.

Every item (the turn's own messages and reasoning, the built-in tools' commands and file
changes, MCP tool calls) is announced with `item/started`, finished with `item/completed`
and recorded as one rollout line when complete; all three go through the converter.
"""

from __future__ import annotations

from typing import Any

from codex_trio.protocol.converter import unstructure
from codex_trio.protocol.items import ItemCompleted, ItemStarted
from codex_trio.store import rollout
from codex_trio.threads import LoadedThread


async def started(thread: LoadedThread, turn_id: str, item: Any) -> None:
    """`item/started` for an attrs item (it has `id` and `started_at_ms`)."""
    await thread.notify_subscribers("item/started", ItemStarted(item, thread.id, turn_id, item.started_at_ms))


async def completed(thread: LoadedThread, turn_id: str, item: Any) -> None:
    """`item/completed` (the rollout line is separate: some items are recorded later)."""
    await thread.notify_subscribers(
        "item/completed", ItemCompleted(item, thread.id, turn_id, completed_at_ms=item.completed_at_ms)
    )


def rollout_line(thread_id: str, turn_id: str, item: Any) -> dict[str, Any]:
    """The rollout record of a completed item."""
    return rollout.item_completed(
        thread_id, turn_id, unstructure(item), item.started_at_ms, item.completed_at_ms
    )


async def finished(thread: LoadedThread, turn_id: str, item: Any) -> None:
    """`item/completed`, then the item's rollout line."""
    await completed(thread, turn_id, item)
    await thread.append_rollout([rollout_line(thread.id, turn_id, item)])
