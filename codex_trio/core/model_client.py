"""The model client: one Responses-API request streamed over HTTP + SSE.

Owns the wire to the model and nothing else: building the HTTP request from a provider
(`codex_trio.config.effective.ProviderConfig`), the provider's auth, request-level retries
with backoff (HTTP 429 / 5xx / connection failures before any event arrived), decoding the
event stream into typed `ResponseEvent`s, and turning every failure into one `ModelError`
that says why, in the reference's words. Stream-level retries ("Reconnecting... n/N") belong
to the turn, which must tell the client about them; this module only says whether an error
is worth another attempt (`ModelError.retryable`).

An HTTP 401 for a login that can be refreshed (external ChatGPT tokens, `Login.refresh`) asks
for new tokens once and repeats the request once with them. Each answer's rate-limit headers
ride on its `Completed` event (`codex_trio.core.rate_limits`).

The HTTP client (httpx, run on Trio through anyio) is opened per turn by `open_model_client`,
so its connections are owned by the turn's task and dropped when the turn is cancelled:
an interrupted turn abandons the stream at once, as the reference does.
"""

from __future__ import annotations

import importlib
import json
import logging
import os
import random
import ssl
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

import attrs
import orjson
import trio

from codex_trio import tracing
from codex_trio.config.effective import ProviderConfig
from codex_trio.core import rate_limits
from codex_trio.core.sse import SseDecoder, SseError
from codex_trio.protocol.account import RateLimitSnapshot
from codex_trio.records import by_value

if TYPE_CHECKING:
    import httpx

log = logging.getLogger(__name__)

#: first backoff delay in seconds; doubles per attempt (0.2, 0.4, 0.8, 1.6, 3.2), ±10 % jitter.
RETRY_BASE_DELAY = 0.2
#: the longest single backoff, whatever the attempt number or a server's Retry-After says.
RETRY_MAX_DELAY = 30.0
#: seconds to open a connection to the model.
CONNECT_TIMEOUT = 30.0
#: bytes of an error body kept for the error message.
MAX_ERROR_BODY = 64 * 1024
#: what the reference says for a 5xx answer.
HIGH_DEMAND_MESSAGE = "We\u2019re currently experiencing high demand, which may cause temporary errors."
STREAM_CLOSED_EARLY = "stream closed before response.completed"

_REASONS = {
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    408: "Request Timeout",
    409: "Conflict",
    413: "Payload Too Large",
    429: "Too Many Requests",
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Gateway Timeout",
}


# ---------------------------------------------------------------------------- errors
@by_value
@attrs.frozen(repr=False, eq=False)
class ModelError(Exception):
    """Why a model request failed, as the client is told (`error` / `turn.error`).

    `codex_error_info` is the wire value (`"internalServerError"`, or an object such as
    `{"responseStreamDisconnected": {"httpStatusCode": None}}`); `retryable` says whether the
    turn may try the same request again (a dropped stream, `response.failed`, a 5xx).
    """

    message: str
    codex_error_info: Any = "other"
    additional_details: str | None = None
    retryable: bool = False
    http_status: int | None = None

    def __str__(self) -> str:
        return self.message


def _stream_disconnected(detail: str) -> ModelError:
    return ModelError(
        f"stream disconnected before completion: {detail}",
        {"responseStreamDisconnected": {"httpStatusCode": None}},
        retryable=True,
    )


def status_error(status: int, body: bytes, url: str) -> ModelError:
    """The error for a non-2xx answer, worded as the reference words it."""
    reason = _REASONS.get(status, "")
    text = body.decode("utf-8", "replace")
    if status >= 500:
        return ModelError(HIGH_DEMAND_MESSAGE, "internalServerError", retryable=True, http_status=status)
    if status == 429:
        return ModelError(
            f"exceeded retry limit, last status: {status} {reason}".rstrip(),
            {"responseTooManyFailedAttempts": {"httpStatusCode": status}},
            http_status=status,
        )
    if status in (401, 403):
        message = _error_message(text) or text
        return ModelError(
            f"unexpected status {status} {reason}: {message}, url: {url}",
            {"httpConnectionFailed": {"httpStatusCode": status}},
            http_status=status,
        )
    detail = _error_message(text)
    if detail is not None and "context" in detail and "length" in detail:
        return ModelError(detail, "contextWindowExceeded", http_status=status)
    return ModelError(text or f"unexpected status {status} {reason}", "other", http_status=status)


def _error_message(text: str) -> str | None:
    try:
        payload = json.loads(text)
    except ValueError:
        return None
    error = payload.get("error") if isinstance(payload, dict) else None
    message = error.get("message") if isinstance(error, dict) else None
    return message if isinstance(message, str) else None


# ---------------------------------------------------------------------------- events
@by_value
@attrs.frozen(repr=False, eq=False)
class TokenUsage:
    input_tokens: int = 0
    cached_input_tokens: int = 0
    output_tokens: int = 0
    reasoning_output_tokens: int = 0
    total_tokens: int = 0

    @classmethod
    def from_wire(cls, usage: Mapping[str, Any]) -> TokenUsage:
        def num(value: Any) -> int:
            return value if isinstance(value, int) and not isinstance(value, bool) else 0

        input_details = usage.get("input_tokens_details") or {}
        output_details = usage.get("output_tokens_details") or {}
        input_tokens = num(usage.get("input_tokens"))
        output_tokens = num(usage.get("output_tokens"))
        return cls(
            input_tokens=input_tokens,
            cached_input_tokens=num(input_details.get("cached_tokens"))
            if isinstance(input_details, dict)
            else 0,
            output_tokens=output_tokens,
            reasoning_output_tokens=num(output_details.get("reasoning_tokens"))
            if isinstance(output_details, dict)
            else 0,
            total_tokens=num(usage.get("total_tokens")) or input_tokens + output_tokens,
        )

    def __add__(self, other: TokenUsage) -> TokenUsage:
        return TokenUsage(
            self.input_tokens + other.input_tokens,
            self.cached_input_tokens + other.cached_input_tokens,
            self.output_tokens + other.output_tokens,
            self.reasoning_output_tokens + other.reasoning_output_tokens,
            self.total_tokens + other.total_tokens,
        )


@by_value
@attrs.frozen(repr=False, eq=False)
class Created:
    response_id: str | None


@by_value
@attrs.frozen(repr=False, eq=False)
class OutputItemAdded:
    """A model output item opened (`message`, `reasoning`, `function_call`, …)."""

    item: dict[str, Any]


@by_value
@attrs.frozen(repr=False, eq=False)
class OutputTextDelta:
    item_id: str | None
    delta: str


@by_value
@attrs.frozen(repr=False, eq=False)
class ReasoningSummaryPartAdded:
    item_id: str | None
    summary_index: int


@by_value
@attrs.frozen(repr=False, eq=False)
class ReasoningSummaryDelta:
    item_id: str | None
    delta: str
    summary_index: int


@by_value
@attrs.frozen(repr=False, eq=False)
class ReasoningTextDelta:
    item_id: str | None
    delta: str
    content_index: int


@by_value
@attrs.frozen(repr=False, eq=False)
class OutputItemDone:
    """A complete model output item, exactly as the model sent it."""

    item: dict[str, Any]


@by_value
@attrs.frozen(repr=False, eq=False)
class Completed:
    response_id: str | None
    usage: TokenUsage | None
    #: the answer's rate-limit snapshot, from its headers (`codex_trio.core.rate_limits`).
    rate_limits: RateLimitSnapshot = attrs.Factory(RateLimitSnapshot)


ResponseEvent = (
    Created
    | OutputItemAdded
    | OutputTextDelta
    | ReasoningSummaryPartAdded
    | ReasoningSummaryDelta
    | ReasoningTextDelta
    | OutputItemDone
    | Completed
)


def decode_event(kind: str, data: Mapping[str, Any]) -> ResponseEvent | None:
    """One SSE payload -> a typed event; None for events the turn does not use.

    Raises ModelError for `response.failed` / `response.incomplete` / `error` events.
    """
    if kind == "response.output_text.delta":
        return OutputTextDelta(data.get("item_id"), str(data.get("delta", "")))
    if kind == "response.output_item.done":
        item = data.get("item")
        return OutputItemDone(dict(item)) if isinstance(item, dict) else None
    if kind == "response.output_item.added":
        item = data.get("item")
        return OutputItemAdded(dict(item)) if isinstance(item, dict) else None
    if kind == "response.reasoning_summary_text.delta":
        return ReasoningSummaryDelta(
            data.get("item_id"), str(data.get("delta", "")), _int(data.get("summary_index"))
        )
    if kind == "response.reasoning_summary_part.added":
        return ReasoningSummaryPartAdded(data.get("item_id"), _int(data.get("summary_index")))
    if kind == "response.reasoning_text.delta":
        return ReasoningTextDelta(
            data.get("item_id"), str(data.get("delta", "")), _int(data.get("content_index"))
        )
    if kind == "response.created":
        response = data.get("response") or {}
        return Created(response.get("id") if isinstance(response, dict) else None)
    if kind == "response.completed":
        response = data.get("response") or {}
        if not isinstance(response, dict):
            response = {}
        usage = response.get("usage")
        return Completed(response.get("id"), TokenUsage.from_wire(usage) if isinstance(usage, dict) else None)
    if kind == "response.failed":
        raise _failed_error(data.get("response"))
    if kind == "response.incomplete":
        response = data.get("response") or {}
        details = response.get("incomplete_details") if isinstance(response, dict) else None
        reason = details.get("reason") if isinstance(details, dict) else None
        raise ModelError(f"Incomplete response returned, reason: {reason or 'unknown'}", "other")
    if kind == "error":
        message = data.get("message") or "the model reported an error"
        raise _stream_disconnected(str(message))
    return None


def _failed_error(response: Any) -> ModelError:
    error = response.get("error") if isinstance(response, dict) else None
    code = error.get("code") if isinstance(error, dict) else None
    message = error.get("message") if isinstance(error, dict) else None
    text = str(message) if message else "response.failed event received"
    if code == "context_length_exceeded":
        return ModelError(text, "contextWindowExceeded")
    if code in ("insufficient_quota", "usage_limit_reached"):
        return ModelError(text, "usageLimitExceeded")
    if code == "invalid_prompt":
        return ModelError(text, "badRequest")
    return _stream_disconnected(text)


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


# ---------------------------------------------------------------------------- auth
@by_value
@attrs.frozen(repr=False, eq=False)
class Auth:
    """Headers that authenticate a request; empty for a provider without auth."""

    headers: dict[str, str] = attrs.Factory(dict)


@by_value
@attrs.frozen(repr=False, eq=False)
class Login:
    """The account's login as the account family holds it (`apikey`, `chatgpt`, …).

    `refresh` is set for external ChatGPT tokens: after an HTTP 401 the client awaits it with
    the login that was refused and retries once with the login it returns; it raises
    ModelError when no new tokens came (the text is what the turn reports).
    """

    mode: str
    secret: str
    account_id: str | None = None
    refresh: Callable[[Login], Awaitable[Login]] | None = attrs.field(default=None, eq=False, repr=False)


def resolve_auth(
    provider: ProviderConfig, login: Login | None, environ: Mapping[str, str] | None = None
) -> Auth:
    """The provider's credentials, or ModelError saying which one is missing.

    Order, as the reference: `env_key` (must be set), `experimental_bearer_token`, then for a
    provider that uses OpenAI auth the account's login and finally `OPENAI_API_KEY`.
    """
    env = os.environ if environ is None else environ
    if provider.env_key:
        value = env.get(provider.env_key, "").strip()
        if not value:
            message = f"Missing environment variable: `{provider.env_key}`."
            if provider.env_key_instructions:
                message += f" {provider.env_key_instructions}"
            raise ModelError(message, "other")
        return Auth({"authorization": f"Bearer {value}"})
    if provider.experimental_bearer_token:
        return Auth({"authorization": f"Bearer {provider.experimental_bearer_token}"})
    if not provider.requires_openai_auth:
        return Auth()
    if login is not None:
        headers = {"authorization": f"Bearer {login.secret}"}
        if login.account_id:
            headers["chatgpt-account-id"] = login.account_id
        return Auth(headers)
    for var in ("OPENAI_API_KEY", "CODEX_API_KEY"):
        value = env.get(var, "").strip()
        if value:
            return Auth({"authorization": f"Bearer {value}"})
    return Auth()


# ---------------------------------------------------------------------------- the client
EventHandler = Callable[[ResponseEvent], Awaitable[None]]
Sleep = Callable[[float], Awaitable[None]]


def backoff_delay(attempt: int, retry_after: float | None = None) -> float:
    """Seconds to wait before retry number `attempt` (1-based)."""
    if retry_after is not None:
        return min(max(retry_after, 0.0), RETRY_MAX_DELAY)
    delay: float = RETRY_BASE_DELAY * (2 ** (attempt - 1)) * random.uniform(0.9, 1.1)
    return min(delay, RETRY_MAX_DELAY)


async def load_httpx() -> None:
    """Import httpx (and all it pulls in: ~0.1 s) in a worker thread, the first time a model
    or backend request needs it, rather than with the thread and turn families: a cold
    `thread/resume`, `thread/read` or `thread/list` never talks HTTP."""
    if "httpx" not in sys.modules:
        await trio.to_thread.run_sync(importlib.import_module, "httpx")


def responses_url(provider: ProviderConfig) -> str:
    import httpx

    base = (provider.base_url or "https://api.openai.com/v1").rstrip("/")
    url = f"{base}/responses"
    if provider.query_params:
        url += "?" + str(httpx.QueryParams(provider.query_params))
    return url


class ModelClient:
    """Streams Responses-API requests to one provider over one HTTP connection pool."""

    def __init__(
        self,
        provider: ProviderConfig,
        http: httpx.AsyncClient,
        auth: Auth,
        login: Login | None = None,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        """`login` is kept only when it is what authenticates (for its `refresh` on a 401)."""
        self.provider = provider
        ms = provider.stream_idle_timeout_ms
        self._idle_timeout = ms / 1000 if ms > 0 else None
        self._http = http
        self._auth = auth
        self._login = login if login is not None and _auth_uses_login(provider) else None
        self._environ = environ
        self.url = responses_url(provider)

    async def stream(
        self, body: Mapping[str, Any], headers: Mapping[str, str], on_event: EventHandler
    ) -> Completed:
        """POST `body`, hand each event to `on_event` (awaited: backpressure), return the end.

        Retries the request itself (not a stream already under way) up to the provider's
        `request_max_retries` on 429, 5xx and connection failures. Raises ModelError.
        """
        payload = orjson.dumps(body)
        base_headers = {
            "accept": "text/event-stream",
            "content-type": "application/json",
            **self.provider.headers(),
            **headers,
        }
        attempt = 0
        refreshed = False
        while True:
            try:
                return await self._attempt(payload, {**base_headers, **self._auth.headers}, on_event)
            except _Unauthorized as denied:
                if refreshed:
                    raise denied.error from None
                await self._refresh(denied.error)
                refreshed = True
            except _RetryableRequest as retry:
                attempt += 1
                if attempt > self.provider.request_max_retries:
                    raise retry.error from None
                delay = backoff_delay(attempt, retry.retry_after)
                log.info("model request failed (%s); retry %d in %.2fs", retry.error, attempt, delay)
                await trio.sleep(delay)

    async def _refresh(self, unauthorized: ModelError) -> None:
        """Swap in new tokens after a 401, or raise why there are none."""
        login = self._login
        if login is None or login.refresh is None:
            raise unauthorized
        self._login = await login.refresh(login)
        self._auth = resolve_auth(self.provider, self._login, self._environ)

    async def _attempt(self, payload: bytes, headers: Mapping[str, str], on_event: EventHandler) -> Completed:
        # One span per HTTP request; its `traceparent` goes along so a tracing gateway joins in.
        with tracing.span("responses.stream_request", _REQUEST_SPAN):
            return await self._attempt_traced(payload, tracing.with_trace_headers(headers), on_event)

    async def _attempt_traced(
        self, payload: bytes, headers: Mapping[str, str], on_event: EventHandler
    ) -> Completed:
        import httpx

        # One idle scope covers the whole attempt: its deadline starts at the request and
        # moves with every chunk received. (httpx's own read timeout is off: it would open a
        # cancel scope per read on this hot path.)
        with trio.CancelScope() as idle:
            idle_timeout = self._idle_timeout
            if idle_timeout is not None:
                idle.deadline = trio.current_time() + idle_timeout
            try:
                async with self._http.stream("POST", self.url, content=payload, headers=headers) as response:
                    if response.status_code >= 300:
                        body = await _read_capped(response)
                        error = status_error(response.status_code, body, self.url)
                        if response.status_code == 401:
                            raise _Unauthorized(error)
                        if response.status_code == 429 or response.status_code >= 500:
                            raise _RetryableRequest(error, _retry_after(response))
                        raise error
                    return await _consume(response, on_event, idle, idle_timeout)
            except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
                error = ModelError(
                    f"error sending request for url ({self.url}): {exc}",
                    {"httpConnectionFailed": {"httpStatusCode": None}},
                    retryable=True,
                )
                raise _RetryableRequest(error, None) from None
            except httpx.TimeoutException as exc:
                raise _stream_disconnected(f"timeout waiting for the model ({type(exc).__name__})") from None
            except httpx.TransportError as exc:
                raise _stream_disconnected(f"error decoding response body: {exc}") from None
        raise _stream_disconnected("idle timeout waiting for SSE")


_REQUEST_SPAN = {"transport": "responses_http", "http.method": "POST", "api.path": "/responses"}


class _Unauthorized(Exception):
    def __init__(self, error: ModelError) -> None:
        super().__init__(error.message)
        self.error = error


def _auth_uses_login(provider: ProviderConfig) -> bool:
    """Whether `resolve_auth` authenticates with the account's login (see its order)."""
    return provider.requires_openai_auth and not provider.env_key and not provider.experimental_bearer_token


class _RetryableRequest(Exception):
    def __init__(self, error: ModelError, retry_after: float | None) -> None:
        super().__init__(error.message)
        self.error = error
        self.retry_after = retry_after


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after")
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


async def _read_capped(response: httpx.Response) -> bytes:
    body = bytearray()
    async for chunk in response.aiter_raw():
        body += chunk
        if len(body) >= MAX_ERROR_BODY:
            break
    return bytes(body[:MAX_ERROR_BODY])


async def _consume(
    response: httpx.Response, on_event: EventHandler, idle: trio.CancelScope, idle_timeout: float | None
) -> Completed:
    """Decode and hand over events until `response.completed`; each chunk moves `idle`'s deadline."""
    decoder = SseDecoder()
    limits = rate_limits.from_headers(response.headers)
    async for chunk in response.aiter_raw():
        if idle_timeout is not None:
            idle.deadline = trio.current_time() + idle_timeout
        try:
            events = decoder.feed(chunk)
        except SseError as exc:
            raise _stream_disconnected(str(exc)) from None
        for sse in events:
            try:
                data = orjson.loads(sse.data)
            except orjson.JSONDecodeError:
                log.debug("ignoring a non-JSON SSE payload: %.200r", sse.data)
                continue
            if not isinstance(data, dict):
                continue
            kind = data.get("type") if isinstance(data.get("type"), str) else sse.event
            event = decode_event(str(kind), data)
            if event is None:
                continue
            if isinstance(event, Completed):
                event = attrs.evolve(event, rate_limits=limits)
            await on_event(event)
            if isinstance(event, Completed):
                return event
    raise _stream_disconnected(STREAM_CLOSED_EARLY)


@asynccontextmanager
async def open_model_client(
    provider: ProviderConfig, login: Login | None = None, *, environ: Mapping[str, str] | None = None
) -> AsyncIterator[ModelClient]:
    """A client whose connections live exactly as long as the `async with` block.

    Raises ModelError for a provider the server cannot talk to (wrong wire API, missing key).
    """
    if provider.wire_api != "responses":
        wire_api = provider.wire_api
        raise ModelError(f"model provider `{provider.id}` uses wire_api `{wire_api}`; only `responses` works")
    auth = resolve_auth(provider, login, environ)
    await load_httpx()
    import httpx

    # read=None: the stream's idle timeout is enforced by `_consume` (see there).
    timeout = httpx.Timeout(connect=CONNECT_TIMEOUT, read=None, write=CONNECT_TIMEOUT, pool=CONNECT_TIMEOUT)
    # Proxy variables apply to remote providers only: a loopback model server (Ollama, vLLM,
    # a test server) must never be rerouted through an ambient HTTP proxy.
    trust_env = not _is_loopback(provider.base_url or "")
    verify = await _ssl_context()
    async with httpx.AsyncClient(timeout=timeout, trust_env=trust_env, verify=verify) as http:
        yield ModelClient(provider, http, auth, login, environ)


_SSL_CONTEXT: ssl.SSLContext | None = None
_SSL_LOCK = trio.Lock()


async def _ssl_context() -> ssl.SSLContext:
    """One TLS context per process: loading the CA bundle takes tens of milliseconds of
    blocking file work, so it is done once, in a worker thread."""
    import httpx

    global _SSL_CONTEXT
    async with _SSL_LOCK:
        if _SSL_CONTEXT is None:
            _SSL_CONTEXT = await trio.to_thread.run_sync(httpx.create_ssl_context)
    return _SSL_CONTEXT


def _is_loopback(url: str) -> bool:
    import httpx

    host = httpx.URL(url).host if url else ""
    return host in ("localhost", "::1") or host.startswith("127.")
