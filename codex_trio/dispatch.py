"""The dispatcher: the method table, the initialize gate and the one error boundary.

Imports the routing vocabulary (`routing`), `connection` and `protocol`; only `server` imports it.

Every request goes through `Router.dispatch`, which is the only place that turns an exception
into a JSON-RPC error: `RpcError` as raised, anything else as -32603 (logged with its traceback).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import attrs
import trio

from codex_trio import tracing
from codex_trio.connection import Connection, ServerRequestTimeout, Session
from codex_trio.protocol import envelope
from codex_trio.protocol.converter import unstructure
from codex_trio.protocol.errors import (
    ALREADY_INITIALIZED,
    INTERNAL_ERROR,
    NOT_INITIALIZED,
    RpcError,
    invalid_request,
)
from codex_trio.protocol.registry import experimental_required, unknown_method
from codex_trio.routing import RequestContext, Route

log = logging.getLogger(__name__)

#: transports whose peer is on this machine by construction (a child's pipes, the same process).
LOCAL_TRANSPORTS = frozenset({"stdio", "in_process"})


class _LazyGroup:
    """Methods whose routes are built on first use; concurrent first calls share one load."""

    def __init__(self, load: Callable[[], Awaitable[None]]) -> None:
        self._load = load
        self._lock = trio.Lock()
        self.loaded = False

    async def ensure_loaded(self) -> None:
        if self.loaded:
            return
        async with self._lock:
            if not self.loaded:
                await self._load()
                self.loaded = True


class Router:
    """Maps method names to routes and runs them behind the gates.

    Satisfies `connection.RequestRouter`, the part of it a connection's reader uses.
    """

    def __init__(self, routes: Iterable[Route] = ()) -> None:
        self._routes: dict[str, Route] = {}
        self._lazy: dict[str, _LazyGroup] = {}
        self._known: list[str] = []
        self.add(routes)

    def add(self, routes: Iterable[Route]) -> None:
        """Register routes; a method registered twice is a programming error."""
        for r in routes:
            if r.spec.name in self._routes:
                raise ValueError(f"method {r.spec.name} registered twice")
            self._routes[r.spec.name] = r
            self._lazy.pop(r.spec.name, None)
        self._known = sorted({*self._routes, *self._lazy})

    def add_lazy(self, methods: Iterable[str], load: Callable[[], Awaitable[None]]) -> None:
        """Declare methods whose routes `load()` adds (with `add`) the first time one is called.

        Unknown-method errors list them already; `load` runs once, under a lock, and may
        raise (the request that triggered it then fails and the next call retries).
        """
        group = _LazyGroup(load)
        for name in methods:
            if name in self._routes or name in self._lazy:
                raise ValueError(f"method {name} registered twice")
            self._lazy[name] = group
        self._known = sorted({*self._routes, *self._lazy})

    async def ensure_loaded(self, method: str) -> None:
        """Build the routes of a lazily declared method now (a no-op once built)."""
        group = self._lazy.get(method)
        if group is not None:
            await group.ensure_loaded()

    async def prepare(self, method: str, session: Session) -> None:
        """Called by the reader before it starts a request's task.

        Building a group here, in the reader, keeps pipelined requests in the order they
        arrived: nothing after the first call of a group starts before the group exists.
        A failed build is left for that request's own dispatch to report.
        """
        if session.initialized and method in self._lazy:
            try:
                await self.ensure_loaded(method)
            except Exception:
                log.exception("building the routes for %s failed", method)

    def built(self, method: str) -> bool:
        """True once the route of `method` exists (a lazily declared one is built)."""
        return method in self._routes

    @property
    def loaded_methods(self) -> list[str]:
        """Methods whose routes are built (lazily declared ones appear once used)."""
        return sorted(self._routes)

    @property
    def methods(self) -> list[str]:
        """Every known method, built or lazily declared (for unknown-method errors)."""
        return list(self._known)

    def handles_inline(self, method: str) -> bool:
        """True for methods the reader runs itself (`initialize`)."""
        r = self._routes.get(method)
        return r is not None and r.inline

    async def dispatch(self, connection: Connection, request: envelope.Request) -> None:
        """Run one request behind the gates and send exactly one response."""
        if not tracing.enabled():
            await self._dispatch(connection, request)
            return
        # The request's span: current while it is handled and answered, and inherited by
        # every task it starts (see `codex_trio.tracing`).
        with tracing.request_span(
            request.method,
            request.id,
            connection.transport_name,
            connection.id,
            _client_of(connection.session, request),
            request.trace,
        ):
            await self._dispatch(connection, request)

    async def _dispatch(self, connection: Connection, request: envelope.Request) -> None:
        ctx = RequestContext(connection, request.id, request.method)
        try:
            result = await self._call(ctx, request)
            encoded = envelope.encode_result(request.id, result)
        except RpcError as exc:
            tracing.set_attribute("rpc.jsonrpc.error_code", exc.code)
            encoded = envelope.encode_error(request.id, exc.code, exc.message, exc.data)
        except trio.Cancelled:
            raise
        except ServerRequestTimeout as exc:
            log.warning("%s: %s", request.method, exc)
            encoded = envelope.encode_error(request.id, INTERNAL_ERROR, str(exc))
        except Exception as exc:
            error = _rpc_error_in_group(exc)
            if error is None:
                log.exception("%s failed", request.method)
                error = RpcError(INTERNAL_ERROR, f"internal error: {exc}")
            tracing.set_attribute("rpc.jsonrpc.error_code", error.code)
            encoded = envelope.encode_error(request.id, error.code, error.message, error.data)
        following = (connection.notification(method, params) for method, params in ctx.after_response)
        try:
            await connection.send_many([encoded, *(data for data in following if data is not None)])
        finally:
            for callback in ctx.on_sent:
                callback()

    async def _call(self, ctx: RequestContext, request: envelope.Request) -> Any:
        r = self._routes.get(request.method)
        session = ctx.connection.session
        if r is None:
            group = self._lazy.get(request.method)
            if group is None:
                raise unknown_method(request.method, self._known)
            if not session.initialized:
                raise invalid_request(NOT_INITIALIZED)
            await group.ensure_loaded()
            r = self._routes[request.method]
        if not session.initialized and not r.before_initialize:
            raise invalid_request(NOT_INITIALIZED)
        if session.initialized and r.before_initialize:
            raise invalid_request(ALREADY_INITIALIZED)
        params = r.spec.read_params(request.params)
        if r.spec.experimental and not session.experimental_api:
            raise experimental_required(r.spec.name)
        if r.local_only and ctx.connection.transport_name not in LOCAL_TRANSPORTS:
            raise invalid_request(f"{r.spec.name} is not available over remote transports")
        result = await r.handler(ctx, params)
        if result is None:
            return {}
        if attrs.has(type(result)):
            return unstructure(result)
        return result


def _client_of(session: Session, request: envelope.Request) -> tuple[str, str]:
    """(name, version) of the client: `initialize` carries it, later requests find it in the session."""
    if request.method == "initialize" and isinstance(request.params, dict):
        info = request.params.get("clientInfo")
        if isinstance(info, dict):
            return str(info.get("name") or ""), str(info.get("version") or "")
    return session.client_name, session.client_version


def _rpc_error_in_group(exc: Exception) -> RpcError | None:
    """A handler that opened a nursery raises its RpcError inside an ExceptionGroup."""
    if isinstance(exc, ExceptionGroup):
        matched, rest = exc.split(RpcError)
        if matched is not None and rest is None:
            leaf: BaseException = matched
            while isinstance(leaf, BaseExceptionGroup):
                leaf = leaf.exceptions[0]
            assert isinstance(leaf, RpcError)
            return leaf
    return None
