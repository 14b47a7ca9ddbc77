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
import logging
import os
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

_CARRIER_KEYS = ("traceparent", "tracestate")

_NULL: contextlib.AbstractContextManager[None] = contextlib.nullcontext()

_tracer: Tracer | None = None
_env_parent: Context | None = None


def enabled() -> bool:
    return _tracer is not None


def install(provider: TracerProvider) -> None:
    """Trace with `provider` from now on (the server calls this when it starts)."""
    global _tracer, _env_parent
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    from codex_trio._version import VERSION

    _tracer = provider.get_tracer(SERVICE_NAME, VERSION)
    traceparent = os.environ.get("TRACEPARENT")
    _env_parent = None
    if traceparent:
        carrier = {"traceparent": traceparent, "tracestate": os.environ.get("TRACESTATE", "")}
        context = TraceContextTextMapPropagator().extract(carrier)
        _env_parent = context if _has_span(context) else None
        if _env_parent is None:
            log.warning("ignoring invalid TRACEPARENT %r", traceparent)


def uninstall() -> None:
    global _tracer, _env_parent
    _tracer = None
    _env_parent = None


def _has_span(context: Context) -> bool:
    from opentelemetry import trace

    return trace.get_current_span(context).get_span_context().is_valid


@contextlib.contextmanager
def _request_span(
    tracer: Tracer,
    method: str,
    request_id: int | str,
    transport: str,
    connection_id: int,
    client: tuple[str, str],
    carrier: Any,
) -> Iterator[None]:
    from opentelemetry import trace
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    parent = _env_parent
    if isinstance(carrier, dict) and isinstance(carrier.get("traceparent"), str):
        fields = {k: v for k, v in carrier.items() if k in _CARRIER_KEYS and isinstance(v, str)}
        context = TraceContextTextMapPropagator().extract(fields)
        if _has_span(context):
            parent = context
        else:
            parent = None
            log.warning("ignoring invalid inbound request trace carrier (%s, id %r)", method, request_id)
    attributes: dict[str, Any] = {
        "rpc.system": "jsonrpc",
        "rpc.method": method,
        "rpc.transport": _TRANSPORTS.get(transport, transport),
        "rpc.request_id": str(request_id),
        "app_server.connection_id": str(connection_id),
        "app_server.api_version": "v2",
    }
    name, version = client
    if name:
        attributes["app_server.client_name"] = name
    if version:
        attributes["app_server.client_version"] = version
    with tracer.start_as_current_span(
        method, context=parent, kind=trace.SpanKind.SERVER, attributes=attributes
    ):
        yield


def request_span(
    method: str,
    request_id: int | str,
    transport: str,
    connection_id: int,
    client: tuple[str, str],
    carrier: Any,
) -> contextlib.AbstractContextManager[None]:
    """The SERVER span of one inbound request, current while it is handled and answered.

    `client` is (name, version) from `initialize` (or from the `initialize` params themselves);
    `carrier` is the request's top-level `trace` member.
    """
    tracer = _tracer
    if tracer is None:
        return _NULL
    return _request_span(tracer, method, request_id, transport, connection_id, client, carrier)


def span(name: str, attributes: Mapping[str, Any] | None = None) -> contextlib.AbstractContextManager[Any]:
    """An INTERNAL child of the current span (a no-op when tracing is off)."""
    tracer = _tracer
    if tracer is None:
        return _NULL
    return tracer.start_as_current_span(name, attributes=attributes)


def set_attribute(key: str, value: Any) -> None:
    """Record `key` on the current span (e.g. `turn.id` on `turn/start`)."""
    if _tracer is None:
        return
    from opentelemetry import trace

    trace.get_current_span().set_attribute(key, value)


def capture() -> Context | None:
    """The current trace context, for work that runs later in another task."""
    if _tracer is None:
        return None
    from opentelemetry import context

    return context.get_current()


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
    TraceContextTextMapPropagator().inject(carrier)
    if not carrier:
        return headers
    return {**headers, **carrier}


# ---------------------------------------------------------------------------- export set-up
#: seconds one export request may take (bounds the flush at shutdown too).
EXPORT_TIMEOUT = 3.0
#: seconds the server waits for the last spans to be exported when it stops.
FLUSH_TIMEOUT = 3.0


def exporter_config(codex_home: Path, overrides: Sequence[tuple[str, str]]) -> dict[str, Any] | None:
    """The `[otel]` table of `config.toml` with `-c otel.…` overrides, if it sets a trace exporter.

    Cheap on purpose: a config without the word `otel` is not even parsed, so a server that
    does not trace never imports a TOML parser or OpenTelemetry for it.
    """
    try:
        raw = (codex_home / "config.toml").read_bytes()
    except OSError:
        raw = b""
    otel_overrides = [(k, v) for k, v in overrides if k == "otel" or k.startswith("otel.")]
    if b"otel" not in raw and not otel_overrides:
        return None
    import tomllib

    try:
        table = tomllib.loads(raw.decode()).get("otel") if b"otel" in raw else None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        log.warning("config.toml: cannot read [otel]: %s", exc)
        table = None
    otel: dict[str, Any] = dict(table) if isinstance(table, dict) else {}
    if otel_overrides:
        from codex_trio.config.layers import parse_override_value

        for key, value in otel_overrides:
            parts = key.split(".")[1:]
            if not parts:
                parsed = parse_override_value(value)
                otel = dict(parsed) if isinstance(parsed, dict) else otel
                continue
            node = otel
            for part in parts[:-1]:
                child = node.get(part)
                node[part] = child = dict(child) if isinstance(child, dict) else {}
                node = child
            node[parts[-1]] = parse_override_value(value)
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
    resource = Resource.create(
        {"service.name": SERVICE_NAME, "service.version": VERSION, "env": config["environment"]}
    )
    provider = TracerProvider(resource=resource)
    batch = BatchSpanProcessor(exporter, export_timeout_millis=int(EXPORT_TIMEOUT * 1000))
    provider.add_span_processor(batch)
    return provider


def close_provider(provider: TracerProvider) -> None:
    """Export what is queued and join the exporter's thread (blocking; bounded by the timeouts)."""
    try:
        provider.force_flush(timeout_millis=int(FLUSH_TIMEOUT * 1000))
    finally:
        provider.shutdown()
