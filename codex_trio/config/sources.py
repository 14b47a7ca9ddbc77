"""What a config layer is: where its values come from, the values, and who may supply them.

A leaf (imports nothing of ours), so `settings` can name `ThreadConfigLoader` without reaching
into the layer stack (`layers`), which imports the settings. Precedence and merging are
`layers`'s; see its docstring for the table of sources.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import attrs

from codex_trio.records import by_value

Table = dict[str, Any]


@by_value
@attrs.frozen(repr=False, eq=False)
class SystemSource:
    """`/etc/codex/config.toml` (or a test's replacement); may not exist."""

    file: Path

    def to_wire(self) -> dict[str, Any]:
        return {"type": "system", "file": str(self.file)}


@by_value
@attrs.frozen(repr=False, eq=False)
class UserSource:
    """`$CODEX_HOME/config.toml`: the user's file and the target of config writes."""

    file: Path
    profile: str | None = None

    def to_wire(self) -> dict[str, Any]:
        return {"type": "user", "file": str(self.file), "profile": self.profile}


@by_value
@attrs.frozen(repr=False, eq=False)
class SessionFlagsSource:
    """Command-line `-c key=value` and `--enable/--disable FEATURE`."""

    def to_wire(self) -> dict[str, Any]:
        return {"type": "sessionFlags"}


@by_value
@attrs.frozen(repr=False, eq=False)
class LegacyManagedSource:
    """`managed_config.toml`: administrator settings that win over everything."""

    file: Path

    def to_wire(self) -> dict[str, Any]:
        return {"type": "legacyManagedConfigTomlFromFile", "file": str(self.file)}


@by_value
@attrs.frozen(repr=False, eq=False)
class RequestSource:
    """Overrides carried by one request (e.g. `thread/start`'s `config` map and typed fields)."""

    def to_wire(self) -> dict[str, Any]:
        return {"type": "sessionFlags"}


@by_value
@attrs.frozen(repr=False, eq=False)
class ThreadSource:
    """A thread-scoped layer from a `ThreadConfigLoader`; `name` says which loader/why."""

    name: str

    def to_wire(self) -> dict[str, Any]:
        return {"type": "sessionFlags"}


LayerSource = (
    SystemSource | UserSource | SessionFlagsSource | RequestSource | ThreadSource | LegacyManagedSource
)


# ---------------------------------------------------------------------------- layers
@by_value
@attrs.frozen(repr=False, eq=False)
class ConfigLayer:
    """One source's values as a nested TOML table, with its version fingerprint.

    `version` is what `config/read` reports and `expectedVersion` is compared with (see
    `version_of_table`); `error` is set when the file exists but does not parse (its values
    are then empty).
    """

    source: LayerSource
    config: Table
    version: str
    exists: bool = True
    error: str | None = None


class ThreadConfigLoader(Protocol):
    """Supplies thread-scoped layers that win over what a request asked for.

    An embedder that owns the session (which provider, which credentials-bearing provider
    entries, which features) implements this so clients cannot override those values through
    `thread/start {config}` or typed fields. Called off the event loop; must not block long.
    """

    def load(self, *, thread_id: str | None, cwd: Path) -> Sequence[ConfigLayer]:
        """Layers for a thread being started or resumed, lowest priority first."""
        ...
