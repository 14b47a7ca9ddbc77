"""`thread/list` in SQL, for every store: filters, keyset paging and the reference's cursors.

Both SQL stores (SQLite and PostgreSQL) keep one row per thread with the same column names;
this module builds the WHERE clause for a `ListQuery` (the placeholder and the substring test
differ per engine) and turns the fetched rows into a `ListPage`. Pure: no I/O.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import attrs
import orjson

from codex_trio.records import by_value
from codex_trio.store import GitInfo, ListPage, ListQuery, ThreadRecord
from codex_trio.store.rollout import iso_ms, iso_s, parse_iso_ms

SORT_COLUMNS = {
    "created_at": "created_at_ms",
    "updated_at": "updated_at_ms",
    "recency_at": "updated_at_ms",
    "section_position": "created_at_ms",
}

SOURCE_KINDS = {"cli": "cli", "vscode": "vscode", "exec": "exec", "mcp": "appServer", "unknown": "unknown"}
#: what `thread/list` shows when `sourceKinds` is absent or empty.
INTERACTIVE_SOURCE_KINDS = ("cli", "vscode")


def source_kind(source: Any) -> str:
    """The `ThreadSourceKind` of a session_meta `source` value."""
    if isinstance(source, str):
        return SOURCE_KINDS.get(source, "unknown")
    if isinstance(source, dict) and "subagent" in source:
        sub = source["subagent"]
        if sub == "review":
            return "subAgentReview"
        if sub == "compact":
            return "subAgentCompact"
        if isinstance(sub, dict) and "thread_spawn" in sub:
            return "subAgentThreadSpawn"
        return "subAgentOther"
    return "unknown"


@by_value
@attrs.frozen(repr=False, eq=False)
class SqlDialect:
    """What differs between the engines: the placeholder and a case-sensitive substring test."""

    placeholder: str
    #: SQL that is true when the first argument contains the second (both given as SQL).
    contains: Callable[[str, str], str]
    true: Any = 1


def cursor_position(cursor: str, lookup: Callable[[str], int | None]) -> tuple[int, str | None, bool]:
    """(sort key in ms, id or None, inclusive) for a `ts|id` or a bare `ts` cursor.

    The wire cursor carries the key to the second only; `lookup` gives the exact millisecond
    key of the row it names, so pages never skip or repeat rows created within one second.
    Raises ValueError for a cursor that does not parse.
    """
    stamp, sep, cursor_id = cursor.partition("|")
    ms = parse_iso_ms(stamp)
    if ms is None:
        raise ValueError(cursor)
    if not sep:
        return ms, None, True
    try:
        cursor_id = str(uuid.UUID(cursor_id))
    except ValueError:
        raise ValueError(cursor) from None
    exact = lookup(cursor_id)
    if exact is not None and exact // 1000 == ms // 1000:
        return exact, cursor_id, False
    return (ms + 999 if ms % 1000 == 0 else ms), cursor_id, False


def where_clause(
    query: ListQuery, dialect: SqlDialect, lookup: Callable[[str], int | None]
) -> tuple[str, list[Any]]:
    """The WHERE and ORDER BY of a page query (without LIMIT), and its arguments."""
    p = dialect.placeholder
    column = SORT_COLUMNS[query.sort_key]
    desc = query.direction == "desc"

    def marks(values: Sequence[Any]) -> str:
        return ",".join([p] * len(values))

    where = [f"archived = {p}"]
    args: list[Any] = [dialect.true if query.archived else _false(dialect)]
    if not query.archived:
        where.append(f"has_user_event = {p}")
        args.append(dialect.true)
    if query.model_providers is not None:
        where.append(f"model_provider IN ({marks(query.model_providers)})")
        args.extend(query.model_providers)
    if query.cwds is not None:
        where.append(f"cwd IN ({marks(query.cwds)})")
        args.extend(query.cwds)
    kinds = query.source_kinds or INTERACTIVE_SOURCE_KINDS
    where.append(f"source_kind IN ({marks(kinds)})")
    args.extend(kinds)
    if query.excluded_ids:
        where.append(f"id NOT IN ({marks(query.excluded_ids)})")
        args.extend(query.excluded_ids)
    if query.search:
        # Case-sensitive substring tests, like the reference's search.
        named = dialect.contains("coalesce(name, '')", p)
        where.append(f"({dialect.contains('preview', p)} OR {named})")
        args.extend([query.search, query.search])
    if query.cursor is not None:
        key, cursor_id, inclusive = cursor_position(query.cursor, lookup)
        op = "<" if desc else ">"
        if cursor_id is None:
            where.append(f"{column} {op}{'=' if inclusive else ''} {p}")
            args.append(key)
        else:
            where.append(f"({column} {op} {p} OR ({column} = {p} AND id {op} {p}))")
            args.extend([key, key, cursor_id])
    order = "DESC" if desc else "ASC"
    return f"WHERE {' AND '.join(where)} ORDER BY {column} {order}, id {order}", args


def _false(dialect: SqlDialect) -> Any:
    return False if dialect.true is True else 0


def make_page(query: ListQuery, rows: list[tuple[ThreadRecord, int]]) -> ListPage:
    """A page from up to `limit + 1` (record, sort key) rows: the extra row means more follow."""
    more = len(rows) > query.limit
    rows = rows[: query.limit]
    stamp = iso_s if query.sort_key in ("created_at", "section_position") else iso_ms
    next_cursor = f"{stamp(rows[-1][1])}|{rows[-1][0].id}" if more and rows else None
    backwards = iso_ms(rows[0][1]) if rows else None
    return ListPage([record for record, _ in rows], next_cursor, backwards)


#: the row columns a `ThreadRecord` is read from, in both SQL stores.
COLUMNS = (
    "id, rollout_path, created_at_ms, updated_at_ms, source, model_provider, model, reasoning_effort, cwd, "
    "cli_version, originator, preview, has_user_event, first_turn_id, name, archived, archived_at_ms, "
    "git_sha, git_branch, git_origin_url, forked_from_id, history_mode, thread_source, agent_nickname, "
    "agent_role"
)


#: the columns a thread's row is written with, in `row_values` order.
WRITE_COLUMNS = (
    "id, rollout_path, created_at_ms, updated_at_ms, source, source_kind, model_provider, model, "
    "reasoning_effort, cwd, cli_version, originator, preview, has_user_event, first_turn_id, name, "
    "archived, archived_at_ms, git_sha, git_branch, git_origin_url, forked_from_id, history_mode, "
    "thread_source, agent_nickname, agent_role"
)


def row_values(record: ThreadRecord) -> tuple[Any, ...]:
    """A record as the values of `WRITE_COLUMNS`."""
    return (
        record.id,
        record.rollout_path,
        record.created_at_ms,
        record.updated_at_ms,
        source_text(record.source),
        source_kind(record.source),
        record.model_provider,
        record.model,
        record.reasoning_effort,
        record.cwd,
        record.cli_version,
        record.originator,
        record.preview,
        record.has_user_event,
        record.first_turn_id,
        record.name,
        record.archived,
        record.archived_at_ms,
        record.git.sha,
        record.git.branch,
        record.git.origin_url,
        record.forked_from_id,
        record.history_mode,
        record.thread_source,
        record.agent_nickname,
        record.agent_role,
    )


def row_to_record(row: Mapping[str, Any]) -> ThreadRecord:
    """A record from a row of `COLUMNS` (a sqlite3.Row or a psycopg dict row)."""
    source = row["source"]
    return ThreadRecord(
        id=row["id"],
        rollout_path=row["rollout_path"],
        created_at_ms=row["created_at_ms"],
        updated_at_ms=row["updated_at_ms"],
        cwd=row["cwd"],
        model_provider=row["model_provider"],
        model=row["model"],
        reasoning_effort=row["reasoning_effort"],
        source=source if not source.startswith("{") else orjson.loads(source),
        cli_version=row["cli_version"],
        originator=row["originator"],
        preview=row["preview"],
        name=row["name"],
        archived=bool(row["archived"]),
        archived_at_ms=row["archived_at_ms"],
        git=GitInfo(row["git_sha"], row["git_branch"], row["git_origin_url"]),
        has_user_event=bool(row["has_user_event"]),
        forked_from_id=row["forked_from_id"],
        history_mode=row["history_mode"],
        thread_source=row["thread_source"],
        agent_nickname=row["agent_nickname"],
        agent_role=row["agent_role"],
        first_turn_id=row["first_turn_id"],
        materialized=True,
    )


def source_text(source: Any) -> str:
    """A session_meta `source` as stored in a text column (objects as JSON)."""
    return source if isinstance(source, str) else orjson.dumps(source).decode()
