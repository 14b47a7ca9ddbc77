"""`records.by_value`: shared dunders give the same repr, equality and hashing as attrs' own."""

from __future__ import annotations

from typing import Any

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st

from codex_trio.protocol.envelope import Request
from codex_trio.records import by_value
from codex_trio.transport.listen import WebSocketListen


def _body() -> dict[str, Any]:
    return {
        "__annotations__": {"a": "int", "b": "str", "c": "list[int]", "d": "int"},
        "b": attrs.field(default="x", repr=False),
        "c": attrs.field(factory=list, eq=False),
        "d": attrs.field(default=0, hash=False),
    }


Generated = attrs.frozen(type("Pair", (), _body()))
Shared = by_value(attrs.frozen(type("Pair", (), _body()), repr=False, eq=False))

values = st.tuples(st.integers(), st.text(max_size=3), st.lists(st.integers(), max_size=2), st.integers(0, 2))


@given(values, values)
def test_shared_dunders_match_what_attrs_generates(left: tuple[Any, ...], right: tuple[Any, ...]) -> None:
    generated = Generated(*left), Generated(*right)
    shared = Shared(*left), Shared(*right)
    assert repr(shared[0]) == repr(generated[0])
    assert (shared[0] == shared[1]) == (generated[0] == generated[1])
    assert (shared[0] != shared[1]) == (generated[0] != generated[1])
    if shared[0] == shared[1]:
        assert hash(shared[0]) == hash(shared[1])


def test_other_classes_and_types_are_never_equal() -> None:
    assert Shared(1) != Generated(1)
    assert Shared(1) != (1, "x", [], 0)
    assert len({Shared(1), Shared(1), Shared(2)}) == 2


def test_protocol_types_keep_value_semantics() -> None:
    assert Request(1, "fs/getMetadata", {"path": "/"}) == Request(1, "fs/getMetadata", {"path": "/"})
    assert WebSocketListen("127.0.0.1", 0) == WebSocketListen("127.0.0.1", 0)
    assert hash(WebSocketListen("127.0.0.1", 0)) == hash(WebSocketListen("127.0.0.1", 0))
    assert repr(WebSocketListen("127.0.0.1", 0)) == "WebSocketListen(host='127.0.0.1', port=0)"


def test_only_attrs_classes_are_accepted() -> None:
    with pytest.raises(TypeError):
        by_value(type("Plain", (), {}))
