"""Property-based tests (hypothesis) for the envelope parser and the params converter: any input
gives a well-formed error, a logged drop or a clean close, never a crash."""

from __future__ import annotations

import importlib
import itertools
import json
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import attrs
import orjson
import trio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from codex_trio.connection import Connection
from codex_trio.protocol import envelope
from codex_trio.protocol.converter import wire_name
from codex_trio.protocol.envelope import Invalid, Notification, Request, Response
from codex_trio.protocol.errors import INVALID_REQUEST, RpcError
from codex_trio.protocol.registry import MethodSpec
from codex_trio.server import FAMILY_GROUPS, AppServer
from codex_trio.settings import ServerSettings
from codex_trio.transport.listen import NoListen

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20)
)
json_values = st.recursive(
    json_scalars,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=20,
)
ids = st.integers(min_value=-(2**64), max_value=2**64) | st.text(max_size=8) | st.none() | st.booleans()


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_any_bytes_are_classified_never_raised(data: bytes) -> None:
    assert isinstance(envelope.parse(data), Request | Notification | Response | Invalid)


@settings(max_examples=300, deadline=None)
@given(
    st.dictionaries(
        st.sampled_from(["id", "method", "params", "result", "error", "jsonrpc"]), json_values | ids
    )
)
def test_any_object_is_classified_by_the_reference_rules(message: dict[str, Any]) -> None:
    parsed = envelope.parse(json.dumps(message).encode())
    valid_id = "id" in message and envelope._valid_id(message["id"])
    if isinstance(message.get("method"), str):
        assert isinstance(parsed, Request if valid_id else Notification)
        if isinstance(parsed, Request):
            assert parsed.id == message["id"]
    elif valid_id and ("result" in message or "error" in message):
        assert isinstance(parsed, Response)
    else:
        assert isinstance(parsed, Invalid)


@settings(max_examples=60, deadline=None)
@given(st.integers(min_value=400, max_value=5000), st.sampled_from(["", "-"]), st.booleans())
def test_a_number_beyond_f64_never_costs_the_reply(digits: int, sign: str, as_id: bool) -> None:
    huge = sign + "9" * digits
    if as_id:
        parsed = envelope.parse(f'{{"id": {huge}, "method": "fs/getMetadata"}}'.encode())
        assert isinstance(parsed, Notification)  # as the reference: not an id, no reply
        return
    parsed = envelope.parse(f'{{"id": 7, "method": "m", "params": {{"x": {huge}, "path": "/"}}}}'.encode())
    assert isinstance(parsed, Request) and parsed.id == 7
    assert parsed.params["x"] == {envelope.HUGE_NUMBER_KEY: huge}


def all_method_specs() -> list[MethodSpec]:
    """Every method's spec, with every lazily built family built."""
    server = AppServer(ServerSettings(listen=NoListen()))
    for group in FAMILY_GROUPS:
        for module in group.modules:
            importlib.import_module(module)
        server._add_families(group.build(server))
    return [server.router._routes[name].spec for name in sorted(server.router._routes)]


SPECS = [spec for spec in all_method_specs() if spec.params is not None]


def params_for(spec: MethodSpec) -> st.SearchStrategy[Any]:
    """Objects using the type's wire field names, with arbitrary values (and stray keys)."""
    assert spec.params is not None
    names = [wire_name(field) for field in attrs.fields(spec.params)] if attrs.has(spec.params) else []
    keys = st.sampled_from(names) if names else st.text(max_size=8)
    return st.dictionaries(keys | st.text(max_size=6), json_values, max_size=len(names) + 2) | json_values


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_params_either_convert_or_are_refused_with_invalid_request(data: st.DataObject) -> None:
    """Every method's params converter: any value converts, or is refused with -32600."""
    spec = data.draw(st.sampled_from(SPECS))
    raw = data.draw(params_for(spec))
    try:
        spec.read_params(raw)
    except RpcError as exc:
        assert exc.code == INVALID_REQUEST
        assert exc.message.startswith("Invalid request: ")


class ScriptedStream:
    """A transport feeding the connection fixed messages, then the end of the stream."""

    transport_name = "memory"

    def __init__(self, messages: Sequence[bytes]) -> None:
        self._messages = list(messages)
        self.sent: list[bytes] = []
        self._expected = sum(isinstance(envelope.parse(data), Request) for data in messages)
        self._answered = trio.Event()
        self._answers = 0
        if not self._expected:
            self._answered.set()

    async def receive_message(self) -> bytes:
        await trio.lowlevel.checkpoint()
        if not self._messages:
            # The client leaves once it has every answer (leaving earlier cancels requests).
            await self._answered.wait()
            raise trio.EndOfChannel
        return self._messages.pop(0)

    async def send_message(self, data: bytes) -> None:
        await trio.lowlevel.checkpoint()
        self.sent.append(data)
        if isinstance(envelope.parse(data), Response):
            self._answers += 1
            if self._answers >= self._expected:
                self._answered.set()

    async def send_messages(self, batch: Sequence[bytes]) -> None:
        for data in batch:
            await self.send_message(data)

    async def aclose(self) -> None:
        await trio.lowlevel.checkpoint()


#: a private CODEX_HOME and working directory for the in-process connections below.
HOME = Path(tempfile.mkdtemp(prefix="codex-trio-properties-"))

INITIALIZE = orjson.dumps(
    {"id": 9, "method": "initialize", "params": {"clientInfo": {"name": "p", "version": "1"}}}
)

frames = (
    st.binary(max_size=60)
    | st.just(INITIALIZE)
    | st.builds(
        lambda request_id, method, params: json.dumps(
            {"id": request_id, "method": method, "params": params}
        ).encode(),
        st.integers(min_value=0, max_value=5),
        st.sampled_from(["initialize", "fs/getMetadata", "thread/read", "no/such", "config/read"]),
        json_values,
    )
)


@settings(max_examples=30, deadline=None)
@given(st.lists(frames, max_size=12))
def test_a_connection_answers_every_request_once_and_ends_cleanly(messages: list[bytes]) -> None:
    """Whatever a client sends, each request gets one well-formed reply (id and either result
    or error with an integer code) and the connection ends without raising."""
    server = AppServer(ServerSettings(codex_home=HOME, cwd=HOME, listen=NoListen()))
    stream = ScriptedStream(messages)
    connection = Connection(0, stream, server.router, request_ids=itertools.count())

    async def main() -> None:
        with trio.fail_after(30):
            await connection.run()

    trio.run(main)
    requests = [parsed for parsed in map(envelope.parse, messages) if isinstance(parsed, Request)]
    replies = [orjson.loads(data) for data in stream.sent]
    answers = [reply for reply in replies if "method" not in reply]
    assert len(answers) == len(requests)
    for answer in answers:
        assert ("result" in answer) != ("error" in answer)
        if "error" in answer:
            assert isinstance(answer["error"]["code"], int) and isinstance(answer["error"]["message"], str)


def _generic(value: Any, cls: type[Any]) -> Any:
    """What the converter's generic rules make of `value`, without the hand-written hooks."""
    from codex_trio.protocol.converter import WireError, _make_converter

    try:
        return _make_converter().structure(value, cls)
    except (WireError, TypeError, ValueError, KeyError) as exc:
        return ("error", str(exc))


def _hooked(value: Any, cls: type[Any]) -> Any:
    from codex_trio.protocol.converter import WireError, structure

    try:
        return structure(value, cls)
    except WireError as exc:
        return ("error", str(exc))


def _maybe(keys: list[str], values: st.SearchStrategy[Any]) -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries({}, optional={key: values for key in keys})


_client_info = _maybe(
    ["name", "version", "title", "other"], json_scalars | st.lists(json_scalars, max_size=2)
)
_capabilities = _maybe(
    ["experimentalApi", "optOutNotificationMethods", "requestAttestation"],
    json_scalars | st.lists(json_scalars | st.text(max_size=5), max_size=3),
)
_initialize_params = (
    _maybe(["clientInfo", "capabilities", "x"], _client_info | _capabilities | json_values) | json_values
)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_initialize_params)
def test_initialize_params_are_read_as_the_generic_converter_reads_them(params: Any) -> None:
    """`initialize` skips the converter (a cold start answers it before cattrs is imported): its
    hand-written hook must give the same value or the same serde error for any params."""
    from codex_trio.protocol.initialize import InitializeParams

    assert _hooked(params, InitializeParams) == _generic(params, InitializeParams)


@given(st.text(max_size=8), st.text(max_size=8), st.none() | st.text(max_size=8))
def test_initialize_answers_are_written_as_the_generic_converter_writes_them(
    a: str, b: str, c: str | None
) -> None:
    from codex_trio.protocol.converter import _make_converter, unstructure
    from codex_trio.protocol.initialize import InitializeResponse, RemoteControlStatusChanged

    for value in (InitializeResponse(a, b, a, b), RemoteControlStatusChanged(a, b, a, c)):
        assert unstructure(value) == _make_converter().unstructure(value)
        # `scalar_fields_to_wire` is only right for str / None fields none of which is omittable
        for field in attrs.fields(attrs.resolve_types(type(value))):
            assert field.type in (str, str | None) and not field.metadata


def test_hand_written_hooks_are_the_converters_hooks_too() -> None:
    """Once built, the converter uses the hooks registered before it existed."""
    from codex_trio.protocol.converter import get_converter
    from codex_trio.protocol.initialize import InitializeParams, structure_initialize_params

    assert get_converter().get_structure_hook(InitializeParams) is structure_initialize_params
