"""Offset pagination as the reference pages its catalogs: decimal offset cursors.

Used by the catalog and MCP families (`model/list`, `skills/list`, `mcpServerStatus/list`, ...).
"""

from __future__ import annotations

from typing import Any

from codex_trio.protocol.errors import invalid_request

#: page size when the client gives none (everything a catalog holds fits).
DEFAULT_PAGE = 1000


def page(items: list[Any], cursor: str | None, limit: int | None, noun: str) -> tuple[list[Any], str | None]:
    """Offset pagination with the reference's errors (`invalid cursor: x`, cursor past the end)."""
    start = 0
    if cursor is not None:
        if not cursor.isdigit():
            raise invalid_request(f"invalid cursor: {cursor}")
        start = int(cursor)
        if start > len(items):
            raise invalid_request(f"cursor {start} exceeds total {noun} {len(items)}")
    size = DEFAULT_PAGE if limit is None else max(1, limit)
    end = min(start + size, len(items))
    return items[start:end], (str(end) if end < len(items) else None)
