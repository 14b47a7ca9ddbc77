"""Params of the plugin and marketplace methods (`plugin/read`, `plugin/install`, …).

`plugin/list` and `plugin/installed` params live with the catalog ones
(`codex_trio.protocol.catalog`); results are built as plain dicts by `codex_trio.api.plugins`.
"""

from __future__ import annotations

import attrs

from codex_trio.records import by_value


@by_value
@attrs.frozen(repr=False, eq=False)
class PluginReadParams:
    plugin_name: str
    marketplace_path: str | None = None
    remote_marketplace_name: str | None = None


@by_value
@attrs.frozen(repr=False, eq=False)
class PluginInstallParams:
    plugin_name: str
    marketplace_path: str | None = None
    remote_marketplace_name: str | None = None
    install_attempt_id: str | None = None


@by_value
@attrs.frozen(repr=False, eq=False)
class PluginUninstallParams:
    plugin_id: str


@by_value
@attrs.frozen(repr=False, eq=False)
class MarketplaceAddParams:
    source: str
    ref_name: str | None = None
    sparse_paths: list[str] | None = None


@by_value
@attrs.frozen(repr=False, eq=False)
class MarketplaceRemoveParams:
    marketplace_name: str


@by_value
@attrs.frozen(repr=False, eq=False)
class MarketplaceUpgradeParams:
    marketplace_name: str | None = None
