"""Message envelopes: classifying what a client sends and encoding what the server sends.

The reference never sends a `jsonrpc` member and ignores one if sent. Keys are written in the
reference's order (responses `id` first, errors `error` first, notifications end with
`emittedAtMs`), because some clients diff transcripts.
"""

from __future__ import annotations

import json
from typing import Any

import attrs
import orjson

from codex_trio.ids import now_ms
from codex_trio.records import by_value

RequestId = int | str

# serde's i64 bounds: a larger integer id is not an id (the reference treats it as a notification).
_I64_MIN, _I64_MAX = -(2**63), 2**63 - 1

MISSING: Any = object()

#: how serde_json (arbitrary precision) holds a number internally; a number beyond f64 becomes
#: this one-key map, so a field that needs a value says "invalid type: map", as the reference.
HUGE_NUMBER_KEY = "$serde_json::private::Number"
#: digits past which an integer is kept as text instead of being converted (Python caps
#: int() of very long strings, and nothing on the wire needs more than u64).
_MAX_INT_DIGITS = 40


@by_value
@attrs.frozen(repr=False, eq=False)
class Request:
    """A client request: it gets exactly one response."""

    id: RequestId
    method: str
    params: Any  # MISSING when the key is absent
    #: the W3C trace carrier (`{"traceparent", "tracestate"}`) a client may send with a request.
    trace: Any = None


@by_value
@attrs.frozen(repr=False, eq=False)
class Notification:
    """A client notification: no response."""

    method: str
    params: Any


@by_value
@attrs.frozen(repr=False, eq=False)
class Response:
    """A client's answer to a server->client request (result or error)."""

    id: RequestId
    result: Any
    error: Any


@by_value
@attrs.frozen(repr=False, eq=False)
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
        if "number" not in str(exc):
            return Invalid(f"Failed to deserialize JSONRPCMessage: {exc}")
        try:
            value = _loads_with_huge_numbers(data)
        except (ValueError, RecursionError):
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


def _huge(text: str) -> dict[str, str]:
    return {HUGE_NUMBER_KEY: text}


def _parse_int(text: str) -> Any:
    return int(text) if len(text) <= _MAX_INT_DIGITS else _huge(text)


def _parse_float(text: str) -> Any:
    value = float(text)
    return value if value not in (float("inf"), float("-inf")) else _huge(text)


def _no_constant(text: str) -> Any:
    raise ValueError(f"{text} is not JSON")


def _loads_with_huge_numbers(data: bytes) -> Any:
    """The slow path for a message orjson refuses only because of a number beyond f64:
    the message is still answered (a huge number in a field the method ignores is fine)."""
    return json.loads(data, parse_int=_parse_int, parse_float=_parse_float, parse_constant=_no_constant)


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
