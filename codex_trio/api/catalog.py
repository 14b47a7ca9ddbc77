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

import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import trio

from codex_trio.config.defaults import known_features
from codex_trio.config.effective import EffectiveConfig, load_config
from codex_trio.config.layers import CONFIG_TOML_FILE
from codex_trio.config.models import DEFAULT_MODEL, builtin_models, configured_model_entry
from codex_trio.config.write import VERSION_CONFLICT, ConfigWriteError, Edit, apply_edits, current_version
from codex_trio.plugins.store import installed_plugin_skills
from codex_trio.protocol.catalog import (
    CollaborationModeListParams,
    ExperimentalFeatureListParams,
    HooksListParams,
    ModelListParams,
    SkillsConfigWriteParams,
    SkillsListParams,
)
from codex_trio.protocol.errors import invalid_params, invalid_request
from codex_trio.protocol.paging import page
from codex_trio.routing import RequestContext, Route, route
from codex_trio.services import Services
from codex_trio.skills import scan_skills
from codex_trio.system_skills import install_system_skills

#: worker threads for config reads and skill scans.
CATALOG_THREADS = 2

#: `collaborationMode/list`: the reference's two presets.
COLLABORATION_MODES: tuple[dict[str, Any], ...] = (
    {"name": "Plan", "mode": "plan", "model": None, "reasoning_effort": "medium"},
    {"name": "Default", "mode": "default", "model": None, "reasoning_effort": None},
)


#: tries of a skills/config/write that raced another config write.
SKILL_WRITE_ATTEMPTS = 3


def _skill_rules(raw: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    skills = raw.get("skills")
    rules = skills.get("config") if isinstance(skills, Mapping) else None
    return [r for r in rules if isinstance(r, Mapping)] if isinstance(rules, list) else []


def skill_enabled(raw: Mapping[str, Any], skill: Mapping[str, Any]) -> bool:
    """A skill's `enabled` under the `[[skills.config]]` rules (the last matching rule wins)."""
    enabled = True
    for rule in _skill_rules(raw):
        if rule.get("path") == skill["path"] or rule.get("name") == skill["name"]:
            value = rule.get("enabled")
            enabled = value if isinstance(value, bool) else enabled
    return enabled


def _write_skill_entry(path: Path, key: str, value: str, enabled: bool) -> None:
    """Read the rules, update or append this selector's, write back (blocking); raises
    `ConfigWriteError` with `VERSION_CONFLICT` if the file changed in between."""
    version = current_version(path)
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raw = {}
    except tomllib.TOMLDecodeError as exc:
        raise ConfigWriteError("configValidationError", f"Invalid configuration: {exc}") from None
    rules = [dict(r) for r in _skill_rules(raw)]
    for rule in rules:
        if rule.get(key) == value and set(rule) <= {"name", "path", "enabled"} and len(rule) <= 2:
            rule["enabled"] = enabled
            break
    else:
        rules.append({key: value, "enabled": enabled})
    apply_edits(path, [Edit("skills.config", rules)], version)


def model_entries(config: EffectiveConfig, include_hidden: bool) -> list[dict[str, Any]]:
    """The catalog plus the configured model, with exactly one `isDefault`."""
    entries = [dict(m) for m in builtin_models() if include_hidden or not m["hidden"]]
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
            route("skills/config/write", SkillsConfigWriteParams, self.skills_config_write),
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
            {**f, "enabled": config.feature(f["name"], bool(f["defaultEnabled"]))} for f in known_features()
        ]
        data, next_cursor = page(entries, params.cursor, params.limit, "features")
        return {"data": data, "nextCursor": next_cursor}

    async def skills_list(self, ctx: RequestContext, params: SkillsListParams) -> dict[str, Any]:
        """`skills/list`: SKILL.md files under each cwd's skill roots (the bundled system
        skills are installed first), each enabled or not as `[[skills.config]]` says."""
        user_root = self._settings.codex_home / "skills"
        await trio.to_thread.run_sync(install_system_skills, self._settings.codex_home, limiter=self._limiter)
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
            skills = [
                {**skill, "enabled": skill_enabled(config.raw, skill)} for skill in repo_skills + user_skills
            ]
            data.append({"cwd": cwd, "skills": skills, "errors": repo_errors + user_errors})
        return {"data": data}

    async def skills_config_write(
        self, ctx: RequestContext, params: SkillsConfigWriteParams
    ) -> dict[str, Any]:
        """`skills/config/write`: a `[[skills.config]]` entry in the user's config.toml (one per
        selector: an existing one is updated, else one is appended)."""
        if (params.name is None) == (params.path is None):
            raise invalid_params("skills/config/write requires exactly one of path or name")
        key, value = ("name", params.name) if params.name is not None else ("path", str(params.path))
        path = self._settings.codex_home / CONFIG_TOML_FILE
        for _ in range(SKILL_WRITE_ATTEMPTS):
            try:
                await trio.to_thread.run_sync(
                    _write_skill_entry, path, key, value, params.enabled, limiter=self._limiter
                )
                break
            except ConfigWriteError as exc:
                if exc.code != VERSION_CONFLICT:
                    raise invalid_request(exc.message, {"config_write_error_code": exc.code}) from None
        return {"effectiveEnabled": params.enabled}

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
