"""`initialize`: the per-connection handshake and what follows it."""

from __future__ import annotations

import os
import platform
import socket
import uuid
from pathlib import Path

from codex_trio._version import PROTOCOL_VERSION
from codex_trio.dispatch import RequestContext, Route, route
from codex_trio.protocol.converter import unstructure
from codex_trio.protocol.initialize import InitializeParams, InitializeResponse, RemoteControlStatusChanged
from codex_trio.sandbox import check_support


def installation_id(codex_home: Path) -> str:
    """The id the reference keeps in `<codex_home>/installation_id`, created on first use."""
    path = codex_home / "installation_id"
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        pass
    value = str(uuid.uuid4())
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".installation_id.{os.getpid()}.tmp")
    tmp.write_text(value)
    os.replace(tmp, path)
    return value


class SessionApi:
    """Owns the handshake; the originator is process-global, as in the reference."""

    def __init__(self, codex_home: Path, bwrap: str = "bwrap") -> None:
        self._codex_home = codex_home
        self._bwrap = bwrap
        self._originator: str | None = None
        self._installation_id: str | None = None
        self._platform = f"({platform.system()} {platform.release()}; {platform.machine()})"

    def routes(self) -> list[Route]:
        return [route("initialize", InitializeParams, self.initialize, inline=True, before_initialize=True)]

    async def initialize(self, ctx: RequestContext, params: InitializeParams) -> InitializeResponse:
        if self._installation_id is None:
            self._installation_id = installation_id(self._codex_home)
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
