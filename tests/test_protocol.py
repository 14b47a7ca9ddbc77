"""The pure protocol package: envelopes, the converter and method specs (plain sync tests)."""

from __future__ import annotations

from typing import Literal

import attrs
import orjson
import pytest

from codex_trio.protocol import envelope
from codex_trio.protocol.converter import WireError, omittable, structure, unstructure, wire
from codex_trio.protocol.envelope import MISSING, Invalid, Notification, Request, Response
from codex_trio.protocol.errors import RpcError
from codex_trio.protocol.initialize import InitializeParams
from codex_trio.protocol.registry import MethodSpec


@attrs.frozen
class Sample:
    file_path: str
    is_big: bool = False
    note: str | None = omittable()
    kind: Literal["a", "b"] = "a"
    raw_key: int | None = wire("raw_key", default=None)


def test_fields_are_camel_case_and_omittable_nones_are_left_out() -> None:
    assert unstructure(Sample("/x")) == {"filePath": "/x", "isBig": False, "kind": "a", "raw_key": None}
    assert unstructure(Sample("/x", note="n"))["note"] == "n"


def test_structure_reads_camel_case_and_ignores_unknown_keys() -> None:
    value = structure({"filePath": "/x", "isBig": True, "extra": {"y": 1}, "raw_key": 3}, Sample)
    assert value == Sample("/x", True, None, "a", 3)


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({}, "missing field `filePath`"),
        ({"filePath": 5}, "invalid type: integer `5`, expected a string"),
        ({"filePath": "/x", "isBig": "yes"}, 'invalid type: string "yes", expected a boolean'),
        ({"filePath": "/x", "kind": "zzz"}, "unknown variant `zzz`, expected `a` or `b`"),
        ("text", 'invalid type: string "text", expected struct Sample'),
        ([], "invalid type: sequence, expected struct Sample"),
    ],
)
def test_structure_errors_use_serde_wording(raw: object, message: str) -> None:
    with pytest.raises(WireError) as caught:
        structure(raw, Sample)
    assert str(caught.value) == message


def test_nested_errors_name_the_inner_problem() -> None:
    with pytest.raises(WireError, match="missing field `version`"):
        structure({"clientInfo": {"name": "x"}}, InitializeParams)
    with pytest.raises(WireError, match="expected struct ClientInfo"):
        structure({"clientInfo": 5}, InitializeParams)


def test_requests_notifications_and_responses_are_told_apart() -> None:
    assert envelope.parse(b'{"id":1,"method":"m","params":{}}') == Request(1, "m", {})
    assert envelope.parse(b'{"jsonrpc":"2.0","id":"s","method":"m"}') == Request("s", "m", MISSING)
    assert envelope.parse(b'{"method":"m","params":{"a":1}}') == Notification("m", {"a": 1})
    assert envelope.parse(b'{"id":4,"result":{}}') == Response(4, {}, None)
    assert envelope.parse(b'{"id":4,"error":{"code":1}}') == Response(4, None, {"code": 1})


@pytest.mark.parametrize("bad_id", [b"1.5", b"null", b"true", b"18446744073709551615"])
def test_ids_that_are_not_integers_or_strings_make_a_notification(bad_id: bytes) -> None:
    message = envelope.parse(b'{"id":' + bad_id + b',"method":"m"}')
    assert isinstance(message, Notification)


@pytest.mark.parametrize(
    "line",
    [
        b"{not json",
        b"[]",
        b'[{"id":1,"method":"m"}]',
        b"42",
        b'"hello"',
        b"",
        b'{"id":902}',
        b"{}{}",
        b"\xff\xfe",
    ],
)
def test_malformed_input_is_invalid(line: bytes) -> None:
    assert isinstance(envelope.parse(line), Invalid)


def test_encodings_keep_the_reference_key_order_and_no_jsonrpc_member() -> None:
    assert envelope.encode_result(3, {}) == b'{"id":3,"result":{}}'
    assert (
        envelope.encode_error(1, -32600, "Not initialized")
        == b'{"error":{"code":-32600,"message":"Not initialized"},"id":1}'
    )
    assert list(orjson.loads(envelope.encode_error(5, -1, "m", {"r": 1}))["error"]) == [
        "code",
        "data",
        "message",
    ]
    note = orjson.loads(envelope.encode_notification("x/y", {}))
    assert list(note) == ["method", "params", "emittedAtMs"] and isinstance(note["emittedAtMs"], int)
    assert list(orjson.loads(envelope.encode_request(0, "a/b", {}))) == ["method", "id", "params"]


def test_method_specs_require_params_only_for_struct_params() -> None:
    takes_params = MethodSpec("x", Sample)
    with pytest.raises(RpcError, match="missing field `params`"):
        takes_params.read_params(MISSING)
    with pytest.raises(RpcError, match="missing field `params`"):
        takes_params.read_params(None)
    with pytest.raises(RpcError) as caught:
        takes_params.read_params({"filePath": 1})
    assert caught.value.code == -32600 and caught.value.message.startswith("Invalid request: ")
    assert MethodSpec("y", None).read_params(MISSING) is None


@attrs.frozen
class Shapes:
    names: list[str] = attrs.Factory(list)
    env: dict[str, str | None] = attrs.Factory(dict)


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"names": "abc"}, 'invalid type: string "abc", expected a sequence'),
        ({"names": {"a": 1}}, "invalid type: map, expected a sequence"),
        ({"env": ["A=1"]}, "invalid type: sequence, expected a map"),
        ({"env": "A=1"}, 'invalid type: string "A=1", expected a map'),
        ({"names": [1]}, "invalid type: integer `1`, expected a string"),
    ],
)
def test_lists_and_maps_must_have_their_json_shape(raw: object, message: str) -> None:
    with pytest.raises(WireError) as caught:
        structure(raw, Shapes)
    assert str(caught.value) == message


def test_lists_and_maps_structure_their_items() -> None:
    assert structure({"names": ["a"], "env": {"A": None}}, Shapes) == Shapes(["a"], {"A": None})
