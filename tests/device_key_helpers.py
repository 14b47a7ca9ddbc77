"""Shared by the device-key tests: payload builders and signature verification with `cryptography`."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import load_der_public_key

from codex_trio.client import ClientConnection
from codex_trio.server import open_app_server
from codex_trio.settings import ServerSettings

ACCOUNT = "user-123"
CLIENT = "cli_abc"


@asynccontextmanager
async def local_client(settings: ServerSettings) -> AsyncIterator[ClientConnection]:
    """An initialized in-process client of a server that runs as long as the block."""
    async with open_app_server(settings) as server:
        client = await server.connect()
        await client.initialize("pytest")
        yield client
        await client.aclose()


async def create(client: ClientConnection, **params: Any) -> dict[str, Any]:
    result: dict[str, Any] = await client.call(
        "device/key/create", {"accountUserId": ACCOUNT, "clientId": CLIENT, **params}
    )
    return result


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def connection_payload(**changes: Any) -> dict[str, Any]:
    payload = {
        "type": "remoteControlClientConnection",
        "nonce": b64url(os.urandom(32)),
        "audience": "remote_control_client_websocket",
        "sessionId": "wssess_1",
        "targetOrigin": "https://chatgpt.com",
        "targetPath": "/api/codex/remote/control/client",
        "accountUserId": ACCOUNT,
        "clientId": CLIENT,
        "tokenSha256Base64url": b64url(hashlib.sha256(b"token").digest()),
        "tokenExpiresAt": int(time.time()) + 300,
        "scopes": ["remote_control_controller_websocket"],
    }
    payload.update(changes)
    return payload


def enrollment_payload(**changes: Any) -> dict[str, Any]:
    payload = {
        "type": "remoteControlClientEnrollment",
        "nonce": b64url(os.urandom(48)),
        "audience": "remote_control_client_enrollment",
        "challengeId": "chal_1",
        "targetOrigin": "https://chatgpt.com",
        "targetPath": "/wham/remote/control/client/enroll",
        "accountUserId": ACCOUNT,
        "clientId": CLIENT,
        "deviceIdentitySha256Base64url": b64url(hashlib.sha256(b"device").digest()),
        "challengeExpiresAt": int(time.time()) + 600,
    }
    payload.update(changes)
    return payload


def verify(public_key_b64: str, result: dict[str, Any], payload: dict[str, Any]) -> None:
    """The signature verifies against the key and the returned bytes, which are the envelope."""
    assert result["algorithm"] == "ecdsa_p256_sha256"
    key = load_der_public_key(base64.b64decode(public_key_b64))
    assert isinstance(key, ec.EllipticCurvePublicKey) and key.curve.name == "secp256r1"
    signed = base64.b64decode(result["signedPayloadBase64"])
    key.verify(base64.b64decode(result["signatureDerBase64"]), signed, ec.ECDSA(hashes.SHA256()))
    expected = {"domain": "codex-device-key-sign-payload/v1", "payload": payload}
    assert signed == json.dumps(expected, sort_keys=True, separators=(",", ":")).encode()
