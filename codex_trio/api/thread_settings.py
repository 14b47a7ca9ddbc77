"""How a thread's settings are resolved: request fields over `config` over config.toml.

Owned by the thread family (`codex_trio.api.threads`), which asks it for the settings of a
new, resumed or forked thread and for the server-wide config; nothing else imports it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import attrs
import trio

from codex_trio.config.effective import EffectiveConfig, load_config
from codex_trio.protocol.converter import WireError
from codex_trio.protocol.errors import RpcError, invalid_request
from codex_trio.protocol.thread import ThreadOverrides, read_approval_policy
from codex_trio.records import by_value
from codex_trio.services import Services
from codex_trio.store import ThreadRecord


def bad_params(message: str) -> RpcError:
    """The reference's -32600 for a request that does not deserialize (`Invalid request: …`)."""
    return invalid_request(f"Invalid request: {message}")


def absolute(base: Path, raw: str) -> Path:
    """`raw` made absolute against `base` and normalized (no file access)."""
    return Path(os.path.normpath(os.path.join(base, raw)))


@by_value
@attrs.frozen(repr=False, eq=False)
class ThreadSettings:
    """What a new or reloaded thread runs with, resolved from config and the request."""

    cwd: Path
    model: str
    model_provider: str
    reasoning_effort: str | None
    approval_policy: Any
    approvals_reviewer: str
    sandbox_mode: str
    active_permission_profile: dict[str, Any] | None
    service_tier: str | None
    config: Mapping[str, Any]
    effective: EffectiveConfig


class SettingsResolver:
    """Loads the effective config (off the event loop) and resolves thread settings from it."""

    def __init__(self, services: Services) -> None:
        self.services = services
        #: the server-wide config (no cwd, no overrides), once loaded.
        self.config: EffectiveConfig | None = None

    async def load_config(self, cwd: Path | None, overrides: Mapping[str, Any] | None) -> EffectiveConfig:
        settings = self.services.settings
        try:
            config = await trio.to_thread.run_sync(
                lambda: load_config(settings, cwd, request_overrides=overrides or None)
            )
        except (OSError, ValueError) as exc:
            raise invalid_request(f"failed to load configuration: {exc}") from None
        if overrides is None and cwd is None:
            self.config = config
        return config

    async def default_provider(self) -> str:
        if self.config is None:
            await self.load_config(None, None)
        assert self.config is not None
        return self.config.model_provider_id

    def resolve_cwd(self, raw: str | None) -> Path:
        """A request's cwd against the server's (the reference does not check it exists)."""
        return absolute(Path(os.path.abspath(self.services.settings.cwd)), raw or ".")

    def stored_cwd(self, raw: str | None, record: ThreadRecord) -> Path:
        """The cwd of a resumed or forked thread: the request's, else the stored thread's."""
        if raw is not None:
            return self.resolve_cwd(raw)
        return Path(record.cwd or self.services.settings.cwd)

    async def resolve(
        self,
        params: ThreadOverrides,
        *,
        experimental_api: bool,
        cwd: Path,
        fallback: ThreadRecord | None = None,
    ) -> ThreadSettings:
        """Resolve the thread's settings: request fields over `config` over config.toml.

        `fallback` is the stored thread being resumed or forked: its model and provider apply
        when neither the request nor its `config` names one.
        """
        approval_policy = params.approval_policy
        model, model_provider, sandbox = params.model, params.model_provider, params.sandbox
        fallback_model = fallback.model if fallback is not None else None
        fallback_provider = fallback.model_provider if fallback is not None else None
        policy = None
        if approval_policy is not None:
            try:
                policy = read_approval_policy(approval_policy)
            except WireError as exc:
                raise bad_params(str(exc)) from None
            if isinstance(policy, dict) and not experimental_api:
                raise invalid_request("askForApproval.granular requires experimentalApi capability")
        overrides: dict[str, Any] = dict(params.config or {})
        if model is not None:
            overrides["model"] = model
        elif fallback_model is not None and "model" not in overrides:
            overrides["model"] = fallback_model
        if model_provider is not None:
            overrides["model_provider"] = model_provider
        elif fallback_provider is not None and "model_provider" not in overrides:
            overrides["model_provider"] = fallback_provider
        if policy is not None:
            overrides["approval_policy"] = policy
        if sandbox is not None:
            overrides["sandbox_mode"] = sandbox
        effective = await self.load_config(cwd, overrides)
        provider = effective.model_provider_id
        if provider not in effective.model_providers:
            raise invalid_request(f"failed to load configuration: Model provider `{provider}` not found")
        mode = effective.sandbox_mode
        if mode not in ("read-only", "workspace-write", "danger-full-access"):
            mode = "read-only"
        profile = None if sandbox is not None else {"id": f":{mode}", "extends": None}
        return ThreadSettings(
            cwd=cwd,
            model=effective.model,
            model_provider=provider,
            reasoning_effort=effective.model_reasoning_effort,
            approval_policy=effective.approval_policy,
            approvals_reviewer=params.approvals_reviewer or "user",
            sandbox_mode=mode,
            active_permission_profile=profile,
            service_tier=params.service_tier if params.service_tier is not None else effective.service_tier,
            config=effective.raw,
            effective=effective,
        )
