"""What is installed: the plugin cache under CODEX_HOME and the config entries that go with it.

`plugin/install` copies a plugin to `plugins/cache/<marketplace>/<plugin>/<version|local>` and
writes `[plugins."<plugin>@<marketplace>"] enabled = true`; `marketplace/add` writes
`[marketplaces.<name>]`. Config edits go through `codex_trio.config.write` (tomlkit: the user's
comments and layout survive). Everything here is blocking; the API runs it in worker threads.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import attrs

from codex_trio.config.write import Edit, apply_edits
from codex_trio.plugins.marketplace import (
    MarketplaceError,
    PluginEntry,
    mcp_server_tables,
    read_manifest,
    safe_name,
    scan_plugin_skills,
)
from codex_trio.records import by_value

CACHE_DIR = Path("plugins/cache")
#: where git marketplaces are checked out, below CODEX_HOME (the reference's location).
GIT_MARKETPLACES_DIR = Path(".tmp/marketplaces")
#: the version directory of a plugin whose manifest names none.
UNVERSIONED = "local"


@by_value
@attrs.frozen(repr=False, eq=False)
class ConfiguredMarketplace:
    """A `[marketplaces.<name>]` entry."""

    name: str
    source_type: str
    source: str
    ref: str | None = None
    sparse_paths: tuple[str, ...] = ()

    def root(self, codex_home: Path) -> Path:
        if self.source_type == "git":
            return codex_home / GIT_MARKETPLACES_DIR / self.name
        return Path(self.source)


@by_value
@attrs.frozen(repr=False, eq=False)
class InstalledPlugin:
    id: str
    name: str
    marketplace: str
    root: Path
    manifest: Mapping[str, Any]


def plugin_dir(codex_home: Path, marketplace: str, plugin: str) -> Path:
    return codex_home / CACHE_DIR / marketplace / plugin


def installed_root(codex_home: Path, marketplace: str, plugin: str) -> Path | None:
    """The installed copy's directory (one version is kept), or None."""
    base = plugin_dir(codex_home, marketplace, plugin)
    if not base.is_dir():
        return None
    versions = sorted(p for p in base.iterdir() if p.is_dir() and not p.name.startswith("."))
    return versions[-1] if versions else None


def install(codex_home: Path, marketplace: str, entry: PluginEntry) -> tuple[Path, Mapping[str, Any]]:
    """Copy the plugin into the cache (staged, then renamed into place); other versions go."""
    manifest = read_manifest(entry.source)
    if manifest is None:
        raise MarketplaceError("missing plugin.json")
    version = manifest.get("version")

    def fill(dest: Path) -> None:
        shutil.copytree(entry.source, dest, symlinks=True, ignore=shutil.ignore_patterns(".git"))

    root = replace_installed(codex_home, marketplace, entry.name, version, fill)
    return root, manifest


def replace_installed(
    codex_home: Path, marketplace: str, plugin: str, version: Any, fill: Callable[[Path], None]
) -> Path:
    """Make `fill`'s directory the plugin's one installed copy: filled in a staging directory
    next to it, then renamed into place, so a failed fill leaves the previous copy alone."""
    if not safe_name(marketplace) or not safe_name(plugin):
        raise MarketplaceError(f"invalid plugin id `{plugin}@{marketplace}`")
    version_dir = version if isinstance(version, str) and safe_name(version) else UNVERSIONED
    base = plugin_dir(codex_home, marketplace, plugin)
    base.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=base))
    try:
        fill(staging / "copy")
        for old in base.iterdir():
            if old != staging:
                _remove(old)
        (staging / "copy").rename(base / version_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return base / version_dir


def uninstall(codex_home: Path, marketplace: str, plugin: str) -> None:
    if not safe_name(marketplace) or not safe_name(plugin):
        raise MarketplaceError(f"invalid plugin id `{plugin}@{marketplace}`")
    _remove(plugin_dir(codex_home, marketplace, plugin))


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


# ---------------------------------------------------------------------------- config
def _key(*parts: str) -> str:
    return ".".join('"' + part.replace('"', "") + '"' for part in parts)


def set_plugin_enabled(config_file: Path, plugin_id: str) -> None:
    apply_edits(config_file, [Edit(_key("plugins", plugin_id), {"enabled": True})], None)


def forget_plugin(config_file: Path, plugin_id: str) -> None:
    apply_edits(config_file, [Edit(_key("plugins", plugin_id), None)], None)


def add_marketplace(config_file: Path, marketplace: ConfiguredMarketplace) -> None:
    table: dict[str, Any] = {"source_type": marketplace.source_type, "source": marketplace.source}
    if marketplace.ref is not None:
        table["ref"] = marketplace.ref
    if marketplace.sparse_paths:
        table["sparse_paths"] = list(marketplace.sparse_paths)
    apply_edits(config_file, [Edit(_key("marketplaces", marketplace.name), table)], None)


def remove_marketplace(config_file: Path, name: str) -> None:
    apply_edits(config_file, [Edit(_key("marketplaces", name), None)], None)


def configured_marketplaces(raw: Mapping[str, Any]) -> list[ConfiguredMarketplace]:
    table = raw.get("marketplaces")
    if not isinstance(table, Mapping):
        return []
    found = []
    for name, entry in table.items():
        if not isinstance(entry, Mapping) or not safe_name(str(name)):
            continue
        source_type, source = entry.get("source_type"), entry.get("source")
        if source_type not in ("local", "git") or not isinstance(source, str):
            continue
        ref = entry.get("ref")
        sparse = entry.get("sparse_paths")
        found.append(
            ConfiguredMarketplace(
                str(name),
                source_type,
                source,
                ref if isinstance(ref, str) else None,
                tuple(p for p in sparse if isinstance(p, str)) if isinstance(sparse, list) else (),
            )
        )
    return found


def enabled_plugin_ids(raw: Mapping[str, Any]) -> dict[str, bool]:
    """`[plugins."<id>"]` entries: id -> enabled (an entry without `enabled` counts as on)."""
    table = raw.get("plugins")
    if not isinstance(table, Mapping):
        return {}
    return {
        str(key): bool(entry.get("enabled", True))
        for key, entry in table.items()
        if isinstance(entry, Mapping) and "@" in str(key)
    }


def plugins_enabled(raw: Mapping[str, Any]) -> bool:
    features = raw.get("features")
    value = features.get("plugins", True) if isinstance(features, Mapping) else True
    return value is not False


def installed_plugins(codex_home: Path, raw: Mapping[str, Any]) -> list[InstalledPlugin]:
    """Enabled plugins with an installed copy (what skills/list and new threads use)."""
    if not plugins_enabled(raw):
        return []
    found = []
    for pid, enabled in sorted(enabled_plugin_ids(raw).items()):
        name, _, marketplace = pid.partition("@")
        if not enabled or not safe_name(name) or not safe_name(marketplace):
            continue
        root = installed_root(codex_home, marketplace, name)
        manifest = read_manifest(root) if root is not None else None
        if root is not None and manifest is not None:
            found.append(InstalledPlugin(pid, name, marketplace, root, manifest))
    return found


def plugin_mcp_servers(codex_home: Path, raw: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """The MCP server tables installed plugins bring (a configured server of the same name wins)."""
    servers: dict[str, dict[str, Any]] = {}
    for plugin in installed_plugins(codex_home, raw):
        for name, table in mcp_server_tables(plugin.root, plugin.manifest).items():
            servers.setdefault(name, table)
    return servers


def installed_plugin_skills(
    codex_home: Path, raw: Mapping[str, Any]
) -> tuple[list[dict[str, Any]], list[dict[str, str]]]:
    """The skills of every enabled, installed plugin (blocking)."""
    skills: list[dict[str, Any]] = []
    errors: list[dict[str, str]] = []
    for plugin in installed_plugins(codex_home, raw):
        found, failed = scan_plugin_skills(plugin.root, plugin.manifest, plugin.name, plugin.id)
        skills += found
        errors += failed
    return skills, errors
