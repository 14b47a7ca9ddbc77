"""History paging for the thread family: `thread/turns/list`, `thread/items/list` pages, the
cursors `thread/resume` hands back, and where a fork cuts a thread.

Pure over rebuilt turns (`codex_trio.store.history`); the handlers in `codex_trio.api.threads`
fetch the rollout lines and call these.
"""

from __future__ import annotations

from typing import Any

from codex_trio.api.thread_settings import bad_params
from codex_trio.protocol.converter import describe
from codex_trio.protocol.errors import invalid_request
from codex_trio.protocol.thread import PageResponse, ThreadItemsListParams, ThreadTurnsListParams
from codex_trio.store import history

U32_MAX = 2**32 - 1


def check_limit(value: int | None) -> int | None:
    """A page size as the reference accepts it (a u32), or its deserialization error."""
    if value is None:
        return None
    if value < 0 or value > U32_MAX:
        raise bad_params(f"invalid value: integer `{value}`, expected u32")
    return value


def _decode(cursor: str, thread_id: str, scope: str) -> history.HistoryCursor:
    try:
        return history.decode_cursor(cursor, thread_id, scope)
    except history.BadCursor:
        raise invalid_request(f"invalid cursor: {cursor}") from None


def turns_page(turns: list[history.BuiltTurn], thread_id: str, params: ThreadTurnsListParams) -> PageResponse:
    """One `thread/turns/list` page (newest first unless asked otherwise)."""
    limit = check_limit(params.limit)
    cursor = None if params.cursor is None else _decode(params.cursor, thread_id, history.TURNS_SCOPE)
    page = history.paginate(
        turns,
        lambda t: t.ordinal,
        thread_id=thread_id,
        scope=history.TURNS_SCOPE,
        direction=params.sort_direction or "desc",
        limit=limit,
        cursor=cursor,
    )
    view = params.items_view or "summary"
    return PageResponse([t.to_wire(view) for t in page.rows], page.next_cursor, page.backwards_cursor)


def items_page(turns: list[history.BuiltTurn], thread_id: str, params: ThreadItemsListParams) -> PageResponse:
    """One `thread/items/list` page (oldest first unless asked otherwise), optionally of one turn."""
    limit = check_limit(params.limit)
    if params.turn_id is not None:
        turns = [t for t in turns if t.id == params.turn_id]
        if not turns:
            raise invalid_request(f"turn not found: {params.turn_id}")
    items = [i for t in turns for i in t.items]
    cursor = None
    if isinstance(params.cursor, str):
        cursor = _decode(params.cursor, thread_id, history.ITEMS_SCOPE)
    elif isinstance(params.cursor, dict):
        item_id = params.cursor.get("itemId")
        anchor = next((i for i in items if i.item.get("id") == item_id), None)
        if anchor is None:
            raise invalid_request(f"item not found: {item_id}")
        cursor = history.HistoryCursor(thread_id, anchor.ordinal, False, history.ITEMS_SCOPE)
    elif params.cursor is not None:
        raise bad_params(f"invalid type: {describe(params.cursor)}, expected a cursor")
    page = history.paginate(
        items,
        lambda i: i.ordinal,
        thread_id=thread_id,
        scope=history.ITEMS_SCOPE,
        direction=params.sort_direction or "asc",
        limit=limit,
        cursor=cursor,
    )
    return PageResponse([history.item_entry(i) for i in page.rows], page.next_cursor, page.backwards_cursor)


def resume_cursors(thread_id: str, built: list[history.BuiltTurn]) -> tuple[str | None, str | None]:
    """The (turns, items) backwards cursors of a `thread/resume` answer: page back from the end."""
    turns_cursor = (
        history.HistoryCursor(thread_id, built[-1].ordinal, True, history.TURNS_SCOPE).encode()
        if built
        else None
    )
    last_item = history.last_item_ordinal(built)
    items_cursor = (
        history.HistoryCursor(thread_id, last_item, True, history.ITEMS_SCOPE).encode()
        if last_item is not None
        else None
    )
    return turns_cursor, items_cursor


def fork_cut(lines: list[dict[str, Any]], turns: list[history.BuiltTurn], last_turn_id: str) -> int | None:
    """The last ordinal a fork through `last_turn_id` keeps (the end of that turn)."""
    index = next((n for n, t in enumerate(turns) if t.id == last_turn_id), None)
    if index is None:
        return None
    if index + 1 < len(turns):
        return turns[index + 1].ordinal - 1
    return max((int(line.get("ordinal", 0) or 0) for line in lines), default=0)
