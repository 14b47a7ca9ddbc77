"""The remote plugin catalog (`remote_plugin`): ChatGPT's plugin service at `chatgpt_base_url`.

Endpoints are the reference's: `GET ps/plugins/list?scope=GLOBAL|WORKSPACE` and
`GET ps/plugins/installed?scope=…` (paged by `pagination.next_page_token`),
`GET ps/plugins/<id>`, `POST ps/plugins/<id>/install`, `POST ps/plugins/<id>/uninstall`, all with
the ChatGPT token of `auth.json`. Every request has a deadline (`REMOTE_TIMEOUT`, connecting
within `CONNECT_TIMEOUT`), so an unreachable service is an error, never a hang.
"""

from __future__ import annotations

import io
import re
import tarfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import attrs
import httpx
import trio

from codex_trio.config.auth import read_auth
from codex_trio.records import by_value

REMOTE_TIMEOUT = 30.0
CONNECT_TIMEOUT = 5.0
PAGE_LIMIT = 200
#: pages followed at most per listing (a service that pages forever is an error).
MAX_PAGES = 50
#: bytes of a plugin bundle downloaded at most.
MAX_BUNDLE_BYTES = 64 * 1024 * 1024
MAX_DEFAULT_PROMPT_LEN = 128

SCOPES = {
    "GLOBAL": ("openai-curated-remote", "OpenAI Curated Remote"),
    "WORKSPACE": ("workspace-directory", "Workspace Directory"),
}
MARKETPLACE_SCOPES = {name: scope for scope, (name, _) in SCOPES.items()}
AUTH_REQUIRED = "chatgpt authentication required for remote plugin catalog"
INVALID_ID = "invalid remote plugin id: only ASCII letters, digits, `_`, `-`, and `~` are allowed"
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")

_REMOTE_ID = re.compile(r"^[A-Za-z0-9_~-]+$")


class RemoteError(Exception):
    """A failed catalog call; `auth` marks a missing ChatGPT login, `client` a 4xx answer."""

    def __init__(self, message: str, *, auth: bool = False, client: bool = False) -> None:
        super().__init__(message)
        self.auth = auth
        self.client = client


def is_remote_id(plugin_id: str) -> bool:
    return bool(_REMOTE_ID.match(plugin_id))


@by_value
@attrs.frozen(repr=False, eq=False)
class RemoteAuth:
    token: str
    account_id: str | None


def remote_auth(codex_home: Path) -> RemoteAuth:
    """The ChatGPT login the catalog needs (blocking read of auth.json)."""
    stored = read_auth(codex_home)
    if stored is None or stored.mode != "chatgpt" or not stored.access_token:
        raise RemoteError(AUTH_REQUIRED, auth=True)
    return RemoteAuth(stored.access_token, stored.identity.account_id)


class RemoteCatalog:
    """One client of the plugin service, opened per request (`async with`)."""

    def __init__(self, base_url: str, auth: RemoteAuth) -> None:
        self.base_url = base_url.rstrip("/")
        headers = {"Authorization": f"Bearer {auth.token}", "User-Agent": "codex-trio"}
        if auth.account_id:
            headers["chatgpt-account-id"] = auth.account_id
        self._http = httpx.AsyncClient(
            headers=headers, timeout=httpx.Timeout(REMOTE_TIMEOUT, connect=CONNECT_TIMEOUT)
        )

    async def __aenter__(self) -> RemoteCatalog:
        return self

    async def __aexit__(self, *exc: object) -> None:
        with trio.CancelScope(shield=True), trio.move_on_after(2):
            await self._http.aclose()

    async def _call(self, method: str, path: str, params: Mapping[str, Any] | None = None) -> Any:
        url = f"{self.base_url}/{path}"
        try:
            with trio.fail_after(REMOTE_TIMEOUT):
                response = await self._http.request(method, url, params=params)
        except (httpx.HTTPError, trio.TooSlowError) as exc:
            detail = str(exc) or type(exc).__name__
            raise RemoteError(f"failed to send remote plugin catalog request to {url}: {detail}") from None
        if not response.is_success:
            raise RemoteError(
                f"remote plugin catalog request to {url} failed with status {response.status_code}: "
                f"{response.text[:2000]}",
                client=400 <= response.status_code < 500,
            )
        try:
            return response.json()
        except ValueError as exc:
            raise RemoteError(f"failed to parse remote plugin catalog response from {url}: {exc}") from None

    async def _pages(self, path: str, scope: str) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []
        token = None
        for _ in range(MAX_PAGES):
            params: dict[str, Any] = {"scope": scope}
            params["limit"] = PAGE_LIMIT
            if token is not None:
                params["pageToken"] = token
            body = await self._call("GET", path, params)
            plugins = body.get("plugins") if isinstance(body, dict) else None
            if not isinstance(plugins, list):
                raise RemoteError(f"failed to parse remote plugin catalog response from {path}: no plugins")
            items.extend(p for p in plugins if _valid_item(p))
            pagination = body.get("pagination")
            token = pagination.get("next_page_token") if isinstance(pagination, dict) else None
            if not token:
                return items
        raise RemoteError(f"remote plugin catalog {path} returned more than {MAX_PAGES} pages")

    async def marketplaces(self, scopes: list[str]) -> list[dict[str, Any]]:
        """`PluginMarketplaceEntry`s of the given scopes (directory plus installed state)."""
        entries = []
        for scope in scopes:
            directory = await self._pages("ps/plugins/list", scope)
            installed = {p["id"]: p for p in await self._pages("ps/plugins/installed", scope)}
            by_id = {p["id"]: p for p in directory}
            for pid, item in installed.items():
                by_id.setdefault(pid, item)
            if not by_id:
                continue
            name, display = SCOPES[scope]
            plugins = [summary(item, installed.get(pid), name) for pid, item in by_id.items()]
            plugins.sort(key=lambda p: (_display(p).lower(), _display(p), p["id"]))
            entries.append(
                {"name": name, "path": None, "interface": {"displayName": display}, "plugins": plugins}
            )
        return entries

    async def detail(self, plugin_id: str, *, download_urls: bool = False) -> dict[str, Any]:
        """`PluginDetail` of a remote plugin, plus its `bundleDownloadUrl` when asked."""
        params = {"includeDownloadUrls": "true"} if download_urls else None
        item = await self._call("GET", f"ps/plugins/{plugin_id}", params)
        if not _valid_item(item):
            raise RemoteError(f"failed to parse remote plugin catalog response for {plugin_id}")
        scope = item.get("scope") if item.get("scope") in SCOPES else "GLOBAL"
        installed = next(
            (p for p in await self._pages("ps/plugins/installed", scope) if p["id"] == plugin_id), None
        )
        release = item["release"]
        disabled = set(installed.get("disabled_skill_names") or []) if installed else set()
        skills = [
            {
                "name": s["name"],
                "description": s.get("description", ""),
                "shortDescription": (s.get("interface") or {}).get("short_description"),
                "interface": _skill_interface(s.get("interface")),
                "path": None,
                "enabled": s["name"] not in disabled,
            }
            for s in release.get("skills") or []
            if isinstance(s, dict) and isinstance(s.get("name"), str)
        ]
        description = release.get("description")
        return {
            "marketplaceName": SCOPES[scope][0],
            "marketplacePath": None,
            "summary": summary(item, installed, SCOPES[scope][0]),
            "shareUrl": None,
            "description": description.strip() or None if isinstance(description, str) else None,
            "skills": skills,
            "onboardingSkill": None,
            "hooks": [],
            "apps": [],
            "appTemplates": [],
            "mcpServers": [],
            "scheduledTasks": None,
            "bundleDownloadUrl": release.get("bundle_download_url"),
            "releaseVersion": release.get("version"),
        }

    async def set_installed(self, plugin_id: str, installed: bool) -> None:
        path = f"ps/plugins/{plugin_id}/{'install' if installed else 'uninstall'}"
        body = await self._call("POST", path)
        if not isinstance(body, dict) or body.get("id") != plugin_id:
            actual = body.get("id") if isinstance(body, dict) else None
            raise RemoteError(
                "remote plugin mutation returned unexpected plugin id: "
                f"expected `{plugin_id}`, got `{actual}`"
            )
        if body.get("enabled") is not installed:
            raise RemoteError(
                f"remote plugin mutation returned unexpected enabled state for `{plugin_id}`: "
                f"expected {str(installed).lower()}, got {str(body.get('enabled')).lower()}"
            )

    async def download(self, plugin_id: str, url: str) -> bytes:
        """The release bundle: https only (plain http to this machine's loopback, for tests)."""
        parts = httpx.URL(url)
        if parts.scheme != "https" and not (parts.scheme == "http" and parts.host in LOOPBACK_HOSTS):
            raise RemoteError(
                f"backend returned an unsupported download URL scheme for remote plugin `{plugin_id}`: "
                f"{parts.scheme}"
            )
        try:
            with trio.fail_after(REMOTE_TIMEOUT):
                async with self._http.stream("GET", url) as response:
                    if not response.is_success:
                        raise RemoteError(
                            f"plugin bundle download from {url} failed with status {response.status_code}"
                        )
                    data = bytearray()
                    async for chunk in response.aiter_bytes():
                        data += chunk
                        if len(data) > MAX_BUNDLE_BYTES:
                            raise RemoteError(f"plugin bundle at {url} exceeds {MAX_BUNDLE_BYTES} bytes")
                    return bytes(data)
        except (httpx.HTTPError, trio.TooSlowError) as exc:
            raise RemoteError(
                f"failed to download plugin bundle from {url}: {exc or type(exc).__name__}"
            ) from None


def unpack_bundle(data: bytes, dest: Path) -> None:
    """Extract a `.tar.gz` bundle into `dest` (blocking; the `data` filter refuses escapes)."""
    dest.mkdir(parents=True, exist_ok=True)
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:*") as archive:
            archive.extractall(dest, filter="data")
    except (tarfile.TarError, OSError) as exc:
        raise RemoteError(f"failed to unpack plugin bundle: {exc}") from None


def _valid_item(item: Any) -> bool:
    return (
        isinstance(item, dict)
        and isinstance(item.get("id"), str)
        and isinstance(item.get("name"), str)
        and isinstance(item.get("release"), dict)
    )


def _display(plugin: dict[str, Any]) -> str:
    interface = plugin.get("interface") or {}
    return str(interface.get("displayName") or plugin["name"])


def summary(item: dict[str, Any], installed: dict[str, Any] | None, marketplace: str) -> dict[str, Any]:
    """A `PluginSummary` of a catalog item (`installed` is its installed-list entry, if any):
    `<name>@<marketplace>`, with the service's id as `remotePluginId`."""
    release = item["release"]
    install_policy = item.get("installation_policy")
    auth_policy = item.get("authentication_policy")
    return {
        "id": f"{item['name']}@{marketplace}",
        "remotePluginId": item["id"],
        "version": release.get("version"),
        "localVersion": None,
        "name": item["name"],
        "shareContext": None,
        "source": {"type": "remote"},
        "installed": installed is not None,
        "installedAt": None,
        "enabled": bool(installed and installed.get("enabled")),
        "installPolicy": install_policy
        if install_policy in ("NOT_AVAILABLE", "AVAILABLE", "INSTALLED_BY_DEFAULT")
        else "AVAILABLE",
        "installPolicySource": None,
        "mustShowInstallationInterstitial": None,
        "authPolicy": auth_policy if auth_policy in ("ON_INSTALL", "ON_USE") else "ON_INSTALL",
        "availability": "DISABLED_BY_ADMIN" if item.get("status") == "DISABLED_BY_ADMIN" else "AVAILABLE",
        "disabledReason": None,
        "eligiblePlanTypes": None,
        "interface": _interface(release),
        "keywords": [],
    }


def _interface(release: dict[str, Any]) -> dict[str, Any] | None:
    raw: dict[str, Any] = release["interface"] if isinstance(release.get("interface"), dict) else {}
    display = release.get("display_name")
    prompt = raw.get("default_prompt")
    prompt = prompt.strip() if isinstance(prompt, str) else ""
    interface = {
        "displayName": display.strip() or None if isinstance(display, str) else None,
        "shortDescription": raw.get("short_description"),
        "longDescription": raw.get("long_description"),
        "developerName": raw.get("developer_name"),
        "category": raw.get("category"),
        "capabilities": list(raw.get("capabilities") or []),
        "websiteUrl": raw.get("website_url"),
        "privacyPolicyUrl": raw.get("privacy_policy_url"),
        "termsOfServiceUrl": raw.get("terms_of_service_url"),
        "defaultPrompt": [prompt] if prompt and len(prompt) <= MAX_DEFAULT_PROMPT_LEN else None,
        "brandColor": raw.get("brand_color"),
        "composerIcon": None,
        "composerIconUrl": raw.get("composer_icon_url"),
        "logo": None,
        "logoDark": None,
        "logoUrl": raw.get("logo_url"),
        "logoUrlDark": raw.get("logo_url_dark"),
        "screenshots": [],
        "screenshotUrls": list(raw.get("screenshot_urls") or []),
    }
    has_fields = any(v for k, v in interface.items() if k not in ("screenshots",))
    return interface if has_fields else None


def _skill_interface(raw: Any) -> dict[str, Any] | None:
    if not isinstance(raw, dict):
        return None
    interface = {
        "displayName": raw.get("display_name"),
        "shortDescription": raw.get("short_description"),
        "iconSmall": None,
        "iconLarge": None,
        "iconSmallUrl": raw.get("icon_small_url"),
        "iconLargeUrl": raw.get("icon_large_url"),
        "brandColor": raw.get("brand_color"),
        "defaultPrompt": raw.get("default_prompt"),
    }
    return interface if any(interface.values()) else None
