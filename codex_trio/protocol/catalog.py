"""Params of the catalog methods (`model/list`, `experimentalFeature/list`, `skills/list`, …).

Results are lists of dynamic entries and are built as plain dicts by the catalog family.
"""

from __future__ import annotations

import attrs

from codex_trio.records import by_value


@by_value
@attrs.frozen(repr=False, eq=False)
class ModelListParams:
    """`model/list` params (offset cursor paging)."""

    cursor: str | None = None
    limit: int | None = None
    include_hidden: bool | None = None
    model_provider: str | None = None


@by_value
@attrs.frozen(repr=False, eq=False)
class ExperimentalFeatureListParams:
    """`experimentalFeature/list` params (offset cursor paging)."""

    cursor: str | None = None
    limit: int | None = None
    thread_id: str | None = None


@by_value
@attrs.frozen(repr=False, eq=False)
class SkillsListParams:
    """`skills/list` params: the working directories whose skills to list."""

    cwds: list[str] | None = None
    force_reload: bool = False


@by_value
@attrs.frozen(repr=False, eq=False)
class HooksListParams:
    """`hooks/list` params."""

    cwds: list[str] | None = None
    thread_id: str | None = None


@by_value
@attrs.frozen(repr=False, eq=False)
class PluginInstalledParams:
    """`plugin/installed` params."""

    cwds: list[str] | None = None
    install_suggestion_plugin_names: list[str] | None = None


@by_value
@attrs.frozen(repr=False, eq=False)
class PluginListParams:
    """`plugin/list` params."""

    cwds: list[str] | None = None
    force_refetch: bool = False
    marketplace_kinds: list[str] | None = None


@by_value
@attrs.frozen(repr=False, eq=False)
class CollaborationModeListParams:
    """`collaborationMode/list` params."""

    pass


@by_value
@attrs.frozen(repr=False, eq=False)
class SkillsConfigWriteParams:
    """`skills/config/write`: enable or disable a skill, chosen by name or by path."""

    enabled: bool
    name: str | None = None
    path: str | None = None


@by_value
@attrs.frozen(repr=False, eq=False)
class ExternalAgentConfigDetectParams:
    """`externalAgentConfig/detect` params."""

    cwds: list[str] | None = None
    include_home: bool = False
    max_session_age_days: int | None = None
    max_sessions: int | None = None
    migration_source: str | None = None
    source: str | None = None
