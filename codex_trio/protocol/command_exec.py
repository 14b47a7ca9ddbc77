"""Wire types and pure checks of the `command/exec` family (methods.md §2).

Pure: no trio, no I/O. Besides the attrs types this module holds the parameter checks whose
order and wording are the reference's (-32602 for conflicting or out-of-range values, -32600
for the rest), and a base64 decoder that refuses input exactly as the Rust `base64` crate's
STANDARD engine does, so `command/exec/write` errors read the same.
"""

from __future__ import annotations

from typing import Any, Literal, NewType

import attrs

from codex_trio.protocol.converter import WireError, describe, register_structure_hook
from codex_trio.protocol.errors import RpcError, invalid_params, invalid_request
from codex_trio.protocol.sandbox import SandboxPolicy
from codex_trio.records import by_value

OUTPUT_DELTA = "command/exec/outputDelta"

#: the reference's defaults (codex_core::exec and codex_utils_pty).
DEFAULT_TIMEOUT_MS = 10_000
DEFAULT_OUTPUT_BYTES_CAP = 1024 * 1024
TIMEOUT_EXIT_CODE = 124
DEFAULT_ROWS = 24
DEFAULT_COLS = 80

#: built-in permission profiles (`permissionProfile/list` with an empty config).
BUILTIN_PERMISSION_PROFILES = (":read-only", ":workspace", ":danger-full-access")

U16 = NewType("U16", int)
USize = NewType("USize", int)


def _unsigned(label: str, maximum: int) -> Any:
    def structure(value: Any, _: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise WireError(f"invalid type: {describe(value)}, expected {label}")
        if not 0 <= value <= maximum:
            raise WireError(f"invalid value: integer `{value}`, expected {label}")
        return value

    return structure


register_structure_hook(U16, _unsigned("u16", 0xFFFF))
register_structure_hook(USize, _unsigned("usize", 2**64 - 1))

Stream = Literal["stdout", "stderr"]


@by_value
@attrs.frozen(repr=False, eq=False)
class CommandExecTerminalSize:
    """PTY size in character cells."""

    rows: U16
    cols: U16


@by_value
@attrs.frozen(repr=False, eq=False)
class CommandExecParams:
    """`command/exec`: run an argv outside any thread."""

    command: list[str]
    process_id: str | None = None
    tty: bool = False
    stream_stdin: bool = False
    stream_stdout_stderr: bool = False
    output_bytes_cap: USize | None = None
    disable_output_cap: bool = False
    disable_timeout: bool = False
    timeout_ms: int | None = None
    cwd: str | None = None
    env: dict[str, str | None] | None = None
    size: CommandExecTerminalSize | None = None
    sandbox_policy: SandboxPolicy | None = None
    #: experimental: only with the `experimentalApi` capability.
    permission_profile: str | None = None


@by_value
@attrs.frozen(repr=False, eq=False)
class CommandExecResponse:
    """The final answer; stdout/stderr are empty when they were streamed."""

    exit_code: int
    stdout: str
    stderr: str


@by_value
@attrs.frozen(repr=False, eq=False)
class CommandExecOutputDelta:
    """`command/exec/outputDelta`: one read of a stream, base64-encoded."""

    process_id: str
    stream: Stream
    delta_base64: str
    cap_reached: bool


@by_value
@attrs.frozen(repr=False, eq=False)
class CommandExecWriteParams:
    """`command/exec/write` params: bytes for stdin, or close it."""

    process_id: str
    delta_base64: str | None = None
    close_stdin: bool = False


@by_value
@attrs.frozen(repr=False, eq=False)
class CommandExecResizeParams:
    """`command/exec/resize` params: a new PTY size."""

    process_id: str
    size: CommandExecTerminalSize


@by_value
@attrs.frozen(repr=False, eq=False)
class CommandExecTerminateParams:
    """`command/exec/terminate` params."""

    process_id: str


# ---------------------------------------------------------------------------------- checks
def check_exec_params(params: CommandExecParams) -> None:
    """The reference's semantic checks on `command/exec`, in its order (raises RpcError)."""
    if not params.command:
        raise invalid_request("command must not be empty")
    if params.sandbox_policy is not None and params.permission_profile is not None:
        raise invalid_request("`permissionProfile` cannot be combined with `sandboxPolicy`")
    if params.size is not None and not params.tty:
        raise invalid_params("command/exec size requires tty: true")
    if params.disable_output_cap and params.output_bytes_cap is not None:
        raise invalid_params("command/exec cannot set both outputBytesCap and disableOutputCap")
    if params.disable_timeout and params.timeout_ms is not None:
        raise invalid_params("command/exec cannot set both timeoutMs and disableTimeout")
    if params.timeout_ms is not None and params.timeout_ms < 0:
        raise invalid_params(f"command/exec timeoutMs must be non-negative, got {params.timeout_ms}")
    if params.permission_profile is not None:
        check_permission_profile(params.permission_profile)
    if params.size is not None:
        check_terminal_size(params.size)
    if params.process_id is None and (params.tty or params.stream_stdin or params.stream_stdout_stderr):
        raise invalid_request("command/exec tty or streaming requires a client-supplied processId")


def check_terminal_size(size: CommandExecTerminalSize) -> None:
    """Refuse a zero-sized terminal with the reference's error."""
    if size.rows == 0 or size.cols == 0:
        raise invalid_params("command/exec size rows and cols must be greater than 0")


def check_permission_profile(profile: str) -> None:
    """Only the built-in profiles exist until the config layer knows `[permissions]` tables."""
    if profile in BUILTIN_PERMISSION_PROFILES:
        return
    if profile.startswith(":"):
        raise invalid_request(
            f"invalid permission profile: default_permissions refers to unknown built-in profile `{profile}`"
        )
    raise invalid_request("invalid permission profile: default_permissions requires a `[permissions]` table")


def process_id_repr(process_id: str) -> str:
    """How the reference quotes a client process id in messages (a JSON string)."""
    return '"' + process_id.replace("\\", "\\\\").replace('"', '\\"') + '"'


def no_active_process(process_id: str) -> RpcError:
    """-32600 for a process id with no running command on this connection."""
    return invalid_request(f"no active command/exec for process id {process_id_repr(process_id)}")


def duplicate_process(process_id: str) -> RpcError:
    """-32600 for a process id already running on this connection."""
    return invalid_request(f"duplicate active command/exec process id: {process_id_repr(process_id)}")
