"""`account/*` and legacy `getAuthStatus`: who the server acts as towards the model provider.

Owns the login state: the API key persisted in `$CODEX_HOME/auth.json` (see
`codex_trio.config.auth`) and, for `chatgptAuthTokens` logins, tokens held in memory only, as
the reference keeps them. Account answers depend on the active provider: a provider that does
not need OpenAI auth reports no account at all.

Workspace-routing discovery for `chatgptAuthTokens` runs after the response, in the requesting
connection's nursery (it dies with that connection).

External tokens are refreshed on demand: a model request refused with HTTP 401 awaits
`Login.refresh` (see `model_login`), which sends the connection that logged in the server
request `account/chatgptAuthTokens/refresh` and waits at most REFRESH_TIMEOUT for new tokens.
`account/rateLimits/read` asks the ChatGPT backend (`wham/usage`), as the reference does.
"""

from __future__ import annotations

import json
import logging
import urllib.parse
from typing import Any

import attrs
import trio

from codex_trio.config.auth import (
    InvalidToken,
    StoredAuth,
    TokenIdentity,
    delete_auth,
    jwt_claims,
    read_auth,
    write_api_key,
)
from codex_trio.config.effective import EffectiveConfig, load_config
from codex_trio.connection import Connection, ConnectionClosed
from codex_trio.core import rate_limits
from codex_trio.core.model_client import Login, ModelError, load_httpx
from codex_trio.protocol.account import (
    EXPERIMENTAL_LOGIN_TYPES,
    LOGIN_REQUIRED,
    AccountLoginCompleted,
    AccountUpdated,
    CancelLoginAccountParams,
    GetAccountParams,
    GetAccountRateLimitsResponse,
    GetAccountResponse,
    GetAuthStatusParams,
    GetAuthStatusResponse,
    GovCloudRequirementsParams,
    GovCloudRequirementsResponse,
    LoginAccountParams,
    WorkspaceRouting,
)
from codex_trio.protocol.converter import camel, unstructure
from codex_trio.protocol.errors import RpcError, internal_error, invalid_request
from codex_trio.protocol.registry import experimental_required
from codex_trio.records import by_value
from codex_trio.routing import RequestContext, Route, route
from codex_trio.services import Services

log = logging.getLogger(__name__)

#: worker threads for auth.json / config reads and the discovery request.
AUTH_THREADS = 2
#: seconds the workspace-routing discovery request may take.
DISCOVERY_TIMEOUT = 10.0
#: seconds the client that logged in has to answer `account/chatgptAuthTokens/refresh`.
REFRESH_TIMEOUT = 10.0
#: seconds the `wham/usage` request of `account/rateLimits/read` may take.
USAGE_TIMEOUT = 10.0
EXTERNAL_AUTH_ACTIVE = (
    "External auth is active. Use account/login/start (chatgptAuthTokens) to update it or "
    "account/logout to clear it."
)


class DiscoveryError(Exception):
    """Workspace-routing discovery failed; the text is what `login/completed.error` says."""


@by_value
@attrs.frozen(repr=False, eq=False)
class ExternalTokens:
    """A `chatgptAuthTokens` login: memory only, never written to disk."""

    access_token: str
    account_id: str
    plan_type: str
    identity: TokenIdentity
    routing: WorkspaceRouting
    workspace_name: str | None = None
    #: the connection that logged in: it is the one asked for new tokens.
    owner: Connection | None = attrs.field(default=None, eq=False, repr=False)


class BackendError(Exception):
    """A ChatGPT backend request failed (connection, timeout or HTTP status); the text is httpx's."""


async def _backend_get(url: str, token: str, account_id: str | None, timeout: float) -> Any:
    """GET a ChatGPT backend JSON resource with the login's bearer token."""
    headers = {"Authorization": f"Bearer {token}"}
    if account_id:
        headers["chatgpt-account-id"] = account_id
    await load_httpx()
    import httpx

    try:
        async with httpx.AsyncClient(timeout=timeout) as client:
            response = await client.get(url, headers=headers)
            response.raise_for_status()
            return json.loads(response.content)
    except httpx.HTTPError as exc:
        raise BackendError(str(exc)) from exc


def _backend_url(base_url: str, path: str) -> str:
    return urllib.parse.urljoin(base_url if base_url.endswith("/") else base_url + "/", path)


def forced_workspaces(config: EffectiveConfig) -> list[str] | None:
    """`forced_chatgpt_workspace_id`: one id or a list of ids, or None when unset."""
    value = config.raw.get("forced_chatgpt_workspace_id")
    if isinstance(value, str) and value.strip():
        return [value.strip()]
    if isinstance(value, list):
        ids = [v.strip() for v in value if isinstance(v, str) and v.strip()]
        return ids or None
    return None


async def discover_workspace(
    base_url: str, access_token: str, account_id: str
) -> tuple[WorkspaceRouting, str | None]:
    """GET `<chatgpt_base_url>wham/accounts/check` and pick the selected workspace."""
    url = _backend_url(base_url, "wham/accounts/check")
    try:
        payload = await _backend_get(url, access_token, account_id, DISCOVERY_TIMEOUT)
    except (BackendError, ValueError) as exc:
        log.info("workspace routing discovery failed: %s", exc)
        raise DiscoveryError("workspace routing discovery failed") from None
    accounts = payload.get("accounts") if isinstance(payload, dict) else None
    if not isinstance(accounts, list):
        raise DiscoveryError("workspace routing discovery failed")
    selected = next((a for a in accounts if isinstance(a, dict) and a.get("id") == account_id), None)
    if selected is None:
        raise DiscoveryError("selected workspace missing from routing discovery")
    origin = selected.get("workspace_backend_origin")
    if not isinstance(origin, str) or not origin:
        raise DiscoveryError("workspace routing discovery missing backend origin")
    parsed = urllib.parse.urlsplit(origin)
    if parsed.scheme != "https" or parsed.username or parsed.password or not parsed.hostname:
        raise DiscoveryError("workspace backend must use an HTTPS origin without credentials")
    override = selected.get("account_routing_override")
    name = selected.get("name")
    return (
        WorkspaceRouting(account_id, origin, override if isinstance(override, str) else "NO_CONSTRAINT"),
        name if isinstance(name, str) else None,
    )


class AccountApi:
    """The account family and the server's current login."""

    def __init__(self, services: Services) -> None:
        self._services = services
        self._settings = services.settings
        self._limiter = trio.CapacityLimiter(AUTH_THREADS)
        self._external: ExternalTokens | None = None
        #: one refresh at a time: turns refused together share the new tokens.
        self._refreshing = trio.Lock()

    def routes(self) -> list[Route]:
        """The family's methods."""
        return [
            route("account/read", GetAccountParams, self.read),
            route("account/login/start", LoginAccountParams, self.login_start),
            route("account/login/cancel", CancelLoginAccountParams, self.login_cancel),
            route("account/logout", None, self.logout),
            route("account/rateLimits/read", None, self.rate_limits_read),
            route("getAuthStatus", GetAuthStatusParams, self.auth_status),
            route(
                "account/bedrock/checkGovCloudRequirements",
                GovCloudRequirementsParams,
                self.gov_cloud_requirements,
                experimental=True,
            ),
        ]

    # ------------------------------------------------------------------ state
    async def _config(self) -> EffectiveConfig:
        return await trio.to_thread.run_sync(load_config, self._settings, limiter=self._limiter)

    async def _stored(self) -> StoredAuth | None:
        return await trio.to_thread.run_sync(read_auth, self._settings.codex_home, limiter=self._limiter)

    async def credentials(self) -> tuple[str, str] | None:
        """(auth mode, bearer secret) of the current login, or None; for model clients."""
        if self._external is not None:
            return ("chatgptAuthTokens", self._external.access_token)
        stored = await self._stored()
        if stored is None:
            return None
        secret = stored.api_key if stored.mode == "apikey" else stored.access_token
        return (stored.mode, secret) if secret is not None else None

    async def model_login(self) -> Login | None:
        """The login model requests use; external tokens come with their `refresh`."""
        external = self._external
        if external is not None:
            return Login("chatgptAuthTokens", external.access_token, external.account_id, self._refresh)
        stored = await self._stored()
        if stored is None:
            return None
        if stored.mode == "apikey":
            return Login("apikey", stored.api_key) if stored.api_key else None
        token = stored.access_token
        return Login(stored.mode, token, stored.identity.account_id) if token else None

    async def _refresh(self, refused: Login) -> Login:
        """Ask the client that logged in for new tokens (`account/chatgptAuthTokens/refresh`).

        Raises ModelError (retryable, as the reference lets the turn retry) when the client
        errors, stays silent for REFRESH_TIMEOUT or is gone, and a non-retryable one when the
        new tokens are unusable or name a workspace `forced_chatgpt_workspace_id` excludes.
        """
        async with self._refreshing:
            current = self._external
            if current is None:
                raise ModelError("auth refresh request failed: external auth was cleared", "other")
            if current.access_token != refused.secret:
                return Login("chatgptAuthTokens", current.access_token, current.account_id, self._refresh)
            owner = current.owner
            if owner is None or owner.closed.is_set():
                raise ModelError("auth refresh request canceled: connection closed", retryable=True)
            params = {"reason": "unauthorized", "previousAccountId": current.account_id}
            try:
                answer = await owner.request(
                    "account/chatgptAuthTokens/refresh", params, timeout=REFRESH_TIMEOUT
                )
            except RpcError as exc:
                raise ModelError(f"auth refresh request failed: code={exc.code}", retryable=True) from None
            except trio.TooSlowError:
                message = f"auth refresh request timed out after {REFRESH_TIMEOUT:.0f}s"
                raise ModelError(message, retryable=True) from None
            except ConnectionClosed:
                raise ModelError("auth refresh request canceled: connection closed", retryable=True) from None
            fresh = await self._refreshed_tokens(current, answer)
            if self._external is not current:
                raise ModelError("auth refresh request failed: external auth changed meanwhile", "other")
            self._external = fresh
            if (fresh.plan_type, fresh.account_id) != (current.plan_type, current.account_id):
                # The reference stays silent here (known-reference-bugs B16); clients want to know.
                self._broadcast("account/updated", AccountUpdated("chatgptAuthTokens", fresh.plan_type))
            return Login("chatgptAuthTokens", fresh.access_token, fresh.account_id, self._refresh)

    async def _refreshed_tokens(self, current: ExternalTokens, answer: Any) -> ExternalTokens:
        body = answer if isinstance(answer, dict) else {}
        token, account_id = body.get("accessToken"), body.get("chatgptAccountId")
        if not isinstance(token, str) or not isinstance(account_id, str):
            raise ModelError("auth refresh request failed: the answer lacks accessToken or chatgptAccountId")
        try:
            identity = TokenIdentity.from_claims(jwt_claims(token))
        except InvalidToken as exc:
            raise ModelError(f"auth refresh request failed: {exc}") from None
        forced = forced_workspaces(await self._config())
        if forced is not None and account_id not in forced:
            raise ModelError(
                f"External auth must use one of workspace(s) {json.dumps(forced)}, "
                f"but received {json.dumps(account_id)}."
            )
        plan = body.get("chatgptPlanType")
        plan_type = plan if isinstance(plan, str) and plan else identity.plan_type or current.plan_type
        routing = current.routing
        if account_id != current.account_id:
            routing = attrs.evolve(routing, chatgpt_account_id=account_id)
        return attrs.evolve(
            current, access_token=token, account_id=account_id, plan_type=plan_type, identity=identity,
            routing=routing,
        )  # fmt: skip

    def _announce(self, ctx: RequestContext, method: str, params: Any) -> None:
        """Send to every connection; the caller gets it right after its response."""
        others = [c.id for c in self._services.broadcaster.connections if c.id != ctx.connection.id]
        if others:
            self._services.broadcaster.broadcast(method, params, only=others)
        ctx.notify_after_response(method, unstructure(params))

    def _broadcast(self, method: str, params: Any) -> None:
        self._services.broadcaster.broadcast(method, params)

    # ------------------------------------------------------------------ methods
    async def read(self, ctx: RequestContext, params: GetAccountParams) -> GetAccountResponse:
        """`account/read`: the current login (API key, external tokens, or none)."""
        config = await self._config()
        requires = config.provider.requires_openai_auth
        if not requires:
            return GetAccountResponse(None, None, False)
        if self._external is not None:
            ext = self._external
            account = {
                "type": "chatgpt",
                "email": ext.identity.email,
                "planType": ext.plan_type,
                "workspaceName": ext.workspace_name,
            }
            return GetAccountResponse(account, ext.identity.user_id, True, ext.routing)
        stored = await self._stored()
        if stored is None:
            return GetAccountResponse(None, None, True)
        if stored.mode == "apikey":
            return GetAccountResponse({"type": "apiKey"}, None, True)
        identity = stored.identity
        account = {
            "type": "chatgpt",
            "email": identity.email,
            "planType": identity.plan_type or "unknown",
            "workspaceName": None,
        }
        return GetAccountResponse(account, identity.user_id, True)

    async def login_start(self, ctx: RequestContext, params: LoginAccountParams) -> dict[str, Any]:
        """`account/login/start`: store an API key, or keep external ChatGPT tokens in memory."""
        for field in LOGIN_REQUIRED.get(params.type, ()):
            if getattr(params, field) is None:
                raise invalid_request(f"Invalid request: missing field `{camel(field)}`")
        if params.type in EXPERIMENTAL_LOGIN_TYPES and not ctx.connection.session.experimental_api:
            raise experimental_required(f"account/login/start.{params.type}")
        if params.type in ("apiKey", "chatgpt", "chatgptDeviceCode") and self._external is not None:
            raise invalid_request(EXTERNAL_AUTH_ACTIVE)
        if params.type == "apiKey":
            assert params.api_key is not None
            await trio.to_thread.run_sync(
                write_api_key, self._settings.codex_home, params.api_key, limiter=self._limiter
            )
            self._external = None
            self._announce(ctx, "account/login/completed", AccountLoginCompleted(None, True))
            self._announce(ctx, "account/updated", AccountUpdated("apikey", None))
            return {"type": "apiKey"}
        if params.type == "chatgptAuthTokens":
            return await self._login_external(ctx, params)
        if params.type == "chatgptDeviceCode":
            raise internal_error("failed to request device code: device-code login is not supported here")
        if params.type == "chatgpt":
            raise internal_error("failed to start login server: ChatGPT browser login is not supported here")
        raise internal_error("Amazon Bedrock login is not supported here")

    async def _login_external(self, ctx: RequestContext, params: LoginAccountParams) -> dict[str, Any]:
        assert params.access_token is not None and params.chatgpt_account_id is not None
        try:
            identity = TokenIdentity.from_claims(jwt_claims(params.access_token))
        except InvalidToken as exc:
            raise internal_error(f"failed to set external auth: {exc}") from None
        config = await self._config()
        forced = forced_workspaces(config)
        if forced is not None and params.chatgpt_account_id not in forced:
            raise invalid_request(
                f"External auth must use one of workspace(s) {json.dumps(forced)}, "
                f"but received {json.dumps(params.chatgpt_account_id)}."
            )
        # Its outcome is broadcast to every connection, so the server owns it, not this request.
        self._services.start_detached(
            self._discover,
            config.chatgpt_base_url,
            params.access_token,
            params.chatgpt_account_id,
            params.chatgpt_plan_type or identity.plan_type or "unknown",
            identity,
            ctx.connection,
            name="account workspace discovery",
        )
        return {"type": "chatgptAuthTokens"}

    async def _discover(
        self,
        base_url: str,
        token: str,
        account_id: str,
        plan_type: str,
        identity: TokenIdentity,
        owner: Connection,
    ) -> None:
        try:
            with trio.fail_after(DISCOVERY_TIMEOUT + 1):
                routing, name = await discover_workspace(base_url, token, account_id)
        except (DiscoveryError, trio.TooSlowError) as exc:
            reason = str(exc) or f"workspace discovery timed out after {DISCOVERY_TIMEOUT:g}s"
            self._broadcast("account/login/completed", AccountLoginCompleted(None, False, reason))
            return
        self._external = ExternalTokens(token, account_id, plan_type, identity, routing, name, owner)
        self._broadcast("account/login/completed", AccountLoginCompleted(None, True))
        self._broadcast("account/updated", AccountUpdated("chatgptAuthTokens", plan_type))

    async def login_cancel(self, ctx: RequestContext, params: CancelLoginAccountParams) -> dict[str, Any]:
        # No login flow here ever waits for a browser, so no login id is ever pending.
        """`account/login/cancel`: no login here waits, so every id is unknown."""
        raise invalid_request(f"invalid login id: {params.login_id}")

    async def logout(self, ctx: RequestContext, params: None) -> dict[str, Any]:
        """`account/logout`: forget every credential, on disk and in memory."""
        await trio.to_thread.run_sync(delete_auth, self._settings.codex_home, limiter=self._limiter)
        self._external = None
        self._announce(ctx, "account/updated", AccountUpdated(None, None))
        return {}

    async def rate_limits_read(self, ctx: RequestContext, params: None) -> GetAccountRateLimitsResponse:
        """The account's limits from the ChatGPT backend (`<chatgpt_base_url>wham/usage`)."""
        login = await self.model_login()
        if login is None:
            raise invalid_request("codex account authentication required to read rate limits")
        if login.mode == "apikey":
            raise invalid_request("chatgpt authentication required to read rate limits")
        config = await self._config()
        url = _backend_url(config.chatgpt_base_url, "wham/usage")
        try:
            payload = await _backend_get(url, login.secret, login.account_id, USAGE_TIMEOUT)
        except (BackendError, ValueError) as exc:
            raise internal_error(f"failed to fetch codex rate limits: {exc}") from None
        main, by_id = rate_limits.from_usage(payload)
        return GetAccountRateLimitsResponse(main, by_id)

    async def auth_status(self, ctx: RequestContext, params: GetAuthStatusParams) -> GetAuthStatusResponse:
        """`getAuthStatus` (v1): the auth method, with the token when asked."""
        config = await self._config()
        if not config.provider.requires_openai_auth:
            return GetAuthStatusResponse(None, None, False)
        credentials = await self.credentials()
        if credentials is None:
            return GetAuthStatusResponse(None, None, True)
        mode, secret = credentials
        return GetAuthStatusResponse(mode, secret if params.include_token else None, True)

    async def gov_cloud_requirements(
        self, ctx: RequestContext, params: GovCloudRequirementsParams
    ) -> GovCloudRequirementsResponse:
        """`account/bedrock/checkGovCloudRequirements`: nothing is required here."""
        return GovCloudRequirementsResponse()
