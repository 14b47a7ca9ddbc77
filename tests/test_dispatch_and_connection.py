"""The initialize gate, dispatch, the error boundary and a connection's concurrency rules."""

from __future__ import annotations

import contextlib
from typing import Any

import attrs
import orjson
import pytest
import trio
import trio.testing

from codex_trio.client import ClientConnection
from codex_trio.connection import MAX_IN_FLIGHT
from codex_trio.protocol.errors import RpcError, invalid_request
from codex_trio.routing import RequestContext, route
from codex_trio.server import AppServer, open_app_server
from codex_trio.settings import ServerSettings


@attrs.frozen
class EchoParams:
    value: str


class Probe:
    """Test-only methods: echo, block until released, fail in various ways."""

    def __init__(self) -> None:
        self.release = trio.Event()
        self.started = 0
        self.cancelled = 0
        self.first_cancel = trio.Event()

    def routes(self) -> list[Any]:
        return [
            route("test/echo", EchoParams, self.echo),
            route("test/block", None, self.block),
            route("test/boom", None, self.boom),
            route("test/refuse", None, self.refuse),
            route("test/experimental", None, self.echo_none, experimental=True),
            route("test/ask", None, self.ask),
        ]

    async def echo(self, ctx: RequestContext, params: EchoParams) -> dict[str, str]:
        return {"value": params.value}

    async def echo_none(self, ctx: RequestContext, params: None) -> None:
        return None

    async def block(self, ctx: RequestContext, params: None) -> dict[str, bool]:
        self.started += 1
        try:
            await self.release.wait()
        except trio.Cancelled:
            self.cancelled += 1
            self.first_cancel.set()
            raise
        return {"released": True}

    async def boom(self, ctx: RequestContext, params: None) -> None:
        raise ZeroDivisionError("no")

    async def refuse(self, ctx: RequestContext, params: None) -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._raise_rpc)

    async def _raise_rpc(self) -> None:
        raise invalid_request("refused inside a nursery", {"why": "test"})

    async def ask(self, ctx: RequestContext, params: None) -> Any:
        return await ctx.connection.request("test/question", {"q": 1}, timeout=5)


@pytest.fixture
async def probe_server(leak_check: Any, server_settings: ServerSettings) -> Any:
    probe = Probe()
    async with open_app_server(server_settings) as server:
        server.router.add(probe.routes())
        yield server, probe


async def test_requests_before_initialize_are_refused_and_a_failed_initialize_can_be_retried(
    app_server: AppServer,
) -> None:
    client = await app_server.connect()
    with pytest.raises(RpcError) as caught:
        await client.call("test/anything", {})
    assert caught.value.code == -32600 and "unknown variant `test/anything`" in caught.value.message
    with pytest.raises(RpcError, match="missing field `clientInfo`"):
        await client.call("initialize", {})
    result = await client.call(
        "initialize", {"clientInfo": {"name": "t", "version": "1"}, "capabilities": None}
    )
    assert result["platformFamily"] == "unix"
    with pytest.raises(RpcError, match=r"^Already initialized$"):
        await client.call("initialize", {"clientInfo": {"name": "t", "version": "1"}})
    await client.aclose()


async def test_a_known_method_before_initialize_says_not_initialized(probe_server: Any) -> None:
    server, _ = probe_server
    client = await server.connect()
    with pytest.raises(RpcError) as caught:
        await client.call("test/echo", {"value": "x"})
    assert (caught.value.code, caught.value.message) == (-32600, "Not initialized")
    await client.aclose()


async def test_initialize_answers_then_reports_remote_control_to_that_connection_only(
    app_server: AppServer,
) -> None:
    client = await app_server.connect()
    result = await client.initialize("first")
    assert result["userAgent"].startswith("first/")
    assert result["codexHome"] == str(app_server.settings.codex_home)
    status = await client.receive()
    assert status["method"] == "remoteControl/status/changed"
    assert status["params"]["status"] == "disabled" and isinstance(status["emittedAtMs"], int)
    other = await app_server.connect()
    again = await other.initialize("second")
    assert again["userAgent"].startswith("first/"), "the originator is process-global"
    assert again["userAgent"].endswith("(second; 0.0.0)")
    await client.aclose()
    await other.aclose()


async def test_params_errors_are_invalid_request_with_serde_wording(probe_server: Any) -> None:
    server, _ = probe_server
    client = await server.connect()
    await client.initialize()
    for params, message in [
        (None, "Invalid request: missing field `params`"),
        ({}, "Invalid request: missing field `value`"),
        ({"value": 5}, "Invalid request: invalid type: integer `5`, expected a string"),
    ]:
        with pytest.raises(RpcError) as caught:
            await client.call("test/echo", params)
        assert (caught.value.code, caught.value.message) == (-32600, message)
    assert await client.call("test/echo", {"value": "ok", "unknown": 1}) == {"value": "ok"}
    await client.aclose()


async def test_the_error_boundary_turns_bugs_into_internal_errors_and_keeps_serving(
    probe_server: Any,
) -> None:
    server, _ = probe_server
    client = await server.connect()
    await client.initialize()
    with pytest.raises(RpcError) as caught:
        await client.call("test/boom")
    assert caught.value.code == -32603
    with pytest.raises(RpcError) as refused:
        await client.call("test/refuse")
    assert (refused.value.code, refused.value.data) == (-32600, {"why": "test"})
    assert await client.call("test/echo", {"value": "still here"}) == {"value": "still here"}
    await client.aclose()


async def test_experimental_methods_need_the_capability(probe_server: Any) -> None:
    server, _ = probe_server
    plain = await server.connect()
    await plain.initialize()
    with pytest.raises(RpcError, match="test/experimental requires experimentalApi capability"):
        await plain.call("test/experimental")
    experimental = await server.connect()
    await experimental.initialize(experimentalApi=True)
    assert await experimental.call("test/experimental") == {}
    await plain.aclose()
    await experimental.aclose()


async def test_requests_on_one_connection_run_concurrently_and_ids_may_repeat(probe_server: Any) -> None:
    server, probe = probe_server
    client = await server.connect()
    await client.initialize()
    async with trio.open_nursery() as nursery:
        results: list[Any] = []

        async def blocked() -> None:
            results.append(await client.call("test/block"))

        nursery.start_soon(blocked)
        await trio.testing.wait_all_tasks_blocked()
        assert await client.call("test/echo", {"value": "meanwhile"}) == {"value": "meanwhile"}
        assert results == []
        probe.release.set()
    assert results == [{"released": True}]
    await client.aclose()


async def test_disconnect_cancels_exactly_that_connections_requests(probe_server: Any) -> None:
    server, probe = probe_server
    leaving, staying = await server.connect(), await server.connect()
    await leaving.initialize()
    await staying.initialize()
    async with trio.open_nursery() as nursery:
        for c in (leaving, staying):
            nursery.start_soon(_call_ignoring_close, c, "test/block")
        await trio.testing.wait_all_tasks_blocked()
        assert probe.started == 2
        await leaving.aclose()
        with trio.fail_after(5):
            await probe.first_cancel.wait()
            await trio.testing.wait_all_tasks_blocked()
        assert probe.cancelled == 1
        assert await staying.call("test/echo", {"value": "alive"}) == {"value": "alive"}
        probe.release.set()
    await staying.aclose()


async def _call_ignoring_close(client: ClientConnection, method: str) -> None:
    with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
        await client.call(method)


async def test_server_requests_route_answers_by_id_and_drop_unknown_ids(probe_server: Any) -> None:
    server, _ = probe_server
    client = await server.connect()
    await client.initialize()
    async with trio.open_nursery() as nursery:
        answer: list[Any] = []

        async def ask() -> None:
            answer.append(await client.call("test/ask"))

        nursery.start_soon(ask)
        question = await client.wait_for("test/question")
        await client.send_raw(orjson.dumps({"id": 987654, "result": {"stray": True}}))
        await client.respond(question["id"], {"a": 42})
    assert answer == [{"a": 42}]
    await client.aclose()


async def test_a_server_request_without_an_answer_fails_at_its_deadline(
    probe_server: Any, autojump_clock: trio.testing.MockClock
) -> None:
    server, _ = probe_server
    client = await server.connect()
    await client.initialize()
    with pytest.raises(RpcError) as caught:
        await client.call("test/ask")
    assert caught.value.code == -32603, "the deadline surfaces as an internal error, not a hang"
    await client.aclose()


async def test_a_burst_beyond_the_in_flight_limit_is_answered_in_full(probe_server: Any) -> None:
    """In-process connections apply backpressure: nothing is refused, nothing is lost."""
    server, _ = probe_server
    client = await server.connect()
    await client.initialize()
    total = MAX_IN_FLIGHT * 4
    answered: list[Any] = []
    async with trio.open_nursery() as nursery:
        for n in range(total):
            nursery.start_soon(lambda n=n: _echo_into(client, str(n), answered))
    assert sorted(answered, key=int) == [str(n) for n in range(total)]
    await client.aclose()


async def _echo_into(client: ClientConnection, value: str, into: list[Any]) -> None:
    into.append((await client.call("test/echo", {"value": value}))["value"])
