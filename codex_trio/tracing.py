"""OpenTelemetry tracing: the server's tracer, request spans, and context for detached work.

With no exporter configured (`[otel]` in config.toml) nothing here imports OpenTelemetry:
every helper is a shared null context, so the stdio cold start and the request hot path
pay only a global lookup. Once `install` is given a tracer provider, every request gets a
SERVER span named after its method (attributes as the reference names them), parented to
the request's `trace` carrier, else to `TRACEPARENT`, else a new root.

The current span lives in the OpenTelemetry context, a context variable: Trio copies it into
every task a request starts, so detached work started by a handler (thread start-up, the
thread runtime) stays under the request span. A turn runs in its thread's long-lived task,
so it captures the context of the `turn/start` that created it (`capture`) and re-enters it
(`attach`) while it runs.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import logging
import os
import re
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from opentelemetry.context import Context
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.trace import Tracer

log = logging.getLogger(__name__)

#: the service and instrumentation-scope name the reference exports under.
SERVICE_NAME = "codex-app-server"

#: `rpc.transport` values, by our transports' names.
_TRANSPORTS = {"stdio": "stdio", "websocket": "websocket", "unix_socket": "unix", "in_process": "in-process"}


_NULL: contextlib.AbstractContextManager[None] = contextlib.nullcontext()

_tracer: Tracer | None = None
_requests: _RequestSpans | None = None
_env_parent: tuple[int, int, int, str | None] | None = None


def enabled() -> bool:
    return _tracer is not None


def install(provider: TracerProvider) -> None:
    """Trace with `provider` from now on (the server calls this when it starts)."""
    global _tracer, _requests, _env_parent
    from codex_trio._version import VERSION

    _tracer = provider.get_tracer(SERVICE_NAME, VERSION)
    _requests = _RequestSpans(provider)
    _env_parent = None
    traceparent = os.environ.get("TRACEPARENT")
    if traceparent:
        _env_parent = parse_traceparent(traceparent, os.environ.get("TRACESTATE"))
        if _env_parent is None:
            log.warning("ignoring invalid TRACEPARENT %r", traceparent)


def uninstall() -> None:
    global _tracer, _requests, _env_parent
    _tracer = None
    _requests = None
    _env_parent = None


#: compiled on first use (by `re`'s cache): most servers never see a trace carrier.
_TRACEPARENT = r"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-[^\s]*)?"


@functools.lru_cache(maxsize=256)
def parse_traceparent(traceparent: str, tracestate: str | None) -> tuple[int, int, int, str | None] | None:
    """(trace id, parent span id, flags, tracestate) of a W3C `traceparent`, or None if invalid."""
    match = re.fullmatch(_TRACEPARENT, traceparent.strip())
    if match is None:
        return None
    version, trace_hex, span_hex, flags_hex, rest = match.groups()
    if version == "ff" or (version == "00" and rest):
        return None
    trace_id, span_id = int(trace_hex, 16), int(span_hex, 16)
    if trace_id == 0 or span_id == 0:
        return None
    return trace_id, span_id, int(flags_hex, 16), tracestate or None


@functools.lru_cache(maxsize=1024)
def _base_attributes(transport: str, connection_id: int, name: str, version: str) -> dict[str, Any]:
    """The attributes every request of one connection shares (copied per request)."""
    attributes: dict[str, Any] = {
        "rpc.system": "jsonrpc",
        "rpc.transport": _TRANSPORTS.get(transport, transport),
        "app_server.connection_id": str(connection_id),
        "app_server.api_version": "v2",
    }
    if name:
        attributes["app_server.client_name"] = name
    if version:
        attributes["app_server.client_version"] = version
    return attributes


class _RequestSpans:
    """Request spans without the SDK's per-span machinery.

    A request span is on every request's path, and the SDK's general `start_span` (sampler,
    attribute validation, locks) costs more than the request itself. Its shape here is fixed
    and known valid, so it is built directly: ids from the same random source the SDK uses, a
    non-recording span current while the request runs (children started with the SDK parent
    to it), and at the end one `ReadableSpan` handed to the provider's span processors.
    A provider that is not the SDK's gets ordinary SDK-API spans instead.
    """

    def __init__(self, provider: TracerProvider) -> None:
        import random

        from opentelemetry import context, trace
        from opentelemetry.sdk.trace import ReadableSpan
        from opentelemetry.sdk.util.instrumentation import InstrumentationScope
        from opentelemetry.trace.span import TraceState

        from codex_trio._version import VERSION

        self.processor = getattr(provider, "_active_span_processor", None)
        self.resource = getattr(provider, "resource", None)
        self.scope = InstrumentationScope(SERVICE_NAME, VERSION)
        self.random_bits = random.getrandbits
        self.attach = context.attach
        self.detach = context.detach
        self.set_span_in_context = trace.set_span_in_context
        self.span_context = trace.SpanContext
        self.trace_flags = trace.TraceFlags
        self.sampled = trace.TraceFlags(trace.TraceFlags.SAMPLED)
        self.unsampled = trace.TraceFlags(trace.TraceFlags.DEFAULT)
        self.trace_state = TraceState
        self.readable = ReadableSpan
        self.server_kind = trace.SpanKind.SERVER
        self.live_span = _live_span_class(trace.NonRecordingSpan)
        self.empty_context = context.Context
        self.remote = functools.lru_cache(maxsize=256)(self._remote)

    def _remote(self, parent: tuple[int, int, int, str | None]) -> Any:
        """The SpanContext of a parsed remote parent."""
        trace_id, parent_id, flags, state = parent
        return self.span_context(
            trace_id,
            parent_id,
            is_remote=True,
            trace_flags=self.trace_flags(flags),
            trace_state=self.trace_state.from_header([state]) if state else None,
        )


def _live_span_class(base: type) -> type:
    class LiveRequestSpan(base):  # type: ignore[misc]
        """The current span while a request runs: children parent to it; attributes set on it
        (`turn.id`) go into the span exported when the request ends."""

        def __init__(self, context: Any, attributes: dict[str, Any]) -> None:
            super().__init__(context)
            self.attributes = attributes

        def set_attribute(self, key: str, value: Any) -> None:
            self.attributes[key] = value

    return LiveRequestSpan


class _RequestSpan:
    """One request's span. Entering it only sets a context variable: the OpenTelemetry
    context that makes it the parent of other spans is built when something asks for it
    (`_effective_context`), which most requests never do."""

    __slots__ = (
        "_attributes",
        "_method",
        "_otel_context",
        "_parent",
        "_span_context",
        "_span_id",
        "_spans",
        "_start",
        "_token",
        "_trace_id",
    )

    def __init__(self, spans: _RequestSpans, method: str, attributes: dict[str, Any], parent: Any) -> None:
        self._spans = spans
        self._method = method
        self._attributes = attributes
        self._parent = parent
        self._span_context: Any = None
        self._otel_context: Any = None

    def __enter__(self) -> None:
        bits = self._spans.random_bits
        parent = self._parent
        self._trace_id = bits(128) if parent is None else parent[0]
        self._span_id = bits(64)
        self._token = _current_request.set(self)
        self._start = time.time_ns()

    def __exit__(self, *exc: object) -> None:
        end = time.time_ns()
        _current_request.reset(self._token)
        spans = self._spans
        span_context = self.span_context()
        if not span_context.trace_flags.sampled or spans.processor is None:
            return
        spans.processor.on_end(
            spans.readable(
                self._method,
                context=span_context,
                parent=None if self._parent is None else spans.remote(self._parent),
                resource=spans.resource,
                attributes=self._attributes,
                kind=spans.server_kind,
                start_time=self._start,
                end_time=end,
                instrumentation_scope=spans.scope,
            )
        )

    def span_context(self) -> Any:
        if self._span_context is None:
            spans = self._spans
            if self._parent is None:
                flags, state = spans.sampled, None
            else:
                remote = spans.remote(self._parent)
                flags = spans.sampled if remote.trace_flags.sampled else spans.unsampled
                state = remote.trace_state
            self._span_context = spans.span_context(
                self._trace_id, self._span_id, is_remote=False, trace_flags=flags, trace_state=state
            )
        return self._span_context

    def otel_context(self) -> Context:
        """An OpenTelemetry context whose current span is this request's."""
        if self._otel_context is None:
            spans = self._spans
            live = spans.live_span(self.span_context(), self._attributes)
            self._otel_context = spans.set_span_in_context(live, spans.empty_context())
        context: Context = self._otel_context
        return context


#: the request being handled by this task (or the one that started it, for detached work).
_current_request: contextvars.ContextVar[_RequestSpan | None] = contextvars.ContextVar(
    "codex_trio_request_span", default=None
)


def _effective_context() -> Context | None:
    """The context new spans belong under: OpenTelemetry's current one when a span is current
    (a child span, or a turn's re-entered request), else the request's, else None (a root)."""
    from opentelemetry import context, trace

    current = context.get_current()
    if trace.get_current_span(current).get_span_context().is_valid:
        return current
    request = _current_request.get()
    return request.otel_context() if request is not None else None


def request_span(
    method: str,
    request_id: int | str,
    transport: str,
    connection_id: int,
    client: tuple[str, str],
    carrier: Any,
) -> contextlib.AbstractContextManager[Any]:
    """The SERVER span of one inbound request, current while it is handled and answered.

    Parented to `carrier` (the request's top-level `trace` member) when it holds a valid
    `traceparent`, else to `TRACEPARENT`, else a new root. `client` is (name, version) from
    `initialize` (or from the `initialize` params themselves).
    """
    spans = _requests
    if spans is None or _tracer is None:
        return _NULL
    parent = _env_parent
    if isinstance(carrier, dict):
        traceparent = carrier.get("traceparent")
        if isinstance(traceparent, str):
            state = carrier.get("tracestate")
            parent = parse_traceparent(traceparent, state if isinstance(state, str) else None)
            if parent is None:
                log.warning("ignoring invalid inbound request trace carrier (%s, id %r)", method, request_id)
    attributes = {
        **_base_attributes(transport, connection_id, *client),
        "rpc.method": method,
        "rpc.request_id": str(request_id),
    }
    if spans.processor is None:
        return _sdk_request_span(_tracer, spans, method, attributes, parent)
    return _RequestSpan(spans, method, attributes, parent)


@contextlib.contextmanager
def _sdk_request_span(
    tracer: Tracer, spans: _RequestSpans, method: str, attributes: dict[str, Any], parent: Any
) -> Iterator[None]:
    from opentelemetry import trace

    context = None
    if parent is not None:
        context = trace.set_span_in_context(trace.NonRecordingSpan(spans.remote(parent)))
    with tracer.start_as_current_span(method, context=context, kind=spans.server_kind, attributes=attributes):
        yield


def span(name: str, attributes: Mapping[str, Any] | None = None) -> contextlib.AbstractContextManager[Any]:
    """An INTERNAL child of the current span (a no-op when tracing is off)."""
    tracer = _tracer
    if tracer is None:
        return _NULL
    return tracer.start_as_current_span(name, context=_effective_context(), attributes=attributes)


def set_attribute(key: str, value: Any) -> None:
    """Record `key` on the current span (e.g. `turn.id` on `turn/start`)."""
    if _tracer is None:
        return
    from opentelemetry import trace

    span = trace.get_current_span()
    if span.get_span_context().is_valid:
        span.set_attribute(key, value)
        return
    request = _current_request.get()
    if request is not None:
        request._attributes[key] = value


def capture() -> Context | None:
    """The current trace context, for work that runs later in another task."""
    if _tracer is None:
        return None
    return _effective_context()


@contextlib.contextmanager
def _attached(captured: Context) -> Iterator[None]:
    from opentelemetry import context

    token = context.attach(captured)
    try:
        yield
    finally:
        context.detach(token)


def attach(captured: Context | None) -> contextlib.AbstractContextManager[None]:
    """Make a `capture`d context current for the block."""
    if captured is None or _tracer is None:
        return _NULL
    return _attached(captured)


def with_trace_headers(headers: Mapping[str, str]) -> Mapping[str, str]:
    """`headers` plus `traceparent`/`tracestate` of the current span (for outgoing HTTP)."""
    if _tracer is None:
        return headers
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    carrier: dict[str, str] = {}
    TraceContextTextMapPropagator().inject(carrier, context=_effective_context())
    if not carrier:
        return headers
    return {**headers, **carrier}


# ---------------------------------------------------------------------------- export set-up
#: seconds one export request may take (bounds the flush at shutdown too).
EXPORT_TIMEOUT = 3.0
#: the interpreter's GIL switch interval while exporting (seconds).
SWITCH_INTERVAL = 0.0005
#: seconds the server waits for the last spans to be exported when it stops.
FLUSH_TIMEOUT = 3.0


def exporter_config(codex_home: Path, overrides: Sequence[tuple[str, Any]]) -> dict[str, Any] | None:
    """The `[otel]` table of `config.toml` with `-c otel.…` overrides (values already parsed),
    if it sets a trace exporter.

    Cheap on purpose: a config without the word `otel` is not even parsed, so a server that
    does not trace never imports a TOML parser or OpenTelemetry for it.
    """
    try:
        raw = (codex_home / "config.toml").read_bytes()
    except OSError:
        raw = b""
    if b"otel" not in raw and not overrides:
        return None
    import tomllib

    try:
        table = tomllib.loads(raw.decode()).get("otel") if b"otel" in raw else None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        log.warning("config.toml: cannot read [otel]: %s", exc)
        table = None
    otel: dict[str, Any] = dict(table) if isinstance(table, dict) else {}
    for key, value in overrides:
        parts = key.split(".")[1:]
        if not parts:
            otel = dict(value) if isinstance(value, dict) else otel
            continue
        node = otel
        for part in parts[:-1]:
            child = node.get(part)
            node[part] = child = dict(child) if isinstance(child, dict) else {}
            node = child
        node[parts[-1]] = value
    exporter = otel.get("trace_exporter")
    if not isinstance(exporter, dict):
        return None
    http = exporter.get("otlp-http")
    if not isinstance(http, dict) or not isinstance(http.get("endpoint"), str):
        if exporter:
            log.warning("[otel] trace_exporter %s is not supported; tracing stays off", sorted(exporter))
        return None
    headers = http.get("headers")
    environment = otel.get("environment")
    return {
        "endpoint": http["endpoint"],
        "protocol": "json" if http.get("protocol") == "json" else "binary",
        "headers": {str(k): str(v) for k, v in headers.items()} if isinstance(headers, dict) else {},
        "environment": environment if isinstance(environment, str) else "dev",
    }


def build_provider(config: Mapping[str, Any]) -> TracerProvider:
    """A tracer provider exporting over OTLP/HTTP in a batch (the SDK's worker thread)."""
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    from codex_trio._version import VERSION

    exporter: Any
    endpoint = {"endpoint": config["endpoint"], "headers": config["headers"], "timeout": EXPORT_TIMEOUT}
    if config["protocol"] == "json":
        from opentelemetry.exporter.otlp.json.http.trace_exporter import OTLPSpanExporter as JsonExporter

        exporter = JsonExporter(**endpoint)
    else:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        exporter = OTLPSpanExporter(**endpoint)

    class HashedResource(Resource):
        """Hashed once: the OTLP encoder looks each exported span's resource up in a dict, and
        `Resource.__hash__` JSON-dumps the attributes every time."""

        _hash: int | None = None

        def __hash__(self) -> int:
            if self._hash is None:
                self._hash = super().__hash__()
            return self._hash

    created = Resource.create(
        {"service.name": SERVICE_NAME, "service.version": VERSION, "env": config["environment"]}
    )
    provider = TracerProvider(resource=HashedResource(created.attributes, created.schema_url))
    # The exporter's thread encodes spans in Python; a request arriving meanwhile waits for
    # the GIL up to the switch interval (5 ms by default): keep that wait short.
    sys.setswitchinterval(min(sys.getswitchinterval(), SWITCH_INTERVAL))
    batch = BatchSpanProcessor(exporter, export_timeout_millis=int(EXPORT_TIMEOUT * 1000))
    provider.add_span_processor(batch)
    return provider


def close_provider(provider: TracerProvider) -> None:
    """Export what is queued and join the exporter's thread (blocking; bounded by the timeouts)."""
    try:
        provider.force_flush(timeout_millis=int(FLUSH_TIMEOUT * 1000))
    finally:
        provider.shutdown()
