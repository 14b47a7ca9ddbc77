"""`account/*` and legacy `getAuthStatus`: who the server acts as towards the model provider.

Owns the login state: the API key persisted in `$CODEX_HOME/auth.json` (see
`codex_trio.config.auth`) and, for `chatgptAuthTokens` logins, tokens held in memory only, as
the reference keeps them. Account answers depend on the active provider: a provider that does
not need OpenAI auth reports no account at all.

Workspace-routing discovery for `chatgptAuthTokens` runs after the response, in the requesting
connection's nursery (it dies with that connection), using a worker thread for the HTTP call.
"""

from __future__ import annotations

import json
import logging
import urllib.parse
from typing import Any

import attrs
import httpx
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
from codex_trio.protocol.account import (
    EXPERIMENTAL_LOGIN_TYPES,
    LOGIN_REQUIRED,
    AccountLoginCompleted,
    AccountUpdated,
    CancelLoginAccountParams,
    GetAccountParams,
    GetAccountResponse,
    GetAuthStatusParams,
    GetAuthStatusResponse,
    GovCloudRequirementsParams,
    GovCloudRequirementsResponse,
    LoginAccountParams,
    WorkspaceRouting,
)
from codex_trio.protocol.converter import camel, unstructure
from codex_trio.protocol.errors import internal_error, invalid_request
from codex_trio.protocol.registry import experimental_required
from codex_trio.routing import RequestContext, Route, route
from codex_trio.services import Services

log = logging.getLogger(__name__)

#: worker threads for auth.json / config reads and the discovery request.
AUTH_THREADS = 2
#: seconds the workspace-routing discovery request may take.
DISCOVERY_TIMEOUT = 10.0


class DiscoveryError(Exception):
    """Workspace-routing discovery failed; the text is what `login/completed.error` says."""


@attrs.frozen
class ExternalTokens:
    """A `chatgptAuthTokens` login: memory only, never written to disk."""

    access_token: str
    account_id: str
    plan_type: str
    identity: TokenIdentity
    routing: WorkspaceRouting
    workspace_name: str | None = None


async def discover_workspace(
    base_url: str, access_token: str, account_id: str
) -> tuple[WorkspaceRouting, str | None]:
    """GET `<chatgpt_base_url>wham/accounts/check` and pick the selected workspace."""
    url = urllib.parse.urljoin(base_url if base_url.endswith("/") else base_url + "/", "wham/accounts/check")
    headers = {"Authorization": f"Bearer {access_token}", "chatgpt-account-id": account_id}
    try:
        async with httpx.AsyncClient(timeout=DISCOVERY_TIMEOUT) as client:
            response = await client.get(url, headers=headers)
            response.raise_for_status()
            payload = json.loads(response.content)
    except (httpx.HTTPError, ValueError) as exc:
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

    def routes(self) -> list[Route]:
        """The family's methods."""
        return [
            route("account/read", GetAccountParams, self.read),
            route("account/login/start", LoginAccountParams, self.login_start),
            route("account/login/cancel", CancelLoginAccountParams, self.login_cancel),
            route("account/logout", None, self.logout),
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
        ctx.connection.nursery.start_soon(
            self._discover, config.chatgpt_base_url, params.access_token, params.chatgpt_account_id,
            params.chatgpt_plan_type or identity.plan_type or "unknown", identity,
        )
        return {"type": "chatgptAuthTokens"}

    async def _discover(
        self, base_url: str, token: str, account_id: str, plan_type: str, identity: TokenIdentity
    ) -> None:
        try:
            routing, name = await discover_workspace(base_url, token, account_id)
        except DiscoveryError as exc:
            self._broadcast("account/login/completed", AccountLoginCompleted(None, False, str(exc)))
            return
        self._external = ExternalTokens(token, account_id, plan_type, identity, routing, name)
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
