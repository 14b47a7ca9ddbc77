"""`config/read`, `config/value/write`, `config/batchWrite` and `configRequirements/read` over
an in-process server."""

from __future__ import annotations

import tomllib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import trio

from codex_trio.client import ClientConnection
from codex_trio.config.layers import StaticThreadConfigLoader
from codex_trio.protocol.errors import RpcError
from codex_trio.server import open_app_server
from codex_trio.settings import ServerSettings
from codex_trio.transport.listen import NoListen

CONFIG = """# keep me: a comment at the top
model = "gpt-5.5"   # trailing comment
model_provider = "mock"

[features]
plugins = false
apps = false

# the mock provider
[model_providers.mock]
name = "Conformance mock"
base_url = "http://127.0.0.1:9/v1"
request_max_retries = 0
"""


@asynccontextmanager
async def client_for(
    tmp_path: Path, config: str | None = CONFIG, **kw: Any
) -> AsyncIterator[ClientConnection]:
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    if config is not None:
        (home / "config.toml").write_text(config)
    settings = ServerSettings(codex_home=home, listen=NoListen(), cwd=tmp_path, **kw)
    with trio.fail_after(10):
        async with open_app_server(settings) as server:
            client = await server.connect()
            await client.initialize()
            yield client


async def write(client: ClientConnection, key: str, value: Any, strategy: str = "replace", **kw: Any) -> Any:
    return await client.call(
        "config/value/write", {"keyPath": key, "value": value, "mergeStrategy": strategy, **kw}
    )


async def write_error(
    client: ClientConnection, params: dict[str, Any], method: str = "config/value/write"
) -> RpcError:
    with pytest.raises(RpcError) as raised:
        await client.call(method, params)
    assert raised.value.code == -32600
    return raised.value


async def test_config_read_reports_values_origins_and_layers_highest_first(tmp_path: Path) -> None:
    async with client_for(tmp_path, config_overrides=(("model", "from-flag"),)) as client:
        result = await client.call("config/read", {})
        assert result["config"]["model"] == "from-flag"
        assert result["config"]["model_provider"] == "mock"
        assert "layers" not in result
        assert result["origins"]["model"]["name"] == {"type": "sessionFlags"}
        user_file = str(tmp_path / "home" / "config.toml")
        assert result["origins"]["model_provider"]["name"] == {
            "type": "user",
            "file": user_file,
            "profile": None,
        }
        layered = await client.call("config/read", {"includeLayers": True, "cwd": "."})
        names = [layer["name"]["type"] for layer in layered["layers"]]
        assert names[:2] == ["sessionFlags", "user"]
        assert layered["layers"][1]["config"]["model_providers"]["mock"]["name"] == "Conformance mock"
        assert layered["layers"][1]["version"] == result["origins"]["model_provider"]["version"]


async def test_value_write_keeps_comments_and_formatting(tmp_path: Path) -> None:
    async with client_for(tmp_path) as client:
        result = await write(client, "model_reasoning_effort", "high")
        assert result["status"] == "ok" and result["overriddenMetadata"] is None
        assert result["filePath"] == str(tmp_path / "home" / "config.toml")
        text = (tmp_path / "home" / "config.toml").read_text()
        assert text.startswith("# keep me: a comment at the top\n")
        assert 'model = "gpt-5.5"   # trailing comment' in text
        assert "# the mock provider\n[model_providers.mock]" in text
        assert 'model_reasoning_effort = "high"' in text
        read = await client.call("config/read", {"includeLayers": True})
        assert read["config"]["model_reasoning_effort"] == "high"
        user = next(layer for layer in read["layers"] if layer["name"]["type"] == "user")
        assert user["version"] == result["version"], "the write reports the version config/read shows"


async def test_missing_tables_are_created_and_null_deletes(tmp_path: Path) -> None:
    async with client_for(tmp_path) as client:
        await write(client, "model_providers.other", {"name": "Other", "base_url": "http://o/v1"})
        await write(client, "model_providers.mock", {"name": "Renamed"}, "upsert")
        await write(client, "features", {"memories": True})
        await write(client, "model_provider", None)
        data = tomllib.loads((tmp_path / "home" / "config.toml").read_text())
        assert data["model_providers"]["other"] == {"name": "Other", "base_url": "http://o/v1"}
        assert data["model_providers"]["mock"]["name"] == "Renamed"
        assert data["model_providers"]["mock"]["base_url"] == "http://127.0.0.1:9/v1", "upsert merges"
        assert data["features"] == {"memories": True}, "replace overwrites the table"
        assert "model_provider" not in data
        assert "[model_providers.other]" in (tmp_path / "home" / "config.toml").read_text()


async def test_writes_create_the_user_file_when_it_is_missing(tmp_path: Path) -> None:
    async with client_for(tmp_path, config=None) as client:
        await write(client, "model", "m")
        assert (tmp_path / "home" / "config.toml").read_text() == 'model = "m"\n'


async def test_version_conflicts_and_foreign_files_are_refused(tmp_path: Path) -> None:
    async with client_for(tmp_path) as client:
        first = await write(client, "model", "a")
        stale = await write_error(
            client,
            {
                "keyPath": "model",
                "value": "b",
                "mergeStrategy": "replace",
                "expectedVersion": "sha256:" + "0" * 64,
            },
        )
        assert stale.data == {"config_write_error_code": "configVersionConflict"}
        assert stale.message == "Configuration was modified since last read. Fetch latest version and retry."
        assert (await write(client, "model", "c", expectedVersion=first["version"]))["status"] == "ok"
        foreign = await write_error(
            client,
            {
                "keyPath": "model",
                "value": "b",
                "mergeStrategy": "replace",
                "filePath": str(tmp_path / "other.toml"),
            },
        )
        assert foreign.data == {"config_write_error_code": "configLayerReadonly"}
        assert foreign.message == "Only writes to the user config are allowed"
        own = await write(client, "model", "d", filePath=str(tmp_path / "home" / "config.toml"))
        assert own["status"] == "ok"


async def test_invalid_values_and_paths_are_validation_errors(tmp_path: Path) -> None:
    async with client_for(tmp_path) as client:
        bad_type = await write_error(client, {"keyPath": "model", "value": 5, "mergeStrategy": "replace"})
        assert bad_type.data == {"config_write_error_code": "configValidationError"}
        assert (
            bad_type.message
            == "Invalid configuration: invalid type: integer `5`, expected a string\nin `model`\n"
        )
        empty = await write_error(client, {"keyPath": "", "value": 1, "mergeStrategy": "replace"})
        assert empty.message == "keyPath must not be empty"
        under_value = await write_error(
            client, {"keyPath": "model.x", "value": 1, "mergeStrategy": "replace"}
        )
        assert under_value.message == "cannot set value on non-table parent"
        strategy = await write_error(client, {"keyPath": "model", "value": "x", "mergeStrategy": "bogus"})
        assert strategy.message == "Invalid request: unknown variant `bogus`, expected `replace` or `upsert`"
        assert strategy.data is None
        missing = await write_error(client, {"keyPath": "model", "mergeStrategy": "replace"})
        assert missing.message == "Invalid request: missing field `value`"


async def test_a_batch_is_atomic(tmp_path: Path) -> None:
    async with client_for(tmp_path) as client:
        before = (tmp_path / "home" / "config.toml").read_text()
        edits = [
            {"keyPath": "model_reasoning_effort", "value": "high", "mergeStrategy": "replace"},
            {"keyPath": "model", "value": 5, "mergeStrategy": "replace"},
        ]
        await write_error(client, {"edits": edits}, "config/batchWrite")
        assert (tmp_path / "home" / "config.toml").read_text() == before
        empty = await client.call("config/batchWrite", {"edits": []})
        assert empty["status"] == "ok"
        done = await client.call("config/batchWrite", {"edits": edits[:1], "reloadUserConfig": True})
        assert done["status"] == "ok" and done["version"] != empty["version"]


async def test_a_write_shadowed_by_a_session_flag_reports_the_override(tmp_path: Path) -> None:
    async with client_for(tmp_path, config_overrides=(("model", "hello"),)) as client:
        result = await write(client, "model", "x")
        assert result["status"] == "okOverridden"
        meta = result["overriddenMetadata"]
        assert meta["message"] == "Overridden by session flags"
        assert meta["overridingLayer"]["name"] == {"type": "sessionFlags"}
        assert meta["effectiveValue"] == "hello"
        assert (await write(client, "model_reasoning_effort", "low"))["status"] == "ok"


async def test_concurrent_writes_are_serialized_and_none_is_lost(tmp_path: Path) -> None:
    async with client_for(tmp_path) as client:
        async with trio.open_nursery() as nursery:
            for n in range(20):
                nursery.start_soon(write, client, f"model_providers.p{n}", {"name": f"P{n}"})
        data = tomllib.loads((tmp_path / "home" / "config.toml").read_text())
        assert {f"p{n}" for n in range(20)} <= set(data["model_providers"])


async def test_config_requirements_read_accepts_absent_params(tmp_path: Path) -> None:
    async with client_for(tmp_path) as client:
        expected = {"supportsIndependentSpeedModes": True, "requirements": None}
        assert await client.call("configRequirements/read") == expected
        assert await client.call("configRequirements/read", None) == expected


async def test_a_thread_config_loader_owns_the_provider_whatever_thread_start_asks(tmp_path: Path) -> None:
    config = CONFIG + '\n[model_providers.corp]\nname = "Corp"\nbase_url = "http://127.0.0.1:9/v1"\n'
    loader = StaticThreadConfigLoader({"model_provider": "corp"})
    async with client_for(tmp_path, config, thread_config_loader=loader) as client:
        asked = {"model_provider": "mock", "model": "asked-for"}
        started = await client.call("thread/start", {"config": asked})
        assert started["modelProvider"] == "corp"
        assert started["model"] == "asked-for", "what the session does not own stays the client's choice"
