"""`initialize`: client identity and capabilities, and the server's answer.

These types have hand-written hooks (registered with the converter): `initialize` is the
first message of every connection, and answering it must not wait for cattrs to be imported
and the converter built (a third of a stdio start-up that answers `initialize` and exits).
The hooks keep the converter's rules and serde's error texts to the letter; a test compares
them with what the generic converter does on generated params.
"""

from __future__ import annotations

from typing import Any, cast

import attrs

from codex_trio.protocol.converter import (
    WireError,
    describe,
    omittable,
    register_structure_hook,
    register_unstructure_hook,
    strict,
    wire_name,
)
from codex_trio.records import by_value


@by_value
@attrs.frozen(repr=False, eq=False)
class ClientInfo:
    """Who the client is (its name becomes the originator)."""

    name: str
    version: str
    title: str | None = omittable()


@by_value
@attrs.frozen(repr=False, eq=False)
class InitializeCapabilities:
    """What the client opts into: experimental methods, fewer notifications."""

    experimental_api: bool = False
    opt_out_notification_methods: list[str] | None = None
    request_attestation: bool | None = omittable()


@by_value
@attrs.frozen(repr=False, eq=False)
class InitializeParams:
    """`initialize` params."""

    client_info: ClientInfo
    capabilities: InitializeCapabilities | None = None


@by_value
@attrs.frozen(repr=False, eq=False)
class InitializeResponse:
    """`initialize` result."""

    user_agent: str
    codex_home: str
    platform_family: str
    platform_os: str


@by_value
@attrs.frozen(repr=False, eq=False)
class RemoteControlStatusChanged:
    """Sent after `initialize`, as the reference does; remote control is never enabled here."""

    status: str
    server_name: str
    installation_id: str
    environment_id: str | None = None


# ---------------------------------------------------------------------------- hooks
# The converter's rules for an attrs class, in its order: a map; every required key present
# (in field order); then the fields with a default, in order; then the required ones.
def _struct(value: Any, name: str, *required: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise WireError(f"invalid type: {describe(value)}, expected struct {name}")
    for key in required:
        if key not in value:
            raise WireError(f"missing field `{key}`")
    return value


_strict_string = strict(str, "a string")
_strict_boolean = strict(bool, "a boolean")


def _string(value: Any) -> str:
    return cast(str, _strict_string(value, str))


def _boolean(value: Any) -> bool:
    return cast(bool, _strict_boolean(value, bool))


def _strings(value: Any) -> list[str]:
    if not isinstance(value, list):
        raise WireError(f"invalid type: {describe(value)}, expected a sequence")
    return [_string(item) for item in value]


def _client_info(value: Any) -> ClientInfo:
    value = _struct(value, "ClientInfo", "name", "version")
    title = value.get("title")
    title = None if title is None else _string(title)
    return ClientInfo(_string(value["name"]), _string(value["version"]), title)


def _capabilities(value: Any) -> InitializeCapabilities:
    value = _struct(value, "InitializeCapabilities")
    experimental = _boolean(value["experimentalApi"]) if "experimentalApi" in value else False
    methods = value.get("optOutNotificationMethods")
    attestation = value.get("requestAttestation")
    return InitializeCapabilities(
        experimental,
        None if methods is None else _strings(methods),
        None if attestation is None else _boolean(attestation),
    )


def structure_initialize_params(value: Any, _: Any = None) -> InitializeParams:
    """Wire params -> `InitializeParams`; raises WireError with serde's wording."""
    value = _struct(value, "InitializeParams", "clientInfo")
    capabilities = value.get("capabilities")
    capabilities = None if capabilities is None else _capabilities(capabilities)
    return InitializeParams(_client_info(value["clientInfo"]), capabilities)


def scalar_fields_to_wire(value: Any) -> dict[str, Any]:
    """Every field under its wire name, in order: for types whose fields all hold JSON
    scalars and none is `omittable` (a test checks the types it is registered for)."""
    return {wire_name(field): getattr(value, field.name) for field in attrs.fields(type(value))}


register_structure_hook(InitializeParams, structure_initialize_params)
register_unstructure_hook(InitializeResponse, scalar_fields_to_wire)
register_unstructure_hook(RemoteControlStatusChanged, scalar_fields_to_wire)
