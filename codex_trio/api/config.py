"""`config/read`, `config/value/write`, `config/batchWrite` and `configRequirements/read`.

Owns the write lane for the user's config.toml: every batch is one read-modify-write run in a
worker thread behind a limiter of one, so two writes never interleave and `expectedVersion`
checks see the previous write. Reads also go through worker threads (they parse files).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import trio

from codex_trio.config.effective import resolved_view
from codex_trio.config.layers import (
    LayerPaths,
    LayerStack,
    load_layer_stack,
    split_key_path,
    user_config_path,
)
from codex_trio.config.sources import ConfigLayer, SessionFlagsSource, UserSource
from codex_trio.config.write import (
    LAYER_READONLY,
    READONLY_MESSAGE,
    ConfigWriteError,
    Edit,
    WriteResult,
    apply_edits,
)
from codex_trio.protocol.config import (
    ConfigBatchWriteParams,
    ConfigLayerMetadata,
    ConfigReadParams,
    ConfigRequirementsReadResponse,
    ConfigValueWriteParams,
    ConfigWriteResponse,
    OverriddenMetadata,
)
from codex_trio.protocol.errors import RpcError, invalid_request
from codex_trio.routing import RequestContext, Route, route
from codex_trio.services import Services

#: worker threads for config file reads; parsing a few small files never needs more.
READ_THREADS = 4


def layer_metadata(layer: ConfigLayer) -> dict[str, Any]:
    """A layer's wire name and version."""
    return {"name": layer.source.to_wire(), "version": layer.version}


def read_response(stack: LayerStack, include_layers: bool) -> dict[str, Any]:
    """The `config/read` result for a server-wide stack."""
    result: dict[str, Any] = {
        "config": resolved_view(stack),
        "origins": {key: layer_metadata(layer) for key, layer in stack.origins().items()},
    }
    if include_layers:
        result["layers"] = [
            {**layer_metadata(layer), "config": layer.config} for layer in reversed(stack.layers)
        ]
    return result


def _lookup(table: dict[str, Any], parts: list[str]) -> tuple[bool, Any]:
    node: Any = table
    for part in parts:
        if not isinstance(node, dict) or part not in node:
            return False, None
        node = node[part]
    return True, node


_OVERRIDE_MESSAGES = {"sessionFlags": "Overridden by session flags"}


class ConfigApi:
    """The config family; `paths` relocates the system/managed files (tests, embedders)."""

    def __init__(self, services: Services, paths: LayerPaths | None = None) -> None:
        self._settings = services.settings
        self._paths = paths if paths is not None else LayerPaths()
        self._read_limiter = trio.CapacityLimiter(READ_THREADS)
        # One batch at a time: the write lane of config.toml.
        self._write_lane = trio.CapacityLimiter(1)

    def routes(self) -> list[Route]:
        """The family's methods."""
        return [
            route("config/read", ConfigReadParams, self.read),
            route("config/value/write", ConfigValueWriteParams, self.value_write),
            route("config/batchWrite", ConfigBatchWriteParams, self.batch_write),
            route("configRequirements/read", None, self.requirements_read),
        ]

    @property
    def user_file(self) -> Path:
        """The user layer's file: the only one config writes edit."""
        return user_config_path(self._settings)

    async def load_stack(self) -> LayerStack:
        """The server-wide layers, read in a worker thread."""
        return await trio.to_thread.run_sync(
            load_layer_stack, self._settings, self._paths, limiter=self._read_limiter
        )

    async def read(self, ctx: RequestContext, params: ConfigReadParams) -> dict[str, Any]:
        # `cwd` selects project layers in the reference; project layers are not loaded here,
        # so the answer is the same for every cwd.
        """`config/read`: the effective config, its origins and (optionally) the layers."""
        return read_response(await self.load_stack(), params.include_layers)

    async def value_write(self, ctx: RequestContext, params: ConfigValueWriteParams) -> ConfigWriteResponse:
        """`config/value/write`: one edit of the user's config.toml."""
        edit = Edit(params.key_path, params.value, params.merge_strategy)
        return await self._write([edit], params.file_path, params.expected_version)

    async def batch_write(self, ctx: RequestContext, params: ConfigBatchWriteParams) -> ConfigWriteResponse:
        """`config/batchWrite`: several edits, written atomically together."""
        edits = [Edit(e.key_path, e.value, e.merge_strategy) for e in params.edits]
        return await self._write(edits, params.file_path, params.expected_version)

    async def requirements_read(self, ctx: RequestContext, params: None) -> ConfigRequirementsReadResponse:
        """`configRequirements/read`: none are configured here."""
        return ConfigRequirementsReadResponse()

    # ------------------------------------------------------------------ writes
    def _check_target(self, file_path: str | None) -> None:
        if file_path is None:
            return
        target = Path(file_path)
        if not target.is_absolute() or target.resolve() != self.user_file.resolve():
            raise write_error(LAYER_READONLY, READONLY_MESSAGE)

    async def _write(
        self, edits: list[Edit], file_path: str | None, expected_version: str | None
    ) -> ConfigWriteResponse:
        self._check_target(file_path)
        try:
            result: WriteResult = await trio.to_thread.run_sync(
                apply_edits, self.user_file, edits, expected_version, limiter=self._write_lane
            )
        except ConfigWriteError as exc:
            raise write_error(exc.code, exc.message) from None
        except OSError as exc:
            raise write_error("configValidationError", str(exc)) from None
        overridden = self._overridden(await self.load_stack(), edits)
        return ConfigWriteResponse(
            status="ok" if overridden is None else "okOverridden",
            version=result.version,
            file_path=str(self.user_file),
            overridden_metadata=overridden,
        )

    def _overridden(self, stack: LayerStack, edits: list[Edit]) -> OverriddenMetadata | None:
        """The first written key a higher layer overrides, as the reference reports it."""
        layers = list(stack.layers)
        user_index = next(i for i, layer in enumerate(layers) if isinstance(layer.source, UserSource))
        for edit in edits:
            parts = split_key_path(edit.key_path)
            for layer in reversed(layers[user_index + 1 :]):
                found, _ = _lookup(layer.config, parts)
                if not found:
                    continue
                _, effective = _lookup(stack.merged, parts)
                if effective == edit.value:
                    break
                kind = "sessionFlags" if isinstance(layer.source, SessionFlagsSource) else "managed"
                return OverriddenMetadata(
                    message=_OVERRIDE_MESSAGES.get(kind, "Overridden by managed config"),
                    overriding_layer=ConfigLayerMetadata(layer.source.to_wire(), layer.version),
                    effective_value=effective,
                )
        return None


def write_error(code: str, message: str) -> RpcError:
    """-32600 with `data.config_write_error_code`, as the reference words config write errors."""
    return invalid_request(message, {"config_write_error_code": code})
