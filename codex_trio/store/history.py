"""Turns and items rebuilt from rollout lines, and their cursor pagination.

A turn opens at ``task_started`` and closes at ``task_complete`` (completed, unless an
``error`` failed it) or ``turn_aborted`` (interrupted). Its items are the ``item_completed``
records in between, in order. Each turn and item keeps the ordinal of the line that created
it: the `thread/turns/list` and `thread/items/list` cursors are built on those ordinals, as the
reference's are (``{"requestedThreadId", "rolloutOrdinal", "includeAnchor", "scope"}``).

Pure: no trio, no I/O.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Literal

import attrs
import orjson

from codex_trio.records import by_value
from codex_trio.store.rollout import v2_item

ItemsView = Literal["notLoaded", "summary", "full"]
Direction = Literal["asc", "desc"]

TURNS_SCOPE = "turns"
ITEMS_SCOPE = "itemsByCreatedAtOrdinal"
#: item types a "summary" view keeps: what a conversation list shows.
SUMMARY_TYPES = ("userMessage", "agentMessage")


@attrs.define
class BuiltItem:
    turn_id: str
    ordinal: int
    item: dict[str, Any]


@attrs.define
class BuiltTurn:
    id: str
    ordinal: int
    status: str = "inProgress"
    started_at: int | None = None
    completed_at: int | None = None
    duration_ms: int | None = None
    error: dict[str, Any] | None = None
    items: list[BuiltItem] = attrs.Factory(list)

    def to_wire(self, view: ItemsView = "full") -> dict[str, Any]:
        if view == "notLoaded":
            items: list[dict[str, Any]] = []
        elif view == "summary":
            items = [i.item for i in self.items if i.item.get("type") in SUMMARY_TYPES]
        else:
            items = [i.item for i in self.items]
        return {
            "id": self.id,
            "rootTurnId": self.id,
            "items": items,
            "itemsView": view,
            "status": self.status,
            "error": self.error,
            "startedAt": self.started_at,
            "completedAt": self.completed_at,
            "durationMs": self.duration_ms,
        }


def build_turns(lines: Iterable[Mapping[str, Any]], *, running: bool = False) -> list[BuiltTurn]:
    """Turns from rollout lines; an unfinished last turn is inProgress only if `running`."""
    turns: list[BuiltTurn] = []
    by_id: dict[str, BuiltTurn] = {}
    current: BuiltTurn | None = None
    for line in lines:
        if line.get("type") != "event_msg":
            continue
        payload = line.get("payload")
        if not isinstance(payload, dict):
            continue
        ordinal = int(line.get("ordinal", 0) or 0)
        kind = payload.get("type")
        turn_id = payload.get("turn_id")
        if kind in ("task_started", "turn_started"):
            if current is not None and current.status == "inProgress":
                current.status = "interrupted"
            current = BuiltTurn(id=str(turn_id), ordinal=ordinal, started_at=payload.get("started_at"))
            turns.append(current)
            by_id[current.id] = current
        elif kind == "item_completed":
            item = payload.get("item")
            target = by_id.get(str(turn_id)) or current
            if target is None or not isinstance(item, dict):
                continue
            target.items.append(
                BuiltItem(
                    target.id,
                    ordinal,
                    v2_item(item, payload.get("started_at_ms"), payload.get("completed_at_ms")),
                )
            )
        elif kind in ("task_complete", "turn_complete"):
            target = by_id.get(str(turn_id)) or current
            if target is None:
                continue
            if target.status == "inProgress":
                target.status = "completed"
            target.completed_at = payload.get("completed_at")
            target.duration_ms = payload.get("duration_ms")
            if target is current:
                current = None
        elif kind == "turn_aborted":
            target = by_id.get(str(turn_id)) or current
            if target is None:
                continue
            target.status = "interrupted"
            target.completed_at = payload.get("completed_at")
            target.duration_ms = payload.get("duration_ms")
            if target is current:
                current = None
        elif kind == "thread_reverted":
            # thread/revert: the named turn and every later one leave the thread
            reverted = by_id.get(str(payload.get("before_turn_id")))
            if reverted is not None:
                del turns[turns.index(reverted) :]
                by_id = {t.id: t for t in turns}
                current = None
        elif kind == "error":
            target = by_id.get(str(turn_id)) or current
            if target is None:
                continue
            target.status = "failed"
            target.error = {
                "message": str(payload.get("message", "")),
                "codexErrorInfo": payload.get("codex_error_info"),
                "additionalDetails": payload.get("additional_details"),
            }
    if current is not None and current.status == "inProgress" and not running:
        current.status = "interrupted"
    return turns


def item_entry(built: BuiltItem) -> dict[str, Any]:
    """One `thread/items/list` row."""
    return {
        "turnId": built.turn_id,
        "item": built.item,
        "startedAtMs": built.item.get("startedAtMs"),
        "completedAtMs": built.item.get("completedAtMs"),
    }


def last_item_ordinal(turns: list[BuiltTurn]) -> int | None:
    ordinals = [i.ordinal for t in turns for i in t.items]
    return max(ordinals) if ordinals else None


# ---------------------------------------------------------------------------- cursors
class BadCursor(ValueError):
    """A history cursor that does not parse or belongs to another thread."""


@by_value
@attrs.frozen(repr=False, eq=False)
class HistoryCursor:
    thread_id: str
    ordinal: int
    include_anchor: bool
    scope: str

    def encode(self) -> str:
        return orjson.dumps(
            {
                "requestedThreadId": self.thread_id,
                "rolloutOrdinal": self.ordinal,
                "includeAnchor": self.include_anchor,
                "scope": {"kind": self.scope},
            }
        ).decode()


def decode_cursor(text: str, thread_id: str, scope: str) -> HistoryCursor:
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError:
        raise BadCursor(text) from None
    if not isinstance(value, dict):
        raise BadCursor(text)
    ordinal = value.get("rolloutOrdinal")
    include = value.get("includeAnchor", False)
    kind = (value.get("scope") or {}).get("kind") if isinstance(value.get("scope"), dict) else None
    if not isinstance(ordinal, int) or isinstance(ordinal, bool) or not isinstance(include, bool):
        raise BadCursor(text)
    if value.get("requestedThreadId") != thread_id or kind != scope:
        raise BadCursor(text)
    return HistoryCursor(thread_id, ordinal, include, scope)


@by_value
@attrs.frozen(repr=False, eq=False)
class Page:
    rows: list[Any]
    next_cursor: str | None
    backwards_cursor: str | None


def paginate(
    rows: list[Any],
    ordinal_of: Any,
    *,
    thread_id: str,
    scope: str,
    direction: Direction,
    limit: int | None,
    cursor: HistoryCursor | None,
) -> Page:
    """Keyset pagination over rows sorted by ordinal ascending."""
    ordered = rows if direction == "asc" else list(reversed(rows))
    if cursor is not None:
        if direction == "asc":
            ordered = [
                r
                for r in ordered
                if ordinal_of(r) > cursor.ordinal
                or (cursor.include_anchor and ordinal_of(r) == cursor.ordinal)
            ]
        else:
            ordered = [
                r
                for r in ordered
                if ordinal_of(r) < cursor.ordinal
                or (cursor.include_anchor and ordinal_of(r) == cursor.ordinal)
            ]
    size = len(ordered) if limit is None else max(limit, 1)
    page = ordered[:size]
    more = len(ordered) > size
    next_cursor = (
        HistoryCursor(thread_id, ordinal_of(page[-1]), False, scope).encode() if more and page else None
    )
    backwards = HistoryCursor(thread_id, ordinal_of(page[0]), True, scope).encode() if page else None
    return Page(page, next_cursor, backwards)
