"""`initialize`: client identity and capabilities, and the server's answer."""

from __future__ import annotations

import attrs

from codex_trio.protocol.converter import omittable


@attrs.frozen
class ClientInfo:
    """Who the client is (its name becomes the originator)."""

    name: str
    version: str
    title: str | None = omittable()


@attrs.frozen
class InitializeCapabilities:
    """What the client opts into: experimental methods, fewer notifications."""

    experimental_api: bool = False
    opt_out_notification_methods: list[str] | None = None
    request_attestation: bool | None = omittable()


@attrs.frozen
class InitializeParams:
    """`initialize` params."""

    client_info: ClientInfo
    capabilities: InitializeCapabilities | None = None


@attrs.frozen
class InitializeResponse:
    """`initialize` result."""

    user_agent: str
    codex_home: str
    platform_family: str
    platform_os: str


@attrs.frozen
class RemoteControlStatusChanged:
    """Sent after `initialize`, as the reference does; remote control is never enabled here."""

    status: str
    server_name: str
    installation_id: str
    environment_id: str | None = None
