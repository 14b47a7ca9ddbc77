"""`device/key/*` through the dispatcher with the memory provider: the signed envelope, the
binding, the payload rules, the transport policy and the error codes. (The TPM provider has its
own tests against a software TPM: test_device_keys_tpm.py.)"""

from __future__ import annotations

import base64
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import attrs
import pytest
import trio

from codex_trio.api.device_keys import DeviceKeysApi
from codex_trio.client import ClientConnection
from codex_trio.device_keys.bindings import STATE_FILE
from codex_trio.device_keys.memory import MemoryProvider
from codex_trio.device_keys.store import signing_payload_bytes, validate_key_id
from codex_trio.protocol.converter import structure
from codex_trio.protocol.device_keys import RemoteControlClientConnection
from codex_trio.protocol.errors import RpcError
from codex_trio.server import AppServer, open_app_server
from codex_trio.settings import ServerSettings
from codex_trio.testing import LeakCheck
from codex_trio.transport.listen import UnixListen, WebSocketListen
from codex_trio.transport.websocket import WebSocketEndpoint
from tests.device_key_helpers import (
    ACCOUNT,
    CLIENT,
    connection_payload,
    create,
    enrollment_payload,
    verify,
)
from tests.ws_client import connect

TIMEOUT = 15


@pytest.fixture
def provider() -> MemoryProvider:
    return MemoryProvider("hardware_tpm")


@pytest.fixture
async def dk(
    leak_check: LeakCheck, server_settings: ServerSettings, provider: MemoryProvider
) -> AsyncIterator[ClientConnection]:
    async with open_app_server(server_settings) as server:
        await use_provider(server, provider)
        client = await server.connect()
        await client.initialize("pytest")
        yield client
        await client.aclose()


async def use_provider(server: AppServer, provider: MemoryProvider) -> None:
    """The memory provider in place of the TPM: the server itself never picks it."""
    (await server.family(DeviceKeysApi)).store.provider = provider


async def refused(client: ClientConnection, method: str, params: Any) -> RpcError:
    with pytest.raises(RpcError) as caught:
        await client.call(method, params)
    return caught.value


def test_the_signed_bytes_match_upstream_test_vector() -> None:
    payload = structure(
        {
            "nonce": "nonce",
            "audience": "remote_control_client_websocket",
            "sessionId": "session",
            "targetOrigin": "https://chatgpt.com",
            "targetPath": "/api/codex/remote/control/client",
            "accountUserId": "user",
            "clientId": "client",
            "tokenExpiresAt": 123,
            "tokenSha256Base64url": "47DEQpj8HBSa-_TImW-5JCeuQeRkm5NMpJWZG3hSuFU",
            "scopes": ["remote_control_controller_websocket"],
        },
        RemoteControlClientConnection,
    )
    assert signing_payload_bytes(payload) == (
        b'{"domain":"codex-device-key-sign-payload/v1","payload":{"accountUserId":"user",'
        b'"audience":"remote_control_client_websocket","clientId":"client","nonce":"nonce",'
        b'"scopes":["remote_control_controller_websocket"],"sessionId":"session",'
        b'"targetOrigin":"https://chatgpt.com","targetPath":"/api/codex/remote/control/client",'
        b'"tokenExpiresAt":123,"tokenSha256Base64url":"47DEQpj8HBSa-_TImW-5JCeuQeRkm5NMpJWZG3hSuFU",'
        b'"type":"remoteControlClientConnection"}}'
    )


@pytest.mark.parametrize(
    "key_id",
    [
        "",
        "dk_tpm_",
        "dk_xyz_" + "A" * 43,
        "dk_tpm_" + "A" * 42,
        "dk_tpm_" + "A" * 44,
        "dk_tpm_" + "A" * 42 + "=",
        "dk_tpm_../../etc/passwd" + "A" * 20,
        "dk_tpm_" + "+" * 43,
    ],
)
def test_malformed_key_ids_are_refused(key_id: str) -> None:
    with pytest.raises(Exception, match="keyId must be dk_hse_, dk_tpm_, or dk_osn_"):
        validate_key_id(key_id)


async def test_create_public_sign_and_verify_both_payload_shapes(dk: ClientConnection) -> None:
    created = await create(dk)
    assert created["keyId"].startswith("dk_tpm_") and len(created["keyId"]) == 50
    assert created["algorithm"] == "ecdsa_p256_sha256" and created["protectionClass"] == "hardware_tpm"
    public = await dk.call("device/key/public", {"keyId": created["keyId"]})
    assert public == created
    for payload in (
        connection_payload(),
        enrollment_payload(),
        enrollment_payload(targetPath="/api/codex/remote/control/client/enroll"),
    ):
        result = await dk.call("device/key/sign", {"keyId": created["keyId"], "payload": payload})
        verify(created["publicKeySpkiDerBase64"], result, payload)


async def test_every_create_makes_a_new_key_and_the_binding_is_in_sqlite(
    dk: ClientConnection, codex_home: Path
) -> None:
    first, second = await create(dk), await create(dk)
    assert first["keyId"] != second["keyId"]
    assert first["publicKeySpkiDerBase64"] != second["publicKeySpkiDerBase64"]
    import sqlite3

    db = sqlite3.connect(codex_home / STATE_FILE)
    try:
        rows = db.execute("SELECT key_id, account_user_id, client_id FROM device_key_bindings").fetchall()
    finally:
        db.close()
    assert sorted(rows) == sorted([(first["keyId"], ACCOUNT, CLIENT), (second["keyId"], ACCOUNT, CLIENT)])


async def test_a_payload_for_another_account_or_client_is_refused(dk: ClientConnection) -> None:
    key = (await create(dk))["keyId"]
    for change in ({"accountUserId": "someone-else"}, {"clientId": "cli_other"}):
        error = await refused(dk, "device/key/sign", {"keyId": key, "payload": connection_payload(**change)})
        assert (error.code, error.message) == (
            -32600,
            "invalid device key payload: payload accountUserId/clientId does not match device key binding",
        )


def _in(seconds: int) -> int:
    return int(time.time()) + seconds


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        (
            connection_payload(scopes=["remote_control_controller_websocket", "x"]),
            "scopes must contain exactly remote_control_controller_websocket",
        ),
        (connection_payload(scopes=[]), "scopes must contain exactly remote_control_controller_websocket"),
        (
            connection_payload(targetPath="/api/codex/remote/control/client/enroll"),
            "targetPath must match the signed payload type's remote-control endpoint",
        ),
        (
            enrollment_payload(targetPath="/wham/remote/control/client"),
            "targetPath must match the signed payload type's remote-control endpoint",
        ),
        (
            connection_payload(targetOrigin="https://evil.example"),
            "targetOrigin must be an allowed remote-control backend origin",
        ),
        (
            connection_payload(targetOrigin="http://chatgpt.com"),
            "targetOrigin must be an allowed remote-control backend origin",
        ),
        (
            connection_payload(targetOrigin="https://chatgpt.com/path"),
            "targetOrigin must be an allowed remote-control backend origin",
        ),
        (connection_payload(tokenExpiresAt=_in(-1)), "remote-control token is expired"),
        (
            connection_payload(tokenExpiresAt=_in(16 * 60)),
            "remote-control token expires too far in the future",
        ),
        (enrollment_payload(challengeExpiresAt=_in(0)), "enrollment challenge is expired"),
        (
            enrollment_payload(challengeExpiresAt=_in(3600)),
            "enrollment challenge expires too far in the future",
        ),
        (
            connection_payload(nonce="short"),
            "nonce must be at least 32 random bytes encoded as unpadded base64url",
        ),
        (
            connection_payload(tokenSha256Base64url="abc"),
            "tokenSha256Base64url must be a SHA-256 digest encoded as unpadded base64url",
        ),
        (connection_payload(sessionId=""), "sessionId must not be empty"),
        (enrollment_payload(challengeId=""), "challengeId must not be empty"),
        (connection_payload(accountUserId=""), "accountUserId must not be empty"),
    ],
)
async def test_payload_rules(
    dk: ClientConnection, provider: MemoryProvider, payload: dict[str, Any], message: str
) -> None:
    key = (await create(dk))["keyId"]
    error = await refused(dk, "device/key/sign", {"keyId": key, "payload": payload})
    assert (error.code, error.message) == (-32600, f"invalid device key payload: {message}")
    assert "sign" not in provider.calls


async def test_other_origins_that_are_allowed(dk: ClientConnection) -> None:
    created = await create(dk)
    for origin in ("https://chatgpt.com/", "https://ab.chatgpt.com", "https://chatgpt-staging.com",
                   "http://localhost:8080", "http://127.0.0.1", "https://[::1]:9"):  # fmt: skip
        payload = connection_payload(targetOrigin=origin)
        result = await dk.call("device/key/sign", {"keyId": created["keyId"], "payload": payload})
        verify(created["publicKeySpkiDerBase64"], result, payload)


async def test_wrong_audience_or_payload_type_is_a_params_error(dk: ClientConnection) -> None:
    key = (await create(dk))["keyId"]
    error = await refused(dk, "device/key/sign", {"keyId": key, "payload": connection_payload(audience="x")})
    assert error.code == -32600 and error.message.startswith("Invalid request: unknown variant `x`")
    error = await refused(dk, "device/key/sign", {"keyId": key, "payload": {"type": "raw", "bytes": "AA=="}})
    assert error.message == (
        "Invalid request: unknown variant `raw`, expected `remoteControlClientConnection` or "
        "`remoteControlClientEnrollment`"
    )


async def test_empty_binding_fields_and_unknown_keys(dk: ClientConnection, provider: MemoryProvider) -> None:
    error = await refused(dk, "device/key/create", {"accountUserId": "", "clientId": CLIENT})
    assert (error.code, error.message) == (
        -32600,
        "invalid device key payload: accountUserId must not be empty",
    )
    error = await refused(dk, "device/key/create", {"accountUserId": ACCOUNT, "clientId": ""})
    assert error.message == "invalid device key payload: clientId must not be empty"
    assert provider.calls == []
    unknown = "dk_tpm_" + base64.urlsafe_b64encode(bytes(32)).rstrip(b"=").decode()
    error = await refused(dk, "device/key/public", {"keyId": unknown})
    assert (error.code, error.message) == (-32600, "device key not found")
    error = await refused(dk, "device/key/sign", {"keyId": unknown, "payload": connection_payload()})
    assert (error.code, error.message) == (-32600, "device key not found")
    error = await refused(dk, "device/key/public", {"keyId": "nope"})
    assert error.message.startswith("invalid device key payload: keyId must be dk_hse_")


@pytest.mark.parametrize("provider", [MemoryProvider("os_protected_nonextractable")])
async def test_degraded_class_needs_the_permissive_policy(dk: ClientConnection) -> None:
    error = await refused(dk, "device/key/create", {"accountUserId": ACCOUNT, "clientId": CLIENT})
    assert (error.code, error.message) == (
        -32600,
        "hardware-backed device keys are not available; set protectionPolicy to "
        "allow_os_protected_nonextractable to allow key protection class os_protected_nonextractable",
    )
    created = await create(dk, protectionPolicy="allow_os_protected_nonextractable")
    assert (
        created["keyId"].startswith("dk_osn_") and created["protectionClass"] == "os_protected_nonextractable"
    )
    error = await refused(
        dk, "device/key/create", {"accountUserId": ACCOUNT, "clientId": CLIENT, "protectionPolicy": "any"}
    )
    assert error.message.startswith("Invalid request: unknown variant `any`")


async def test_a_failed_binding_write_deletes_the_new_key(
    dk: ClientConnection, provider: MemoryProvider, codex_home: Path
) -> None:
    (codex_home / STATE_FILE).mkdir()  # SQLite cannot open a directory
    error = await refused(dk, "device/key/create", {"accountUserId": ACCOUNT, "clientId": CLIENT})
    assert error.code == -32603 and error.message.startswith("device key platform error: sqlite state db")
    assert provider.calls == ["create", "delete"] and provider.keys == {}


@pytest.mark.parametrize("transport", ["ws", "unix"])
async def test_remote_transports_are_refused_before_any_provider_is_touched(
    leak_check: LeakCheck, server_settings: ServerSettings, tmp_path: Path, transport: str
) -> None:
    provider = MemoryProvider("hardware_tpm")
    listen = WebSocketListen("127.0.0.1", 0) if transport == "ws" else UnixListen(tmp_path / "ctl.sock")
    settings = attrs.evolve(server_settings, listen=listen)
    key = "dk_tpm_" + base64.urlsafe_b64encode(bytes(32)).rstrip(b"=").decode()
    cases = [
        ("device/key/create", {"accountUserId": ACCOUNT, "clientId": CLIENT}),
        ("device/key/public", {"keyId": key}),
        ("device/key/sign", {"keyId": key, "payload": connection_payload()}),
    ]
    with trio.fail_after(TIMEOUT):
        async with open_app_server(settings) as server:
            await use_provider(server, provider)
            if isinstance(server.listening, WebSocketEndpoint):
                opened = connect(server.listening.port)
            else:
                opened = connect(unix_path=str(tmp_path / "ctl.sock"))
            async with opened as ws:
                await ws.rpc.initialize("pytest")
                for method, params in cases:
                    error = await refused(ws.rpc, method, params)
                    assert (error.code, error.message) == (
                        -32600,
                        f"{method} is not available over remote transports",
                    )
            # The in-process connection of the same server is local: allowed.
            local = await server.connect()
            await local.initialize("pytest")
            assert (await create(local))["protectionClass"] == "hardware_tpm"
            await local.aclose()
    assert provider.calls == ["create"]
