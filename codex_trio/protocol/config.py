"""`config/*` and `configRequirements/read` wire types (pure).

`config/read`'s `config`, `origins` and `layers` are dynamic tables and are sent as plain
dicts; everything with a fixed shape is an attrs class here.
"""

from __future__ import annotations

from typing import Any

import attrs

from codex_trio.records import by_value

MERGE_STRATEGIES = ("replace", "upsert")


def serde_variants(*variants: str) -> str:
    """serde's list of expected variants: "`a`", "`a` or `b`", "one of `a`, `b`, `c`"."""
    quoted = [f"`{v}`" for v in variants]
    if len(quoted) == 1:
        return quoted[0]
    if len(quoted) == 2:
        return f"{quoted[0]} or {quoted[1]}"
    return "one of " + ", ".join(quoted)


def _merge_strategy(_: Any, __: attrs.Attribute[Any], value: str) -> None:
    if value not in MERGE_STRATEGIES:
        raise ValueError(f"unknown variant `{value}`, expected {serde_variants(*MERGE_STRATEGIES)}")


@by_value
@attrs.frozen(repr=False, eq=False)
class ConfigReadParams:
    """`config/read` params: with `includeLayers`, the layers are listed too."""

    cwd: str | None = None
    include_layers: bool = False


@by_value
@attrs.frozen(repr=False, eq=False)
class ConfigEdit:
    """One edit of `config/batchWrite`: a dotted key path, a value and how to merge it."""

    key_path: str
    #: any JSON value; `null` deletes the key.
    value: Any
    merge_strategy: str = attrs.field(validator=_merge_strategy)


@by_value
@attrs.frozen(repr=False, eq=False)
class ConfigValueWriteParams:
    """`config/value/write` params: one edit, optionally guarded by `expectedVersion`."""

    key_path: str
    value: Any
    merge_strategy: str = attrs.field(validator=_merge_strategy)
    file_path: str | None = None
    expected_version: str | None = None


@by_value
@attrs.frozen(repr=False, eq=False)
class ConfigBatchWriteParams:
    """`config/batchWrite` params: edits applied together or not at all."""

    edits: list[ConfigEdit]
    file_path: str | None = None
    expected_version: str | None = None
    reload_user_config: bool = False


@by_value
@attrs.frozen(repr=False, eq=False)
class ConfigLayerMetadata:
    #: the layer's `ConfigLayerSource` (a tagged object).
    """A layer's source and version, as config responses name it."""

    name: dict[str, Any]
    version: str


@by_value
@attrs.frozen(repr=False, eq=False)
class OverriddenMetadata:
    """Where a written value is overridden by a higher layer (the write still happened)."""

    message: str
    overriding_layer: ConfigLayerMetadata
    effective_value: Any


@by_value
@attrs.frozen(repr=False, eq=False)
class ConfigWriteResponse:
    """`config/value/write` and `config/batchWrite` result."""

    status: str
    version: str
    file_path: str
    overridden_metadata: OverriddenMetadata | None = None


@by_value
@attrs.frozen(repr=False, eq=False)
class ConfigRequirementsReadResponse:
    """No requirements.toml / MDM support here: `requirements` is always null."""

    supports_independent_speed_modes: bool = True
    requirements: dict[str, Any] | None = None
