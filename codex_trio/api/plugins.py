"""The plugin family: `plugin/list`, `plugin/installed`, `plugin/read`, `plugin/install`,
`plugin/uninstall`, `marketplace/add`, `marketplace/remove`, `marketplace/upgrade`.

Marketplaces come from the user's home (`~/.agents/plugins/marketplace.json`), from
`[marketplaces.*]` in config.toml (a local directory used in place, or a git checkout under
CODEX_HOME) and from the request's `cwds` (the directory itself, else its repository root).
A marketplace that does not load is a `marketplaceLoadErrors` entry, never a failed call. With
`remote_plugin` on, the remote catalog (`codex_trio.plugins.remote`) is merged into
`plugin/list`; `remoteMarketplaceName` routes `plugin/read` / `plugin/install` to it.

Changes (installs, marketplace edits, upgrades) run one at a time on a lane; file work runs in
worker threads. See docs/plugins.md.
"""

from __future__ import annotations

import functools
import logging
import os
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import attrs
import trio

from codex_trio.config.effective import EffectiveConfig, load_config
from codex_trio.config.layers import user_config_path
from codex_trio.config.write import ConfigWriteError
from codex_trio.plugins import git, remote, store
from codex_trio.plugins.marketplace import (
    Marketplace,
    MarketplaceError,
    PluginEntry,
    discover,
    find_marketplace_file,
    hook_summaries,
    load_marketplace,
    manifest_interface,
    mcp_server_tables,
    plugin_id,
    read_manifest,
    scan_plugin_skills,
)
from codex_trio.protocol.catalog import PluginInstalledParams, PluginListParams
from codex_trio.protocol.errors import RpcError, internal_error, invalid_request
from codex_trio.protocol.plugins import (
    MarketplaceAddParams,
    MarketplaceRemoveParams,
    MarketplaceUpgradeParams,
    PluginInstallParams,
    PluginReadParams,
    PluginUninstallParams,
)
from codex_trio.records import by_value
from codex_trio.routing import RequestContext, Route, route
from codex_trio.services import Services

log = logging.getLogger(__name__)

#: worker threads for marketplace reads and installs.
PLUGIN_THREADS = 2
#: seconds a fetched remote catalog is reused (`forceRefetch` skips it).
REMOTE_CACHE_TTL = 300.0
#: where a remote catalog failure is reported in `marketplaceLoadErrors` (below CODEX_HOME).
REMOTE_CATALOG_LABEL = Path("plugins/remote-catalog")
#: which git revision each git marketplace was last upgraded to (below CODEX_HOME).
UPGRADE_STATE = store.GIT_MARKETPLACES_DIR / ".upgraded"
STAGING = store.GIT_MARKETPLACES_DIR / ".staging"
INVALID_SOURCE = (
    "invalid marketplace source format; expected owner/repo, a git URL, or a local marketplace path"
)


@by_value
@attrs.frozen(repr=False, eq=False)
class Listing:
    marketplaces: list[Marketplace]
    errors: list[dict[str, str]]


def _absolute(path: str) -> Path:
    if not os.path.isabs(path):
        raise invalid_request("Invalid request: AbsolutePathBuf deserialized without a base path")
    return Path(os.path.normpath(path))


def _home() -> Path | None:
    home = os.environ.get("HOME")
    return Path(home) if home else None


def local_listing(codex_home: Path, raw: dict[str, Any], cwds: Sequence[Path]) -> Listing:
    """Every marketplace in reach (configured first), deduplicated by name (blocking)."""
    roots = [m.root(codex_home) for m in store.configured_marketplaces(raw)] + list(cwds)
    marketplaces: list[Marketplace] = []
    errors: list[dict[str, str]] = []
    for path in discover(roots, _home()):
        try:
            marketplace = load_marketplace(path)
        except MarketplaceError as exc:
            errors.append({"marketplacePath": str(path), "message": str(exc)})
            continue
        if all(m.name != marketplace.name for m in marketplaces):
            marketplaces.append(marketplace)
    return Listing(marketplaces, errors)


def plugin_summary(
    codex_home: Path, raw: dict[str, Any], marketplace: Marketplace, entry: PluginEntry
) -> dict[str, Any]:
    """A local plugin's `PluginSummary` (blocking: reads its manifest and the cache)."""
    manifest = read_manifest(entry.source)
    pid = plugin_id(entry.name, marketplace.name)
    installed = store.installed_root(codex_home, marketplace.name, entry.name) is not None
    version = manifest.get("version") if manifest is not None else None
    keywords = manifest.get("keywords") if manifest is not None else None
    return {
        "id": pid,
        "remotePluginId": None,
        "version": None,
        "localVersion": version if isinstance(version, str) else None,
        "name": entry.name,
        "shareContext": None,
        "source": {"type": "local", "path": str(entry.source)},
        "installed": installed,
        "installedAt": None,
        "enabled": installed and store.enabled_plugin_ids(raw).get(pid, False),
        "installPolicy": entry.install_policy,
        "installPolicySource": None,
        "mustShowInstallationInterstitial": None,
        "authPolicy": entry.auth_policy,
        "availability": "AVAILABLE",
        "disabledReason": None,
        "eligiblePlanTypes": None,
        "interface": manifest_interface(manifest, entry.source, entry.category),
        "keywords": [k for k in keywords if isinstance(k, str)] if isinstance(keywords, list) else [],
    }


def marketplace_entry(marketplace: Marketplace, plugins: list[dict[str, Any]]) -> dict[str, Any]:
    interface = {"displayName": marketplace.display_name} if marketplace.display_name is not None else None
    return {
        "name": marketplace.name,
        "path": str(marketplace.path),
        "interface": interface,
        "plugins": plugins,
    }


def plugin_detail(
    codex_home: Path, raw: dict[str, Any], marketplace: Marketplace, name: str
) -> dict[str, Any]:
    """`PluginDetail` of a local plugin (blocking)."""
    entry = marketplace.plugin(name)
    manifest = read_manifest(entry.source)
    if manifest is None:
        raise MarketplaceError("missing or invalid plugin.json")
    pid = plugin_id(entry.name, marketplace.name)
    skills, _errors = scan_plugin_skills(entry.source, manifest, entry.name, pid)
    description = manifest.get("description")
    return {
        "marketplaceName": marketplace.name,
        "marketplacePath": str(marketplace.path),
        "summary": plugin_summary(codex_home, raw, marketplace, entry),
        "shareUrl": None,
        "description": description if isinstance(description, str) else None,
        "skills": [
            {k: s[k] for k in ("name", "description", "shortDescription", "interface", "path", "enabled")}
            for s in skills
        ],
        "onboardingSkill": None,
        "hooks": hook_summaries(entry.source, manifest, pid),
        "apps": [],
        "appTemplates": [],
        "mcpServers": sorted(mcp_server_tables(entry.source, manifest)),
        "scheduledTasks": None,
    }


def _remote_error(exc: remote.RemoteError, context: str) -> RpcError:
    message = f"{context}: {exc}"
    return invalid_request(message) if exc.auth or exc.client else internal_error(message)


class PluginsApi:
    """The plugin and marketplace family (see the module docstring)."""

    def __init__(self, services: Services) -> None:
        self._settings = services.settings
        self._limiter = trio.CapacityLimiter(PLUGIN_THREADS)
        self._lane = trio.Lock()
        self._remote_cache: dict[tuple[str, str, str], tuple[float, list[dict[str, Any]]]] = {}

    def routes(self) -> list[Route]:
        """The family's methods."""
        return [
            route("plugin/list", PluginListParams, self.plugin_list),
            route("plugin/installed", PluginInstalledParams, self.plugin_installed),
            route("plugin/read", PluginReadParams, self.plugin_read),
            route("plugin/install", PluginInstallParams, self.plugin_install),
            route("plugin/uninstall", PluginUninstallParams, self.plugin_uninstall),
            route("marketplace/add", MarketplaceAddParams, self.marketplace_add),
            route("marketplace/remove", MarketplaceRemoveParams, self.marketplace_remove),
            route("marketplace/upgrade", MarketplaceUpgradeParams, self.marketplace_upgrade),
        ]

    @property
    def _home(self) -> Path:
        return self._settings.codex_home

    async def _run(self, fn: Any, *args: Any) -> Any:
        """Blocking plugin work in a worker thread, its `MarketplaceError` as -32600."""
        try:
            return await trio.to_thread.run_sync(fn, *args, limiter=self._limiter)
        except MarketplaceError as exc:
            raise invalid_request(str(exc)) from None
        except ConfigWriteError as exc:
            raise internal_error(f"failed to persist plugin config: {exc.message}") from None

    async def _config(self) -> EffectiveConfig:
        return await trio.to_thread.run_sync(load_config, self._settings, limiter=self._limiter)

    def _cwds(self, cwds: list[str] | None) -> list[Path]:
        return [(self._settings.cwd / cwd).absolute() for cwd in cwds or []]

    # ------------------------------------------------------------------ listing
    async def plugin_list(self, ctx: RequestContext, params: PluginListParams) -> dict[str, Any]:
        """`plugin/list`: local marketplaces in reach, merged with the remote catalog."""
        config = await self._config()
        response: dict[str, Any] = {"marketplaces": [], "marketplaceLoadErrors": [], "featuredPluginIds": []}
        if not config.feature("plugins", True):
            return response
        explicit = params.marketplace_kinds is not None
        kinds = params.marketplace_kinds if params.marketplace_kinds is not None else ["local"]
        if "local" in kinds:
            listing, errors = await self._run(self._local_entries, config.raw, self._cwds(params.cwds), None)
            response["marketplaces"], response["marketplaceLoadErrors"] = listing, errors
        scopes = []
        if not explicit and config.feature("remote_plugin", True):
            scopes.append("GLOBAL")
        if "workspace-directory" in kinds:
            scopes.append("WORKSPACE")
        if scopes:
            try:
                remote_entries = await self._remote_marketplaces(config, scopes, params.force_refetch)
            except remote.RemoteError as exc:
                if explicit:
                    raise _remote_error(exc, "list remote plugin catalog") from None
                if not exc.auth:
                    log.warning("plugin/list: remote plugin catalog failed: %s", exc)
                    response["marketplaceLoadErrors"].append(
                        {"marketplacePath": str(self._home / REMOTE_CATALOG_LABEL), "message": str(exc)}
                    )
                remote_entries = []
            for entry in remote_entries:
                names = [m["name"] for m in response["marketplaces"]]
                if entry["name"] in names:
                    response["marketplaces"][names.index(entry["name"])] = entry
                else:
                    response["marketplaces"].append(entry)
        return response

    async def plugin_installed(self, ctx: RequestContext, params: PluginInstalledParams) -> dict[str, Any]:
        """`plugin/installed`: installed plugins (and the suggested ones) by marketplace."""
        config = await self._config()
        if not config.feature("plugins", True):
            return {"marketplaces": [], "marketplaceLoadErrors": []}
        suggested = set(params.install_suggestion_plugin_names or [])
        marketplaces, errors = await self._run(
            self._local_entries, config.raw, self._cwds(params.cwds), suggested
        )
        return {"marketplaces": marketplaces, "marketplaceLoadErrors": errors}

    def _local_entries(
        self, raw: dict[str, Any], cwds: list[Path], only_installed_or: set[str] | None
    ) -> tuple[list[dict[str, Any]], list[dict[str, str]]]:
        listing = local_listing(self._home, raw, cwds)
        entries = []
        for marketplace in listing.marketplaces:
            plugins = [plugin_summary(self._home, raw, marketplace, e) for e in marketplace.plugins]
            if only_installed_or is not None:
                plugins = [p for p in plugins if p["installed"] or p["name"] in only_installed_or]
                if not plugins:
                    continue
            entries.append(marketplace_entry(marketplace, plugins))
        return entries, listing.errors

    async def _remote_marketplaces(
        self, config: EffectiveConfig, scopes: list[str], force: bool
    ) -> list[dict[str, Any]]:
        auth = await trio.to_thread.run_sync(remote.remote_auth, self._home, limiter=self._limiter)
        entries: list[dict[str, Any]] = []
        missing = []
        now = trio.current_time()
        for scope in scopes:
            cached = self._remote_cache.get((config.chatgpt_base_url, auth.token, scope))
            if cached is not None and not force and now - cached[0] < REMOTE_CACHE_TTL:
                entries.extend(cached[1])
            else:
                missing.append(scope)
        if missing:
            async with remote.RemoteCatalog(config.chatgpt_base_url, auth) as catalog:
                for scope in missing:
                    fetched = await catalog.marketplaces([scope])
                    self._remote_cache[(config.chatgpt_base_url, auth.token, scope)] = (now, fetched)
                    entries.extend(fetched)
        return entries

    # ------------------------------------------------------------------ one plugin
    async def plugin_read(self, ctx: RequestContext, params: PluginReadParams) -> dict[str, Any]:
        """`plugin/read`: one plugin's details, from its marketplace file or the remote catalog."""
        if (params.marketplace_path is None) == (params.remote_marketplace_name is None):
            raise invalid_request(
                "plugin/read requires exactly one of marketplacePath or remoteMarketplaceName"
            )
        config = await self._config()
        if params.remote_marketplace_name is not None:
            detail = await self._remote_detail(
                config, params.remote_marketplace_name, params.plugin_name, "read"
            )
            return {
                "plugin": {
                    k: v for k, v in detail.items() if k not in ("bundleDownloadUrl", "releaseVersion")
                }
            }
        assert params.marketplace_path is not None
        path = _absolute(params.marketplace_path)
        marketplace = await self._run(load_marketplace, path)
        return {
            "plugin": await self._run(plugin_detail, self._home, config.raw, marketplace, params.plugin_name)
        }

    async def _remote_detail(
        self,
        config: EffectiveConfig,
        marketplace: str,
        plugin: str,
        action: str,
        *,
        download_urls: bool = False,
    ) -> dict[str, Any]:
        if not config.feature("plugins", True):
            raise invalid_request(f"remote plugin {action} is not enabled for marketplace {marketplace}")
        if not remote.is_remote_id(plugin):
            raise invalid_request(remote.INVALID_ID)
        context = "read remote plugin details" + (" before install" if action == "install" else "")
        try:
            auth = await trio.to_thread.run_sync(remote.remote_auth, self._home, limiter=self._limiter)
            async with remote.RemoteCatalog(config.chatgpt_base_url, auth) as catalog:
                return await catalog.detail(plugin, download_urls=download_urls)
        except remote.RemoteError as exc:
            raise _remote_error(exc, context) from None

    async def plugin_install(self, ctx: RequestContext, params: PluginInstallParams) -> dict[str, Any]:
        """`plugin/install`: copy into the cache and enable in config (or install remotely)."""
        if (params.marketplace_path is None) == (params.remote_marketplace_name is None):
            raise invalid_request(
                "plugin/install requires exactly one of marketplacePath or remoteMarketplaceName"
            )
        log.info("plugin/install %s (attempt %s)", params.plugin_name, params.install_attempt_id)
        config = await self._config()
        if params.remote_marketplace_name is not None:
            return await self._remote_install(config, params.remote_marketplace_name, params.plugin_name)
        assert params.marketplace_path is not None
        path = _absolute(params.marketplace_path)
        async with self._lane:
            marketplace = await self._run(load_marketplace, path)
            entry = await self._run(marketplace.plugin, params.plugin_name)
            if entry.install_policy == "NOT_AVAILABLE":
                raise invalid_request(
                    f"plugin `{entry.name}` is not available for install in marketplace `{marketplace.name}`"
                )
            await self._run(store.install, self._home, marketplace.name, entry)
            await self._run(
                store.set_plugin_enabled,
                user_config_path(self._settings),
                plugin_id(entry.name, marketplace.name),
            )
        return {"authPolicy": entry.auth_policy, "appsNeedingAuth": []}

    async def _remote_install(self, config: EffectiveConfig, marketplace: str, plugin: str) -> dict[str, Any]:
        detail = await self._remote_detail(config, marketplace, plugin, "install", download_urls=True)
        summary = detail["summary"]
        if summary["availability"] == "DISABLED_BY_ADMIN":
            raise invalid_request(f"remote plugin {plugin} is disabled by admin")
        if summary["installPolicy"] == "NOT_AVAILABLE":
            raise invalid_request(f"remote plugin {plugin} is not available for install")
        url = detail["bundleDownloadUrl"]
        async with self._lane:
            try:
                auth = await trio.to_thread.run_sync(remote.remote_auth, self._home, limiter=self._limiter)
            except remote.RemoteError as exc:
                raise _remote_error(exc, "install remote plugin") from None
            async with remote.RemoteCatalog(config.chatgpt_base_url, auth) as catalog:
                # The bundle first: the service is told only once the plugin is on disk.
                if isinstance(url, str) and url:
                    try:
                        bundle = await catalog.download(plugin, url)
                        await self._run(
                            store.replace_installed,
                            self._home,
                            detail["marketplaceName"],
                            summary["name"],
                            detail["releaseVersion"] or "remote",
                            functools.partial(remote.unpack_bundle, bundle),
                        )
                    except remote.RemoteError as exc:
                        raise _remote_error(exc, "install remote plugin bundle") from None
                try:
                    await catalog.set_installed(plugin, True)
                except remote.RemoteError as exc:
                    raise _remote_error(exc, "install remote plugin") from None
            self._remote_cache.clear()
        return {"authPolicy": summary["authPolicy"], "appsNeedingAuth": []}

    async def plugin_uninstall(self, ctx: RequestContext, params: PluginUninstallParams) -> dict[str, Any]:
        """`plugin/uninstall`: `<plugin>@<marketplace>` locally, a bare remote id remotely."""
        name, at, marketplace = params.plugin_id.partition("@")
        if not at:
            return await self._remote_uninstall(params.plugin_id)
        async with self._lane:
            await self._run(store.uninstall, self._home, marketplace, name)
            await self._run(store.forget_plugin, user_config_path(self._settings), params.plugin_id)
        return {}

    async def _remote_uninstall(self, plugin: str) -> dict[str, Any]:
        if not remote.is_remote_id(plugin):
            raise invalid_request(remote.INVALID_ID)
        config = await self._config()
        if not config.feature("plugins", True):
            raise invalid_request("remote plugin uninstall is not enabled")
        async with self._lane:
            try:
                auth = await trio.to_thread.run_sync(remote.remote_auth, self._home, limiter=self._limiter)
                async with remote.RemoteCatalog(config.chatgpt_base_url, auth) as catalog:
                    detail = await catalog.detail(plugin)
            except remote.RemoteError as exc:
                raise _remote_error(exc, "resolve remote plugin before uninstall") from None
            try:
                async with remote.RemoteCatalog(config.chatgpt_base_url, auth) as catalog:
                    await catalog.set_installed(plugin, False)
            except remote.RemoteError as exc:
                raise _remote_error(exc, "uninstall remote plugin") from None
            await self._run(store.uninstall, self._home, detail["marketplaceName"], detail["summary"]["name"])
            self._remote_cache.clear()
        return {}

    # ------------------------------------------------------------------ marketplaces
    async def marketplace_add(self, ctx: RequestContext, params: MarketplaceAddParams) -> dict[str, Any]:
        """`marketplace/add`: a local directory (used in place) or a git repository (cloned)."""
        source = params.source.strip()
        local = source.startswith(("/", ".", "~"))
        url = None if local else git.git_url(source)
        if url is None and not local:
            if not await trio.Path(self._settings.cwd / source).exists():
                raise invalid_request(INVALID_SOURCE)
            local = True
        async with self._lane:
            config = await self._config()
            configured = {m.name: m for m in store.configured_marketplaces(config.raw)}
            if local:
                return await self._add_local(source, configured)
            assert url is not None
            return await self._add_git(source, url, params, configured)

    async def _add_local(
        self, source: str, configured: dict[str, store.ConfiguredMarketplace]
    ) -> dict[str, Any]:
        root = await self._run(self._local_root, self._settings.cwd, source)
        marketplace = await self._run(self._marketplace_at, root)
        existing = configured.get(marketplace.name)
        if existing is not None:
            if existing.source_type == "local" and Path(existing.source) == root:
                return {"marketplaceName": marketplace.name, "installedRoot": str(root), "alreadyAdded": True}
            raise self._collision(marketplace.name)
        entry = store.ConfiguredMarketplace(marketplace.name, "local", str(root))
        await self._run(store.add_marketplace, user_config_path(self._settings), entry)
        return {"marketplaceName": marketplace.name, "installedRoot": str(root), "alreadyAdded": False}

    @staticmethod
    def _local_root(cwd: Path, source: str) -> Path:
        try:
            return Path(os.path.realpath(cwd / Path(source).expanduser(), strict=True))
        except OSError as exc:
            raise MarketplaceError(
                f"failed to resolve local marketplace source path: {exc.strerror} (os error {exc.errno})"
            ) from None

    @staticmethod
    def _marketplace_at(root: Path) -> Marketplace:
        path = find_marketplace_file(root)
        if path is None:
            raise MarketplaceError(
                f"invalid marketplace file `{root}`: marketplace root does not contain a supported manifest"
            )
        return load_marketplace(path)

    @staticmethod
    def _collision(name: str) -> RpcError:
        return invalid_request(
            f"marketplace '{name}' is already added from a different source; "
            "remove it before adding this source"
        )

    async def _add_git(
        self,
        source: str,
        url: str,
        params: MarketplaceAddParams,
        configured: dict[str, store.ConfiguredMarketplace],
    ) -> dict[str, Any]:
        sparse = tuple(params.sparse_paths or ())
        for existing in configured.values():
            if existing.source_type == "git" and existing.source == source:
                root = existing.root(self._home)
                if existing.ref == params.ref_name and existing.sparse_paths == sparse and root.is_dir():
                    return {
                        "marketplaceName": existing.name,
                        "installedRoot": str(root),
                        "alreadyAdded": True,
                    }
        staging: Path = await self._run(self._new_staging)
        try:
            checkout = staging / "checkout"
            try:
                await git.clone(url, checkout, params.ref_name, sparse)
            except git.GitError as exc:
                raise internal_error(str(exc)) from None
            marketplace = await self._run(self._marketplace_at, checkout)
            clash = configured.get(marketplace.name)
            if clash is not None and clash.source != source:
                raise self._collision(marketplace.name)
            dest = self._home / store.GIT_MARKETPLACES_DIR / marketplace.name
            await self._run(self._replace_dir, checkout, dest)
        finally:
            with trio.CancelScope(shield=True):
                await trio.to_thread.run_sync(shutil.rmtree, staging, True)
        entry = store.ConfiguredMarketplace(marketplace.name, "git", source, params.ref_name, sparse)
        await self._run(store.add_marketplace, user_config_path(self._settings), entry)
        await self._run(self._record_upgrade, marketplace.name, None)
        return {"marketplaceName": marketplace.name, "installedRoot": str(dest), "alreadyAdded": False}

    def _new_staging(self) -> Path:
        root = self._home / STAGING
        root.mkdir(parents=True, exist_ok=True)
        return Path(tempfile.mkdtemp(prefix="marketplace-", dir=root))

    @staticmethod
    def _replace_dir(src: Path, dest: Path) -> None:
        if dest.exists():
            shutil.rmtree(dest)
        dest.parent.mkdir(parents=True, exist_ok=True)
        src.rename(dest)

    async def marketplace_remove(
        self, ctx: RequestContext, params: MarketplaceRemoveParams
    ) -> dict[str, Any]:
        """`marketplace/remove`: forget it; a git checkout is deleted, a local source kept."""
        name = params.marketplace_name
        async with self._lane:
            config = await self._config()
            existing = {m.name: m for m in store.configured_marketplaces(config.raw)}.get(name)
            if existing is None:
                raise invalid_request(f"marketplace `{name}` is not configured or installed")
            await self._run(store.remove_marketplace, user_config_path(self._settings), name)
            if existing.source_type != "git":
                return {"marketplaceName": name, "installedRoot": None}
            root = existing.root(self._home)
            await self._run(shutil.rmtree, root, True)
            await self._run(self._record_upgrade, name, None)
        return {"marketplaceName": name, "installedRoot": str(root)}

    async def marketplace_upgrade(
        self, ctx: RequestContext, params: MarketplaceUpgradeParams
    ) -> dict[str, Any]:
        """`marketplace/upgrade`: fetch and fast-forward git marketplaces, reporting changes."""
        async with self._lane:
            config = await self._config()
            gits = [m for m in store.configured_marketplaces(config.raw) if m.source_type == "git"]
            if params.marketplace_name is not None:
                gits = [m for m in gits if m.name == params.marketplace_name]
                if not gits:
                    raise invalid_request(
                        f"marketplace `{params.marketplace_name}` is not configured as a Git marketplace"
                    )
            upgraded: list[str] = []
            errors: list[dict[str, str]] = []
            for marketplace in gits:
                root = marketplace.root(self._home)
                try:
                    if not root.is_dir():
                        raise git.GitError(
                            f"marketplace checkout `{root}` is missing; add the marketplace again"
                        )
                    _before, after = await git.fast_forward(root, marketplace.ref)
                except git.GitError as exc:
                    errors.append({"marketplaceName": marketplace.name, "message": str(exc)})
                    continue
                if await self._run(self._record_upgrade, marketplace.name, after):
                    upgraded.append(str(root))
        return {"selectedMarketplaces": [m.name for m in gits], "upgradedRoots": upgraded, "errors": errors}

    def _record_upgrade(self, name: str, revision: str | None) -> bool:
        """Remember the revision a marketplace was upgraded to; whether it changed (blocking)."""
        marker = self._home / UPGRADE_STATE / name
        previous = marker.read_text(encoding="utf-8").strip() if marker.is_file() else None
        if revision is None:
            marker.unlink(missing_ok=True)
            return False
        if previous == revision:
            return False
        marker.parent.mkdir(parents=True, exist_ok=True)
        tmp = marker.with_suffix(".tmp")
        tmp.write_text(revision, encoding="utf-8")
        tmp.replace(marker)
        return True
