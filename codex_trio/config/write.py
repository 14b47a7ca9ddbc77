"""Format-preserving edits of the user's config.toml (tomlkit), with the reference's checks.

`apply_edits` is the whole read-modify-write of one batch: read the file, check the expected
version, apply every edit to a tomlkit document (comments, order and formatting survive),
validate the result, then replace the file atomically. Either every edit lands or none does.
It is blocking; the API runs it in a worker thread, one batch at a time.
"""

from __future__ import annotations

import threading
import tomllib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import attrs
import tomlkit
from tomlkit.container import Container
from tomlkit.items import AoT, Item, Table

from codex_trio.atomic_files import write_atomic
from codex_trio.config.effective import ConfigValidationError, validate_config
from codex_trio.config.layers import split_key_path, version_of_table
from codex_trio.records import by_value


class ConfigWriteError(Exception):
    """A refused write; `code` is the reference's `config_write_error_code`."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


#: one read-modify-write of a config file at a time, whoever writes (the config methods,
#: plugin installs, marketplace changes): each runs in a worker thread.
_WRITE_LOCK = threading.Lock()

VALIDATION = "configValidationError"
VERSION_CONFLICT = "configVersionConflict"
LAYER_READONLY = "configLayerReadonly"
CONFLICT_MESSAGE = "Configuration was modified since last read. Fetch latest version and retry."
READONLY_MESSAGE = "Only writes to the user config are allowed"


@by_value
@attrs.frozen(repr=False, eq=False)
class Edit:
    """One `ConfigEdit`: a dotted key, a JSON value (None deletes), replace or upsert."""

    key_path: str
    value: Any
    merge_strategy: str = "replace"


@by_value
@attrs.frozen(repr=False, eq=False)
class WriteResult:
    """The new file's version and its parsed values (for override checks)."""

    version: str
    table: dict[str, Any]


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return ""


def current_version(path: Path) -> str:
    """The user file's version as `config/read` reports it."""
    text = _read(path)
    try:
        return version_of_table(tomllib.loads(text))
    except tomllib.TOMLDecodeError:
        return version_of_table({})


def _to_item(value: Any) -> Item:
    """JSON -> a tomlkit item; tables of tables become `[a.b]` sections."""
    if isinstance(value, dict):
        table = tomlkit.table()
        for key, inner in value.items():
            if inner is not None:
                table.add(key, _to_item(inner))
        return table
    item: Item = tomlkit.item(value)
    return item


def _is_table(node: Any) -> bool:
    return isinstance(node, Table | Container) or (isinstance(node, dict) and not isinstance(node, AoT))


def _apply(doc: tomlkit.TOMLDocument, edit: Edit) -> None:
    if not edit.key_path.strip():
        raise ConfigWriteError(VALIDATION, "keyPath must not be empty")
    parts = split_key_path(edit.key_path)
    parent: Any = doc
    for part in parts[:-1]:
        if part not in parent:
            if edit.value is None:
                return
            parent.add(part, tomlkit.table(is_super_table=True))
        node = parent[part]
        if not _is_table(node):
            raise ConfigWriteError(VALIDATION, "cannot set value on non-table parent")
        parent = node
    last = parts[-1]
    if edit.value is None:
        if last in parent:
            del parent[last]
        return
    existing = parent.get(last)
    if edit.merge_strategy == "upsert" and isinstance(edit.value, dict) and _is_table(existing):
        _upsert(existing, edit.value)
    elif last in parent:
        parent[last] = _to_item(edit.value)
    else:
        parent.add(last, _to_item(edit.value))


def _upsert(table: Any, values: dict[str, Any]) -> None:
    for key, value in values.items():
        existing = table.get(key)
        if value is None:
            if key in table:
                del table[key]
        elif isinstance(value, dict) and _is_table(existing):
            _upsert(existing, value)
        elif key in table:
            table[key] = _to_item(value)
        else:
            table.add(key, _to_item(value))


def apply_edits(path: Path, edits: Sequence[Edit], expected_version: str | None) -> WriteResult:
    """Apply a batch to `path` atomically; raises `ConfigWriteError`. Blocking."""
    with _WRITE_LOCK:
        return _apply_edits(path, edits, expected_version)


def _apply_edits(path: Path, edits: Sequence[Edit], expected_version: str | None) -> WriteResult:
    text = _read(path)
    try:
        doc = tomlkit.parse(text)
        before = tomllib.loads(text)
    except (tomlkit.exceptions.ParseError, tomllib.TOMLDecodeError) as exc:
        raise ConfigWriteError(VALIDATION, f"Invalid configuration: {exc}") from None
    version = version_of_table(before)
    if expected_version is not None and expected_version != version:
        raise ConfigWriteError(VERSION_CONFLICT, CONFLICT_MESSAGE)
    if not edits:
        return WriteResult(version, before)
    for edit in edits:
        _apply(doc, edit)
    new_text = tomlkit.dumps(doc)
    try:
        after = tomllib.loads(new_text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigWriteError(VALIDATION, f"Invalid configuration: {exc}") from None
    try:
        validate_config(after)
    except ConfigValidationError as exc:
        raise ConfigWriteError(VALIDATION, f"Invalid configuration: {exc}") from None
    if new_text != text:
        write_atomic(path, new_text)
    return WriteResult(version_of_table(after), after)
