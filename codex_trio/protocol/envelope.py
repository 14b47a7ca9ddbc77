"""Message envelopes: classifying what a client sends and encoding what the server sends.

The reference never sends a `jsonrpc` member and ignores one if sent. Keys are written in the
reference's order (responses `id` first, errors `error` first, notifications end with
`emittedAtMs`), because some clients diff transcripts.
"""

from __future__ import annotations

from typing import Any

import attrs
import orjson

from codex_trio.ids import now_ms

RequestId = int | str

# serde's i64 bounds: a larger integer id is not an id (the reference treats it as a notification).
_I64_MIN, _I64_MAX = -(2**63), 2**63 - 1

MISSING: Any = object()


@attrs.frozen
class Request:
    """A client request: it gets exactly one response."""

    id: RequestId
    method: str
    params: Any  # MISSING when the key is absent
    #: the W3C trace carrier (`{"traceparent", "tracestate"}`) a client may send with a request.
    trace: Any = None


@attrs.frozen
class Notification:
    """A client notification: no response."""

    method: str
    params: Any


@attrs.frozen
class Response:
    """A client's answer to a server->client request (result or error)."""

    id: RequestId
    result: Any
    error: Any


@attrs.frozen
class Invalid:
    """Input the server logs and does not answer (the reference never sends -32700)."""

    reason: str


Incoming = Request | Notification | Response | Invalid


def _valid_id(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return _I64_MIN <= value <= _I64_MAX
    return isinstance(value, str)


def parse(data: bytes) -> Incoming:
    """Classify one transport message (a stdio line or a websocket text frame)."""
    try:
        value = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        return Invalid(f"Failed to deserialize JSONRPCMessage: {exc}")
    if not isinstance(value, dict):
        return Invalid("data did not match any variant of untagged enum JSONRPCMessage")
    method = value.get("method")
    has_id = "id" in value
    if isinstance(method, str):
        if has_id and _valid_id(value["id"]):
            return Request(value["id"], method, value.get("params", MISSING), value.get("trace"))
        return Notification(method, value.get("params"))
    if has_id and _valid_id(value["id"]) and ("result" in value or "error" in value):
        return Response(value["id"], value.get("result"), value.get("error"))
    return Invalid("data did not match any variant of untagged enum JSONRPCMessage")


def encode_result(request_id: RequestId, result: Any) -> bytes:
    """A success response, encoded."""
    return orjson.dumps({"id": request_id, "result": result})


def encode_error(request_id: RequestId, code: int, message: str, data: Any = None) -> bytes:
    """An error response, encoded (`data` only when given)."""
    error: dict[str, Any] = {"code": code}
    if data is not None:
        error["data"] = data
    error["message"] = message
    return orjson.dumps({"error": error, "id": request_id})


def encode_notification(method: str, params: Any) -> bytes:
    """A server notification, encoded with the reference's `emittedAtMs`."""
    return orjson.dumps({"method": method, "params": params, "emittedAtMs": now_ms()})


def encode_request(request_id: RequestId, method: str, params: Any) -> bytes:
    """A server->client request, encoded."""
    return orjson.dumps({"method": method, "id": request_id, "params": params})
