"""The device-key store: key ids, payload rules, the signed envelope, and the provider interface.

Providers only own key material (create, public, sign, delete). Everything a caller could get
wrong is checked here first, so no provider ever signs bytes the server did not build:

* key ids are `dk_<class>_` + 32 random bytes (unpadded base64url), so a key id names its
  protection class and never carries path or label surprises into a provider;
* a sign payload must name the account and client the key was bound to at creation (the
  binding is kept by a `BindingStore`, not by the provider), target a pinned remote-control
  endpoint on an allowed origin, and expire within 15 minutes;
* the signed bytes are the canonical `codex-device-key-sign-payload/v1` envelope: compact JSON,
  object keys sorted, `type` inside the payload; they are returned with the signature.
"""

from __future__ import annotations

import binascii
import ipaddress
import json
import re
import secrets
import time
import urllib.parse
from collections.abc import Callable
from typing import Protocol

import attrs
import pybase64

from codex_trio.protocol.converter import unstructure
from codex_trio.protocol.device_keys import (
    ALGORITHM,
    RemoteControlClientConnection,
    RemoteControlClientEnrollment,
    SignPayload,
    payload_type,
)
from codex_trio.records import by_value

SIGNING_DOMAIN = "codex-device-key-sign-payload/v1"
HARDWARE_SECURE_ENCLAVE = "hardware_secure_enclave"
HARDWARE_TPM = "hardware_tpm"
OS_PROTECTED_NONEXTRACTABLE = "os_protected_nonextractable"
#: key-id prefix per protection class.
KEY_ID_PREFIXES = {
    HARDWARE_SECURE_ENCLAVE: "dk_hse_",
    HARDWARE_TPM: "dk_tpm_",
    OS_PROTECTED_NONEXTRACTABLE: "dk_osn_",
}
DEGRADED_CLASSES = frozenset({OS_PROTECTED_NONEXTRACTABLE})
KEY_ID_RANDOM_BYTES = 32
INVALID_KEY_ID = "keyId must be dk_hse_, dk_tpm_, or dk_osn_ followed by unpadded base64url-encoded 32 bytes"
CONTROLLER_SCOPE = "remote_control_controller_websocket"
#: the longest a signed proof may stay valid, in seconds.
MAX_PROOF_TTL = 15 * 60
CONNECTION_PATHS = ("/api/codex/remote/control/client", "/wham/remote/control/client")
_B64URL = re.compile(r"[A-Za-z0-9_-]+")
ENROLLMENT_PATHS = ("/api/codex/remote/control/client/enroll", "/wham/remote/control/client/enroll")


class DeviceKeyError(Exception):
    """A refusal or failure, worded as upstream words it; `internal` ones are -32603."""

    def __init__(self, message: str, *, internal: bool = False) -> None:
        super().__init__(message)
        self.message = message
        self.internal = internal

    @classmethod
    def degraded_not_allowed(cls, available: str) -> DeviceKeyError:
        return cls(
            "hardware-backed device keys are not available; set protectionPolicy to "
            f"allow_os_protected_nonextractable to allow key protection class {available}"
        )

    @classmethod
    def hardware_unavailable(cls) -> DeviceKeyError:
        return cls("hardware-backed device keys are not available on this platform")

    @classmethod
    def not_found(cls) -> DeviceKeyError:
        return cls("device key not found")

    @classmethod
    def invalid(cls, detail: str) -> DeviceKeyError:
        return cls(f"invalid device key payload: {detail}")

    @classmethod
    def platform(cls, detail: str) -> DeviceKeyError:
        return cls(f"device key platform error: {detail}", internal=True)

    @classmethod
    def crypto(cls, detail: str) -> DeviceKeyError:
        return cls(f"device key cryptography error: {detail}", internal=True)


@by_value
@attrs.frozen(repr=False, eq=False)
class Binding:
    account_user_id: str
    client_id: str


@by_value
@attrs.frozen(repr=False, eq=False)
class KeyInfo:
    key_id: str
    public_key_spki_der: bytes
    protection_class: str
    algorithm: str = ALGORITHM


def allows(policy: str, protection_class: str) -> bool:
    """`hardware_only` refuses degraded classes; the other policy accepts every class."""
    return policy != "hardware_only" or protection_class not in DEGRADED_CLASSES


class DeviceKeyProvider(Protocol):
    """Owns platform key material. Never signs anything but bytes this module built."""

    async def create(self, key_id_random: str, policy: str) -> KeyInfo:
        """A new key whose id is `KEY_ID_PREFIXES[class] + key_id_random`."""
        ...

    async def public(self, key_id: str, protection_class: str) -> KeyInfo: ...

    async def sign(self, key_id: str, protection_class: str, payload: bytes) -> bytes:
        """A DER ECDSA P-256 SHA-256 signature over `payload`."""
        ...

    async def delete(self, key_id: str, protection_class: str) -> None:
        """Remove key material a failed create left behind (a missing key is not an error)."""
        ...


class BindingStore(Protocol):
    async def get(self, key_id: str) -> Binding | None: ...

    async def put(self, key_id: str, binding: Binding) -> None: ...


@by_value
@attrs.frozen(repr=False, eq=False)
class Signature:
    signature_der: bytes
    signed_payload: bytes
    algorithm: str = ALGORITHM


class DeviceKeyStore:
    """Validation, bindings and signing in front of one provider."""

    def __init__(
        self, provider: DeviceKeyProvider, bindings: BindingStore, clock: Callable[[], float] = time.time
    ) -> None:
        self.provider = provider
        self._bindings = bindings
        self._clock = clock

    async def create(self, binding: Binding, policy: str) -> KeyInfo:
        validate_binding(binding.account_user_id, binding.client_id)
        info = await self.provider.create(random_key_id_part(), policy)
        try:
            await self._bindings.put(info.key_id, binding)
        except DeviceKeyError as store_error:
            try:
                await self.provider.delete(info.key_id, info.protection_class)
            except DeviceKeyError as delete_error:
                raise DeviceKeyError.platform(
                    f"failed to store device key binding ({store_error}); "
                    f"failed to delete newly created key ({delete_error})"
                ) from None
            raise
        return info

    async def public(self, key_id: str) -> KeyInfo:
        protection_class = validate_key_id(key_id)
        return await self.provider.public(key_id, protection_class)

    async def sign(self, key_id: str, payload: SignPayload) -> Signature:
        protection_class = validate_key_id(key_id)
        validate_payload(payload, int(self._clock()))
        binding = await self._bindings.get(key_id)
        if binding is None:
            raise DeviceKeyError.not_found()
        if (payload.account_user_id, payload.client_id) != (binding.account_user_id, binding.client_id):
            raise DeviceKeyError.invalid("payload accountUserId/clientId does not match device key binding")
        signed = signing_payload_bytes(payload)
        signature = await self.provider.sign(key_id, protection_class, signed)
        return Signature(signature, signed)


# ---------------------------------------------------------------------------- key ids
def random_key_id_part() -> str:
    return b64url(secrets.token_bytes(KEY_ID_RANDOM_BYTES))


def key_id_for(protection_class: str, key_id_random: str) -> str:
    return KEY_ID_PREFIXES[protection_class] + key_id_random


def validate_key_id(key_id: str) -> str:
    """The protection class a well-formed key id names; DeviceKeyError otherwise."""
    for protection_class, prefix in KEY_ID_PREFIXES.items():
        if key_id.startswith(prefix):
            encoded = key_id[len(prefix) :]
            decoded = b64url_decode(encoded)
            if decoded is not None and len(decoded) == KEY_ID_RANDOM_BYTES and len(encoded) == 43:
                return protection_class
            break
    raise DeviceKeyError.invalid(INVALID_KEY_ID)


# ---------------------------------------------------------------------------- payloads
def validate_binding(account_user_id: str, client_id: str) -> None:
    if not account_user_id:
        raise DeviceKeyError.invalid("accountUserId must not be empty")
    if not client_id:
        raise DeviceKeyError.invalid("clientId must not be empty")


def validate_payload(payload: SignPayload, now: int) -> None:
    """The rules of each payload shape, checked before any binding or provider is consulted."""
    _validate_nonce(payload.nonce)
    if isinstance(payload, RemoteControlClientConnection):
        _validate_target(payload.target_origin, payload.target_path, CONNECTION_PATHS)
        if not payload.session_id:
            raise DeviceKeyError.invalid("sessionId must not be empty")
        validate_binding(payload.account_user_id, payload.client_id)
        if not _is_sha256_b64url(payload.token_sha256_base64url):
            raise DeviceKeyError.invalid(
                "tokenSha256Base64url must be a SHA-256 digest encoded as unpadded base64url"
            )
        if payload.scopes != [CONTROLLER_SCOPE]:
            raise DeviceKeyError.invalid(f"scopes must contain exactly {CONTROLLER_SCOPE}")
        _validate_expiry(payload.token_expires_at, now, "remote-control token")
    else:
        assert isinstance(payload, RemoteControlClientEnrollment)
        if not payload.challenge_id:
            raise DeviceKeyError.invalid("challengeId must not be empty")
        _validate_target(payload.target_origin, payload.target_path, ENROLLMENT_PATHS)
        validate_binding(payload.account_user_id, payload.client_id)
        if not _is_sha256_b64url(payload.device_identity_sha256_base64url):
            raise DeviceKeyError.invalid(
                "deviceIdentitySha256Base64url must be a SHA-256 digest encoded as unpadded base64url"
            )
        _validate_expiry(payload.challenge_expires_at, now, "enrollment challenge")


def _validate_nonce(nonce: str) -> None:
    decoded = b64url_decode(nonce)
    if decoded is None or len(decoded) < 32:
        raise DeviceKeyError.invalid("nonce must be at least 32 random bytes encoded as unpadded base64url")


def _validate_target(origin: str, path: str, allowed_paths: tuple[str, ...]) -> None:
    if not allowed_origin(origin):
        raise DeviceKeyError.invalid("targetOrigin must be an allowed remote-control backend origin")
    if path not in allowed_paths:
        raise DeviceKeyError.invalid(
            "targetPath must match the signed payload type's remote-control endpoint"
        )


def allowed_origin(origin: str) -> bool:
    """https on chatgpt.com / chatgpt-staging.com (and subdomains) or loopback; http on loopback only."""
    try:
        url = urllib.parse.urlsplit(origin)
        host = url.hostname or ""
        url.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError:
        return False
    if url.path not in ("", "/") or url.query or url.fragment or url.username or url.password or not host:
        return False
    if url.scheme == "https":
        return _is_loopback(host) or _is_chatgpt(host)
    return url.scheme == "http" and _is_loopback(host)


def _is_chatgpt(host: str) -> bool:
    return any(host == d or host.endswith("." + d) for d in ("chatgpt.com", "chatgpt-staging.com"))


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _validate_expiry(expires_at: int, now: int, label: str) -> None:
    if expires_at <= now:
        raise DeviceKeyError.invalid(f"{label} is expired")
    if expires_at > now + MAX_PROOF_TTL:
        raise DeviceKeyError.invalid(f"{label} expires too far in the future")


def _is_sha256_b64url(value: str) -> bool:
    decoded = b64url_decode(value)
    return decoded is not None and len(decoded) == 32


# ---------------------------------------------------------------------------- bytes
def signing_payload_bytes(payload: SignPayload) -> bytes:
    """The exact bytes signed: `{"domain":…,"payload":{…,"type":…}}`, keys sorted, no spaces."""
    body = unstructure(payload)
    body["type"] = payload_type(payload)
    envelope = {"domain": SIGNING_DOMAIN, "payload": body}
    return json.dumps(envelope, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def b64url(data: bytes) -> str:
    return pybase64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(text: str) -> bytes | None:
    """Unpadded, canonical base64url, or None."""
    if not _B64URL.fullmatch(text) or len(text) % 4 == 1:
        return None
    try:
        decoded = pybase64.b64decode(text + "=" * (-len(text) % 4), altchars=b"-_", validate=True)
    except (binascii.Error, ValueError):
        return None
    return decoded if b64url(decoded) == text else None
