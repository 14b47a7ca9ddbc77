"""Lazily built API families: the declared method lists match what the families register."""

from __future__ import annotations

import logging
from pathlib import Path

import attrs
import pytest
import trio
import trio.testing

from codex_trio.client import ClientConnection
from codex_trio.protocol.errors import RpcError
from codex_trio.server import FAMILY_GROUPS, AppServer, open_app_server
from codex_trio.settings import ServerSettings
from codex_trio.transport.listen import UnixListen, WebSocketListen


async def test_each_group_declares_exactly_the_methods_its_families_route(app_server: AppServer) -> None:
    for group in FAMILY_GROUPS:
        before = set(app_server.router.loaded_methods)
        await app_server.router.ensure_loaded(group.methods[0])
        added = set(app_server.router.loaded_methods) - before
        assert added == set(group.methods), group.modules


async def test_unknown_method_errors_list_methods_not_yet_built(client: ClientConnection) -> None:
    with pytest.raises(RpcError) as caught:
        await client.call("no/such/method", {})
    for group in FAMILY_GROUPS:
        for method in group.methods:
            assert f"`{method}`" in caught.value.message


async def test_a_lazy_method_before_initialize_is_refused_without_building_anything(
    app_server: AppServer,
) -> None:
    client = await app_server.connect()
    with pytest.raises(RpcError, match=r"^Not initialized$"):
        await client.call("thread/start", {})
    assert "thread/start" not in app_server.router.loaded_methods
    await client.aclose()


async def test_the_first_call_builds_the_group_and_concurrent_calls_share_it(
    client: ClientConnection,
) -> None:
    results: list[object] = []
    async with trio.open_nursery() as nursery:
        for _ in range(5):
            nursery.start_soon(lambda: _record(client, results))
    assert len(results) == 5 and all(r == results[0] for r in results)


async def _record(client: ClientConnection, results: list[object]) -> None:
    results.append((await client.call("fs/getMetadata", {"path": "/"}))["isDirectory"])


async def test_thread_calls_build_the_thread_family_alone(
    app_server: AppServer, client: ClientConnection, workspace: Path
) -> None:
    """Starting and reading threads needs no turn engine, model client or MCP code."""
    thread = (await client.call("thread/start", {"cwd": str(workspace)}))["thread"]
    await client.call("thread/read", {"threadId": thread["id"]})
    await client.call("thread/list", {})
    assert app_server.router.built("thread/start")
    assert not app_server.router.built("turn/start") and not app_server.router.built("mcpServerStatus/list")


async def test_a_first_thread_whose_config_names_mcp_servers_starts_them(
    app_server: AppServer, client: ClientConnection, workspace: Path, codex_home: Path
) -> None:
    """The MCP family is not built by thread/start, yet a thread that configures servers
    starts them at once (its MCP family is built for it and starts every loaded thread's)."""
    (codex_home / "config.toml").write_text('[mcp_servers.missing]\ncommand = "/nonexistent/mcp-server"\n')
    with trio.fail_after(30):
        thread = (await client.call("thread/start", {"cwd": str(workspace)}))["thread"]
        failed = await client.wait_for("mcpServer/startupStatus/updated", lambda p: p["status"] == "failed")
    assert failed["params"]["threadId"] == thread["id"] and failed["params"]["name"] == "missing"
    assert app_server.router.built("turn/start")


@pytest.mark.parametrize("transport", ["ws", "unix"])
async def test_a_listening_server_builds_the_thread_family_before_any_call(
    transport: str, server_settings: ServerSettings, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Its first thread/start is announced to every client: it does not wait for the imports.
    The agent group is not built for it; a stdio or in-process server builds nothing early."""
    listen = WebSocketListen("127.0.0.1", 0) if transport == "ws" else UnixListen(tmp_path / "ctl.sock")
    async with open_app_server(attrs.evolve(server_settings, listen=listen)) as server:
        with trio.fail_after(30):
            await server.detached_idle()  # the build is detached work
        assert server.router.built("thread/start") and not server.router.built("turn/start")
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]  # building and warming went well


async def test_an_in_process_server_builds_no_family_before_its_first_call(app_server: AppServer) -> None:
    await trio.testing.wait_all_tasks_blocked()
    assert not app_server.router.built("thread/start")
