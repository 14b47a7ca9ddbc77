"""The websocket wire format of the server side (RFC 6455), sans I/O: the opening handshake's
101 response, and client frames parsed into whole messages.

Only what the app-server speaks: no extensions, no subprotocol, text messages (binary ones are
reported so the transport can drop them), pings, pongs and Close. Client frames must be
masked; a frame above `frame_limit` or a message above `message_limit` is refused as soon as
its header says so. Nothing here imports trio or does I/O.
"""

from __future__ import annotations

import hashlib

import attrs

from codex_trio.protocol.b64 import encode_base64
from codex_trio.records import by_value

#: RFC 6455 section 1.3: appended to the client's key to compute Sec-WebSocket-Accept.
ACCEPT_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

OP_CONTINUATION, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA

#: close codes a peer may send (section 7.4; 1004-1006 and 1015 are never sent on the wire).
_SENDABLE_CODES = frozenset({1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014})
#: the Close a message above the message limit gets (trio-websocket's code and wording).
MESSAGE_TOO_BIG = 1009


def accept_token(key: str) -> str:
    """The Sec-WebSocket-Accept value for a client's Sec-WebSocket-Key."""
    return encode_base64(hashlib.sha1(key.strip().encode("latin-1") + ACCEPT_GUID).digest()).decode()


def switching_protocols(key: str, extra_headers: list[tuple[bytes, bytes]]) -> bytes:
    """The 101 response accepting an upgrade (header names as wsproto wrote them)."""
    lines = [
        b"HTTP/1.1 101 Switching Protocols",
        b"Upgrade: websocket",
        b"Connection: Upgrade",
        b"Sec-WebSocket-Accept: " + accept_token(key).encode(),
        *(name + b": " + value for name, value in extra_headers),
    ]
    return b"\r\n".join(lines) + b"\r\n\r\n"


def frame(opcode: int, payload: bytes) -> bytes:
    """One unfragmented, unmasked server frame (section 5.2) with the shortest length encoding."""
    size = len(payload)
    first = 0x80 | opcode
    if size < 126:
        return bytes((first, size)) + payload
    if size < 65536:
        return bytes((first, 126)) + size.to_bytes(2, "big") + payload
    return bytes((first, 127)) + size.to_bytes(8, "big") + payload


def unmask(payload: bytes, mask: bytes) -> bytes:
    """XOR `payload` with the 4-byte `mask` repeated (as one big-integer XOR: C speed)."""
    size = len(payload)
    if not size or mask == b"\0\0\0\0":
        return payload
    key = mask * (size >> 2) + mask[: size & 3]
    return (int.from_bytes(payload, "little") ^ int.from_bytes(key, "little")).to_bytes(size, "little")


class ProtocolError(Exception):
    """The client broke the framing rules; the connection is dropped without a Close frame."""


class FrameTooLarge(Exception):
    """A client frame announced a payload above the frame limit."""


class MessageTooLarge(Exception):
    """A client message (all its fragments) grew above the message limit."""


@by_value
@attrs.frozen(repr=False, eq=False)
class Message:
    """A whole data message; `text` is False for a binary one."""

    data: bytes
    text: bool = True


@by_value
@attrs.frozen(repr=False, eq=False)
class Ping:
    payload: bytes


@by_value
@attrs.frozen(repr=False, eq=False)
class Pong:
    payload: bytes


@by_value
@attrs.frozen(repr=False, eq=False)
class Close:
    """The client's Close; `payload` (status code and reason, or empty) is what we echo."""

    payload: bytes


Event = Message | Ping | Pong | Close


class FrameReader:
    """Client bytes in, events out: `feed` what was read, then call `next_event` until None."""

    def __init__(self, frame_limit: int, message_limit: int) -> None:
        self._frame_limit = frame_limit
        self._message_limit = message_limit
        self._buffer = bytearray()
        self._parts: list[bytes] = []
        self._size = 0
        #: the opcode of the fragmented message in progress (0: none).
        self._opcode = 0

    def feed(self, data: bytes | bytearray) -> None:
        self._buffer += data

    def next_event(self) -> Event | None:
        """The next complete event, or None until more bytes are fed; raises ProtocolError,
        FrameTooLarge or MessageTooLarge (the connection is then unusable)."""
        while True:
            buffer = self._buffer
            if len(buffer) < 2:
                return None
            first, second = buffer[0], buffer[1]
            if first & 0x70:
                raise ProtocolError("reserved bits set")
            if not second & 0x80:
                raise ProtocolError("client frame not masked")
            opcode, fin, size, offset = first & 0x0F, first & 0x80, second & 0x7F, 2
            if size == 126:
                if len(buffer) < 4:
                    return None
                size, offset = int.from_bytes(buffer[2:4], "big"), 4
            elif size == 127:
                if len(buffer) < 10:
                    return None
                size, offset = int.from_bytes(buffer[2:10], "big"), 10
            if opcode >= OP_CLOSE and (not fin or size > 125):
                raise ProtocolError("control frame fragmented or longer than 125 bytes")
            if size > self._frame_limit:
                raise FrameTooLarge(f"Space limit exceeded: Message too long: {size} > {self._frame_limit}")
            end = offset + 4 + size
            if len(buffer) < end:
                return None
            payload = unmask(bytes(buffer[offset + 4 : end]), bytes(buffer[offset : offset + 4]))
            del buffer[:end]
            event = self._frame(opcode, bool(fin), payload)
            if event is not None:
                return event

    def _frame(self, opcode: int, fin: bool, payload: bytes) -> Event | None:
        if opcode == OP_PING:
            return Ping(payload)
        if opcode == OP_PONG:
            return Pong(payload)
        if opcode == OP_CLOSE:
            return Close(_checked_close(payload))
        if opcode == OP_CONTINUATION:
            if not self._opcode:
                raise ProtocolError("continuation frame without a message")
        elif opcode in (OP_TEXT, OP_BINARY):
            if self._opcode:
                raise ProtocolError("new message before the last one was finished")
            self._opcode = opcode
        else:
            raise ProtocolError(f"unknown opcode {opcode:#x}")
        self._size += len(payload)
        if self._size > self._message_limit:
            raise MessageTooLarge(f"Exceeded maximum message size: {self._message_limit} bytes")
        if not fin:
            self._parts.append(payload)
            return None
        if self._parts:
            self._parts.append(payload)
            payload = b"".join(self._parts)
            self._parts = []
        text = self._opcode == OP_TEXT
        self._opcode = self._size = 0
        if text:
            try:
                payload.decode("utf-8")
            except UnicodeDecodeError:
                raise ProtocolError("invalid UTF-8 in a text message") from None
        return Message(payload, text)


def _checked_close(payload: bytes) -> bytes:
    """A Close payload after the section 7.1.5/7.4 checks (as wsproto makes them)."""
    if not payload:
        return payload
    if len(payload) == 1:
        raise ProtocolError("Close payload of one byte")
    code = int.from_bytes(payload[:2], "big")
    if code not in _SENDABLE_CODES and not 3000 <= code <= 4999:
        raise ProtocolError(f"invalid close code {code}")
    try:
        payload[2:].decode("utf-8")
    except UnicodeDecodeError:
        raise ProtocolError("invalid UTF-8 in a Close reason") from None
    return payload
