"""Plugins and marketplaces end to end: a local marketplace made by the test, a git marketplace
served over HTTP (git's dumb protocol) from a repository the test commits to, and a remote
catalog served by a local HTTP server. The `git` program and real HTTP are used throughout.
"""

from __future__ import annotations

import io
import json
import os
import sys
import tarfile
from collections.abc import AsyncIterator
from contextlib import suppress
from pathlib import Path
from typing import Any

import pytest
import trio

from codex_trio.client import ClientConnection
from codex_trio.protocol.errors import RpcError
from codex_trio.server import open_app_server
from codex_trio.settings import ServerSettings
from codex_trio.testing import LeakCheck, descendants
from tests.http_fixture_server import Hit, HttpFixtureServer
from tests.responses_server import ResponsesServer, Text
from tests.test_mcp import (  # the MCP tests' scripted model and leak-checked server
    Configure,
    McpCall,
    app_server,
    collect,
    configure,
    items,
    start_thread,
    start_turn,
    turn_completed,
    wait_started,
)

__all__ = ["app_server", "configure"]

FIXTURE = Path(__file__).with_name("mcp_fixture_server.py")
#: every test's absolute bound (seconds): git clones and an MCP server start take a moment.
TEST_TIMEOUT = 60


def make_marketplace(root: Path, name: str = "fixture-mk", *, server: str | None = None) -> Path:
    """A marketplace with `demo` (manifest, a skill, optionally an MCP server) and `bare` (no
    manifest); returns its marketplace file."""
    plugins = root / "plugins"
    demo = plugins / "demo"
    (demo / ".codex-plugin").mkdir(parents=True)
    (demo / "skills" / "hello").mkdir(parents=True)
    (plugins / "bare").mkdir(parents=True)
    (demo / ".codex-plugin" / "plugin.json").write_text(
        json.dumps(
            {
                "name": "demo",
                "version": "1.2.0",
                "description": "A demo plugin",
                "keywords": ["x", "y"],
                "interface": {
                    "displayName": "Demo Plugin",
                    "shortDescription": "short",
                    "capabilities": ["Read"],
                },
            }
        )
    )
    (demo / "skills" / "hello" / "SKILL.md").write_text(
        "---\nname: hello\ndescription: Says hello\n---\nHi.\n"
    )
    if server is not None:
        (demo / ".mcp.json").write_text(
            json.dumps({"mcpServers": {server: {"command": sys.executable, "args": [str(FIXTURE)]}}})
        )
    marketplace = root / ".agents" / "plugins" / "marketplace.json"
    marketplace.parent.mkdir(parents=True)
    marketplace.write_text(
        json.dumps(
            {
                "name": name,
                "interface": {"displayName": "Fixture MK"},
                "plugins": [
                    {
                        "name": "demo",
                        "source": {"source": "local", "path": "./plugins/demo"},
                        "category": "Dev",
                        "policy": {"installation": "AVAILABLE", "authentication": "ON_USE"},
                    },
                    {"name": "bare", "source": "./plugins/bare"},
                    {"name": "skipped", "source": "plugins/demo"},
                ],
            }
        )
    )
    return marketplace


def write_config(codex_home: Path, text: str = "") -> Path:
    path = codex_home / "config.toml"
    path.write_text("# keep this comment\n[features]\nplugins = true\nremote_plugin = false\n" + text)
    return path


async def rpc_error(client: ClientConnection, method: str, params: dict[str, Any]) -> RpcError:
    with pytest.raises(RpcError) as info:
        await client.call(method, params)
    return info.value


async def skill_names(client: ClientConnection) -> dict[str, Any]:
    data = (await client.call("skills/list", {}))["data"][0]["skills"]
    return {s["name"]: s for s in data}


# ---------------------------------------------------------------------------- local marketplace
async def test_a_local_plugin_is_listed_read_installed_and_uninstalled(
    client: ClientConnection, codex_home: Path, tmp_path: Path
) -> None:
    config = write_config(codex_home)
    root = tmp_path / "mk"
    path = make_marketplace(root, server="plugfix")
    listed = await client.call("plugin/list", {"cwds": [str(root)]})
    assert listed["marketplaceLoadErrors"] == [] and listed["featuredPluginIds"] == []
    [marketplace] = listed["marketplaces"]
    assert marketplace["name"] == "fixture-mk" and marketplace["path"] == str(path)
    assert marketplace["interface"] == {"displayName": "Fixture MK"}
    demo, bare = marketplace["plugins"]
    assert demo["id"] == "demo@fixture-mk" and demo["localVersion"] == "1.2.0"
    assert demo["source"] == {"type": "local", "path": str(root / "plugins" / "demo")}
    assert (demo["installed"], demo["enabled"], demo["authPolicy"], demo["installPolicy"]) == (
        False,
        False,
        "ON_USE",
        "AVAILABLE",
    )
    assert demo["interface"]["displayName"] == "Demo Plugin" and demo["interface"]["category"] == "Dev"
    assert demo["interface"]["capabilities"] == ["Read"] and demo["keywords"] == ["x", "y"]
    assert bare["interface"] is None and bare["authPolicy"] == "ON_INSTALL" and bare["localVersion"] is None
    # nothing without a cwd: the marketplace is neither configured nor in the home directory
    assert (await client.call("plugin/list", {}))["marketplaces"] == []

    detail = (await client.call("plugin/read", {"marketplacePath": str(path), "pluginName": "demo"}))[
        "plugin"
    ]
    assert detail["marketplaceName"] == "fixture-mk" and detail["description"] == "A demo plugin"
    assert detail["summary"] == demo
    assert detail["skills"] == [
        {
            "name": "demo:hello",
            "description": "Says hello",
            "shortDescription": None,
            "interface": None,
            "path": str(root / "plugins" / "demo" / "skills" / "hello" / "SKILL.md"),
            "enabled": True,
        }
    ]
    assert detail["mcpServers"] == ["plugfix"] and detail["apps"] == [] and detail["hooks"] == []

    read = {"marketplacePath": str(path)}
    assert (await rpc_error(client, "plugin/read", {**read, "pluginName": "bare"})).message == (
        "missing or invalid plugin.json"
    )
    missing = await rpc_error(client, "plugin/read", {**read, "pluginName": "zzz"})
    assert (missing.code, missing.message) == (
        -32600,
        "plugin `zzz` was not found in marketplace `fixture-mk`",
    )
    assert (await rpc_error(client, "plugin/read", {"pluginName": "demo"})).message == (
        "plugin/read requires exactly one of marketplacePath or remoteMarketplaceName"
    )
    assert (
        "without a base path"
        in (
            await rpc_error(client, "plugin/install", {"marketplacePath": "rel.json", "pluginName": "demo"})
        ).message
    )
    nowhere = await rpc_error(
        client, "plugin/read", {"marketplacePath": "/nonexistent/m.json", "pluginName": "x"}
    )
    assert nowhere.message == "marketplace file `/nonexistent/m.json` does not exist"

    installed = await client.call("plugin/install", {**read, "pluginName": "demo", "installAttemptId": "a-1"})
    assert installed == {"authPolicy": "ON_USE", "appsNeedingAuth": []}
    assert (await rpc_error(client, "plugin/install", {**read, "pluginName": "bare"})).message == (
        "missing plugin.json"
    )
    text = config.read_text()
    assert text.startswith("# keep this comment\n") and '[plugins."demo@fixture-mk"]\nenabled = true' in text
    cached = codex_home / "plugins" / "cache" / "fixture-mk" / "demo" / "1.2.0"
    assert (cached / ".codex-plugin" / "plugin.json").is_file()

    only = await client.call("plugin/installed", {"cwds": [str(root)]})
    assert [p["id"] for p in only["marketplaces"][0]["plugins"]] == ["demo@fixture-mk"]
    assert only["marketplaces"][0]["plugins"][0]["installed"] is True
    assert only["marketplaces"][0]["plugins"][0]["enabled"] is True
    suggested = await client.call(
        "plugin/installed", {"cwds": [str(root)], "installSuggestionPluginNames": ["bare"]}
    )
    assert [p["name"] for p in suggested["marketplaces"][0]["plugins"]] == ["demo", "bare"]
    assert (await client.call("plugin/installed", {}))["marketplaces"] == []

    skill = (await skill_names(client))["demo:hello"]
    assert skill["pluginId"] == "demo@fixture-mk" and skill["scope"] == "user"
    assert skill["path"] == str(cached / "skills" / "hello" / "SKILL.md")

    assert await client.call("plugin/uninstall", {"pluginId": "demo@fixture-mk"}) == {}
    assert "demo:hello" not in await skill_names(client)
    assert not cached.exists()
    text = config.read_text()
    assert text.startswith("# keep this comment\n") and "demo@fixture-mk" not in text
    after = (await client.call("plugin/list", {"cwds": [str(root)]}))["marketplaces"][0]["plugins"][0]
    assert (after["installed"], after["enabled"]) == (False, False)
    assert await client.call("plugin/uninstall", {"pluginId": "demo@fixture-mk"}) == {}


async def test_marketplace_files_that_do_not_load_are_reported_not_fatal(
    client: ClientConnection, codex_home: Path, tmp_path: Path
) -> None:
    write_config(codex_home)
    good = tmp_path / "good"
    make_marketplace(good)
    bad = tmp_path / "bad" / ".agents" / "plugins" / "marketplace.json"
    bad.parent.mkdir(parents=True)
    bad.write_text('{"name": "bad-mk"}')
    listed = await client.call("plugin/list", {"cwds": [str(good), str(tmp_path / "bad")]})
    assert [m["name"] for m in listed["marketplaces"]] == ["fixture-mk"]
    assert listed["marketplaceLoadErrors"] == [
        {"marketplacePath": str(bad), "message": f"invalid marketplace file `{bad}`: missing field `plugins`"}
    ]
    # a cwd inside a git repository finds the repository's marketplace
    (good / ".git").mkdir()
    deep = good / "src" / "deeper"
    deep.mkdir(parents=True)
    listed = await client.call("plugin/list", {"cwds": [str(deep)]})
    assert [m["name"] for m in listed["marketplaces"]] == ["fixture-mk"]


async def test_a_disabled_plugins_feature_lists_nothing(
    client: ClientConnection, codex_home: Path, tmp_path: Path
) -> None:
    (codex_home / "config.toml").write_text("[features]\nplugins = false\n")
    make_marketplace(tmp_path / "mk")
    listed = await client.call("plugin/list", {"cwds": [str(tmp_path / "mk")]})
    assert listed == {"marketplaces": [], "marketplaceLoadErrors": [], "featuredPluginIds": []}


async def test_a_local_marketplace_is_added_used_in_place_and_removed(
    client: ClientConnection, codex_home: Path, tmp_path: Path
) -> None:
    config = write_config(codex_home)
    root = tmp_path / "mk"
    make_marketplace(root)
    added = await client.call("marketplace/add", {"source": str(root)})
    assert added == {"marketplaceName": "fixture-mk", "installedRoot": str(root), "alreadyAdded": False}
    again = await client.call("marketplace/add", {"source": str(root)})
    assert again["alreadyAdded"] is True
    text = config.read_text()
    assert text.startswith("# keep this comment\n")
    assert f'[marketplaces.fixture-mk]\nsource_type = "local"\nsource = "{root}"' in text
    # configured marketplaces are listed without a cwd
    assert [m["name"] for m in (await client.call("plugin/list", {}))["marketplaces"]] == ["fixture-mk"]

    other = tmp_path / "other"
    make_marketplace(other)
    clash = await rpc_error(client, "marketplace/add", {"source": str(other)})
    assert clash.message == (
        "marketplace 'fixture-mk' is already added from a different source; "
        "remove it before adding this source"
    )
    missing = await rpc_error(client, "marketplace/add", {"source": str(tmp_path / "nope")})
    assert (
        missing.message
        == "failed to resolve local marketplace source path: No such file or directory (os error 2)"
    )
    empty = tmp_path / "empty"
    empty.mkdir()
    assert (await rpc_error(client, "marketplace/add", {"source": str(empty)})).message == (
        f"invalid marketplace file `{empty}`: marketplace root does not contain a supported manifest"
    )
    refused = await rpc_error(client, "marketplace/add", {"source": f"file://{root}"})
    assert refused.message.startswith("invalid marketplace source format")
    not_git = await rpc_error(client, "marketplace/upgrade", {"marketplaceName": "fixture-mk"})
    assert not_git.message == "marketplace `fixture-mk` is not configured as a Git marketplace"

    removed = await client.call("marketplace/remove", {"marketplaceName": "fixture-mk"})
    assert removed == {"marketplaceName": "fixture-mk", "installedRoot": None}
    assert root.is_dir() and "marketplaces" not in config.read_text()
    unknown = await rpc_error(client, "marketplace/remove", {"marketplaceName": "fixture-mk"})
    assert unknown.message == "marketplace `fixture-mk` is not configured or installed"


async def test_an_installed_plugins_mcp_server_serves_a_turn_until_it_is_uninstalled(
    configure: Configure, client: ClientConnection, model: ResponsesServer, tmp_path: Path
) -> None:
    configure("", top="[features]\nplugins = true\nremote_plugin = false\n")
    root = tmp_path / "mk"
    path = make_marketplace(root, server="plugfix")
    workspace = tmp_path / "workspace"
    echo = McpCall("echo", {"text": "from a plugin"}, server="plugfix")
    model.enqueue(echo, Text("done"))
    with trio.fail_after(TEST_TIMEOUT):
        await client.call("marketplace/add", {"source": str(root)})
        await client.call("plugin/install", {"marketplacePath": str(path), "pluginName": "demo"})
        thread_id = await start_thread(client, workspace)
        started = await wait_started(client, "plugfix")
        assert started["params"]["status"] == "ready"
        turn_id = await start_turn(client, thread_id)
        events = await collect(client, turn_completed(turn_id))
        [done] = items(events, "item/completed")
        assert done["server"] == "plugfix" and done["status"] == "completed"
        assert done["result"]["content"] == [{"type": "text", "text": "from a plugin"}]

        await client.call("plugin/uninstall", {"pluginId": "demo@fixture-mk"})
        model.enqueue(Text("no tools"))
        later = await start_thread(client, workspace)
        await collect(client, turn_completed(await start_turn(client, later)))
    assert "mcp__plugfix" in model.posts[0].tool_names()
    assert "mcp__plugfix" not in model.posts[-1].tool_names()


# ---------------------------------------------------------------------------- git marketplace
async def git(*args: str, cwd: Path) -> None:
    await trio.run_process(
        ["git", "-c", "user.name=t", "-c", "user.email=t@example.invalid", *args],
        cwd=cwd,
        capture_stdout=True,
    )


@pytest.fixture
async def git_server(tmp_path: Path, nursery: trio.Nursery) -> AsyncIterator[HttpFixtureServer]:
    """A repository `src` holding a marketplace, pushed to `srv/mk.git` and served over HTTP."""
    src, srv = tmp_path / "src", tmp_path / "srv"
    make_marketplace(src, "git-mk")
    srv.mkdir()
    await git("init", "-q", "-b", "main", cwd=src)
    await git("add", "-A", cwd=src)
    await git("commit", "-qm", "init", cwd=src)
    await git("clone", "-q", "--bare", str(src), str(srv / "mk.git"), cwd=tmp_path)
    await git("update-server-info", cwd=srv / "mk.git")
    server = HttpFixtureServer(static=srv)
    await nursery.start(server.run)
    yield server


async def push_commit(tmp_path: Path) -> None:
    src = tmp_path / "src"
    (src / "NEW.txt").write_text("more\n")
    await git("add", "-A", cwd=src)
    await git("commit", "-qm", "two", cwd=src)
    await git("push", "-q", str(tmp_path / "srv" / "mk.git"), "main", cwd=src)
    await git("update-server-info", cwd=tmp_path / "srv" / "mk.git")


async def test_a_git_marketplace_is_cloned_upgraded_and_removed(
    client: ClientConnection, codex_home: Path, tmp_path: Path, git_server: HttpFixtureServer
) -> None:
    config = write_config(codex_home)
    url = f"{git_server.base_url}/mk.git"
    checkout = codex_home / ".tmp" / "marketplaces" / "git-mk"
    with trio.fail_after(TEST_TIMEOUT):
        added = await client.call("marketplace/add", {"source": url})
        assert added == {"marketplaceName": "git-mk", "installedRoot": str(checkout), "alreadyAdded": False}
        assert (await client.call("marketplace/add", {"source": url}))["alreadyAdded"] is True
        assert f'[marketplaces.git-mk]\nsource_type = "git"\nsource = "{url}"' in config.read_text()
        [listed] = (await client.call("plugin/list", {}))["marketplaces"]
        assert listed["path"] == str(checkout / ".agents" / "plugins" / "marketplace.json")
        assert listed["plugins"][0]["source"]["path"] == str(checkout / "plugins" / "demo")

        upgrade = {"marketplaceName": "git-mk"}
        first = await client.call("marketplace/upgrade", upgrade)
        assert first == {"selectedMarketplaces": ["git-mk"], "upgradedRoots": [str(checkout)], "errors": []}
        assert (await client.call("marketplace/upgrade", upgrade))["upgradedRoots"] == []
        await push_commit(tmp_path)
        assert (await client.call("marketplace/upgrade", {}))["upgradedRoots"] == [str(checkout)]
        assert (checkout / "NEW.txt").read_text() == "more\n"
        unknown = await rpc_error(client, "marketplace/upgrade", {"marketplaceName": "zz"})
        assert unknown.message == "marketplace `zz` is not configured as a Git marketplace"

        removed = await client.call("marketplace/remove", {"marketplaceName": "git-mk"})
        assert removed == {"marketplaceName": "git-mk", "installedRoot": str(checkout)}
        assert not checkout.exists() and "git-mk" not in config.read_text()

        sparse = await client.call(
            "marketplace/add", {"source": url, "refName": "main", "sparsePaths": [".agents"]}
        )
        assert sparse["installedRoot"] == str(checkout)
        assert (checkout / ".agents" / "plugins" / "marketplace.json").is_file()
        assert not (checkout / "plugins").exists() and (checkout / "NEW.txt").is_file()
        assert 'ref = "main"\nsparse_paths = [".agents"]' in config.read_text()

        failed = await rpc_error(client, "marketplace/add", {"source": f"{git_server.base_url}/nope.git"})
    assert failed.code == -32603
    assert failed.message.startswith(f"git clone {git_server.base_url}/nope.git ")
    assert "failed with status exit status: 128" in failed.message
    assert list((codex_home / ".tmp" / "marketplaces" / ".staging").iterdir()) == []


# ---------------------------------------------------------------------------- remote catalog
def catalog_item(installed: bool = False) -> dict[str, Any]:
    return {
        "id": "plg_1",
        "name": "remote-demo",
        "scope": "GLOBAL",
        "installation_policy": "AVAILABLE",
        "authentication_policy": "ON_USE",
        "release": {
            "version": "1.0.0",
            "display_name": "Remote Demo",
            "description": "From the catalog",
            "app_ids": [],
            "interface": {"short_description": "remote", "capabilities": ["Read"]},
            "skills": [{"name": "greet", "description": "Greets", "interface": {"short_description": "hi"}}],
        },
    }


def bundle() -> bytes:
    data = io.BytesIO()
    with tarfile.open(fileobj=data, mode="w:gz") as archive:
        payload = json.dumps({"name": "remote-demo", "version": "1.0.0"}).encode()
        info = tarfile.TarInfo(".codex-plugin/plugin.json")
        info.size = len(payload)
        archive.addfile(info, io.BytesIO(payload))
    return data.getvalue()


@pytest.fixture
async def catalog(nursery: trio.Nursery) -> AsyncIterator[HttpFixtureServer]:
    server = HttpFixtureServer()
    installed: set[str] = set()
    api = "/backend-api"

    def listing(hit: Hit) -> tuple[int, Any]:
        plugins = [catalog_item()] if hit.query.get("scope") == ["GLOBAL"] else []
        return 200, {"plugins": plugins, "pagination": {"next_page_token": None}}

    def installed_list(hit: Hit) -> tuple[int, Any]:
        plugins = (
            [{**catalog_item(), "enabled": True}]
            if installed and hit.query.get("scope") == ["GLOBAL"]
            else []
        )
        return 200, {"plugins": plugins, "pagination": {"next_page_token": None}}

    def detail(hit: Hit) -> tuple[int, Any]:
        item = catalog_item()
        if hit.query.get("includeDownloadUrls") == ["true"]:
            item["release"]["bundle_download_url"] = f"{server.base_url}/bundles/remote-demo.tar.gz"
        return 200, item

    def mutate(enabled: bool) -> Any:
        def handler(hit: Hit) -> tuple[int, Any]:
            (installed.add if enabled else installed.discard)("plg_1")
            return 200, {"id": "plg_1", "enabled": enabled}

        return handler

    server.routes = {
        ("GET", f"{api}/ps/plugins/list"): listing,
        ("GET", f"{api}/ps/plugins/installed"): installed_list,
        ("GET", f"{api}/ps/plugins/plg_1"): detail,
        ("POST", f"{api}/ps/plugins/plg_1/install"): mutate(True),
        ("POST", f"{api}/ps/plugins/plg_1/uninstall"): mutate(False),
        ("GET", "/bundles/remote-demo.tar.gz"): lambda hit: (200, bundle()),
    }
    await nursery.start(server.run)
    yield server


def remote_config(codex_home: Path, base_url: str, *, flag: bool = True) -> None:
    (codex_home / "config.toml").write_text(
        f'chatgpt_base_url = "{base_url}"\n[features]\nplugins = true\nremote_plugin = {str(flag).lower()}\n'
    )
    (codex_home / "auth.json").write_text(
        json.dumps({"auth_mode": "chatgpt", "tokens": {"access_token": "tok-1", "account_id": "acct-1"}})
    )


async def test_the_remote_catalog_is_merged_read_installed_and_uninstalled(
    client: ClientConnection, codex_home: Path, catalog: HttpFixtureServer
) -> None:
    remote_config(codex_home, f"{catalog.base_url}/backend-api/")
    with trio.fail_after(TEST_TIMEOUT):
        listed = await client.call("plugin/list", {})
        [marketplace] = listed["marketplaces"]
        assert marketplace["name"] == "openai-curated-remote" and marketplace["path"] is None
        assert marketplace["interface"] == {"displayName": "OpenAI Curated Remote"}
        [plugin] = marketplace["plugins"]
        assert plugin["id"] == "remote-demo@openai-curated-remote" and plugin["remotePluginId"] == "plg_1"
        assert plugin["source"] == {"type": "remote"} and plugin["installed"] is False
        assert plugin["interface"]["displayName"] == "Remote Demo" and plugin["version"] == "1.0.0"
        first = next(h for h in catalog.hits if h.path.endswith("/list"))
        assert first.headers["authorization"] == "Bearer tok-1"
        assert first.headers["chatgpt-account-id"] == "acct-1"
        assert first.query["limit"] == ["200"]
        fetches = catalog.paths().count("/backend-api/ps/plugins/list")
        await client.call("plugin/list", {})
        assert catalog.paths().count("/backend-api/ps/plugins/list") == fetches  # cached
        await client.call("plugin/list", {"forceRefetch": True})
        assert catalog.paths().count("/backend-api/ps/plugins/list") == fetches + 1

        remote = {"remoteMarketplaceName": "openai-curated-remote", "pluginName": "plg_1"}
        detail = (await client.call("plugin/read", remote))["plugin"]
        assert detail["marketplaceName"] == "openai-curated-remote"
        assert detail["description"] == "From the catalog"
        assert detail["skills"][0]["name"] == "greet" and detail["skills"][0]["shortDescription"] == "hi"
        assert "bundleDownloadUrl" not in detail
        bad_id = await rpc_error(client, "plugin/read", {**remote, "pluginName": "a/b"})
        assert bad_id.message == (
            "invalid remote plugin id: only ASCII letters, digits, `_`, `-`, and `~` are allowed"
        )

        assert await client.call("plugin/install", remote) == {"authPolicy": "ON_USE", "appsNeedingAuth": []}
        assert "/backend-api/ps/plugins/plg_1/install" in catalog.paths("POST")
        unpacked = codex_home / "plugins" / "cache" / "openai-curated-remote" / "remote-demo" / "1.0.0"
        assert (unpacked / ".codex-plugin" / "plugin.json").is_file()
        [after] = (await client.call("plugin/list", {}))["marketplaces"][0]["plugins"]
        assert (after["installed"], after["enabled"]) == (True, True)

        assert await client.call("plugin/uninstall", {"pluginId": "plg_1"}) == {}
        assert "/backend-api/ps/plugins/plg_1/uninstall" in catalog.paths("POST")
        assert not unpacked.exists()

        remote_config(codex_home, f"{catalog.base_url}/backend-api/", flag=False)
        before = len(catalog.hits)
        assert (await client.call("plugin/list", {}))["marketplaces"] == []
        assert len(catalog.hits) == before


async def test_an_unreachable_or_unauthenticated_catalog_never_fails_or_hangs_a_listing(
    client: ClientConnection, codex_home: Path
) -> None:
    listener = trio.socket.socket()
    await listener.bind(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    listener.close()  # nothing listens there now
    remote_config(codex_home, f"http://127.0.0.1:{port}/backend-api/")
    with trio.fail_after(TEST_TIMEOUT):
        listed = await client.call("plugin/list", {})
        assert listed["marketplaces"] == []
        [error] = listed["marketplaceLoadErrors"]
        assert error["message"].startswith(
            f"failed to send remote plugin catalog request to http://127.0.0.1:{port}/backend-api/ps/plugins/list"
        )
        explicit = await rpc_error(client, "plugin/list", {"marketplaceKinds": ["workspace-directory"]})
        assert explicit.code == -32603 and explicit.message.startswith(
            "list remote plugin catalog: failed to send"
        )

        (codex_home / "auth.json").unlink()
        assert await client.call("plugin/list", {}) == {
            "marketplaces": [],
            "marketplaceLoadErrors": [],
            "featuredPluginIds": [],
        }
        remote = {"remoteMarketplaceName": "openai-curated-remote", "pluginName": "plg_1"}
        auth = "chatgpt authentication required for remote plugin catalog"
        read_error = await rpc_error(client, "plugin/read", remote)
        assert read_error.message == f"read remote plugin details: {auth}"
        assert (await rpc_error(client, "plugin/install", remote)).message == (
            f"read remote plugin details before install: {auth}"
        )
        assert (await rpc_error(client, "plugin/uninstall", {"pluginId": "plg_1"})).message == (
            f"resolve remote plugin before uninstall: {auth}"
        )


async def test_names_that_would_leave_codex_home_are_refused(
    client: ClientConnection, codex_home: Path, tmp_path: Path
) -> None:
    write_config(codex_home)
    root = tmp_path / "evil"
    path = make_marketplace(root, "../../escape")
    listed = await client.call("plugin/list", {"cwds": [str(root)]})
    assert listed["marketplaces"] == []
    assert listed["marketplaceLoadErrors"][0]["message"].endswith("invalid marketplace name `../../escape`")
    assert (await rpc_error(client, "marketplace/add", {"source": str(root)})).code == -32600
    assert (
        await rpc_error(client, "plugin/install", {"marketplacePath": str(path), "pluginName": "demo"})
    ).code == (-32600)
    refused = await rpc_error(client, "plugin/uninstall", {"pluginId": "demo@../../x"})
    assert refused.message == "invalid plugin id `demo@../../x`"


async def test_plugin_installs_and_config_writes_at_once_lose_nothing(
    client: ClientConnection, codex_home: Path, tmp_path: Path
) -> None:
    config = write_config(codex_home)
    path = make_marketplace(tmp_path / "mk")

    async def write(n: int) -> None:
        await client.call(
            "config/value/write",
            {"keyPath": f"projects.p{n}.trust_level", "value": "trusted", "mergeStrategy": "replace"},
        )

    with trio.fail_after(TEST_TIMEOUT):
        async with trio.open_nursery() as nursery:
            for n in range(8):
                nursery.start_soon(write, n)
            nursery.start_soon(
                client.call, "plugin/install", {"marketplacePath": str(path), "pluginName": "demo"}
            )
            nursery.start_soon(client.call, "marketplace/add", {"source": str(tmp_path / "mk")})
    text = config.read_text()
    assert all(f"[projects.p{n}]" in text for n in range(8))
    assert '[plugins."demo@fixture-mk"]' in text and "[marketplaces.fixture-mk]" in text
    assert text.startswith("# keep this comment\n")


async def test_a_client_that_leaves_during_a_clone_stops_git_and_leaves_nothing_behind(
    server_settings: ServerSettings, codex_home: Path, nursery: trio.Nursery
) -> None:
    write_config(codex_home)
    http = HttpFixtureServer()
    http.stall_paths = {"/stall.git/info/refs"}
    await nursery.start(http.run)
    check = LeakCheck()
    with trio.fail_after(TEST_TIMEOUT):
        async with open_app_server(server_settings) as server:
            client = await server.connect()
            await client.initialize("pytest")

            async def add() -> None:
                with suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                    await client.call("marketplace/add", {"source": f"{http.base_url}/stall.git"})

            async with trio.open_nursery() as calls:
                calls.start_soon(add)
                await http.stalled.wait()
                assert any("git" in cmdline(pid) for pid in descendants(os.getpid()) - check.children)
                await client.aclose()
        await http.released.wait()  # git's connection closed: git is gone
        assert await check.leftovers() == []
    assert list((codex_home / ".tmp" / "marketplaces" / ".staging").iterdir()) == []
    assert "marketplaces" not in (codex_home / "config.toml").read_text()


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
    except OSError:
        return ""


async def test_a_plugins_hooks_are_listed_one_per_handler(
    client: ClientConnection, codex_home: Path, tmp_path: Path
) -> None:
    write_config(codex_home)
    path = make_marketplace(tmp_path / "mk")
    hooks = tmp_path / "mk" / "plugins" / "demo" / "hooks" / "hooks.json"
    hooks.parent.mkdir()
    command = {"type": "command", "command": "true"}
    hooks.write_text(
        json.dumps(
            {
                "hooks": {
                    "PreToolUse": [{"matcher": "Bash", "hooks": [command]}, {"hooks": [command, command]}],
                    "SessionStart": [{"hooks": [command]}],
                    "NotAnEvent": [{"hooks": [command]}],
                }
            }
        )
    )
    detail = await client.call("plugin/read", {"marketplacePath": str(path), "pluginName": "demo"})
    prefix = "demo@fixture-mk:hooks/hooks.json"
    assert detail["plugin"]["hooks"] == [
        {"key": f"{prefix}:pre_tool_use:0:0", "eventName": "preToolUse"},
        {"key": f"{prefix}:pre_tool_use:1:0", "eventName": "preToolUse"},
        {"key": f"{prefix}:pre_tool_use:1:1", "eventName": "preToolUse"},
        {"key": f"{prefix}:session_start:0:0", "eventName": "sessionStart"},
    ]
