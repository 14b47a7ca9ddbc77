"""`account/*` and legacy `getAuthStatus` wire types (pure).

`account/login/start` params are a union tagged by `type`; they are read into one flat class
whose `type` is checked here and whose per-variant required fields are checked by the handler.
Union-shaped results (`account`, login responses) are plain dicts.
"""

from __future__ import annotations

from typing import Any

import attrs

from codex_trio.protocol.config import serde_variants

LOGIN_TYPES = (
    "apiKey",
    "chatgpt",
    "chatgptDeviceCode",
    "chatgptAuthTokens",
    "amazonBedrock",
    "amazonBedrockAccessKeys",
)
#: variants only a client with `experimentalApi` may use.
EXPERIMENTAL_LOGIN_TYPES = frozenset({"chatgptAuthTokens", "amazonBedrock"})
#: required fields per variant, in the order serde reports them missing.
LOGIN_REQUIRED: dict[str, tuple[str, ...]] = {
    "apiKey": ("api_key",),
    "chatgptAuthTokens": ("access_token", "chatgpt_account_id"),
    "amazonBedrock": ("api_key", "region"),
    "amazonBedrockAccessKeys": ("access_key_id", "secret_access_key", "region"),
}


def _login_type(_: Any, __: attrs.Attribute[Any], value: str) -> None:
    if value not in LOGIN_TYPES:
        raise ValueError(f"unknown variant `{value}`, expected {serde_variants(*LOGIN_TYPES)}")


@attrs.frozen
class GetAccountParams:
    """`account/read` params."""

    refresh_token: bool = False


@attrs.frozen
class LoginAccountParams:
    """`account/login/start` params: an API key or external ChatGPT tokens."""

    type: str = attrs.field(validator=_login_type)
    api_key: str | None = None
    app_brand: str | None = None
    codex_streamlined_login: bool | None = None
    use_hosted_login_success_page: bool | None = None
    access_token: str | None = None
    chatgpt_account_id: str | None = None
    chatgpt_plan_type: str | None = None
    region: str | None = None
    access_key_id: str | None = None
    secret_access_key: str | None = None
    session_token: str | None = None


@attrs.frozen
class CancelLoginAccountParams:
    """`account/login/cancel` params."""

    login_id: str


@attrs.frozen
class GetAuthStatusParams:
    """`getAuthStatus` params (v1)."""

    include_token: bool | None = None
    refresh_token: bool | None = None


@attrs.frozen
class GetAuthStatusResponse:
    """`getAuthStatus` result: the auth method and, when asked, the token."""

    auth_method: str | None
    auth_token: str | None
    requires_openai_auth: bool | None


@attrs.frozen
class WorkspaceRouting:
    """Where requests of an external-token login are routed (from workspace discovery)."""

    chatgpt_account_id: str
    backend_origin: str
    account_routing_override: str = "NO_CONSTRAINT"


@attrs.frozen
class GetAccountResponse:
    """`account/read` result."""

    account: dict[str, Any] | None
    user_id: str | None
    requires_openai_auth: bool
    workspace_routing: WorkspaceRouting | None = None


@attrs.frozen
class AccountLoginCompleted:
    """`account/login/completed`: a login finished, or failed with `error`."""

    login_id: str | None
    success: bool
    error: str | None = None
    onboarding_entrypoint: str | None = None


@attrs.frozen
class AccountUpdated:
    """`account/updated`: the auth mode or plan changed."""

    auth_mode: str | None
    plan_type: str | None


@attrs.frozen
class GovCloudRequirementsParams:
    """`{}`: the method takes no fields, but `params` must be present."""


@attrs.frozen
class GovCloudRequirementsResponse:
    """`account/bedrock/checkGovCloudRequirements` result: nothing is required here."""

    is_gov_cloud: bool = False
    should_warn: bool = False


@attrs.frozen
class RateLimitWindow:
    """One rate-limit window: how much of it is used, how long it is, when it resets."""

    used_percent: int
    window_duration_mins: int | None = None
    resets_at: int | None = None


@attrs.frozen
class CreditsSnapshot:
    """The account's credits, as the backend or the response headers report them."""

    has_credits: bool
    unlimited: bool = False
    balance: str | None = None


@attrs.frozen
class RateLimitSnapshot:
    """One limit's state (`codex_trio.core.rate_limits` reads it); unknown fields stay null."""

    limit_id: str = "codex"
    limit_name: str | None = None
    normal_model_slug: str | None = None
    primary: RateLimitWindow | None = None
    secondary: RateLimitWindow | None = None
    credits: CreditsSnapshot | None = None
    individual_limit: Any = None
    spend_control_reached: Any = None
    plan_type: str | None = None
    rate_limit_reached_type: str | None = None


@attrs.frozen
class GetAccountRateLimitsResponse:
    """`account/rateLimits/read` result: the backend's `codex` limit and every limit by id."""

    rate_limits: RateLimitSnapshot
    rate_limits_by_limit_id: dict[str, RateLimitSnapshot] | None = None
    ordinary_usage_allowed: bool | None = None
    rate_limit_reset_credits: Any = None
    account_id: str | None = None
    rate_limit_upsell: Any = None


@attrs.frozen
class RateLimitsUpdated:
    """`account/rateLimits/updated` (broadcast after every model response)."""

    rate_limits: RateLimitSnapshot = attrs.Factory(RateLimitSnapshot)
