"""A small HTTP/1.1 receiver on 127.0.0.1: an OTLP/HTTP trace collector and a feedback sink.

Every POST is recorded (path, headers, raw body) and answered 200 (or `status`). Bodies posted to
`/v1/traces` are decoded as OTLP export requests, protobuf or JSON by their content type, into
`ReceivedSpan`s, so tests check what a real collector would store. Used by the tests and
the tracing benchmark (against our server and the reference alike).
"""

from __future__ import annotations

import gzip
import json
from typing import Any

import attrs
import trio

from tests.responses_server import LoopbackHttpServer, _Reader


@attrs.frozen
class ReceivedSpan:
    name: str
    trace_id: str
    span_id: str
    parent_span_id: str
    kind: int
    attributes: dict[str, Any]
    resource: dict[str, Any]
    scope: str


@attrs.define(eq=False)
class Posted:
    path: str
    headers: dict[str, str]
    body: bytes


def _any_value(value: Any) -> Any:
    """An OTLP AnyValue (JSON form) as a plain Python value."""
    for key in ("stringValue", "boolValue", "doubleValue"):
        if key in value:
            return value[key]
    if "intValue" in value:
        return int(value["intValue"])
    if "arrayValue" in value:
        return [_any_value(v) for v in value["arrayValue"].get("values", [])]
    return None


def _attributes(items: list[dict[str, Any]]) -> dict[str, Any]:
    return {item["key"]: _any_value(item.get("value", {})) for item in items}


_KINDS = {
    "SPAN_KIND_UNSPECIFIED": 0,
    "SPAN_KIND_INTERNAL": 1,
    "SPAN_KIND_SERVER": 2,
    "SPAN_KIND_CLIENT": 3,
    "SPAN_KIND_PRODUCER": 4,
    "SPAN_KIND_CONSUMER": 5,
}


def _hex_id(value: str, size: int) -> str:
    """OTLP/JSON ids are hex; protobuf's JSON mapping (what MessageToDict gives) is base64."""
    if len(value) == size * 2:
        return value.lower()
    import base64

    return base64.b64decode(value).hex()


def decode_traces(content_type: str, body: bytes) -> list[ReceivedSpan]:
    if "json" in content_type:
        document = json.loads(body)
    else:
        from google.protobuf.json_format import MessageToDict
        from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

        message = ExportTraceServiceRequest()
        message.ParseFromString(body)
        document = MessageToDict(message)
    spans = []
    for resource_spans in document.get("resourceSpans", []):
        resource = _attributes(resource_spans.get("resource", {}).get("attributes", []))
        for scope_spans in resource_spans.get("scopeSpans", []):
            scope = scope_spans.get("scope", {}).get("name", "")
            for span in scope_spans.get("spans", []):
                kind = span.get("kind", 0)
                spans.append(
                    ReceivedSpan(
                        name=span["name"],
                        trace_id=_hex_id(span["traceId"], 16),
                        span_id=_hex_id(span["spanId"], 8),
                        parent_span_id=_hex_id(span["parentSpanId"], 8) if span.get("parentSpanId") else "",
                        kind=_KINDS.get(kind, 0) if isinstance(kind, str) else int(kind),
                        attributes=_attributes(span.get("attributes", [])),
                        resource=resource,
                        scope=scope,
                    )
                )
    return spans


class HttpReceiver(LoopbackHttpServer):
    """Start with `await nursery.start(receiver.run)`; then `url(path)` is usable."""

    def __init__(
        self, status: int = 200, reply: dict[str, Any] | None = None, *, decode: bool = True
    ) -> None:
        """`decode=False` only records bodies (a benchmark's client must not spend its time here)."""
        self.port: int | None = None
        self.decode = decode
        self.status = status
        self.reply = reply if reply is not None else {}
        self.posts: list[Posted] = []
        self.spans: list[ReceivedSpan] = []
        self.errors: list[BaseException] = []
        self._arrived = trio.Event()

    def url(self, path: str) -> str:
        assert self.port is not None, "receiver not started"
        return f"http://127.0.0.1:{self.port}{path}"

    async def wait_for(self, predicate: Any) -> None:
        """Wait until `predicate(self)` holds (checked after every POST)."""
        while not predicate(self):
            await self._arrived.wait()

    def by_name(self, name: str) -> list[ReceivedSpan]:
        return [s for s in self.spans if s.name == name]

    def ancestors(self, span: ReceivedSpan) -> list[ReceivedSpan]:
        by_id = {s.span_id: s for s in self.spans}
        chain = []
        while span.parent_span_id in by_id:
            span = by_id[span.parent_span_id]
            chain.append(span)
        return chain

    async def _one(self, reader: _Reader) -> bool:
        request = await reader.request_head()
        if request is None:
            return False
        method, path, headers = request
        if headers.get("transfer-encoding", "").lower() == "chunked":
            body = b""
            while True:
                size_line = await reader.until(b"\r\n")
                if size_line is None:
                    return False
                size = int(size_line.split(b";")[0], 16)
                chunk = await reader.exactly(size + 2)
                if chunk is None:
                    return False
                if size == 0:
                    break
                body += chunk[:-2]
        else:
            raw = await reader.exactly(int(headers.get("content-length", "0")))
            if raw is None:
                return False
            body = raw
        if headers.get("content-encoding") == "gzip":
            body = gzip.decompress(body)
        self.posts.append(Posted(path, headers, body))
        if self.decode and method == "POST" and path.split("?")[0].endswith("/v1/traces"):
            self.spans.extend(decode_traces(headers.get("content-type", ""), body))
        payload = json.dumps(self.reply).encode()
        await reader.stream.send_all(
            f"HTTP/1.1 {self.status} Status\r\ncontent-type: application/json\r\n"
            f"content-length: {len(payload)}\r\n\r\n".encode()
            + payload
        )
        self._arrived.set()
        self._arrived = trio.Event()
        return True
