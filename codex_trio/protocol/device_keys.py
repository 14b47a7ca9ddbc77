"""`device/key/create`, `device/key/public`, `device/key/sign` wire types (pure).

The sign payload is a union tagged by `type`, structured into one of the two variant classes
by `structure_sign_payload` (registered with the converter), so an unknown tag gets serde's
wording and a bad payload is refused while the params are read, as upstream does.
"""

from __future__ import annotations

from typing import Any, Literal

import attrs

from codex_trio.protocol.converter import (
    WireError,
    describe,
    expected_variants,
    register_structure_hook,
    structure,
)
from codex_trio.records import by_value

ALGORITHM = "ecdsa_p256_sha256"
PROTECTION_POLICIES = ("hardware_only", "allow_os_protected_nonextractable")
ProtectionPolicy = Literal["hardware_only", "allow_os_protected_nonextractable"]


@by_value
@attrs.frozen(repr=False, eq=False)
class DeviceKeyCreateParams:
    account_user_id: str
    client_id: str
    protection_policy: ProtectionPolicy | None = None


@by_value
@attrs.frozen(repr=False, eq=False)
class DeviceKeyPublicParams:
    key_id: str


@by_value
@attrs.frozen(repr=False, eq=False)
class DeviceKeyInfoResponse:
    """The result of `device/key/create` and `device/key/public`."""

    key_id: str
    public_key_spki_der_base64: str
    algorithm: str
    protection_class: str


@by_value
@attrs.frozen(repr=False, eq=False)
class DeviceKeySignResponse:
    signature_der_base64: str
    signed_payload_base64: str
    algorithm: str


@by_value
@attrs.frozen(repr=False, eq=False)
class RemoteControlClientConnection:
    """Proof of key possession for opening the remote-control controller websocket."""

    nonce: str
    audience: Literal["remote_control_client_websocket"]
    session_id: str
    target_origin: str
    target_path: str
    account_user_id: str
    client_id: str
    token_sha256_base64url: str
    token_expires_at: int
    scopes: list[str]


@by_value
@attrs.frozen(repr=False, eq=False)
class RemoteControlClientEnrollment:
    """Proof of key possession for enrolling this device with the remote-control service."""

    nonce: str
    audience: Literal["remote_control_client_enrollment"]
    challenge_id: str
    target_origin: str
    target_path: str
    account_user_id: str
    client_id: str
    device_identity_sha256_base64url: str
    challenge_expires_at: int


SignPayload = RemoteControlClientConnection | RemoteControlClientEnrollment

PAYLOAD_TYPES: dict[str, type[SignPayload]] = {
    "remoteControlClientConnection": RemoteControlClientConnection,
    "remoteControlClientEnrollment": RemoteControlClientEnrollment,
}


def payload_type(payload: SignPayload) -> str:
    return next(tag for tag, cls in PAYLOAD_TYPES.items() if isinstance(payload, cls))


def structure_sign_payload(raw: Any, _: Any = None) -> SignPayload:
    """The tagged payload map -> its variant; raises WireError with serde's wording."""
    if not isinstance(raw, dict):
        raise WireError(
            f"invalid type: {describe(raw)}, expected internally tagged enum DeviceKeySignPayload"
        )
    tag = raw.get("type")
    if tag is None:
        raise WireError("missing field `type`")
    cls = PAYLOAD_TYPES.get(tag) if isinstance(tag, str) else None
    if cls is None:
        raise WireError(f"unknown variant `{tag}`, {expected_variants(list(PAYLOAD_TYPES))}")
    return structure(raw, cls)


register_structure_hook(SignPayload, structure_sign_payload)


@by_value
@attrs.frozen(repr=False, eq=False)
class DeviceKeySignParams:
    key_id: str
    payload: SignPayload
