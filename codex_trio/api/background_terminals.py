"""`thread/backgroundTerminals/list|terminate|clean`: the thread's long-running commands.

A background terminal is an `exec_command` session the model left running when its call
yielded (the unified-exec model: `write_stdin` continues it). Sessions belong to the thread
runtime (`codex_trio.core.turn.ThreadRuntime`, which runs them in its nursery), so they
outlive the turn that started them and all die with the thread (unload, archive, delete,
server shutdown). This family only looks at them and stops them: `terminate` kills one
process group, `clean` (the TUI's `/stop`) kills them all; each waits, bounded, until the
killed processes are reaped.
"""

from __future__ import annotations

from typing import Any

import trio

from codex_trio.core.exec_tool import ExecSession, ExecSessions
from codex_trio.core.turn import ThreadRuntime
from codex_trio.protocol.errors import invalid_request
from codex_trio.protocol.thread_state import (
    BackgroundTerminalsCleanParams,
    BackgroundTerminalsListParams,
    BackgroundTerminalsTerminateParams,
)
from codex_trio.routing import RequestContext, Route, route
from codex_trio.services import Services
from codex_trio.threads import ThreadManager

#: seconds a terminate or clean waits for the killed processes to be reaped.
STOP_WAIT = 5.0


async def _stop(sessions: list[ExecSession]) -> None:
    for session in sessions:
        session.stop.cancel()
    with trio.move_on_after(STOP_WAIT):
        for session in sessions:
            await session.done.wait()


class BackgroundTerminalsApi:
    """The background-terminals family; see the module docstring."""

    def __init__(self, services: Services, manager: ThreadManager) -> None:
        self.services = services
        self.manager = manager

    def routes(self) -> list[Route]:
        """The family's methods."""
        return [
            route(
                "thread/backgroundTerminals/list", BackgroundTerminalsListParams, self.list, experimental=True
            ),
            route(
                "thread/backgroundTerminals/terminate",
                BackgroundTerminalsTerminateParams,
                self.terminate,
                experimental=True,
            ),
            route(
                "thread/backgroundTerminals/clean",
                BackgroundTerminalsCleanParams,
                self.clean,
                experimental=True,
            ),
        ]

    async def _sessions(self, thread_id: str) -> ExecSessions | None:
        thread = await self.manager.get_loaded(thread_id)
        runtime = thread.turn_state
        return runtime.sessions if isinstance(runtime, ThreadRuntime) else None

    async def list(self, ctx: RequestContext, params: BackgroundTerminalsListParams) -> dict[str, Any]:
        """`thread/backgroundTerminals/list`: running sessions, newest first; the cursor is
        the last listed process id."""
        sessions = await self._sessions(params.thread_id)
        running = sessions.running_sessions() if sessions is not None else []
        if params.cursor is not None:
            ids = [str(s.id) for s in running]
            running = running[ids.index(params.cursor) + 1 :] if params.cursor in ids else []
        limit = params.limit if params.limit is not None and params.limit > 0 else None
        page = running[:limit] if limit is not None else running
        more = limit is not None and len(running) > limit
        data = [
            {
                "itemId": sessions.item_ids.get(s.id, "") if sessions is not None else "",
                "processId": str(s.id),
                "command": s.args.cmd,
                "cwd": str(s.cwd),
                "osPid": None,
                "cpuPercent": None,
                "rssKb": None,
            }
            for s in page
        ]
        return {"data": data, "nextCursor": str(page[-1].id) if more and page else None}

    async def terminate(
        self, ctx: RequestContext, params: BackgroundTerminalsTerminateParams
    ) -> dict[str, Any]:
        """`thread/backgroundTerminals/terminate`: kill one session; false if none was running."""
        sessions = await self._sessions(params.thread_id)
        if not params.process_id.isdigit():
            raise invalid_request("invalid background terminal process id: invalid digit found in string")
        session = sessions.get(int(params.process_id)) if sessions is not None else None
        if session is None or not session.running:
            return {"terminated": False}
        await _stop([session])
        return {"terminated": True}

    async def clean(self, ctx: RequestContext, params: BackgroundTerminalsCleanParams) -> dict[str, Any]:
        """`thread/backgroundTerminals/clean` (`/stop`): kill every running session."""
        sessions = await self._sessions(params.thread_id)
        if sessions is not None:
            await _stop(sessions.running_sessions())
        return {}
