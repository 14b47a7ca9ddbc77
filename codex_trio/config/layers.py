"""The config layer stack: where each piece of config comes from and which one wins.

This module owns precedence and deep merge; nothing else in the package merges config.
It does no trio work and imports nothing of ours but the settings and `sources` (what a layer
is); file reads are synchronous, so request handlers call `load_layer_stack` through
`trio.to_thread.run_sync`.

Layers, lowest priority first (a later layer's keys win, tables merge key by key):

====================  =========================================  ==============================
source                where it comes from                        wire `ConfigLayerSource`
====================  =========================================  ==============================
`SystemSource`        `/etc/codex/config.toml`                   `{"type":"system","file":…}`
`UserSource`          `$CODEX_HOME/config.toml`                  `{"type":"user","file":…,"profile":null}`
`SessionFlagsSource`  `-c key=value`, `--enable/--disable F`      `{"type":"sessionFlags"}`
`RequestSource`       a request's `config` map and typed          (thread-scoped, not reported)
                      overrides (`thread/start {model, config}`)
`ThreadSource`        a `ThreadConfigLoader` (session-owned       (thread-scoped, not reported)
                      values: `model_provider`, `model_providers`,
                      `features`, …) — wins over the request
`LegacyManagedSource` `/etc/codex/managed_config.toml`           `{"type":"legacyManagedConfig…"}`
====================  =========================================  ==============================

The managed file sits on top of everything, as the reference keeps it ("loaded as the last
layer on top of everything else"). `config/read` reports the server-wide layers only.
"""

from __future__ import annotations

import copy
import hashlib
import logging
import tomllib
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs
import orjson

from codex_trio.config.sources import (
    ConfigLayer,
    LegacyManagedSource,
    RequestSource,
    SessionFlagsSource,
    SystemSource,
    Table,
    ThreadSource,
    UserSource,
)
from codex_trio.records import by_value
from codex_trio.settings import ServerSettings

log = logging.getLogger(__name__)

#: The reference's system config file (lowest priority).
SYSTEM_CONFIG_FILE = Path("/etc/codex/config.toml")
#: The reference's legacy managed config file (highest priority).
MANAGED_CONFIG_FILE = Path("/etc/codex/managed_config.toml")
#: The user layer's file name under CODEX_HOME; the only file `config/*Write` may edit.
CONFIG_TOML_FILE = "config.toml"


def version_of_table(table: Mapping[str, Any]) -> str:
    """A layer's fingerprint: sha256 of its values as compact, key-sorted JSON.

    This is the reference's `version` (comments and formatting do not change it; an empty or
    missing file is the version of `{}`), so `expectedVersion` from either server matches.
    """
    canonical = orjson.dumps(table, option=orjson.OPT_SORT_KEYS, default=str)
    return "sha256:" + hashlib.sha256(canonical).hexdigest()


EMPTY_VERSION = version_of_table({})


def parse_toml(text: str) -> Table:
    """Parse a config file's text; raises `tomllib.TOMLDecodeError`."""
    return tomllib.loads(text)


def read_toml_layer(source: SystemSource | UserSource | LegacyManagedSource) -> ConfigLayer:
    """Read one file layer; a missing file is an empty layer, a broken one is logged and empty."""
    try:
        data = source.file.read_bytes()
    except FileNotFoundError:
        return ConfigLayer(source, {}, EMPTY_VERSION, exists=False)
    except OSError as exc:
        log.warning("cannot read %s: %s", source.file, exc)
        return ConfigLayer(source, {}, EMPTY_VERSION, exists=False, error=str(exc))
    try:
        table = parse_toml(data.decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        log.warning("ignoring %s: %s", source.file, exc)
        return ConfigLayer(source, {}, EMPTY_VERSION, error=str(exc))
    return ConfigLayer(source, table, version_of_table(table))


# ---------------------------------------------------------------------------- merge
def deep_merge(base: Mapping[str, Any], overlay: Mapping[str, Any]) -> Table:
    """`overlay` on top of `base`: tables merge key by key, anything else is replaced.

    Neither input is modified. This is the only merge rule in the package.
    """
    merged: Table = copy.deepcopy(dict(base))
    for key, value in overlay.items():
        current = merged.get(key)
        if isinstance(current, dict) and isinstance(value, dict):
            merged[key] = deep_merge(current, value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def split_key_path(key_path: str) -> list[str]:
    """`a.b."c.d"` → `["a", "b", "c.d"]` (TOML dotted-key syntax, quotes optional)."""
    parts: list[str] = []
    current: list[str] = []
    quote: str | None = None
    for ch in key_path:
        if quote is not None:
            if ch == quote:
                quote = None
            else:
                current.append(ch)
        elif ch in "\"'":
            quote = ch
        elif ch == ".":
            parts.append("".join(current).strip())
            current = []
        else:
            current.append(ch)
    parts.append("".join(current).strip())
    return parts


def nest(key_path: str | Sequence[str], value: Any) -> Table:
    """A dotted key and a value as a nested table: `nest("a.b", 1) == {"a": {"b": 1}}`."""
    parts = split_key_path(key_path) if isinstance(key_path, str) else list(key_path)
    table: Any = value
    for part in reversed(parts):
        table = {part: table}
    assert isinstance(table, dict)
    return table


def parse_override_value(raw: str) -> Any:
    """A `-c` value: TOML when it parses (`5`, `true`, `"x"`, `[1]`, `{a=1}`), else the raw string."""
    try:
        return tomllib.loads(f"_value_ = {raw}")["_value_"]
    except tomllib.TOMLDecodeError:
        return raw.strip()


def session_flags_table(settings: ServerSettings) -> Table:
    """The SessionFlags layer: `-c` overrides in order, then `--enable`/`--disable`."""
    table: Table = {}
    for key, raw in settings.config_overrides:
        table = deep_merge(table, nest(key, parse_override_value(raw)))
    for feature in settings.enable_features:
        table = deep_merge(table, {"features": {feature: True}})
    for feature in settings.disable_features:
        table = deep_merge(table, {"features": {feature: False}})
    return table


def dotted_leaves(table: Mapping[str, Any], prefix: str = "") -> Iterable[tuple[str, Any]]:
    """Every non-table value of a nested table with its dotted key (for `origins`)."""
    for key, value in table.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            yield from dotted_leaves(value, path + ".")
        else:
            yield path, value


# ---------------------------------------------------------------------------- thread-scoped layers
class NoopThreadConfigLoader:
    """The default: no session-owned values."""

    def load(self, *, thread_id: str | None, cwd: Path) -> Sequence[ConfigLayer]:
        return ()


@by_value
@attrs.frozen(repr=False, eq=False)
class StaticThreadConfigLoader:
    """Fixed session-owned values (for tests and embedders), given as one nested table.

    `StaticThreadConfigLoader({"model_provider": "corp", "features": {"apps": False}})`.
    """

    values: Table
    name: str = "static"

    def load(self, *, thread_id: str | None, cwd: Path) -> Sequence[ConfigLayer]:
        values = copy.deepcopy(self.values)
        return (ConfigLayer(ThreadSource(self.name), values, version_of_table(values)),)


def request_layer(overrides: Mapping[str, Any] | None) -> ConfigLayer | None:
    """A request's overrides (dotted keys allowed, as `thread/start {config}` sends them)."""
    if not overrides:
        return None
    table: Table = {}
    for key, value in overrides.items():
        table = deep_merge(table, nest(key, value))
    return ConfigLayer(RequestSource(), table, version_of_table(table))


# ---------------------------------------------------------------------------- the stack
@by_value
@attrs.frozen(repr=False, eq=False)
class LayerStack:
    """Layers lowest priority first, and their merge (computed once)."""

    layers: tuple[ConfigLayer, ...]
    merged: Table = attrs.field(init=False)

    @merged.default
    def _merge(self) -> Table:
        merged: Table = {}
        for layer in self.layers:
            merged = deep_merge(merged, layer.config)
        return merged

    @property
    def user(self) -> ConfigLayer:
        """The user layer (always present, possibly empty)."""
        for layer in self.layers:
            if isinstance(layer.source, UserSource):
                return layer
        raise LookupError("no user layer")

    def with_layers(self, extra: Iterable[ConfigLayer]) -> LayerStack:
        """The stack with thread-scoped layers inserted below the managed layer."""
        extra = tuple(extra)
        if not extra:
            return self
        base = [layer for layer in self.layers if not isinstance(layer.source, LegacyManagedSource)]
        managed = [layer for layer in self.layers if isinstance(layer.source, LegacyManagedSource)]
        return LayerStack((*base, *extra, *managed))

    def origins(self) -> dict[str, ConfigLayer]:
        """Dotted key → the layer whose value won, for every key some layer set."""
        winners: dict[str, ConfigLayer] = {}
        for layer in self.layers:
            for key, _ in dotted_leaves(layer.config):
                # A later layer that sets a table prefix or a leaf replaces earlier leaves below it.
                for existing in [k for k in winners if k.startswith(key + ".")]:
                    del winners[existing]
                winners[key] = layer
        return winners


@by_value
@attrs.frozen(repr=False, eq=False)
class LayerPaths:
    """Where the file layers live; tests and embedders point these elsewhere."""

    system: Path | None = SYSTEM_CONFIG_FILE
    managed: Path | None = MANAGED_CONFIG_FILE


def user_config_path(settings: ServerSettings) -> Path:
    return settings.codex_home / CONFIG_TOML_FILE


def load_layer_stack(settings: ServerSettings, paths: LayerPaths | None = None) -> LayerStack:
    """The server-wide layers (system, user, session flags, managed). Blocking file reads."""
    paths = paths if paths is not None else LayerPaths()
    layers: list[ConfigLayer] = []
    if paths.system is not None:
        layers.append(read_toml_layer(SystemSource(paths.system)))
    layers.append(read_toml_layer(UserSource(user_config_path(settings))))
    flags = session_flags_table(settings)
    if flags:
        layers.append(ConfigLayer(SessionFlagsSource(), flags, version_of_table(flags)))
    if paths.managed is not None:
        managed = read_toml_layer(LegacyManagedSource(paths.managed))
        if managed.exists:
            layers.append(managed)
    return LayerStack(tuple(layers))
