"""The typed view of the merged config that the rest of the server reads.

`load_config(settings, cwd)` reads the layer stack (see `layers`), merges it and returns an
`EffectiveConfig`: the handful of values the server acts on, typed and with the reference's
defaults, plus `raw` (the merged table) for anything else. `validate_config` checks values the
way the reference's config schema does, with its error wording; writes use it.

Blocking: `load_config` reads files. Call it synchronously at start-up only; from a request
handler use `await trio.to_thread.run_sync(load_config, settings, cwd)`.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs

from codex_trio.config.defaults import CONFIG_DEFAULTS, FEATURE_DEFAULTS, PROVIDER_DEFAULTS, known_features
from codex_trio.config.layers import (
    LayerPaths,
    LayerStack,
    NoopThreadConfigLoader,
    deep_merge,
    load_layer_stack,
    request_layer,
)
from codex_trio.config.models import DEFAULT_MODEL
from codex_trio.config.sources import ConfigLayer, Table, ThreadConfigLoader
from codex_trio.protocol.converter import describe, expected_variants
from codex_trio.records import by_value
from codex_trio.settings import ServerSettings

DEFAULT_PROVIDER_ID = "openai"
DEFAULT_OPENAI_BASE_URL = "https://api.openai.com/v1"
DEFAULT_CHATGPT_BASE_URL = "https://chatgpt.com/backend-api/"
DEFAULT_APPROVAL_POLICY = "on-request"
DEFAULT_SANDBOX_MODE = "read-only"
#: The reference's provider retry defaults and the cap it applies to configured values.
DEFAULT_REQUEST_MAX_RETRIES = 4
DEFAULT_STREAM_MAX_RETRIES = 5
DEFAULT_STREAM_IDLE_TIMEOUT_MS = 300_000
MAX_RETRIES_CAP = 100


@by_value
@attrs.frozen(repr=False, eq=False)
class ProviderConfig:
    """One `[model_providers.<id>]` entry with defaults applied."""

    id: str
    name: str
    base_url: str | None = None
    env_key: str | None = None
    env_key_instructions: str | None = None
    experimental_bearer_token: str | None = None
    wire_api: str = "responses"
    query_params: dict[str, str] | None = None
    http_headers: dict[str, str] | None = None
    env_http_headers: dict[str, str] | None = None
    request_max_retries: int = DEFAULT_REQUEST_MAX_RETRIES
    stream_max_retries: int = DEFAULT_STREAM_MAX_RETRIES
    stream_idle_timeout_ms: int = DEFAULT_STREAM_IDLE_TIMEOUT_MS
    requires_openai_auth: bool = False
    supports_websockets: bool = False
    #: the entry as configured (what `config/read` shows under `model_providers`).
    raw: Table = attrs.Factory(dict)

    def api_key(self, environ: Mapping[str, str] | None = None) -> str | None:
        """The key from `env_key` (or the bearer token in config); None when unset."""
        env = os.environ if environ is None else environ
        if self.experimental_bearer_token:
            return self.experimental_bearer_token
        if self.env_key:
            value = env.get(self.env_key, "").strip()
            return value or None
        return None

    def headers(self, environ: Mapping[str, str] | None = None) -> dict[str, str]:
        """Static headers plus those whose value comes from a non-empty environment variable."""
        env = os.environ if environ is None else environ
        headers = dict(self.http_headers or {})
        for header, var in (self.env_http_headers or {}).items():
            value = env.get(var, "").strip()
            if value:
                headers[header] = value
        return headers


def builtin_providers(openai_base_url: str | None, environ: Mapping[str, str]) -> dict[str, ProviderConfig]:
    """The providers every config has: `openai` and the local OSS servers."""
    base = openai_base_url or environ.get("OPENAI_BASE_URL", "").strip() or DEFAULT_OPENAI_BASE_URL
    return {
        "openai": ProviderConfig(
            "openai", "OpenAI", base_url=base, requires_openai_auth=True, supports_websockets=True
        ),
        "ollama": ProviderConfig("ollama", "gpt-oss", base_url="http://localhost:11434/v1"),
        "lmstudio": ProviderConfig("lmstudio", "gpt-oss", base_url="http://localhost:1234/v1"),
    }


def provider_from_table(provider_id: str, table: Mapping[str, Any]) -> ProviderConfig:
    """A configured `[model_providers.<id>]` table with defaults applied (retries capped)."""

    def retries(key: str, default: int) -> int:
        value = table.get(key)
        return min(int(value), MAX_RETRIES_CAP) if isinstance(value, int) else default

    def str_map(key: str) -> dict[str, str] | None:
        value = table.get(key)
        return {str(k): str(v) for k, v in value.items()} if isinstance(value, dict) else None

    idle = table.get("stream_idle_timeout_ms")
    return ProviderConfig(
        provider_id,
        str(table.get("name") or provider_id),
        base_url=table.get("base_url"),
        env_key=table.get("env_key"),
        env_key_instructions=table.get("env_key_instructions"),
        experimental_bearer_token=table.get("experimental_bearer_token"),
        wire_api=str(table.get("wire_api") or "responses"),
        query_params=str_map("query_params"),
        http_headers=str_map("http_headers"),
        env_http_headers=str_map("env_http_headers"),
        request_max_retries=retries("request_max_retries", DEFAULT_REQUEST_MAX_RETRIES),
        stream_max_retries=retries("stream_max_retries", DEFAULT_STREAM_MAX_RETRIES),
        stream_idle_timeout_ms=idle if isinstance(idle, int) else DEFAULT_STREAM_IDLE_TIMEOUT_MS,
        requires_openai_auth=bool(table.get("requires_openai_auth", False)),
        supports_websockets=bool(table.get("supports_websockets", False)),
        raw=dict(table),
    )


@by_value
@attrs.frozen(repr=False, eq=False)
class EffectiveConfig:
    """What the server acts on, resolved from the layer stack with the reference's defaults.

    `raw` is the merged table (the active profile applied); `stack` keeps the layers for
    `config/read` origins and for writes' version checks.
    """

    model: str
    model_provider_id: str
    provider: ProviderConfig
    model_providers: dict[str, ProviderConfig]
    approval_policy: str | dict[str, Any]
    sandbox_mode: str
    features: dict[str, bool]
    mcp_servers: dict[str, Any]
    thread_unload_delay_secs: float | None
    openai_base_url: str | None
    chatgpt_base_url: str
    model_reasoning_effort: str | None
    model_reasoning_summary: str | None
    service_tier: str | None
    profile: str | None
    raw: Table
    stack: LayerStack

    def feature(self, name: str, default: bool = False) -> bool:
        """A feature flag's value (`[features]`, `--enable`/`--disable`)."""
        return self.features.get(name, default)


def apply_profile(merged: Table) -> Table:
    """`profile = "x"` lays `[profiles.x]` over the top-level keys (the reference's profiles)."""
    name = merged.get("profile")
    profiles = merged.get("profiles")
    if not isinstance(name, str) or not isinstance(profiles, dict):
        return merged
    overlay = profiles.get(name)
    if not isinstance(overlay, dict):
        return merged
    return deep_merge(merged, overlay)


def effective_from_stack(stack: LayerStack, environ: Mapping[str, str] | None = None) -> EffectiveConfig:
    """Resolve a stack (pure: no file access) into the typed view."""
    env = os.environ if environ is None else environ
    raw = apply_profile(stack.merged)
    openai_base_url = raw.get("openai_base_url") if isinstance(raw.get("openai_base_url"), str) else None
    providers = builtin_providers(openai_base_url, env)
    configured = raw.get("model_providers")
    if isinstance(configured, dict):
        for provider_id, table in configured.items():
            # Built-in ids are reserved, as in the reference: a user entry cannot replace them.
            if provider_id not in providers and isinstance(table, dict):
                providers[provider_id] = provider_from_table(provider_id, table)
    provider_id = raw.get("model_provider")
    if not isinstance(provider_id, str) or not provider_id:
        provider_id = DEFAULT_PROVIDER_ID
    provider = providers.get(provider_id) or ProviderConfig(provider_id, provider_id)
    features = {f["name"]: bool(f["defaultEnabled"]) for f in known_features()}
    configured_features = raw.get("features")
    if isinstance(configured_features, dict):
        features.update({k: bool(v) for k, v in configured_features.items() if isinstance(v, bool)})
    delay = raw.get("thread_unload_delay_secs")
    approval = raw.get("approval_policy")
    sandbox = raw.get("sandbox_mode")
    mcp = raw.get("mcp_servers")
    chatgpt = raw.get("chatgpt_base_url")
    return EffectiveConfig(
        model=_str(raw.get("model")) or DEFAULT_MODEL,
        model_provider_id=provider_id,
        provider=provider,
        model_providers=providers,
        approval_policy=approval if isinstance(approval, str | dict) else DEFAULT_APPROVAL_POLICY,
        sandbox_mode=sandbox if isinstance(sandbox, str) else DEFAULT_SANDBOX_MODE,
        features=features,
        mcp_servers=dict(mcp) if isinstance(mcp, dict) else {},
        thread_unload_delay_secs=_seconds(delay),
        openai_base_url=openai_base_url,
        chatgpt_base_url=chatgpt if isinstance(chatgpt, str) and chatgpt else DEFAULT_CHATGPT_BASE_URL,
        model_reasoning_effort=_str(raw.get("model_reasoning_effort")),
        model_reasoning_summary=_str(raw.get("model_reasoning_summary")),
        service_tier=_str(raw.get("service_tier")),
        profile=_str(raw.get("profile")),
        raw=raw,
        stack=stack,
    )


def resolved_view(stack: LayerStack) -> Table:
    """The `config` object of `config/read`: every known key with its default, then the
    merged values of known keys; provider entries filled with their default fields."""
    merged = stack.merged
    view: Table = copy.deepcopy(CONFIG_DEFAULTS)
    for key, value in merged.items():
        if key in view and key not in ("features", "model_providers"):
            view[key] = copy.deepcopy(value)
    features: Table = dict(FEATURE_DEFAULTS)
    configured = merged.get("features")
    if isinstance(configured, dict):
        features = {"network_proxy": None, "apps": False, "plugins": False, **features}
        features.update(copy.deepcopy(configured))
    view["features"] = features
    providers = merged.get("model_providers")
    if isinstance(providers, dict):
        view["model_providers"] = {
            provider_id: {**PROVIDER_DEFAULTS, **copy.deepcopy(entry)}
            for provider_id, entry in providers.items()
            if isinstance(entry, dict)
        }
    return view


def _seconds(value: Any) -> float | None:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    return None


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def load_config(
    settings: ServerSettings,
    cwd: Path | None = None,
    *,
    request_overrides: Mapping[str, Any] | None = None,
    thread_loader: ThreadConfigLoader | None = None,
    thread_id: str | None = None,
    paths: LayerPaths | None = None,
    environ: Mapping[str, str] | None = None,
) -> EffectiveConfig:
    """The effective config for the server, or for one thread when overrides/loader are given.

    `request_overrides` is a request's `config` map (dotted keys allowed) plus any typed fields
    the caller turned into keys (`{"model": …, "approval_policy": …}`); the layers of
    `thread_loader` (default: `settings.thread_config_loader`, a no-op unless an embedder set
    one) go above it so session-owned values win. Blocking (reads files).
    """
    stack = load_layer_stack(settings, paths)
    extra: list[ConfigLayer] = []
    request = request_layer(request_overrides)
    if request is not None:
        extra.append(request)
    loader = thread_loader or settings.thread_config_loader or NoopThreadConfigLoader()
    extra.extend(loader.load(thread_id=thread_id, cwd=cwd if cwd is not None else settings.cwd))
    return effective_from_stack(stack.with_layers(extra), environ)


# ---------------------------------------------------------------------------- validation
class ConfigValidationError(ValueError):
    """A value the config schema refuses; the text is the reference's (serde + toml) wording."""


Check = Callable[[Any], str | None]


def _is_str(value: Any) -> str | None:
    return None if isinstance(value, str) else f"invalid type: {describe(value)}, expected a string"


def _is_bool(value: Any) -> str | None:
    return None if isinstance(value, bool) else f"invalid type: {describe(value)}, expected a boolean"


def _is_int(value: Any) -> str | None:
    if isinstance(value, int) and not isinstance(value, bool):
        return None
    return f"invalid type: {describe(value)}, expected i64"


def _is_uint(value: Any) -> str | None:
    if isinstance(value, int) and not isinstance(value, bool):
        return None if value >= 0 else f"invalid value: integer `{value}`, expected u64"
    return f"invalid type: {describe(value)}, expected u64"


def _is_table(value: Any) -> str | None:
    return None if isinstance(value, dict) else f"invalid type: {describe(value)}, expected a map"


def _is_str_list(value: Any) -> str | None:
    if not isinstance(value, list):
        return f"invalid type: {describe(value)}, expected a sequence"
    for item in value:
        if not isinstance(item, str):
            return f"invalid type: {describe(item)}, expected a string"
    return None


def _one_of(*variants: str) -> Check:
    expected = expected_variants(variants)

    def check(value: Any) -> str | None:
        if isinstance(value, str):
            return None if value in variants else f"unknown variant `{value}`, {expected}"
        # serde's wording when a TOML non-string meets a string-only enum.
        return "invalid type: unit variant, expected string only"

    return check


def _approval(value: Any) -> str | None:
    if isinstance(value, dict):
        if set(value) == {"granular"} and isinstance(value["granular"], dict):
            return None
        return "invalid type: map, expected string only"
    return _one_of("untrusted", "on-failure", "on-request", "never")(value)


def _non_empty_str(value: Any) -> str | None:
    error = _is_str(value)
    if error is None and not value:
        return 'invalid value: string "", expected a non-empty string'
    return error


#: Top-level keys whose type the reference enforces; other keys are accepted as written.
TOP_LEVEL_CHECKS: dict[str, Check] = {
    "model": _is_str,
    "review_model": _is_str,
    "model_provider": _is_str,
    "model_context_window": _is_int,
    "model_auto_compact_token_limit": _is_int,
    "approval_policy": _approval,
    "sandbox_mode": _one_of("read-only", "workspace-write", "danger-full-access"),
    "model_reasoning_effort": _non_empty_str,
    "plan_mode_reasoning_effort": _non_empty_str,
    "model_reasoning_summary": _one_of("auto", "concise", "detailed", "none"),
    "model_verbosity": _one_of("low", "medium", "high"),
    "web_search": _one_of("disabled", "cached", "indexed", "live"),
    "forced_login_method": _one_of("chatgpt", "api"),
    "service_tier": _is_str,
    "instructions": _is_str,
    "developer_instructions": _is_str,
    "compact_prompt": _is_str,
    "profile": _is_str,
    "openai_base_url": _is_str,
    "chatgpt_base_url": _is_str,
    "file_opener": _one_of("vscode", "vscode-insiders", "windsurf", "cursor", "none"),
    "hide_agent_reasoning": _is_bool,
    "show_raw_agent_reasoning": _is_bool,
    "allow_login_shell": _is_bool,
    "check_for_update_on_startup": _is_bool,
    "disable_paste_burst": _is_bool,
    "project_doc_max_bytes": _is_uint,
    "project_doc_fallback_filenames": _is_str_list,
    "project_root_markers": _is_str_list,
    "thread_unload_delay_secs": _is_uint,
    "tool_output_token_limit": _is_uint,
    "background_terminal_max_timeout": _is_uint,
    "notify": _is_str_list,
    "features": _is_table,
    "mcp_servers": _is_table,
    "model_providers": _is_table,
    "profiles": _is_table,
    "projects": _is_table,
    "history": _is_table,
    "shell_environment_policy": _is_table,
    "sandbox_workspace_write": _is_table,
    "tui": _is_table,
}

PROVIDER_CHECKS: dict[str, Check] = {
    "name": _is_str,
    "base_url": _is_str,
    "env_key": _is_str,
    "env_key_instructions": _is_str,
    "experimental_bearer_token": _is_str,
    "wire_api": _one_of("responses"),
    "query_params": _is_table,
    "http_headers": _is_table,
    "env_http_headers": _is_table,
    "request_max_retries": _is_uint,
    "stream_max_retries": _is_uint,
    "stream_idle_timeout_ms": _is_uint,
    "requires_openai_auth": _is_bool,
    "supports_websockets": _is_bool,
}


def validate_config(table: Mapping[str, Any]) -> None:
    """Raise `ConfigValidationError` for the first value the schema refuses.

    The message is `<serde error>\\nin `<dotted key>`\\n`, the shape of the reference's text
    after "Invalid configuration: ".
    """
    for key, value in table.items():
        check = TOP_LEVEL_CHECKS.get(key)
        if check is not None:
            _raise_if(check(value), key)
    features = table.get("features")
    if isinstance(features, dict):
        for value in features.values():
            if not isinstance(value, dict):
                # The reference names the whole table, not the flag.
                _raise_if(_is_bool(value), "features")
    providers = table.get("model_providers")
    if isinstance(providers, dict):
        for provider_id, entry in providers.items():
            _raise_if(_is_table(entry), f"model_providers.{provider_id}")
            for key, value in entry.items():
                check = PROVIDER_CHECKS.get(key)
                if check is not None:
                    _raise_if(check(value), f"model_providers.{provider_id}.{key}")
    servers = table.get("mcp_servers")
    if isinstance(servers, dict):
        for name, entry in servers.items():
            _raise_if(_is_table(entry), f"mcp_servers.{name}")
            if "command" not in entry and "url" not in entry:
                _raise_if("invalid transport", f"mcp_servers.{name}")


def _raise_if(error: str | None, key: str) -> None:
    if error is not None:
        raise ConfigValidationError(f"{error}\nin `{key}`\n")


def provider_ids(config: EffectiveConfig) -> Sequence[str]:
    """Configured and built-in provider ids, built-ins first."""
    return list(config.model_providers)
