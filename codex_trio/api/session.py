"""`initialize`: the per-connection handshake and what follows it.

Imports `routing` and `protocol`; the installation id file is written with `atomic_files`.
"""

from __future__ import annotations

import os
import platform
import socket
import uuid
from pathlib import Path

import trio

from codex_trio._version import PROTOCOL_VERSION
from codex_trio.atomic_files import write_atomic
from codex_trio.protocol.converter import unstructure
from codex_trio.protocol.initialize import InitializeParams, InitializeResponse, RemoteControlStatusChanged
from codex_trio.routing import RequestContext, Route, route
from codex_trio.sandbox_support import check_support


def installation_id(codex_home: Path) -> str:
    """The id the reference keeps in `<codex_home>/installation_id`, created on first use.

    Blocking: `SessionApi.load_installation_id` runs it off the event loop."""
    path = codex_home / "installation_id"
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        pass
    value = str(uuid.uuid4())
    write_atomic(path, value, mode=0o644)
    return value


class SessionApi:
    """Owns the handshake; one per server, so the originator (the first client's name) and
    the installation id are server-wide, as the reference's are process-wide."""

    def __init__(self, codex_home: Path, bwrap: str = "bwrap") -> None:
        self._codex_home = codex_home
        self._bwrap = bwrap
        self._originator: str | None = None
        self._installation_id: str | None = None
        self._platform = f"({platform.system()} {platform.release()}; {platform.machine()})"

    async def load_installation_id(self) -> None:
        """Read (or create) the installation id off the event loop; the server calls this
        before it accepts connections, so `initialize` itself does no file work."""
        self._installation_id = await trio.to_thread.run_sync(installation_id, self._codex_home)

    def routes(self) -> list[Route]:
        """`initialize`, run inline by the reader so later requests see its effect."""
        return [route("initialize", InitializeParams, self.initialize, inline=True, before_initialize=True)]

    async def initialize(self, ctx: RequestContext, params: InitializeParams) -> InitializeResponse:
        """`initialize`: record the client's session options and answer with the user agent."""
        if self._installation_id is None:
            await self.load_installation_id()
        assert self._installation_id is not None
        if self._originator is None:
            self._originator = params.client_info.name
        session = ctx.connection.session
        session.initialized = True
        session.client_name = params.client_info.name
        session.client_version = params.client_info.version
        capabilities = params.capabilities
        if capabilities is not None:
            session.experimental_api = capabilities.experimental_api
            session.opted_out = frozenset(capabilities.opt_out_notification_methods or ())
        terminal = os.environ.get("TERM", "unknown")
        support = await check_support(self._bwrap)
        if support.problem is not None:
            ctx.notify_after_response("configWarning", {"summary": support.problem, "details": None})
        ctx.notify_after_response(
            "remoteControl/status/changed",
            unstructure(RemoteControlStatusChanged("disabled", socket.gethostname(), self._installation_id)),
        )
        return InitializeResponse(
            user_agent=f"{self._originator}/{PROTOCOL_VERSION} {self._platform} {terminal} "
            f"({params.client_info.name}; {params.client_info.version})",
            codex_home=str(self._codex_home),
            platform_family="unix" if os.name == "posix" else "windows",
            platform_os=platform.system().lower(),
        )
