"""The HTTP/1.x request head in front of a websocket upgrade, sans I/O.

trio-websocket hands every connection straight to its handshake, but the websocket port also
answers plain HTTP (`/readyz`, `/healthz`, refusals with the reference's statuses and bodies).
So the listener reads the request head itself, decides here what to do with it, and only hands
genuine, authorized upgrades on (with the bytes it already read replayed).

Nothing here imports trio or does I/O; `decide_tcp` and `decide_unix` are pure functions of
the parsed head.
"""

from __future__ import annotations

import email.utils
import re
from collections.abc import Callable

import attrs

from codex_trio.records import by_value

#: bytes of request head read before the request is refused (431); also bounds the buffer.
MAX_HEAD_BYTES = 64 * 1024
#: the health-probe paths served on the websocket port.
HEALTH_PATHS = frozenset({"/readyz", "/healthz"})

TEXT_PLAIN = "text/plain; charset=utf-8"

_REASONS = {
    101: "Switching Protocols",
    200: "OK",
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    405: "Method Not Allowed",
    426: "Upgrade Required",
    431: "Request Header Fields Too Large",
}
_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_REQUEST_LINE = re.compile(rb"([!#$%&'*+\-.^_`|~0-9A-Za-z]+) (\S+) HTTP/(1\.[01])")


@by_value
@attrs.frozen(repr=False, eq=False)
class RequestHead:
    """A parsed request line and its headers (names lower-cased, in order)."""

    method: str
    target: str
    version: str
    headers: tuple[tuple[str, str], ...]

    @property
    def path(self) -> str:
        return self.target.split("?", 1)[0]

    def get(self, name: str) -> str | None:
        """The first value of header `name` (lower-case), or None."""
        for key, value in self.headers:
            if key == name:
                return value
        return None

    def has(self, name: str) -> bool:
        return any(key == name for key, _ in self.headers)

    def tokens(self, name: str) -> list[str]:
        """Comma-separated, lower-cased tokens of every `name` header (e.g. Connection)."""
        return [
            token.strip().lower()
            for key, value in self.headers
            if key == name
            for token in value.split(",")
            if token.strip()
        ]

    @property
    def has_body(self) -> bool:
        length = self.get("content-length")
        return self.has("transfer-encoding") or (length is not None and length.strip() not in ("", "0"))

    @property
    def keep_alive(self) -> bool:
        """Whether the connection may carry another request after this one is answered."""
        if self.has_body or "close" in self.tokens("connection"):
            return False
        return self.version == "1.1" or "keep-alive" in self.tokens("connection")


class MalformedHead(ValueError):
    """The bytes are not an HTTP/1.x request head."""


def head_end(buffer: bytes | bytearray) -> int:
    """Index just past the blank line ending the head, or -1 while it is incomplete."""
    end = buffer.find(b"\r\n\r\n")
    return -1 if end < 0 else end + 4


def check_prefix(buffer: bytes | bytearray) -> None:
    """Refuse early what can never become a request head (a JSON line, TLS, ...).

    Lets the listener answer garbage at once instead of waiting for a blank line that a
    non-HTTP client will never send.
    """
    line_end = buffer.find(b"\n")
    if line_end < 0:
        method, _, _ = bytes(buffer).partition(b" ")
        if method and not _TOKEN.fullmatch(method):
            raise MalformedHead("invalid token in request method")
        return
    _parse_request_line(bytes(buffer[:line_end]).rstrip(b"\r"))


def _parse_request_line(line: bytes) -> tuple[str, str, str]:
    match = _REQUEST_LINE.fullmatch(line)
    if match is None:
        raise MalformedHead("invalid request line")
    method, target, version = match.groups()
    try:
        return method.decode("ascii"), target.decode("ascii"), version.decode("ascii")
    except UnicodeDecodeError:
        raise MalformedHead("non-ASCII request target") from None


def parse_head(data: bytes) -> RequestHead:
    """Parse a complete head (ending with the blank line); raises MalformedHead."""
    lines = data.split(b"\r\n")
    method, target, version = _parse_request_line(lines[0])
    headers: list[tuple[str, str]] = []
    for line in lines[1:]:
        if not line:
            continue
        name, sep, value = line.partition(b":")
        if not sep or not _TOKEN.fullmatch(name):
            raise MalformedHead("invalid header line")
        headers.append((name.decode("ascii").lower(), value.strip(b" \t").decode("latin-1")))
    return RequestHead(method, target, version, tuple(headers))


# ---------------------------------------------------------------------------------- decisions
@by_value
@attrs.frozen(repr=False, eq=False)
class Respond:
    """Answer with a plain HTTP response; `close` ends the TCP connection afterwards."""

    status: int
    headers: tuple[tuple[str, str], ...] = ()
    body: bytes = b""
    close: bool = False


@by_value
@attrs.frozen(repr=False, eq=False)
class Upgrade:
    """Hand the connection to the websocket handshake."""


@by_value
@attrs.frozen(repr=False, eq=False)
class Drop:
    """Close the connection without sending a byte (the control socket's answer to non-upgrades)."""


Decision = Respond | Upgrade | Drop

#: returns None to admit, else (status, body) of the refusal.
Authorizer = Callable[[str | None], "tuple[int, str] | None"]


def _text(status: int, body: str) -> Respond:
    return Respond(status, (("content-type", TEXT_PLAIN),), body.encode())


def upgrade_refusal(head: RequestHead) -> Respond | None:
    """Why `head` is not a websocket upgrade, in the reference's order and wording."""
    if head.method != "GET":
        return _text(405, "Request method must be `GET`")
    if "upgrade" not in head.tokens("connection"):
        return _text(400, "Connection header did not include 'upgrade'")
    if "websocket" not in head.tokens("upgrade"):
        return _text(400, "`Upgrade` header did not include 'websocket'")
    if (head.get("sec-websocket-version") or "").strip() != "13":
        return _text(400, "`Sec-WebSocket-Version` header did not include '13'")
    if not head.get("sec-websocket-key"):
        return _text(400, "`Sec-WebSocket-Key` header missing")
    if head.version != "1.1":
        return _text(426, "WebSocket request couldn't be upgraded since no upgrade state was present")
    return None


#: what an upgrade the handshake itself refuses gets (the bytes h11 wrote for wsproto).
HANDSHAKE_REFUSED = b"HTTP/1.1 400 \r\ncontent-length: 0\r\n\r\n"


def handshake_refusal(head: RequestHead) -> bytes | None:
    """The handshake's own checks, after `decide_*` admitted the upgrade: the `Upgrade`
    header must be exactly `websocket` and a `Host` header present (as wsproto required);
    else a bare 400 and the connection is closed."""
    upgrade = [value.lower() for key, value in head.headers if key == "upgrade"]
    if upgrade[-1:] != ["websocket"]:
        return HANDSHAKE_REFUSED
    if not head.has("host"):
        return HANDSHAKE_REFUSED
    return None


def decide_tcp(head: RequestHead, authorize: Authorizer | None) -> Decision:
    """What the TCP websocket listener does with one request head.

    Order as the reference: any Origin header is refused first (403, health probes too), then
    the health routes, then the upgrade checks, then auth. Health probes need no token.
    """
    if head.has("origin"):
        return Respond(403)
    if head.path in HEALTH_PATHS:
        if head.method in ("GET", "HEAD"):
            return Respond(200)
        return Respond(405, (("allow", "GET,HEAD"),))
    refusal = upgrade_refusal(head)
    if refusal is not None:
        return refusal
    if authorize is not None:
        rejected = authorize(head.get("authorization"))
        if rejected is not None:
            status, body = rejected
            return _text(status, body)
    return Upgrade()


def decide_unix(head: RequestHead) -> Decision:
    """The control socket: any path, no Origin or auth checks; anything else is dropped."""
    return Drop() if upgrade_refusal(head) is not None else Upgrade()


def encode_response(response: Respond, version: str = "1.1") -> bytes:
    """The bytes of a plain response: lower-case headers, a date, a content-length."""
    lines = [f"HTTP/{version} {response.status} {_REASONS.get(response.status, '')}"]
    headers = list(response.headers)
    if response.close:
        headers.append(("connection", "close"))
    headers.append(("content-length", str(len(response.body))))
    headers.append(("date", email.utils.formatdate(usegmt=True)))
    lines += [f"{name}: {value}" for name, value in headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + response.body


BAD_REQUEST = Respond(400, close=True)
HEAD_TOO_LARGE = Respond(431, close=True)
