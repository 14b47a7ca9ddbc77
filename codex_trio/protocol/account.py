"""`account/*` and legacy `getAuthStatus` wire types (pure).

`account/login/start` params are a union tagged by `type`; they are read into one flat class
whose `type` is checked here and whose per-variant required fields are checked by the handler.
Union-shaped results (`account`, login responses) are plain dicts.
"""

from __future__ import annotations

from typing import Any

import attrs

from codex_trio.protocol.config import serde_variants
from codex_trio.records import by_value

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


@by_value
@attrs.frozen(repr=False, eq=False)
class GetAccountParams:
    """`account/read` params."""

    refresh_token: bool = False


@by_value
@attrs.frozen(repr=False, eq=False)
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


@by_value
@attrs.frozen(repr=False, eq=False)
class CancelLoginAccountParams:
    """`account/login/cancel` params."""

    login_id: str


@by_value
@attrs.frozen(repr=False, eq=False)
class GetAuthStatusParams:
    """`getAuthStatus` params (v1)."""

    include_token: bool | None = None
    refresh_token: bool | None = None


@by_value
@attrs.frozen(repr=False, eq=False)
class GetAuthStatusResponse:
    """`getAuthStatus` result: the auth method and, when asked, the token."""

    auth_method: str | None
    auth_token: str | None
    requires_openai_auth: bool | None


@by_value
@attrs.frozen(repr=False, eq=False)
class WorkspaceRouting:
    """Where requests of an external-token login are routed (from workspace discovery)."""

    chatgpt_account_id: str
    backend_origin: str
    account_routing_override: str = "NO_CONSTRAINT"


@by_value
@attrs.frozen(repr=False, eq=False)
class GetAccountResponse:
    """`account/read` result."""

    account: dict[str, Any] | None
    user_id: str | None
    requires_openai_auth: bool
    workspace_routing: WorkspaceRouting | None = None


@by_value
@attrs.frozen(repr=False, eq=False)
class AccountLoginCompleted:
    """`account/login/completed`: a login finished, or failed with `error`."""

    login_id: str | None
    success: bool
    error: str | None = None
    onboarding_entrypoint: str | None = None


@by_value
@attrs.frozen(repr=False, eq=False)
class AccountUpdated:
    """`account/updated`: the auth mode or plan changed."""

    auth_mode: str | None
    plan_type: str | None


@by_value
@attrs.frozen(repr=False, eq=False)
class GovCloudRequirementsParams:
    """`{}`: the method takes no fields, but `params` must be present."""


@by_value
@attrs.frozen(repr=False, eq=False)
class GovCloudRequirementsResponse:
    """`account/bedrock/checkGovCloudRequirements` result: nothing is required here."""

    is_gov_cloud: bool = False
    should_warn: bool = False


@by_value
@attrs.frozen(repr=False, eq=False)
class RateLimitWindow:
    """One rate-limit window: how much of it is used, how long it is, when it resets."""

    used_percent: int
    window_duration_mins: int | None = None
    resets_at: int | None = None


@by_value
@attrs.frozen(repr=False, eq=False)
class CreditsSnapshot:
    """The account's credits, as the backend or the response headers report them."""

    has_credits: bool
    unlimited: bool = False
    balance: str | None = None


@by_value
@attrs.frozen(repr=False, eq=False)
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


@by_value
@attrs.frozen(repr=False, eq=False)
class GetAccountRateLimitsResponse:
    """`account/rateLimits/read` result: the backend's `codex` limit and every limit by id."""

    rate_limits: RateLimitSnapshot
    rate_limits_by_limit_id: dict[str, RateLimitSnapshot] | None = None
    ordinary_usage_allowed: bool | None = None
    rate_limit_reset_credits: Any = None
    account_id: str | None = None
    rate_limit_upsell: Any = None


@by_value
@attrs.frozen(repr=False, eq=False)
class RateLimitsUpdated:
    """`account/rateLimits/updated` (broadcast after every model response)."""

    rate_limits: RateLimitSnapshot = attrs.Factory(RateLimitSnapshot)
