"""Catalog methods the TUI calls at start-up: shapes, paging and honest (often empty) content."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import trio

from codex_trio.client import ClientConnection
from codex_trio.config.models import DEFAULT_MODEL
from codex_trio.protocol.errors import RpcError
from codex_trio.server import open_app_server
from codex_trio.settings import ServerSettings
from codex_trio.transport.listen import NoListen

MODEL_KEYS = {
    "id",
    "model",
    "upgrade",
    "upgradeInfo",
    "availabilityNux",
    "displayName",
    "description",
    "modelSpecialty",
    "hidden",
    "supportedReasoningEfforts",
    "defaultReasoningEffort",
    "inputModalities",
    "supportsPersonality",
    "multiAgentVersion",
    "additionalSpeedTiers",
    "serviceTiers",
    "defaultServiceTier",
    "availableAccessPrograms",
    "isDefault",
}


@asynccontextmanager
async def client_for(
    tmp_path: Path, config: str = "", **capabilities: Any
) -> AsyncIterator[ClientConnection]:
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    (home / "config.toml").write_text(config)
    with trio.fail_after(10):
        async with open_app_server(
            ServerSettings(codex_home=home, listen=NoListen(), cwd=tmp_path)
        ) as server:
            client = await server.connect()
            await client.initialize(**capabilities)
            yield client


async def test_model_list_has_the_reference_shape_and_one_default(tmp_path: Path) -> None:
    async with client_for(tmp_path) as client:
        result = await client.call("model/list", {})
        assert result["nextCursor"] is None
        models = result["data"]
        assert all(set(m) == MODEL_KEYS for m in models)
        assert [m["id"] for m in models if m["isDefault"]] == [DEFAULT_MODEL]


async def test_model_list_pages_with_offset_cursors(tmp_path: Path) -> None:
    async with client_for(tmp_path) as client:
        everything = [m["id"] for m in (await client.call("model/list", {}))["data"]]
        first = await client.call("model/list", {"limit": 2})
        assert first["nextCursor"] == "2"
        rest = await client.call("model/list", {"cursor": first["nextCursor"]})
        assert [m["id"] for m in first["data"] + rest["data"]] == everything
        assert len((await client.call("model/list", {"limit": 0}))["data"]) == 1
        for cursor, message in (
            ("abc", "invalid cursor: abc"),
            ("100", f"cursor 100 exceeds total models {len(everything)}"),
        ):
            with pytest.raises(RpcError) as raised:
                await client.call("model/list", {"cursor": cursor})
            assert raised.value.message == message


async def test_a_configured_model_outside_the_catalog_is_listed(tmp_path: Path) -> None:
    async with client_for(tmp_path, 'model = "my-local-model"\n') as client:
        models = (await client.call("model/list", {}))["data"]
        assert models[-1]["id"] == "my-local-model" and models[-1]["isDefault"] is False


async def test_model_list_for_an_unconfigured_provider_is_refused(tmp_path: Path) -> None:
    async with client_for(tmp_path) as client:
        with pytest.raises(RpcError) as raised:
            await client.call("model/list", {"modelProvider": "nope"})
        assert raised.value.data == {"type": "modelProviderNotConfigured", "modelProvider": "nope"}


async def test_experimental_features_reflect_the_effective_config(tmp_path: Path) -> None:
    async with client_for(tmp_path, "[features]\nmemories = true\napps = false\n") as client:
        result = await client.call("experimentalFeature/list", {})
        features = {f["name"]: f for f in result["data"]}
        assert features["memories"]["enabled"] is True and features["memories"]["defaultEnabled"] is False
        assert features["apps"]["enabled"] is False and features["apps"]["defaultEnabled"] is True
        assert {f["stage"] for f in result["data"]} <= {
            "beta",
            "deprecated",
            "removed",
            "stable",
            "underDevelopment",
        }
        page = await client.call("experimentalFeature/list", {"limit": 2})
        assert len(page["data"]) == 2 and page["nextCursor"] == "2"


async def test_skills_are_read_from_skill_files_on_disk(tmp_path: Path) -> None:
    skill = tmp_path / "home" / "skills" / "greet"
    skill.mkdir(parents=True)
    (skill / "SKILL.md").write_text("---\nname: greet\ndescription: Say hello nicely\n---\nBody\n")
    broken = tmp_path / "home" / "skills" / "broken"
    broken.mkdir()
    (broken / "SKILL.md").write_text("no front matter\n")
    async with client_for(tmp_path) as client:
        result = await client.call("skills/list", {})
        [entry] = result["data"]
        assert entry["cwd"] == str(tmp_path)
        user = [s for s in entry["skills"] if s["scope"] != "system"]
        assert [(s["name"], s["description"], s["scope"], s["enabled"]) for s in user] == [
            ("greet", "Say hello nicely", "user", True)
        ]
        assert len(entry["skills"]) == len(user) + 5  # and the bundled system skills
        assert entry["errors"][0]["path"].endswith("broken/SKILL.md")


async def test_startup_catalogs_answer_with_empty_collections(tmp_path: Path) -> None:
    async with client_for(tmp_path, experimentalApi=True) as client:
        cwd = str(tmp_path)
        assert await client.call("hooks/list", {"cwds": [cwd], "threadId": None}) == {
            "data": [{"cwd": cwd, "hooks": [], "warnings": [], "errors": []}]
        }
        assert (await client.call("hooks/list", {}))["data"][0]["cwd"] == cwd
        assert await client.call("plugin/installed", {"cwds": [cwd]}) == {
            "marketplaces": [],
            "marketplaceLoadErrors": [],
        }
        assert await client.call("plugin/list", {}) == {
            "marketplaces": [],
            "marketplaceLoadErrors": [],
            "featuredPluginIds": [],
        }
        assert await client.call("mcpServerStatus/list", {}) == {"data": [], "nextCursor": None}
        modes = (await client.call("collaborationMode/list", {}))["data"]
        assert [(m["name"], m["mode"]) for m in modes] == [("Plan", "plan"), ("Default", "default")]


async def test_collaboration_modes_need_the_experimental_capability(tmp_path: Path) -> None:
    async with client_for(tmp_path) as client:
        with pytest.raises(RpcError, match="collaborationMode/list requires experimentalApi capability"):
            await client.call("collaborationMode/list", {})
