"""Params of the catalog methods (`model/list`, `experimentalFeature/list`, `skills/list`, …).

Results are lists of dynamic entries and are built as plain dicts by the catalog family.
"""

from __future__ import annotations

import attrs


@attrs.frozen
class ModelListParams:
    cursor: str | None = None
    limit: int | None = None
    include_hidden: bool | None = None
    model_provider: str | None = None


@attrs.frozen
class ExperimentalFeatureListParams:
    cursor: str | None = None
    limit: int | None = None
    thread_id: str | None = None


@attrs.frozen
class SkillsListParams:
    cwds: list[str] | None = None
    force_reload: bool = False


@attrs.frozen
class HooksListParams:
    cwds: list[str] | None = None
    thread_id: str | None = None


@attrs.frozen
class PluginInstalledParams:
    cwds: list[str] | None = None
    install_suggestion_plugin_names: list[str] | None = None


@attrs.frozen
class PluginListParams:
    cwds: list[str] | None = None
    force_refetch: bool = False
    marketplace_kinds: list[str] | None = None


@attrs.frozen
class CollaborationModeListParams:
    pass
