"""`account/*` and `getAuthStatus`: API-key login persisted in auth.json, logout, the
provider rule for `requiresOpenaiAuth`, and in-memory `chatgptAuthTokens` logins."""

from __future__ import annotations

import base64
import json
import stat
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import trio

from codex_trio.client import ClientConnection
from codex_trio.protocol.errors import RpcError
from codex_trio.server import AppServer, open_app_server
from codex_trio.settings import ServerSettings
from codex_trio.transport.listen import NoListen

MOCK_PROVIDER = (
    'model_provider = "mock"\n[model_providers.mock]\nname = "Mock"\nbase_url = "http://127.0.0.1:9/v1"\n'
)
API_KEY = "sk-test-key"


def home_settings(home: Path, config: str) -> ServerSettings:
    home.mkdir(parents=True, exist_ok=True)
    (home / "config.toml").write_text(config)
    return ServerSettings(codex_home=home, listen=NoListen(), cwd=home.parent)


@asynccontextmanager
async def server_for(home: Path, config: str = "") -> AsyncIterator[AppServer]:
    async with open_app_server(home_settings(home, config)) as server:
        yield server


async def connect(server: AppServer, **capabilities: Any) -> ClientConnection:
    client = await server.connect()
    await client.initialize(**capabilities)
    return client


async def next_method(client: ClientConnection, *methods: str) -> dict[str, Any]:
    """The next notification among `methods` (others, like remoteControl/status, are skipped)."""
    while True:
        message = await client.receive()
        if message.get("method") in methods:
            return message


def jwt(claims: dict[str, Any]) -> str:
    def part(data: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(data).encode()).decode().rstrip("=")

    return f"{part({'alg': 'none'})}.{part(claims)}.sig"


async def test_a_custom_provider_without_openai_auth_reports_no_account(tmp_path: Path) -> None:
    with trio.fail_after(10):
        async with server_for(tmp_path / "home", MOCK_PROVIDER) as server:
            client = await connect(server)
            expected = {
                "account": None,
                "userId": None,
                "requiresOpenaiAuth": False,
                "workspaceRouting": None,
            }
            assert await client.call("account/read", {}) == expected
            await client.call("account/login/start", {"type": "apiKey", "apiKey": API_KEY})
            assert await client.call("account/read", {}) == expected, (
                "the key does not matter to this provider"
            )
            status = await client.call("getAuthStatus", {"includeToken": True})
            assert status == {"authMethod": None, "authToken": None, "requiresOpenaiAuth": False}


async def test_api_key_login_is_persisted_announced_and_survives_a_restart(tmp_path: Path) -> None:
    home = tmp_path / "home"
    with trio.fail_after(10):
        async with server_for(home) as server:
            client = await connect(server)
            other = await connect(server)
            assert (await client.call("account/read", {}))["requiresOpenaiAuth"] is True
            assert await client.call("account/login/start", {"type": "apiKey", "apiKey": API_KEY}) == {
                "type": "apiKey"
            }
            completed = await next_method(client, "account/login/completed", "account/updated")
            assert completed["method"] == "account/login/completed"
            assert completed["params"] == {
                "loginId": None,
                "success": True,
                "error": None,
                "onboardingEntrypoint": None,
            }
            updated = await next_method(client, "account/updated")
            assert updated["params"] == {"authMode": "apikey", "planType": None}
            assert (await next_method(other, "account/updated"))["params"]["authMode"] == "apikey"
            auth = home / "auth.json"
            assert json.loads(auth.read_text()) == {"auth_mode": "apikey", "OPENAI_API_KEY": API_KEY}
            assert stat.S_IMODE(auth.stat().st_mode) == 0o600
            assert (await client.call("account/read", {}))["account"] == {"type": "apiKey"}
            assert (await client.call("getAuthStatus", {}))["authToken"] is None
            status = await client.call("getAuthStatus", {"includeToken": True})
            assert (status["authMethod"], status["authToken"]) == ("apikey", API_KEY)
        async with server_for(home) as server:
            client = await connect(server)
            assert (await client.call("account/read", {}))["account"] == {"type": "apiKey"}
            assert await client.call("account/logout") == {}
            assert (await next_method(client, "account/updated"))["params"] == {
                "authMode": None,
                "planType": None,
            }
            assert not (home / "auth.json").exists()
            assert (await client.call("account/read", {}))["account"] is None
            assert (await client.call("getAuthStatus", {"includeToken": True}))["authMethod"] is None


async def test_logout_notifies_even_without_a_login(tmp_path: Path) -> None:
    with trio.fail_after(10):
        async with server_for(tmp_path / "home") as server:
            client = await connect(server)
            assert await client.call("account/logout", None) == {}
            assert (await next_method(client, "account/updated"))["params"]["authMode"] is None


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"type": "apiKey"}, "Invalid request: missing field `apiKey`"),
        (
            {"type": "bogus"},
            "Invalid request: unknown variant `bogus`, expected one of `apiKey`, `chatgpt`, "
            "`chatgptDeviceCode`, `chatgptAuthTokens`, `amazonBedrock`, `amazonBedrockAccessKeys`",
        ),
        (
            {"type": "chatgptAuthTokens", "accessToken": "a.b.c", "chatgptAccountId": "acct"},
            "account/login/start.chatgptAuthTokens requires experimentalApi capability",
        ),
        ({"type": "amazonBedrockAccessKeys"}, "Invalid request: missing field `accessKeyId`"),
    ],
)
async def test_bad_logins_are_refused_with_the_reference_errors(
    tmp_path: Path, params: dict[str, Any], message: str
) -> None:
    with trio.fail_after(10):
        async with server_for(tmp_path / "home") as server:
            client = await connect(server)
            with pytest.raises(RpcError) as raised:
                await client.call("account/login/start", params)
            assert (raised.value.code, raised.value.message) == (-32600, message)


async def test_unknown_login_ids_and_missing_params_are_refused(tmp_path: Path) -> None:
    with trio.fail_after(10):
        async with server_for(tmp_path / "home") as server:
            client = await connect(server)
            with pytest.raises(RpcError, match="invalid login id: nope"):
                await client.call("account/login/cancel", {"loginId": "nope"})
            with pytest.raises(RpcError, match="missing field `params`"):
                await client.call("account/read")
            with pytest.raises(RpcError, match="requires experimentalApi"):
                await client.call("account/bedrock/checkGovCloudRequirements", {})
            experimental = await connect(server, experimentalApi=True)
            result = await experimental.call("account/bedrock/checkGovCloudRequirements", {})
            assert result == {"isGovCloud": False, "shouldWarn": False}


async def serve_discovery(nursery: trio.Nursery, body: dict[str, Any]) -> tuple[int, list[bytes]]:
    """A one-route HTTP server for `wham/accounts/check`; returns its port and the requests seen."""
    seen: list[bytes] = []
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    payload = json.dumps(body).encode()

    async def handle(stream: trio.SocketStream) -> None:
        request = b""
        while b"\r\n\r\n" not in request:
            chunk = await stream.receive_some(4096)
            if not chunk:
                return
            request += chunk
        seen.append(request)
        head = f"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {len(payload)}\r\n"
        await stream.send_all(head.encode() + b"Connection: close\r\n\r\n" + payload)
        await stream.aclose()

    nursery.start_soon(trio.serve_listeners, handle, listeners)
    return listeners[0].socket.getsockname()[1], seen


async def test_chatgpt_auth_tokens_login_discovers_the_workspace_and_stays_in_memory(tmp_path: Path) -> None:
    home = tmp_path / "home"
    token = jwt(
        {
            "email": "user@example.com",
            "https://api.openai.com/auth": {"chatgpt_plan_type": "pro", "chatgpt_user_id": "user-abc"},
        }
    )
    account = {
        "id": "acct_123",
        "name": "Example WS",
        "workspace_backend_origin": "https://chatgpt.com",
        "account_routing_override": "NO_CONSTRAINT",
    }
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            port, seen = await serve_discovery(nursery, {"accounts": [account]})
            config = f'chatgpt_base_url = "http://127.0.0.1:{port}/backend-api/"\n'
            async with server_for(home, config) as server:
                client = await connect(server, experimentalApi=True)
                params = {"type": "chatgptAuthTokens", "accessToken": token, "chatgptAccountId": "acct_123"}
                assert await client.call("account/login/start", params) == {"type": "chatgptAuthTokens"}
                completed = await next_method(client, "account/login/completed")
                assert completed["params"]["success"] is True
                updated = await next_method(client, "account/updated")
                assert updated["params"] == {"authMode": "chatgptAuthTokens", "planType": "pro"}
                read = await client.call("account/read", {})
                assert read["account"] == {
                    "type": "chatgpt",
                    "email": "user@example.com",
                    "planType": "pro",
                    "workspaceName": "Example WS",
                }
                assert read["userId"] == "user-abc"
                assert read["workspaceRouting"] == {
                    "chatgptAccountId": "acct_123",
                    "backendOrigin": "https://chatgpt.com",
                    "accountRoutingOverride": "NO_CONSTRAINT",
                }
                status = await client.call("getAuthStatus", {"includeToken": True})
                assert (status["authMethod"], status["authToken"]) == ("chatgptAuthTokens", token)
                assert not (home / "auth.json").exists(), "external tokens are never written"
                assert seen[0].startswith(b"GET /backend-api/wham/accounts/check ")
                assert b"chatgpt-account-id: acct_123" in seen[0].lower()
            nursery.cancel_scope.cancel()


async def test_chatgpt_auth_tokens_login_fails_when_the_workspace_is_missing(tmp_path: Path) -> None:
    token = jwt({"email": "user@example.com"})
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            port, _ = await serve_discovery(nursery, {"accounts": []})
            config = f'chatgpt_base_url = "http://127.0.0.1:{port}/"\n'
            async with server_for(tmp_path / "home", config) as server:
                client = await connect(server, experimentalApi=True)
                params = {"type": "chatgptAuthTokens", "accessToken": token, "chatgptAccountId": "acct_1"}
                await client.call("account/login/start", params)
                completed = await next_method(client, "account/login/completed", "account/updated")
                assert completed["method"] == "account/login/completed"
                assert completed["params"]["success"] is False
                assert completed["params"]["error"] == "selected workspace missing from routing discovery"
                assert (await client.call("account/read", {}))["account"] is None
            nursery.cancel_scope.cancel()


async def test_a_malformed_access_token_is_an_internal_error(tmp_path: Path) -> None:
    with trio.fail_after(10):
        async with server_for(tmp_path / "home") as server:
            client = await connect(server, experimentalApi=True)
            with pytest.raises(RpcError) as raised:
                await client.call(
                    "account/login/start",
                    {"type": "chatgptAuthTokens", "accessToken": "a.b.", "chatgptAccountId": "x"},
                )
            assert (raised.value.code, raised.value.message) == (
                -32603,
                "failed to set external auth: invalid ID token format",
            )
