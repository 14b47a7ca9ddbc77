"""`[shell_environment_policy]`: which of the server's environment variables a command sees.

The reference's documented policy, applied in its order:

1. `inherit`: `all` (default), `core` (HOME, LOGNAME, PATH, SHELL, USER, USERNAME, TMPDIR,
   TEMP, TMP) or `none`;
2. unless `ignore_default_excludes = true`, drop every name containing KEY, SECRET or TOKEN
   (case-insensitive), so API keys and tokens never reach a command by default;
3. `exclude`: drop names matching any of these globs (case-insensitive);
4. `set`: add or replace these variables;
5. `include_only`: when given, keep only names matching one of these globs.

Used for `command/exec` (an explicit `env` in the request is applied on top and wins) and
for the model's tool calls.
"""

from __future__ import annotations

import fnmatch
import logging
import os
from collections.abc import Mapping
from typing import Any, Literal

import attrs

from codex_trio.records import by_value

log = logging.getLogger(__name__)

CORE_VARS = frozenset({"HOME", "LOGNAME", "PATH", "SHELL", "USER", "USERNAME", "TMPDIR", "TEMP", "TMP"})
DEFAULT_EXCLUDES = ("*KEY*", "*SECRET*", "*TOKEN*")

Inherit = Literal["all", "core", "none"]


@by_value
@attrs.frozen(repr=False, eq=False)
class ShellEnvironmentPolicy:
    inherit: Inherit = "all"
    ignore_default_excludes: bool = False
    exclude: tuple[str, ...] = ()
    set: tuple[tuple[str, str], ...] = ()
    include_only: tuple[str, ...] = ()

    def apply(self, environ: Mapping[str, str] | None = None) -> dict[str, str]:
        """The environment a command gets from `environ` (default: the server's)."""
        source = os.environ if environ is None else environ
        if self.inherit == "all":
            env = dict(source)
        elif self.inherit == "core":
            env = {k: v for k, v in source.items() if k in CORE_VARS}
        else:
            env = {}
        if not self.ignore_default_excludes:
            env = {k: v for k, v in env.items() if not _matches(k, DEFAULT_EXCLUDES)}
        if self.exclude:
            env = {k: v for k, v in env.items() if not _matches(k, self.exclude)}
        env.update(self.set)
        if self.include_only:
            env = {k: v for k, v in env.items() if _matches(k, self.include_only)}
        return env


def _matches(name: str, patterns: tuple[str, ...]) -> bool:
    upper = name.upper()
    return any(fnmatch.fnmatchcase(upper, pattern.upper()) for pattern in patterns)


def _patterns(value: Any, key: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return tuple(value)
    log.warning("shell_environment_policy.%s must be a list of strings; ignoring it", key)
    return ()


def shell_environment_policy(config: Mapping[str, Any]) -> ShellEnvironmentPolicy:
    """The policy in an effective config table; invalid entries are logged and ignored."""
    table = config.get("shell_environment_policy")
    if not isinstance(table, Mapping):
        return ShellEnvironmentPolicy()
    inherit = table.get("inherit", "all")
    if inherit not in ("all", "core", "none"):
        log.warning("shell_environment_policy.inherit %r is not all/core/none; using all", inherit)
        inherit = "all"
    values = table.get("set")
    pairs: tuple[tuple[str, str], ...] = ()
    if isinstance(values, Mapping):
        pairs = tuple((str(k), v if isinstance(v, str) else str(v)) for k, v in values.items())
    ignore = table.get("ignore_default_excludes")
    return ShellEnvironmentPolicy(
        inherit=inherit,
        ignore_default_excludes=ignore is True,
        exclude=_patterns(table.get("exclude"), "exclude"),
        set=pairs,
        include_only=_patterns(table.get("include_only"), "include_only"),
    )
