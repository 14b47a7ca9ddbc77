"""JSON-RPC error codes and the one exception type handlers raise.

The codes and message shapes are the reference server's: it answers bad input with -32600
(never -32602 for type errors, never -32700), I/O failures with -32603 and inbound overload
with -32001.
"""

from __future__ import annotations

from typing import Any

from codex_trio.os_errors import os_error_text

INVALID_REQUEST = -32600
METHOD_NOT_FOUND = -32601
INVALID_PARAMS = -32602
INTERNAL_ERROR = -32603
SERVER_OVERLOADED = -32001

NOT_INITIALIZED = "Not initialized"
ALREADY_INITIALIZED = "Already initialized"
OVERLOADED_MESSAGE = "Server overloaded; retry later."
DRAINING_MESSAGE = "Server is draining; retry after reconnecting"


class RpcError(Exception):
    """An error answer to a request: raised by handlers, sent by the dispatcher."""

    def __init__(self, code: int, message: str, data: Any = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.data = data

    def __repr__(self) -> str:
        return f"RpcError({self.code}, {self.message!r}, data={self.data!r})"


def invalid_request(message: str, data: Any = None) -> RpcError:
    """-32600: the reference's answer to most semantic refusals."""
    return RpcError(INVALID_REQUEST, message, data)


def invalid_params(message: str) -> RpcError:
    """-32602: used by the reference only for a few `command/exec` parameter checks."""
    return RpcError(INVALID_PARAMS, message)


def internal_error(message: str) -> RpcError:
    """-32603: an internal or I/O failure, with the OS message as the reference words it."""
    return RpcError(INTERNAL_ERROR, message)


def os_error(exc: OSError) -> RpcError:
    """-32603 with the OS error worded as the reference words it."""
    return internal_error(os_error_text(exc))


def server_shutting_down() -> RpcError:
    """-32600 with `data.reason` for new threads and turns during a drain."""
    return invalid_request(DRAINING_MESSAGE, {"reason": "serverShuttingDown"})
