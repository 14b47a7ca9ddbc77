"""The sans-I/O parts of the websocket transport: request heads, decisions, text frames."""

from __future__ import annotations

import pytest

from codex_trio.transport.http_head import (
    Drop,
    MalformedHead,
    Respond,
    Upgrade,
    check_prefix,
    decide_tcp,
    decide_unix,
    encode_response,
    handshake_refusal,
    head_end,
    parse_head,
)
from codex_trio.transport.websocket import text_frame

UPGRADE = (
    b"GET /rpc?x=1 HTTP/1.1\r\nHost: h\r\nConnection: keep-alive, Upgrade\r\nUpgrade: WebSocket\r\n"
    b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: a2V5a2V5a2V5a2V5a2V5aw==\r\n\r\n"
)


def test_a_head_is_parsed_with_lower_case_names_and_the_path_without_query() -> None:
    assert head_end(UPGRADE) == len(UPGRADE)
    head = parse_head(UPGRADE)
    assert (head.method, head.path, head.version) == ("GET", "/rpc", "1.1")
    assert head.tokens("connection") == ["keep-alive", "upgrade"]
    assert head.get("sec-websocket-key") == "a2V5a2V5a2V5a2V5a2V5aw=="
    assert head.keep_alive


@pytest.mark.parametrize("data", [b"HELLO\r\n", b'{"id":1}\n', b"\x16\x03\x01", b"GET / HTTP/2.0\r\n"])
def test_what_cannot_become_a_request_is_refused_early(data: bytes) -> None:
    with pytest.raises(MalformedHead):
        check_prefix(data)


def test_a_partial_request_line_is_still_acceptable() -> None:
    check_prefix(b"GE")
    check_prefix(b"GET /readyz HT")


def test_keep_alive_follows_the_version_connection_header_and_body() -> None:
    assert not parse_head(b"GET / HTTP/1.0\r\n\r\n").keep_alive
    assert parse_head(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n").keep_alive
    assert not parse_head(b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n").keep_alive
    assert not parse_head(b"POST / HTTP/1.1\r\nContent-Length: 3\r\n\r\n").keep_alive


def test_tcp_decisions_check_origin_first_then_health_then_upgrade_then_auth() -> None:
    def refuse(header: str | None) -> tuple[int, str] | None:
        return (401, "missing websocket bearer token") if header is None else None

    with_origin = parse_head(UPGRADE.replace(b"Host: h", b"Host: h\r\nOrigin: null"))
    assert decide_tcp(with_origin, refuse) == Respond(403)
    assert decide_tcp(parse_head(b"GET /healthz HTTP/1.1\r\n\r\n"), refuse) == Respond(200)
    assert decide_tcp(parse_head(UPGRADE), None) == Upgrade()
    refused = decide_tcp(parse_head(UPGRADE), refuse)
    assert isinstance(refused, Respond) and refused.status == 401
    assert refused.body == b"missing websocket bearer token"
    authorized = parse_head(UPGRADE.replace(b"Host: h", b"Host: h\r\nAuthorization: Bearer x"))
    assert decide_tcp(authorized, refuse) == Upgrade()


def test_the_control_socket_upgrades_or_drops() -> None:
    assert decide_unix(parse_head(UPGRADE)) == Upgrade()
    assert decide_unix(parse_head(b"GET /healthz HTTP/1.1\r\n\r\n")) == Drop()


def test_responses_carry_length_date_and_the_request_version() -> None:
    data = encode_response(Respond(405, (("allow", "GET,HEAD"),)), "1.0")
    assert data.startswith(
        b"HTTP/1.0 405 Method Not Allowed\r\nallow: GET,HEAD\r\ncontent-length: 0\r\ndate: "
    )
    assert data.endswith(b"GMT\r\n\r\n")


@pytest.mark.parametrize("size", [0, 125, 126, 65535, 65536])
def test_text_frames_use_the_shortest_length_encoding(size: int) -> None:
    frame = text_frame(b"x" * size)
    header = 2 if size < 126 else 4 if size < 65536 else 10
    assert frame[0] == 0x81 and len(frame) == header + size


@pytest.mark.parametrize(
    ("head", "refused"),
    [
        (UPGRADE, False),
        (UPGRADE.replace(b"Host: h\r\n", b""), True),
        (UPGRADE.replace(b"Upgrade: WebSocket", b"Upgrade: websocket, h2c"), True),
    ],
)
def test_the_handshake_wants_a_host_and_exactly_websocket_as_upgrade(head: bytes, refused: bool) -> None:
    """What wsproto refused beyond `decide_*`, with the bytes it answered."""
    assert decide_unix(parse_head(head)) == Upgrade()
    expected = b"HTTP/1.1 400 \r\ncontent-length: 0\r\n\r\n" if refused else None
    assert handshake_refusal(parse_head(head)) == expected
