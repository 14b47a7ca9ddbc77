"""External ChatGPT tokens end to end: `account/chatgptAuthTokens/refresh` on a 401 from the
scripted Responses server (a client that answers, one that errors, one that never answers, one
that leaves), the forced workspace, logout, refused logins while external auth is active, and
rate limits from Responses headers and from `wham/usage`."""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

from codex_trio.client import ClientConnection
from codex_trio.server import AppServer, open_app_server
from codex_trio.settings import ServerSettings
from codex_trio.testing import LeakCheck
from tests.responses_server import RecordedRequest, ResponsesServer, Text, WithEvents

TIMEOUT = 30
Message = dict[str, Any]


def jwt(claims: dict[str, Any]) -> str:
    def part(data: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(data).encode()).decode().rstrip("=")

    return f"{part({'alg': 'none'})}.{part(claims)}.sig"


def token(plan: str, serial: int) -> str:
    auth = {"chatgpt_plan_type": plan, "chatgpt_user_id": "user-1"}
    return jwt({"email": "u@example.com", "https://api.openai.com/auth": auth, "serial": serial})


OLD, NEW = token("pro", 1), token("plus", 2)
ACCOUNT = "acct_123"
WORKSPACE = {
    "id": ACCOUNT,
    "name": "WS",
    "workspace_backend_origin": "https://chatgpt.com",
    "account_routing_override": "NO_CONSTRAINT",
}


@pytest.fixture
async def model(nursery: trio.Nursery) -> AsyncIterator[ResponsesServer]:
    server = ResponsesServer()
    await nursery.start(server.run)
    server.json_routes["/backend-api/wham/accounts/check"] = {"accounts": [WORKSPACE]}
    yield server


def write_config(codex_home: Path, model: ResponsesServer, *, retries: int = 0, extra: str = "") -> None:
    """The scripted provider authenticated with the account's login; the backend on the same port."""
    text = model.config_toml(retries=retries, extra=extra).replace(
        'wire_api = "responses"', 'wire_api = "responses"\nrequires_openai_auth = true'
    )
    (codex_home / "config.toml").write_text(
        f'chatgpt_base_url = "http://127.0.0.1:{model.port}/backend-api/"\n' + text
    )


@pytest.fixture
async def server(
    leak_check: LeakCheck, server_settings: ServerSettings, model: ResponsesServer
) -> AsyncIterator[AppServer]:
    write_config(server_settings.codex_home, model)
    async with open_app_server(server_settings) as app:
        yield app


async def connect(server: AppServer) -> ClientConnection:
    client = await server.connect()
    await client.initialize("pytest", experimentalApi=True)
    return client


async def login(client: ClientConnection, access_token: str = OLD) -> None:
    params = {"type": "chatgptAuthTokens", "accessToken": access_token, "chatgptAccountId": ACCOUNT}
    assert await client.call("account/login/start", params) == {"type": "chatgptAuthTokens"}
    await client.wait_for("account/updated")


Answer = Callable[[ClientConnection, Message], Awaitable[None]]


async def run_turn(client: ClientConnection, workspace: Path, answer: Answer | None = None) -> list[Message]:
    """Start a thread and a turn; answer server requests with `answer`; every message to the end."""
    thread = await client.call("thread/start", {"cwd": str(workspace)})
    params = {
        "threadId": thread["thread"]["id"],
        "input": [{"type": "text", "text": "hi", "text_elements": []}],
    }
    turn = await client.call("turn/start", params)
    seen: list[Message] = []
    while True:
        message = await client.receive()
        seen.append(message)
        if "id" in message and "method" in message and answer is not None:
            await answer(client, message)
        if (
            message.get("method") == "turn/completed"
            and message["params"]["turn"]["id"] == turn["turn"]["id"]
        ):
            return seen


def refreshes(messages: list[Message]) -> list[Message]:
    return [m for m in messages if m.get("method") == "account/chatgptAuthTokens/refresh"]


def bearer(request: RecordedRequest) -> str:
    return request.headers.get("authorization", "").removeprefix("Bearer ")


def only(access_token: str) -> Callable[[RecordedRequest], bool]:
    return lambda request: bearer(request) == access_token


async def answer_new(client: ClientConnection, request: Message) -> None:
    await client.respond(
        request["id"], {"accessToken": NEW, "chatgptAccountId": ACCOUNT, "chatgptPlanType": "plus"}
    )


async def answer_error(client: ClientConnection, request: Message) -> None:
    await client.send_raw(
        json.dumps({"id": request["id"], "error": {"code": -32000, "message": "no tokens"}}).encode()
    )


async def test_a_401_asks_the_client_and_retries_once_with_the_new_token(
    server: AppServer, model: ResponsesServer, workspace: Path
) -> None:
    with trio.fail_after(TIMEOUT):
        client = await connect(server)
        await login(client)
        model.authorize = only(NEW)
        seen = await run_turn(client, workspace, answer_new)
        assert [m["params"] for m in refreshes(seen)] == [
            {"reason": "unauthorized", "previousAccountId": ACCOUNT}
        ]
        assert seen[-1]["params"]["turn"]["status"] == "completed"
        assert [bearer(r) for r in model.posts] == [OLD, NEW]
        assert {r.headers.get("chatgpt-account-id") for r in model.posts} == {ACCOUNT}
        # The plan changed: announced (the reference stays silent, known-reference-bugs B16).
        assert {"authMode": "chatgptAuthTokens", "planType": "plus"} in [
            m["params"] for m in seen if m.get("method") == "account/updated"
        ]
        account = await client.call("account/read", {})
        assert account["account"]["planType"] == "plus"
        status = await client.call("getAuthStatus", {"includeToken": True})
        assert status["authToken"] == NEW
        assert not (server.settings.codex_home / "auth.json").exists(), "tokens stay in memory"
        # The next turn uses the new token without asking.
        seen = await run_turn(client, workspace, answer_new)
        assert refreshes(seen) == [] and bearer(model.posts[-1]) == NEW
        await client.aclose()


async def test_a_client_error_is_retried_then_fails_the_turn_and_the_next_turn_asks_again(
    leak_check: LeakCheck, server_settings: ServerSettings, model: ResponsesServer, workspace: Path
) -> None:
    write_config(server_settings.codex_home, model, retries=1)
    model.authorize = only(NEW)
    with trio.fail_after(TIMEOUT):
        async with open_app_server(server_settings) as server:
            client = await connect(server)
            await login(client)
            seen = await run_turn(client, workspace, answer_error)
            # As the reference: every attempt's 401 asks again, until the retries are used up.
            assert len(refreshes(seen)) == 2
            errors = [m["params"] for m in seen if m.get("method") == "error"]
            assert errors[0]["willRetry"] is True
            assert errors[0]["error"]["message"] == "Reconnecting... 1/1"
            assert errors[0]["error"]["additionalDetails"] == "auth refresh request failed: code=-32000"
            turn = seen[-1]["params"]["turn"]
            assert turn["status"] == "failed"
            assert turn["error"]["message"] == "auth refresh request failed: code=-32000"
            assert turn["error"]["codexErrorInfo"] == "other"
            assert [bearer(r) for r in model.posts] == [OLD, OLD]
            # A new turn is a new model request: it asks again, and this time gets tokens.
            seen = await run_turn(client, workspace, answer_new)
            assert len(refreshes(seen)) == 1 and seen[-1]["params"]["turn"]["status"] == "completed"
            await client.aclose()


async def test_a_silent_client_times_out_after_ten_seconds(
    server: AppServer, model: ResponsesServer, workspace: Path, mock_clock: trio.testing.MockClock
) -> None:
    client = await connect(server)
    await login(client)
    model.authorize = only(NEW)
    started_at = trio.current_time()

    async def never(client: ClientConnection, request: Message) -> None:
        # Everything else is done: only the server's wait for the answer is left.
        await trio.testing.wait_all_tasks_blocked()
        mock_clock.jump(9.99)
        await trio.testing.wait_all_tasks_blocked()
        assert any(c._pending for c in server.broadcaster.connections), "still waiting at 9.99 s"
        mock_clock.jump(0.01)

    seen = await run_turn(client, workspace, never)
    assert len(refreshes(seen)) == 1
    turn = seen[-1]["params"]["turn"]
    assert (turn["status"], turn["error"]["message"]) == (
        "failed",
        "auth refresh request timed out after 10s",
    )
    assert trio.current_time() - started_at == pytest.approx(10.0)
    # The late answer is dropped (logged); the server carries on.
    await answer_new(client, refreshes(seen)[0])
    assert (await client.call("account/read", {}))["account"]["planType"] == "pro"
    await client.aclose()


async def test_the_asking_client_leaving_fails_the_turn(
    server: AppServer, model: ResponsesServer, workspace: Path
) -> None:
    with trio.fail_after(TIMEOUT):
        owner = await connect(server)
        await login(owner)
        await owner.aclose()
        watcher = await connect(server)
        model.authorize = only(NEW)
        seen = await run_turn(watcher, workspace)
        assert refreshes(seen) == [], "only the client that logged in is asked"
        turn = seen[-1]["params"]["turn"]
        assert (turn["status"], turn["error"]["message"]) == (
            "failed",
            "auth refresh request canceled: connection closed",
        )
        await watcher.aclose()


async def test_the_forced_workspace_is_enforced_at_login_and_at_refresh(
    leak_check: LeakCheck, server_settings: ServerSettings, model: ResponsesServer, workspace: Path
) -> None:
    write_config(server_settings.codex_home, model, extra=f'forced_chatgpt_workspace_id = "{ACCOUNT}"')
    with trio.fail_after(TIMEOUT):
        async with open_app_server(server_settings) as server:
            client = await connect(server)
            params = {"type": "chatgptAuthTokens", "accessToken": OLD, "chatgptAccountId": "acct_other"}
            with pytest.raises(Exception) as caught:
                await client.call("account/login/start", params)
            assert str(caught.value) == (
                'External auth must use one of workspace(s) ["acct_123"], but received "acct_other".'
            )
            assert (await client.call("account/read", {}))["account"] is None
            await login(client)
            model.authorize = only(NEW)

            async def other_workspace(client: ClientConnection, request: Message) -> None:
                await client.respond(request["id"], {"accessToken": NEW, "chatgptAccountId": "acct_other"})

            seen = await run_turn(client, workspace, other_workspace)
            turn = seen[-1]["params"]["turn"]
            assert turn["status"] == "failed"
            assert turn["error"]["message"].startswith("External auth must use one of workspace(s)")
            # Nothing was swapped in; the next turn asks again.
            assert (await client.call("getAuthStatus", {"includeToken": True}))["authToken"] == OLD
            seen = await run_turn(client, workspace, answer_new)
            assert len(refreshes(seen)) == 1 and seen[-1]["params"]["turn"]["status"] == "completed"
            await client.aclose()


async def test_external_auth_refuses_other_logins_until_logout_clears_it(server: AppServer) -> None:
    with trio.fail_after(TIMEOUT):
        client = await connect(server)
        await login(client)
        message = (
            "External auth is active. Use account/login/start (chatgptAuthTokens) to update it or "
            "account/logout to clear it."
        )
        for params in (
            {"type": "apiKey", "apiKey": "sk-x"},
            {"type": "chatgpt"},
            {"type": "chatgptDeviceCode"},
        ):
            with pytest.raises(Exception) as caught:
                await client.call("account/login/start", params)
            assert str(caught.value) == message
        await client.call("account/logout")
        status = await client.call("getAuthStatus", {"includeToken": True})
        assert (status["authMethod"], status["authToken"]) == (None, None)
        assert await client.call("account/login/start", {"type": "apiKey", "apiKey": "sk-x"}) == {
            "type": "apiKey"
        }
        await client.aclose()


RATE_HEADERS = {
    "x-codex-primary-used-percent": "12.5",
    "x-codex-primary-window-minutes": "300",
    "x-codex-primary-reset-at": "1900000000",
    "x-codex-secondary-used-percent": "40",
    "x-codex-secondary-window-minutes": "10080",
    "x-codex-secondary-reset-at": "1900009999",
    "x-codex-credits-has-credits": "true",
    "x-codex-credits-unlimited": "false",
    "x-codex-credits-balance": "9.99",
    "x-codex-limit-name": "Codex",
}


async def test_rate_limit_headers_are_announced_after_each_response(
    server: AppServer, model: ResponsesServer, workspace: Path
) -> None:
    with trio.fail_after(TIMEOUT):
        client = await connect(server)
        model.headers = RATE_HEADERS
        seen = await run_turn(client, workspace)
        updates = [m["params"] for m in seen if m.get("method") == "account/rateLimits/updated"]
        # As the reference sends it for these headers (probed against 0.169.0).
        assert updates == [
            {
                "rateLimits": {
                    "limitId": "codex",
                    "limitName": "Codex",
                    "normalModelSlug": None,
                    "primary": {"usedPercent": 13, "windowDurationMins": 300, "resetsAt": 1900000000},
                    "secondary": {"usedPercent": 40, "windowDurationMins": 10080, "resetsAt": 1900009999},
                    "credits": {"hasCredits": True, "unlimited": False, "balance": "9.99"},
                    "individualLimit": None,
                    "spendControlReached": None,
                    "planType": None,
                    "rateLimitReachedType": None,
                }
            }
        ]
        model.headers = {}
        # A `codex.rate_limits` event in an HTTP stream is ignored, as by the reference.
        event = {"type": "codex.rate_limits", "rate_limits": {"primary": {"used_percent": 55.0}}}
        model.enqueue(WithEvents([event], Text("hi")))
        seen = await run_turn(client, workspace)
        updates = [m["params"]["rateLimits"] for m in seen if m.get("method") == "account/rateLimits/updated"]
        assert [(u["limitId"], u["primary"], u["credits"]) for u in updates] == [("codex", None, None)]
        await client.aclose()


async def test_rate_limits_read_needs_chatgpt_auth_and_asks_the_backend(
    server: AppServer, model: ResponsesServer
) -> None:
    model.json_routes["/backend-api/wham/usage"] = {
        "plan_type": "pro",
        "rate_limit": {
            "allowed": True,
            "limit_reached": False,
            "primary_window": {"used_percent": 42, "limit_window_seconds": 18000, "reset_at": 1900000000},
            "secondary_window": {"used_percent": 7, "limit_window_seconds": 604800, "reset_at": 1900001000},
        },
        "credits": {"has_credits": True, "unlimited": False, "balance": "12.5"},
    }
    with trio.fail_after(TIMEOUT):
        client = await connect(server)
        with pytest.raises(Exception, match=r"^codex account authentication required to read rate limits$"):
            await client.call("account/rateLimits/read")
        await client.call("account/login/start", {"type": "apiKey", "apiKey": "sk-x"})
        await client.wait_for("account/updated")
        with pytest.raises(Exception, match=r"^chatgpt authentication required to read rate limits$"):
            await client.call("account/rateLimits/read")
        await client.call("account/logout")
        await client.wait_for("account/updated")
        await login(client)
        result = await client.call("account/rateLimits/read")
        expected = {
            "limitId": "codex",
            "limitName": None,
            "normalModelSlug": None,
            "primary": {"usedPercent": 42, "windowDurationMins": 300, "resetsAt": 1900000000},
            "secondary": {"usedPercent": 7, "windowDurationMins": 10080, "resetsAt": 1900001000},
            "credits": {"hasCredits": True, "unlimited": False, "balance": "12.5"},
            "individualLimit": None,
            "spendControlReached": None,
            "planType": "pro",
            "rateLimitReachedType": None,
        }
        assert result == {
            "rateLimits": expected,
            "rateLimitsByLimitId": {"codex": expected},
            "ordinaryUsageAllowed": None,
            "rateLimitResetCredits": None,
            "accountId": None,
            "rateLimitUpsell": None,
        }
        usage = [r for r in model.requests if r.path == "/backend-api/wham/usage"]
        assert bearer(usage[0]) == OLD and usage[0].headers["chatgpt-account-id"] == ACCOUNT
        await client.aclose()
