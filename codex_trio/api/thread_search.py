"""`thread/search`: threads whose visible messages contain a term, each with a snippet.

Threads are walked in `thread/list` order (the threads family's listing is handed in by the
composition root, so the filters, sort keys and thread objects are exactly thread/list's);
each thread's rollout is read in a worker thread and its user and assistant messages are
matched case-insensitively (context the server injects, such as `<environment_context>`, is
not a visible message). The cursor is the number of matches already returned. The walk is
bounded (`MAX_SCANNED` threads per call).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import orjson
import trio

from codex_trio.protocol.converter import unstructure
from codex_trio.protocol.errors import invalid_request
from codex_trio.protocol.thread import ThreadListParams, ThreadListResponse
from codex_trio.protocol.thread_state import ThreadSearchParams
from codex_trio.routing import RequestContext, Route, route

ListThreads = Callable[[RequestContext, ThreadListParams], Awaitable[ThreadListResponse]]

DEFAULT_LIMIT = 25
#: threads listed per page while searching, and scanned per call at most.
LIST_PAGE = 100
MAX_SCANNED = 2000
#: characters of context kept on each side of the match in a snippet.
SNIPPET_CONTEXT = 80


def visible_messages(path: str) -> list[str]:
    """The user and assistant message texts of a rollout (blocking)."""
    texts: list[str] = []
    try:
        with Path(path).open("rb") as lines:
            for raw in lines:
                try:
                    line = orjson.loads(raw)
                except orjson.JSONDecodeError:
                    continue
                payload = line.get("payload") if isinstance(line, dict) else None
                if line.get("type") != "response_item" or not isinstance(payload, dict):
                    continue
                if payload.get("type") != "message" or payload.get("role") not in ("user", "assistant"):
                    continue
                for part in payload.get("content") or []:
                    text = part.get("text") if isinstance(part, dict) else None
                    if isinstance(text, str) and not text.lstrip().startswith("<"):
                        texts.append(text)
    except OSError:
        return []
    return texts


def snippet(texts: list[str], term: str) -> str | None:
    """The first matching text, cut around the match when long."""
    needle = term.casefold()
    for text in texts:
        at = text.casefold().find(needle)
        if at < 0:
            continue
        if len(text) <= 2 * SNIPPET_CONTEXT + len(term):
            return text
        start = max(at - SNIPPET_CONTEXT, 0)
        end = min(at + len(term) + SNIPPET_CONTEXT, len(text))
        return ("…" if start else "") + text[start:end] + ("…" if end < len(text) else "")
    return None


class ThreadSearchApi:
    """The thread-search family; see the module docstring."""

    def __init__(self, list_threads: ListThreads) -> None:
        self._list = list_threads
        self._limiter = trio.CapacityLimiter(2)

    def routes(self) -> list[Route]:
        """The family's methods."""
        return [route("thread/search", ThreadSearchParams, self.search, experimental=True)]

    async def search(self, ctx: RequestContext, params: ThreadSearchParams) -> dict[str, Any]:
        """`thread/search`: matching threads, in thread/list order, with snippets."""
        if not params.search_term.strip():
            raise invalid_request("thread/search requires a non-empty searchTerm")
        try:
            skip = int(params.cursor) if params.cursor else 0
        except ValueError:
            raise invalid_request(f"invalid cursor: {params.cursor}") from None
        limit = params.limit if params.limit else DEFAULT_LIMIT
        found: list[dict[str, Any]] = []
        matched = 0
        scanned = 0
        cursor: str | None = None
        more = False
        while scanned < MAX_SCANNED:
            listing = ThreadListParams(
                archived=params.archived,
                cursor=cursor,
                limit=LIST_PAGE,
                sort_direction=params.sort_direction,  # type: ignore[arg-type]
                sort_key=params.sort_key,  # type: ignore[arg-type]
                source_kinds=params.source_kinds,  # type: ignore[arg-type]
            )
            page = await self._list(ctx, listing)
            for thread in page.data:
                scanned += 1
                wire = unstructure(thread)
                if not wire.get("path"):
                    continue
                texts = await trio.to_thread.run_sync(visible_messages, wire["path"], limiter=self._limiter)
                text = snippet(texts, params.search_term)
                if text is None:
                    continue
                matched += 1
                if matched <= skip:
                    continue
                if len(found) == limit:
                    more = True
                    break
                found.append({"thread": wire, "snippet": text})
            if more or page.next_cursor is None:
                break
            cursor = page.next_cursor
        next_cursor = str(skip + len(found)) if more else None
        return {"data": found, "nextCursor": next_cursor, "backwardsCursor": None}
