"""`thread/readState/update` and `thread/readState/changed`: unread markers of durable threads.

A thread's mark is its first unread position (none, `threadStart`, or a turn) plus an opaque
revision; it lives in `codex_trio.store.thread_state`. A finished turn makes the thread
unread at that turn unless it already was (the earliest result needing attention wins); the
TUI marks it read when it shows the turn. Every change gets a fresh revision and is
announced to every connection with `thread/readState/changed`; an update that names a
revision other than the current one is refused (`readStateConflict`), as the reference does.
"""

from __future__ import annotations

import uuid
from typing import Any

from codex_trio.protocol.errors import INVALID_PARAMS, RpcError, invalid_request
from codex_trio.protocol.thread_state import ThreadReadStateUpdateParams
from codex_trio.routing import RequestContext, Route, route
from codex_trio.services import Services
from codex_trio.store import ThreadRecord
from codex_trio.store.thread_state import ReadMark, derived_read_mark, read_state_wire
from codex_trio.threads import LoadedThread, ThreadManager, TurnEnd, parse_thread_id

#: turn endings that leave a result needing attention.
_UNREAD_ENDINGS = ("completed", "failed")


class ReadStateApi:
    """The read-state family; see the module docstring."""

    def __init__(self, services: Services, manager: ThreadManager) -> None:
        self.services = services
        self.manager = manager
        manager.on_turn_end.append(self._turn_ended)

    def routes(self) -> list[Route]:
        """The family's methods."""
        return [
            route("thread/readState/update", ThreadReadStateUpdateParams, self.update, experimental=True),
        ]

    async def _record(self, thread_id: str) -> ThreadRecord | None:
        loaded = self.manager.loaded(thread_id)
        if loaded is not None:
            return loaded.record
        return await self.manager.store.get(thread_id)

    async def _current(self, record: ThreadRecord) -> ReadMark | None:
        state = self.manager.state
        mark = await state.run(state.db.read_mark, record.id)
        if mark is None and not record.ephemeral:
            mark = derived_read_mark(record.id, record.materialized, record.first_turn_id)
        return mark

    def _announce(self, thread_id: str, mark: ReadMark) -> None:
        self.services.broadcaster.broadcast(
            "thread/readState/changed", {"threadId": thread_id, "readState": read_state_wire(mark)}
        )

    async def update(self, ctx: RequestContext, params: ThreadReadStateUpdateParams) -> dict[str, Any]:
        """`thread/readState/update`: read or unread, if the caller saw the current revision."""
        try:
            thread_id = parse_thread_id(params.thread_id)
        except RpcError as exc:
            raise RpcError(INVALID_PARAMS, exc.message) from None
        kind = params.operation.get("type")
        if kind not in ("read", "unread"):
            raise invalid_request(f"Invalid request: unknown variant `{kind}`, expected `read` or `unread`")
        record = await self._record(thread_id)
        current = await self._current(record) if record is not None else None
        if current is None:
            raise invalid_request("thread read state unavailable")
        new = ReadMark("threadStart" if kind == "unread" else None, None, str(uuid.uuid4()))
        if current.revision != params.expected_revision:
            raise self._conflict(current)
        state = self.manager.state
        stored = await state.run(state.db.read_mark, thread_id)
        expected = stored.revision if stored is not None else None
        refused = await state.run(state.db.set_read_mark, thread_id, new, expected)
        if refused is not None:
            raise self._conflict(refused)
        self._announce(thread_id, new)
        return {"readState": read_state_wire(new)}

    @staticmethod
    def _conflict(current: ReadMark) -> RpcError:
        return invalid_request(
            "read state changed", {"reason": "readStateConflict", "readState": read_state_wire(current)}
        )

    async def _turn_ended(self, thread: LoadedThread, end: TurnEnd) -> None:
        """A finished turn leaves the thread unread (at its earliest unread result); a turn a
        goal continuation follows does not (as the reference: only the last one does)."""
        if thread.ephemeral or end.status not in _UNREAD_ENDINGS or end.continues:
            return
        current = await self._current(thread.record)
        if current is not None and current.kind is not None and not current.revision.startswith("initial:"):
            new = ReadMark(current.kind, current.turn_id, str(uuid.uuid4()))
        else:
            new = ReadMark("turn", end.turn_id, str(uuid.uuid4()))
        state = self.manager.state
        await state.run(state.db.set_read_mark, thread.id, new, None)
        self._announce(thread.id, new)
