"""`--listen URL` parsing: stdio://, ws://IP:PORT, unix://[PATH] and off.

The wording of the errors is the reference's, since scripts match on it.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path

import attrs

from codex_trio.records import by_value

EXPECTED = "expected `stdio://`, `unix://`, `unix://PATH`, `ws://IP:PORT`, or `off`"


class ListenUrlError(ValueError):
    """A --listen value the server cannot serve."""


@by_value
@attrs.frozen(repr=False, eq=False)
class StdioListen:
    pass


@by_value
@attrs.frozen(repr=False, eq=False)
class WebSocketListen:
    host: str
    port: int


@by_value
@attrs.frozen(repr=False, eq=False)
class UnixListen:
    """`path` is None for the default control socket under CODEX_HOME."""

    path: Path | None


@by_value
@attrs.frozen(repr=False, eq=False)
class NoListen:
    pass


ListenTarget = StdioListen | WebSocketListen | UnixListen | NoListen


def parse_listen_url(url: str) -> ListenTarget:
    if url == "stdio://":
        return StdioListen()
    if url == "off":
        return NoListen()
    if url.startswith("unix://"):
        rest = url[len("unix://") :]
        return UnixListen(Path(rest) if rest else None)
    if url.startswith("ws://"):
        return _parse_ws(url)
    raise ListenUrlError(f"unsupported --listen URL `{url}`; {EXPECTED}")


def _parse_ws(url: str) -> WebSocketListen:
    invalid = ListenUrlError(f"invalid websocket --listen URL `{url}`; expected `ws://IP:PORT`")
    authority = url[len("ws://") :].rstrip("/")
    if authority.startswith("["):
        host, sep, port_text = authority[1:].partition("]:")
    else:
        host, sep, port_text = authority.rpartition(":")
    if not sep or not port_text.isdigit():
        raise invalid
    try:
        ipaddress.ip_address(host)
    except ValueError:
        raise invalid from None
    port = int(port_text)
    if port > 65535:
        raise invalid
    return WebSocketListen(host, port)
