"""`ws_frames`: the 101 response and client frames parsed into messages, sans I/O."""

from __future__ import annotations

import os

import pytest

from codex_trio.transport import ws_frames
from codex_trio.transport.ws_frames import (
    Close,
    FrameReader,
    FrameTooLarge,
    Message,
    MessageTooLarge,
    Ping,
    Pong,
    ProtocolError,
)

MASK = b"\x37\xfa\x21\x3d"


def client_frame(opcode: int, payload: bytes, *, fin: bool = True, mask: bytes = MASK, rsv: int = 0) -> bytes:
    """A masked client frame, as RFC 6455 section 5.2 lays it out."""
    size = len(payload)
    first = (0x80 if fin else 0) | rsv | opcode
    if size < 126:
        header = bytes((first, 0x80 | size))
    elif size < 65536:
        header = bytes((first, 0x80 | 126)) + size.to_bytes(2, "big")
    else:
        header = bytes((first, 0x80 | 127)) + size.to_bytes(8, "big")
    return header + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


def events(data: bytes, *, frame_limit: int = 1 << 20, message_limit: int = 1 << 22) -> list[object]:
    reader = FrameReader(frame_limit, message_limit)
    reader.feed(data)
    found = []
    while (event := reader.next_event()) is not None:
        found.append(event)
    return found


def test_the_accept_token_is_the_rfc_example() -> None:
    assert ws_frames.accept_token("dGhlIHNhbXBsZSBub25jZQ==") == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
    response = ws_frames.switching_protocols(" dGhlIHNhbXBsZSBub25jZQ== ", [(b"x-extra", b"1")])
    assert response == (
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\nx-extra: 1\r\n\r\n"
    )


@pytest.mark.parametrize("size", [0, 1, 3, 4, 5, 125, 126, 65535, 65536, 100_003])
def test_unmasking_matches_a_byte_by_byte_xor(size: int) -> None:
    payload = os.urandom(size)
    expected = bytes(b ^ MASK[i % 4] for i, b in enumerate(payload))
    assert ws_frames.unmask(payload, MASK) == expected
    assert ws_frames.unmask(payload, b"\0\0\0\0") == payload


def test_frames_split_anywhere_give_the_same_events() -> None:
    """Fed one byte at a time: a text message, a fragmented one with a ping between its
    fragments, a binary message, a pong and a Close, in order."""
    text = '{"id":1,"method":"x","params":{"é":"ü"}}'.encode()
    big = b'"' + b"y" * 70_000 + b'"'
    stream = (
        client_frame(0x1, text)
        + client_frame(0x1, big[:10], fin=False)
        + client_frame(0x9, b"ping!")
        + client_frame(0x0, big[10:200], fin=False)
        + client_frame(0x0, big[200:])
        + client_frame(0x2, b"\x00\x01")
        + client_frame(0xA, b"")
        + client_frame(0x8, (1000).to_bytes(2, "big") + b"bye")
    )
    expected = [
        Message(text),
        Ping(b"ping!"),
        Message(big),
        Message(b"\x00\x01", text=False),
        Pong(b""),
        Close((1000).to_bytes(2, "big") + b"bye"),
    ]
    assert events(stream) == expected
    reader = FrameReader(1 << 20, 1 << 22)
    found = []
    for byte in stream:
        reader.feed(bytes([byte]))
        while (event := reader.next_event()) is not None:
            found.append(event)
    assert found == expected


def test_an_empty_close_is_echoed_empty() -> None:
    assert events(client_frame(0x8, b"")) == [Close(b"")]


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(client_frame(0x1, b"{}")[:1] + bytes([2]) + b"{}", id="unmasked"),
        pytest.param(client_frame(0x1, b"{}", rsv=0x40), id="reserved bit"),
        pytest.param(client_frame(0x3, b"{}"), id="unknown opcode"),
        pytest.param(client_frame(0x0, b"{}"), id="continuation without a message"),
        pytest.param(client_frame(0x1, b"{", fin=False) + client_frame(0x1, b"}"), id="message interrupted"),
        pytest.param(client_frame(0x9, b"x" * 126), id="control frame too long"),
        pytest.param(client_frame(0x9, b"x", fin=False), id="fragmented control frame"),
        pytest.param(client_frame(0x1, b"\xff\xfe"), id="invalid UTF-8"),
        pytest.param(client_frame(0x1, b"\xc3", fin=False) + client_frame(0x0, b"x"), id="broken UTF-8"),
        pytest.param(client_frame(0x8, b"\x03"), id="one-byte close"),
        pytest.param(client_frame(0x8, (1005).to_bytes(2, "big")), id="local-only close code"),
        pytest.param(client_frame(0x8, (999).to_bytes(2, "big")), id="close code below 1000"),
        pytest.param(client_frame(0x8, (1000).to_bytes(2, "big") + b"\xff"), id="close reason not UTF-8"),
    ],
)
def test_protocol_errors_are_raised(data: bytes) -> None:
    with pytest.raises(ProtocolError):
        events(data)


def test_a_utf8_character_split_across_fragments_is_one_valid_message() -> None:
    word = "é".encode()
    assert events(client_frame(0x1, word[:1], fin=False) + client_frame(0x0, word[1:])) == [Message(word)]


def test_an_oversized_frame_is_refused_from_its_header_alone() -> None:
    header = client_frame(0x1, b"x" * 1001)[:8]
    with pytest.raises(FrameTooLarge, match="1001 > 1000"):
        events(header, frame_limit=1000)
    assert events(client_frame(0x1, b"x" * 1000), frame_limit=1000) == [Message(b"x" * 1000)]


def test_a_message_above_the_limit_is_refused_even_in_small_fragments() -> None:
    data = client_frame(0x1, b"x" * 600, fin=False) + client_frame(0x0, b"x" * 600)
    with pytest.raises(MessageTooLarge, match="1000 bytes"):
        events(data, frame_limit=1000, message_limit=1000)


def test_server_frames_use_the_shortest_length_encoding() -> None:
    assert ws_frames.frame(0xA, b"ab") == b"\x8a\x02ab"
    assert ws_frames.frame(0x1, b"x" * 126)[:4] == b"\x81\x7e\x00\x7e"
    assert ws_frames.frame(0x1, b"x" * 65536)[:10] == b"\x81\x7f" + (65536).to_bytes(8, "big")
