"""`[mcp_servers.NAME]` tables as typed settings (pure: environment passed in).

Keys are the reference's: stdio `command`, `args`, `env`, `env_vars`, `cwd`; streamable HTTP
`url`, `http_headers`, `env_http_headers`, `bearer_token_env_var`; and `enabled`,
`required`, `startup_timeout_sec` (or `startup_timeout_ms`), `tool_timeout_sec`,
`enabled_tools`, `disabled_tools`, `tools.<tool>.approval_mode`. An entry that cannot be
used is kept with its `error`, so it is reported as a failed start, never as a failed thread.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

import attrs

from codex_trio.records import by_value

#: seconds to start a server and list its tools when the config says nothing (the reference's).
DEFAULT_STARTUP_TIMEOUT = 10.0
#: seconds one tool call may take when the config says nothing (the reference's).
DEFAULT_TOOL_TIMEOUT = 120.0
#: variables a stdio server inherits from the app-server's environment (the reference's list).
INHERITED_ENV = ("HOME", "LOGNAME", "PATH", "SHELL", "USER", "LANG", "LC_ALL", "TERM", "TMPDIR", "TZ")

ApprovalMode = Literal["auto", "prompt", "approve"]


@by_value
@attrs.frozen(repr=False, eq=False)
class McpServerConfig:
    """One configured server."""

    name: str
    command: str | None = None
    args: tuple[str, ...] = ()
    env: Mapping[str, str] = attrs.Factory(dict)
    cwd: Path | None = None
    url: str | None = None
    headers: Mapping[str, str] = attrs.Factory(dict)
    bearer_token: str | None = None
    enabled: bool = True
    required: bool = False
    startup_timeout: float = DEFAULT_STARTUP_TIMEOUT
    tool_timeout: float = DEFAULT_TOOL_TIMEOUT
    enabled_tools: frozenset[str] | None = None
    disabled_tools: frozenset[str] = frozenset()
    approval_modes: Mapping[str, ApprovalMode] = attrs.Factory(dict)
    #: why this entry cannot be started (reported as a failed start).
    error: str | None = None

    @property
    def is_http(self) -> bool:
        return self.url is not None

    @property
    def http_origin(self) -> str | None:
        """scheme://host[:port] of the endpoint (no credentials, path or query)."""
        if self.url is None:
            return None
        parts = urlsplit(self.url)
        host = parts.hostname or ""
        if ":" in host:
            host = f"[{host}]"
        port = f":{parts.port}" if parts.port is not None else ""
        return f"{parts.scheme}://{host}{port}"

    @property
    def auth_status(self) -> str:
        if not self.is_http:
            return "unsupported"
        if self.bearer_token is not None or "authorization" in {k.lower() for k in self.headers}:
            return "bearerToken"
        return "unknown"

    def offers(self, tool: str) -> bool:
        """Whether `tool` passes `enabled_tools` / `disabled_tools`."""
        if self.enabled_tools is not None and tool not in self.enabled_tools:
            return False
        return tool not in self.disabled_tools


def parse_servers(table: Any, environ: Mapping[str, str], base: Path) -> list[McpServerConfig]:
    """Every `[mcp_servers.*]` entry, sorted by name; relative `cwd`s resolve against `base`."""
    if not isinstance(table, Mapping):
        return []
    return [parse_server(str(name), entry, environ, base) for name, entry in sorted(table.items())]


def parse_server(name: str, entry: Any, environ: Mapping[str, str], base: Path) -> McpServerConfig:
    if not isinstance(entry, Mapping):
        return McpServerConfig(name, error=f"invalid configuration for MCP server `{name}`")
    problems: list[str] = []

    def text(key: str) -> str | None:
        value = entry.get(key)
        if value is None:
            return None
        if not isinstance(value, str):
            problems.append(f"`{key}` must be a string")
            return None
        return value

    def strings(key: str) -> list[str] | None:
        value = entry.get(key)
        if value is None:
            return None
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            problems.append(f"`{key}` must be a list of strings")
            return None
        return list(value)

    def table(key: str) -> dict[str, str]:
        value = entry.get(key)
        if value is None:
            return {}
        if not isinstance(value, Mapping) or not all(isinstance(v, str) for v in value.values()):
            problems.append(f"`{key}` must be a table of strings")
            return {}
        return {str(k): v for k, v in value.items()}

    def seconds(key: str, scale: float = 1.0) -> float | None:
        value = entry.get(key)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
            problems.append(f"`{key}` must be a non-negative number")
            return None
        return float(value) * scale

    command, url = text("command"), text("url")
    env: dict[str, str] = {k: environ[k] for k in INHERITED_ENV if k in environ}
    for var in strings("env_vars") or []:
        if var in environ:
            env[var] = environ[var]
    env.update(table("env"))
    headers = table("http_headers")
    for header, var in table("env_http_headers").items():
        if environ.get(var):
            headers[header] = environ[var]
    token_var = text("bearer_token_env_var")
    token = environ.get(token_var) if token_var else None
    if token_var and not token:
        problems.append(f"environment variable `{token_var}` for the bearer token is not set")
    cwd_text = text("cwd")
    startup = seconds("startup_timeout_sec")
    if startup is None:
        startup = seconds("startup_timeout_ms", 0.001)
    tool_timeout = seconds("tool_timeout_sec")
    enabled, required = entry.get("enabled", True), entry.get("required", False)
    if not isinstance(enabled, bool) or not isinstance(required, bool):
        problems.append("`enabled` and `required` must be booleans")
    enabled_tools = strings("enabled_tools")
    modes: dict[str, ApprovalMode] = {}
    tools = entry.get("tools")
    if isinstance(tools, Mapping):
        for tool, settings in tools.items():
            mode = settings.get("approval_mode") if isinstance(settings, Mapping) else None
            if mode in ("auto", "prompt", "approve"):
                modes[str(tool)] = mode
    if command is None and url is None:
        problems.append("either `command` or `url` is required")
    elif command is not None and url is not None:
        problems.append("`command` and `url` cannot both be set")
    return McpServerConfig(
        name,
        command=command,
        args=tuple(strings("args") or ()),
        env=env,
        cwd=(base / cwd_text) if cwd_text else None,
        url=url,
        headers=headers,
        bearer_token=token,
        enabled=enabled if isinstance(enabled, bool) else True,
        required=required if isinstance(required, bool) else False,
        startup_timeout=startup if startup is not None else DEFAULT_STARTUP_TIMEOUT,
        tool_timeout=tool_timeout if tool_timeout is not None else DEFAULT_TOOL_TIMEOUT,
        enabled_tools=frozenset(enabled_tools) if enabled_tools is not None else None,
        disabled_tools=frozenset(strings("disabled_tools") or ()),
        approval_modes=modes,
        error=f"invalid configuration for MCP server `{name}`: {'; '.join(problems)}" if problems else None,
    )
