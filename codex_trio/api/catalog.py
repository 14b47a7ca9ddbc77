"""Catalog methods the TUI calls at start-up: models, feature flags, skills, hooks, plugins
and collaboration modes (MCP server status is the MCP family's, `codex_trio.api.mcp`).

Content is honest: the models come from config plus a small built-in catalog
(`codex_trio.config.models`), feature flags from the effective config, skills from
`SKILL.md` files on disk (`codex_trio.skills`, with the skills of installed plugins from
`codex_trio.plugins.store`);
hooks are empty because this server runs none. Plugins are the plugin family's
(`codex_trio.api.plugins`). Pages use the reference's decimal offset cursors.
"""

from __future__ import annotations

from typing import Any

import trio

from codex_trio.config.defaults import KNOWN_FEATURES
from codex_trio.config.effective import EffectiveConfig, load_config
from codex_trio.config.models import BUILTIN_MODELS, DEFAULT_MODEL, configured_model_entry
from codex_trio.plugins.store import installed_plugin_skills
from codex_trio.protocol.catalog import (
    CollaborationModeListParams,
    ExperimentalFeatureListParams,
    HooksListParams,
    ModelListParams,
    SkillsListParams,
)
from codex_trio.protocol.errors import invalid_request
from codex_trio.protocol.paging import page
from codex_trio.routing import RequestContext, Route, route
from codex_trio.services import Services
from codex_trio.skills import scan_skills

#: worker threads for config reads and skill scans.
CATALOG_THREADS = 2

#: `collaborationMode/list`: the reference's two presets.
COLLABORATION_MODES: tuple[dict[str, Any], ...] = (
    {"name": "Plan", "mode": "plan", "model": None, "reasoning_effort": "medium"},
    {"name": "Default", "mode": "default", "model": None, "reasoning_effort": None},
)


def model_entries(config: EffectiveConfig, include_hidden: bool) -> list[dict[str, Any]]:
    """The catalog plus the configured model, with exactly one `isDefault`."""
    entries = [dict(m) for m in BUILTIN_MODELS if include_hidden or not m["hidden"]]
    if all(m["id"] != config.model for m in entries):
        entries.append(configured_model_entry(config.model))
    for entry in entries:
        entry["isDefault"] = entry["id"] == DEFAULT_MODEL
    return entries


class CatalogApi:
    """The catalog family: read-only views over config and disk."""

    def __init__(self, services: Services) -> None:
        self._settings = services.settings
        self._limiter = trio.CapacityLimiter(CATALOG_THREADS)

    def routes(self) -> list[Route]:
        """The family's methods."""
        return [
            route("model/list", ModelListParams, self.model_list),
            route("experimentalFeature/list", ExperimentalFeatureListParams, self.feature_list),
            route("skills/list", SkillsListParams, self.skills_list),
            route("hooks/list", HooksListParams, self.hooks_list),
            route(
                "collaborationMode/list",
                CollaborationModeListParams,
                self.collaboration_modes,
                experimental=True,
            ),
        ]

    async def _config(self) -> EffectiveConfig:
        return await trio.to_thread.run_sync(load_config, self._settings, limiter=self._limiter)

    def _cwds(self, cwds: list[str] | None) -> list[str]:
        return list(cwds) if cwds else [str(self._settings.cwd)]

    async def model_list(self, ctx: RequestContext, params: ModelListParams) -> dict[str, Any]:
        """`model/list`: configured and built-in models, paged."""
        config = await self._config()
        provider = params.model_provider
        if provider is not None and provider not in config.model_providers:
            raise invalid_request(
                f"This chat uses model provider \u201c{provider}\u201d, which is no longer configured. "
                "Restore this provider\u2019s configuration to continue.",
                {"type": "modelProviderNotConfigured", "modelProvider": provider},
            )
        entries = model_entries(config, bool(params.include_hidden))
        data, next_cursor = page(entries, params.cursor, params.limit, "models")
        return {"data": data, "nextCursor": next_cursor}

    async def feature_list(
        self, ctx: RequestContext, params: ExperimentalFeatureListParams
    ) -> dict[str, Any]:
        """`experimentalFeature/list`: feature flags with their effective values, paged."""
        config = await self._config()
        entries = [
            {**f, "enabled": config.feature(f["name"], bool(f["defaultEnabled"]))} for f in KNOWN_FEATURES
        ]
        data, next_cursor = page(entries, params.cursor, params.limit, "features")
        return {"data": data, "nextCursor": next_cursor}

    async def skills_list(self, ctx: RequestContext, params: SkillsListParams) -> dict[str, Any]:
        """`skills/list`: SKILL.md files under each cwd's skill roots."""
        user_root = self._settings.codex_home / "skills"
        user_skills, user_errors = await trio.to_thread.run_sync(
            scan_skills, user_root, "user", limiter=self._limiter
        )
        config = await self._config()
        plugin_skills, plugin_errors = await trio.to_thread.run_sync(
            installed_plugin_skills, self._settings.codex_home, config.raw, limiter=self._limiter
        )
        user_skills, user_errors = plugin_skills + user_skills, plugin_errors + user_errors
        data = []
        for cwd in self._cwds(params.cwds):
            repo_root = (self._settings.cwd / cwd).absolute() / ".codex" / "skills"
            repo_skills, repo_errors = await trio.to_thread.run_sync(
                scan_skills, repo_root, "repo", limiter=self._limiter
            )
            data.append(
                {"cwd": cwd, "skills": repo_skills + user_skills, "errors": repo_errors + user_errors}
            )
        return {"data": data}

    async def hooks_list(self, ctx: RequestContext, params: HooksListParams) -> dict[str, Any]:
        # No hook engine runs here, so no cwd has hooks.
        """`hooks/list`: this server runs no hooks."""
        cwds = self._cwds(params.cwds)
        return {"data": [{"cwd": cwd, "hooks": [], "warnings": [], "errors": []} for cwd in cwds]}

    async def collaboration_modes(
        self, ctx: RequestContext, params: CollaborationModeListParams
    ) -> dict[str, Any]:
        """`collaborationMode/list`: the reference's two presets."""
        return {"data": [dict(mode) for mode in COLLABORATION_MODES]}
