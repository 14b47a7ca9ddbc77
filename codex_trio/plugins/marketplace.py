"""Marketplace and plugin files (blocking reads; the API runs them in worker threads).

A marketplace is a directory with `.agents/plugins/marketplace.json` (or
`.claude-plugin/marketplace.json`) naming plugins by relative path; a plugin is a directory with
`.codex-plugin/plugin.json` (or `.claude-plugin/plugin.json`) and the skills, MCP servers, apps
and hooks it brings. Messages are the reference's, so clients show the same text.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import attrs

from codex_trio.records import by_value
from codex_trio.skills import scan_skills

MARKETPLACE_FILES = (Path(".agents/plugins/marketplace.json"), Path(".claude-plugin/marketplace.json"))
MANIFEST_FILES = (Path(".codex-plugin/plugin.json"), Path(".claude-plugin/plugin.json"))
INSTALL_POLICIES = ("NOT_AVAILABLE", "AVAILABLE", "INSTALLED_BY_DEFAULT")
AUTH_POLICIES = ("ON_INSTALL", "ON_USE")
#: the reference's caps on a manifest's starter prompts.
MAX_DEFAULT_PROMPTS = 3
MAX_DEFAULT_PROMPT_LEN = 512
#: Claude-style hook event names -> the protocol's `HookEventName`.
HOOK_EVENTS = {
    "PreToolUse": "preToolUse",
    "PostToolUse": "postToolUse",
    "PermissionRequest": "permissionRequest",
    "PreCompact": "preCompact",
    "PostCompact": "postCompact",
    "SessionStart": "sessionStart",
    "SessionEnd": "sessionEnd",
    "UserPromptSubmit": "userPromptSubmit",
    "SubagentStart": "subagentStart",
    "SubagentStop": "subagentStop",
    "Stop": "stop",
}
INTERFACE_TEXT_FIELDS = (
    "displayName",
    "shortDescription",
    "longDescription",
    "developerName",
    "category",
    "websiteUrl",
    "privacyPolicyUrl",
    "termsOfServiceUrl",
)


_SEGMENT = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.~-]*$")


def safe_name(name: str) -> bool:
    """Whether a marketplace or plugin name can name a directory under CODEX_HOME (no `/`,
    no `..`, no leading dot)."""
    return bool(_SEGMENT.match(name)) and len(name) <= 200


class MarketplaceError(Exception):
    """A marketplace or plugin that cannot be used; the message is the client's text."""


@by_value
@attrs.frozen(repr=False, eq=False)
class PluginEntry:
    """One plugin a marketplace lists."""

    name: str
    #: the plugin's directory (absolute), resolved against the marketplace root.
    source: Path
    category: str | None
    install_policy: str
    auth_policy: str


@by_value
@attrs.frozen(repr=False, eq=False)
class Marketplace:
    name: str
    #: the marketplace file.
    path: Path
    display_name: str | None
    plugins: tuple[PluginEntry, ...]

    @property
    def root(self) -> Path:
        return marketplace_root(self.path)

    def plugin(self, name: str) -> PluginEntry:
        for entry in self.plugins:
            if entry.name == name:
                return entry
        raise MarketplaceError(f"plugin `{name}` was not found in marketplace `{self.name}`")


def plugin_id(plugin: str, marketplace: str) -> str:
    return f"{plugin}@{marketplace}"


def marketplace_root(path: Path) -> Path:
    """The directory a marketplace file belongs to (two levels above `plugins/marketplace.json`)."""
    return path.parent.parent if path.parent.name == ".claude-plugin" else path.parent.parent.parent


def find_marketplace_file(root: Path) -> Path | None:
    for rel in MARKETPLACE_FILES:
        candidate = root / rel
        if candidate.is_file():
            return candidate
    return None


def git_repo_root(path: Path) -> Path | None:
    for candidate in (path, *path.parents):
        if (candidate / ".git").exists():
            return candidate
    return None


def discover(roots: Iterable[Path], home: Path | None) -> list[Path]:
    """Marketplace files: the user's home one, then each root's own or its repository's."""
    found: list[Path] = []

    def add(path: Path | None) -> bool:
        if path is not None and path not in found:
            found.append(path)
            return True
        return path is not None

    if home is not None:
        add(find_marketplace_file(home))
    for root in roots:
        if add(find_marketplace_file(root)):
            continue
        repo = git_repo_root(root)
        if repo is not None:
            add(find_marketplace_file(repo))
    return found


def _json_error(exc: json.JSONDecodeError) -> str:
    return f"{exc.msg} at line {exc.lineno} column {exc.colno}"


def _read_json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


def load_marketplace(path: Path) -> Marketplace:
    """Parse a marketplace file; raises `MarketplaceError` with the reference's wording."""

    def invalid(detail: str) -> MarketplaceError:
        return MarketplaceError(f"invalid marketplace file `{path}`: {detail}")

    if not path.is_file():
        raise MarketplaceError(f"marketplace file `{path}` does not exist")
    try:
        data = _read_json(path)
    except json.JSONDecodeError as exc:
        raise invalid(_json_error(exc)) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise invalid(str(exc)) from None
    if not isinstance(data, dict):
        raise invalid("expected a JSON object")
    for field in ("name", "plugins"):
        if field not in data:
            raise invalid(f"missing field `{field}`")
    name, raw_plugins = data["name"], data["plugins"]
    if not isinstance(name, str) or not name or not isinstance(raw_plugins, list):
        raise invalid("`name` must be a non-empty string and `plugins` a list")
    if not safe_name(name):
        raise invalid(f"invalid marketplace name `{name}`")
    root = marketplace_root(path)
    interface = data.get("interface")
    display = interface.get("displayName") if isinstance(interface, dict) else None
    plugins = []
    for raw in raw_plugins:
        entry = _plugin_entry(raw, root)
        if entry is not None:
            plugins.append(entry)
    return Marketplace(name, path, display if isinstance(display, str) else None, tuple(plugins))


def _plugin_entry(raw: Any, root: Path) -> PluginEntry | None:
    """One `plugins[]` entry, or None for one the reference skips (no `./` path, remote forms)."""
    if not isinstance(raw, dict) or not isinstance(raw.get("name"), str) or not safe_name(raw["name"]):
        return None
    source = raw.get("source")
    rel = None
    if isinstance(source, str):
        rel = source
    elif isinstance(source, dict) and source.get("source") == "local" and isinstance(source.get("path"), str):
        rel = source["path"]
    if rel is None or not rel.strip().startswith("./"):
        return None
    policy: dict[str, Any] = raw["policy"] if isinstance(raw.get("policy"), dict) else {}
    install = policy.get("installation")
    auth = policy.get("authentication")
    category = raw.get("category")
    return PluginEntry(
        name=raw["name"],
        source=Path(os.path.normpath(root / rel.strip()[2:])),
        category=category if isinstance(category, str) else None,
        install_policy=install if install in INSTALL_POLICIES else "AVAILABLE",
        auth_policy=auth if auth in AUTH_POLICIES else "ON_INSTALL",
    )


# ---------------------------------------------------------------------------- plugin directories
def read_manifest(plugin_root: Path) -> dict[str, Any] | None:
    """The plugin's manifest, or None when it is missing or not a JSON object."""
    for rel in MANIFEST_FILES:
        path = plugin_root / rel
        if path.is_file():
            try:
                data = _read_json(path)
            except (OSError, ValueError):
                return None
            return data if isinstance(data, dict) else None
    return None


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _inside(plugin_root: Path, rel: Any) -> Path | None:
    """A manifest path (`./x`) inside the plugin; None for anything else."""
    if not isinstance(rel, str) or not rel.strip():
        return None
    path = Path(os.path.normpath(plugin_root / rel.strip()))
    return path if path == plugin_root or plugin_root in path.parents else None


def manifest_interface(manifest: Mapping[str, Any] | None, plugin_root: Path, category: str | None) -> Any:
    """`PluginInterface` from the manifest; the marketplace's category wins."""
    raw: Any = manifest.get("interface") if manifest is not None else None
    if not isinstance(raw, dict):
        if category is None:
            return None
        raw = {}
    interface: dict[str, Any] = {field: _text(raw.get(field)) for field in INTERFACE_TEXT_FIELDS}
    if category is not None:
        interface["category"] = category
    capabilities = raw.get("capabilities")
    prompts = raw.get("defaultPrompt")
    if isinstance(prompts, str):
        prompts = [prompts]
    default_prompt = None
    if isinstance(prompts, list):
        kept = [p for p in prompts if isinstance(p, str) and 0 < len(p) <= MAX_DEFAULT_PROMPT_LEN]
        default_prompt = kept[:MAX_DEFAULT_PROMPTS] or None

    def local(key: str) -> str | None:
        path = _inside(plugin_root, raw.get(key))
        return str(path) if path is not None else None

    screenshots = raw.get("screenshots")
    return {
        "displayName": interface["displayName"],
        "shortDescription": interface["shortDescription"],
        "longDescription": interface["longDescription"],
        "developerName": interface["developerName"],
        "category": interface["category"],
        "capabilities": [c for c in capabilities if isinstance(c, str)]
        if isinstance(capabilities, list)
        else [],
        "websiteUrl": interface["websiteUrl"],
        "privacyPolicyUrl": interface["privacyPolicyUrl"],
        "termsOfServiceUrl": interface["termsOfServiceUrl"],
        "defaultPrompt": default_prompt,
        "brandColor": _text(raw.get("brandColor")),
        "composerIcon": local("composerIcon"),
        "composerIconUrl": None,
        "logo": local("logo"),
        "logoDark": local("logoDark"),
        "logoUrl": None,
        "logoUrlDark": None,
        "screenshots": [str(p) for p in (_inside(plugin_root, s) for s in screenshots) if p is not None]
        if isinstance(screenshots, list)
        else [],
        "screenshotUrls": [],
    }


def skill_roots(plugin_root: Path, manifest: Mapping[str, Any]) -> list[Path]:
    """Where the plugin's SKILL.md files live (`skills`, default `./skills/`)."""
    declared = manifest.get("skills", "./skills/")
    paths = declared if isinstance(declared, list) else [declared]
    return [p for p in (_inside(plugin_root, rel) for rel in paths) if p is not None and p.is_dir()]


def mcp_server_tables(plugin_root: Path, manifest: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """The plugin's MCP servers as `[mcp_servers.*]` tables; a relative `cwd` (default: the
    plugin directory) is resolved so the server runs inside the plugin."""
    declared = manifest.get("mcpServers", "./.mcp.json")
    if isinstance(declared, str):
        path = _inside(plugin_root, declared)
        if path is None or not path.is_file():
            return {}
        try:
            declared = _read_json(path)
        except (OSError, ValueError):
            return {}
    if isinstance(declared, dict) and isinstance(declared.get("mcpServers"), dict):
        declared = declared["mcpServers"]
    if not isinstance(declared, dict):
        return {}
    tables: dict[str, dict[str, Any]] = {}
    for name, entry in declared.items():
        if not isinstance(entry, dict):
            continue
        table = {k: v for k, v in entry.items() if k != "type"}
        cwd = table.get("cwd")
        table["cwd"] = str(plugin_root / cwd) if isinstance(cwd, str) else str(plugin_root)
        tables[str(name)] = table
    return tables


def hook_summaries(plugin_root: Path, manifest: Mapping[str, Any], plugin_id: str) -> list[dict[str, str]]:
    """`PluginHookSummary` entries, one per handler, keyed as the reference keys them:
    `<plugin id>:<file>:<event_in_snake_case>:<group>:<handler>`."""
    declared = manifest.get("hooks", "./hooks/hooks.json")
    source = ".codex-plugin/plugin.json"
    if isinstance(declared, str):
        path = _inside(plugin_root, declared)
        if path is None or not path.is_file():
            return []
        source = path.relative_to(plugin_root).as_posix()
        try:
            declared = _read_json(path)
        except (OSError, ValueError):
            return []
    if isinstance(declared, dict) and isinstance(declared.get("hooks"), dict):
        declared = declared["hooks"]
    if not isinstance(declared, dict):
        return []
    hooks = []
    for event, groups in declared.items():
        name = HOOK_EVENTS.get(event)
        if name is None or not isinstance(groups, list):
            continue
        snake = re.sub(r"(?<!^)(?=[A-Z])", "_", event).lower()
        for group_index, group in enumerate(groups):
            handlers = group.get("hooks") if isinstance(group, dict) else None
            for handler_index in range(len(handlers) if isinstance(handlers, list) else 0):
                key = f"{plugin_id}:{source}:{snake}:{group_index}:{handler_index}"
                hooks.append({"key": key, "eventName": name})
    return hooks


def scan_plugin_skills(
    plugin_root: Path, manifest: Mapping[str, Any], plugin: str, plugin_id: str
) -> tuple[list[dict[str, Any]], list[dict[str, str]]]:
    """A plugin's skills (blocking): named `<plugin>:<skill>`, user scope, tagged with its id."""
    skills: list[dict[str, Any]] = []
    errors: list[dict[str, str]] = []
    for root in skill_roots(plugin_root, manifest):
        found, failed = scan_skills(root, "user")
        skills += [
            {**s, "name": f"{plugin}:{s['name']}", "scope": "user", "pluginId": plugin_id} for s in found
        ]
        errors += failed
    return skills, errors
