"""The pure half of command/exec: wire types, parameter checks and base64, tested synchronously."""

from __future__ import annotations

import base64
import os
from typing import Any

import pytest

from codex_trio.protocol.b64 import Base64Error, decode_base64
from codex_trio.protocol.command_exec import (
    CommandExecOutputDelta,
    CommandExecParams,
    CommandExecResizeParams,
    CommandExecResponse,
    check_exec_params,
    duplicate_process,
    no_active_process,
)
from codex_trio.protocol.converter import WireError, structure, unstructure
from codex_trio.protocol.errors import INVALID_PARAMS, INVALID_REQUEST, RpcError
from codex_trio.protocol.sandbox import DangerFullAccess, ExternalSandbox, ReadOnly, WorkspaceWrite

# What the reference answered for each input to command/exec/write (its Rust base64 crate).
REFERENCE_BASE64_ERRORS = {
    "!!": "Invalid symbol 33, offset 0.",
    " YQ==": "Invalid symbol 32, offset 0.",
    "-_": "Invalid symbol 45, offset 0.",
    "=": "Invalid symbol 61, offset 0.",
    "====": "Invalid symbol 61, offset 0.",
    "=WJj": "Invalid symbol 61, offset 0.",
    "Y": "Invalid input length: 1",
    "Y!==": "Invalid symbol 33, offset 1.",
    "Y===": "Invalid symbol 61, offset 1.",
    "Y=Jj": "Invalid symbol 61, offset 1.",
    "YQ": "Invalid padding",
    "YQ=": "Invalid padding",
    "YQ==\n": "Invalid symbol 10, offset 4.",
    "YQ===": "Invalid symbol 61, offset 2.",
    "YQ==YQ==": "Invalid symbol 61, offset 2.",
    "YQ=a": "Invalid symbol 61, offset 2.",
    "YR==": "Invalid last symbol 82, offset 1.",
    "YW Jj": "Invalid symbol 32, offset 2.",
    "YW=j": "Invalid symbol 61, offset 2.",
    "YWJ": "Invalid padding",
    "YWJj\n": "Invalid symbol 10, offset 4.",
    "YWJj=": "Invalid symbol 61, offset 4.",
    "YWJj====": "Invalid symbol 61, offset 4.",
    "YWJjY": "Invalid input length: 5",
    "YWJjY===": "Invalid symbol 61, offset 5.",
    "YWJjZA": "Invalid padding",
    "YWJjZA!=": "Invalid symbol 33, offset 6.",
    "YWJjZA=": "Invalid padding",
    "YWJjZA=!": "Invalid symbol 61, offset 6.",
    "YWJjZGU": "Invalid padding",
    "YWJjZGV=": "Invalid last symbol 86, offset 6.",
    "Zg=": "Invalid padding",
    "Zm9v!": "Invalid symbol 33, offset 4.",
    "Zm9vYmFy!": "Invalid symbol 33, offset 8.",
    "Zm9vYmFyYmF6!x": "Invalid symbol 33, offset 12.",
}


@pytest.mark.parametrize(("text", "message"), sorted(REFERENCE_BASE64_ERRORS.items()))
def test_bad_base64_is_refused_with_the_reference_wording(text: str, message: str) -> None:
    with pytest.raises(Base64Error) as caught:
        decode_base64(text)
    assert str(caught.value) == message


@pytest.mark.parametrize("size", [0, 1, 2, 3, 4, 5, 64, 65537])
def test_canonical_base64_round_trips(size: int) -> None:
    data = os.urandom(size)
    assert decode_base64(base64.b64encode(data).decode()) == data


def read(params: dict[str, Any]) -> CommandExecParams:
    return structure(params, CommandExecParams)


def wire_error(params: dict[str, Any], cls: type[Any] = CommandExecParams) -> str:
    with pytest.raises(WireError) as caught:
        structure(params, cls)
    return str(caught.value)


def test_params_read_every_field_and_default_the_rest() -> None:
    params = read(
        {
            "command": ["ls", "-l"],
            "processId": "p",
            "tty": True,
            "size": {"rows": 5, "cols": 6},
            "outputBytesCap": 10,
            "timeoutMs": 50,
            "cwd": "sub",
            "env": {"A": "1", "B": None},
            "sandboxPolicy": {"type": "workspaceWrite", "writableRoots": ["/w"], "networkAccess": True},
            "unknownField": 1,
        }
    )
    assert params.command == ["ls", "-l"] and params.size is not None and params.size.cols == 6
    assert params.env == {"A": "1", "B": None}
    assert params.sandbox_policy == WorkspaceWrite(writable_roots=("/w",), network_access=True)
    bare = read({"command": ["true"], "processId": None, "env": None, "size": None, "sandboxPolicy": None})
    assert (bare.tty, bare.stream_stdin, bare.stream_stdout_stderr, bare.disable_timeout) == (False,) * 4
    assert bare.process_id is None and bare.sandbox_policy is None and bare.output_bytes_cap is None


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({}, "missing field `command`"),
        ({"command": "echo hi"}, 'invalid type: string "echo hi", expected a sequence'),
        ({"command": None}, "invalid type: null, expected a sequence"),
        ({"command": ["a", 1]}, "invalid type: integer `1`, expected a string"),
        ({"command": ["a"], "env": {"A": 1}}, "invalid type: integer `1`, expected a string"),
        ({"command": ["a"], "env": ["A"]}, "invalid type: sequence, expected a map"),
        ({"command": ["a"], "tty": "yes"}, 'invalid type: string "yes", expected a boolean'),
        ({"command": ["a"], "timeoutMs": 1.5}, "invalid type: floating point `1.5`, expected i64"),
        ({"command": ["a"], "outputBytesCap": -1}, "invalid value: integer `-1`, expected usize"),
        ({"command": ["a"], "outputBytesCap": 1.5}, "invalid type: floating point `1.5`, expected usize"),
        (
            {"command": ["a"], "size": {"rows": 70000, "cols": 1}},
            "invalid value: integer `70000`, expected u16",
        ),
        ({"command": ["a"], "size": {"rows": -1, "cols": 1}}, "invalid value: integer `-1`, expected u16"),
        ({"command": ["a"], "size": {"rows": 1}}, "missing field `cols`"),
        ({"command": ["a"], "sandboxPolicy": {}}, "missing field `type`"),
        (
            {"command": ["a"], "sandboxPolicy": {"type": "bogus"}},
            "unknown variant `bogus`, expected one of `dangerFullAccess`, `readOnly`, `externalSandbox`, "
            "`workspaceWrite`",
        ),
        (
            {"command": ["a"], "sandboxPolicy": "dangerFullAccess"},
            'invalid type: string "dangerFullAccess", '
            "expected internally tagged enum SandboxPolicyDeserialize",
        ),
        (
            {"command": ["a"], "sandboxPolicy": {"type": "readOnly", "networkAccess": "x"}},
            'invalid type: string "x", expected a boolean',
        ),
        (
            {"command": ["a"], "sandboxPolicy": {"type": "externalSandbox", "networkAccess": "bogus"}},
            "unknown variant `bogus`, expected `restricted` or `enabled`",
        ),
        (
            {"command": ["a"], "sandboxPolicy": {"type": "externalSandbox", "networkAccess": True}},
            "invalid type: boolean `true`, expected string or map",
        ),
        (
            {"command": ["a"], "sandboxPolicy": {"type": "workspaceWrite", "writableRoots": ["rel"]}},
            "AbsolutePathBuf deserialized without a base path",
        ),
        (
            {"command": ["a"], "sandboxPolicy": {"type": "workspaceWrite", "writableRoots": "x"}},
            'invalid type: string "x", expected a sequence',
        ),
        ({"command": ["a"], "permissionProfile": 5}, "invalid type: integer `5`, expected a string"),
    ],
)
def test_malformed_params_get_serde_wording(params: dict[str, Any], message: str) -> None:
    assert wire_error(params) == message


def test_every_sandbox_policy_variant_is_accepted() -> None:
    policies = [
        read({"command": ["a"], "sandboxPolicy": p}).sandbox_policy
        for p in (
            {"type": "dangerFullAccess"},
            {"type": "readOnly", "networkAccess": True},
            {"type": "externalSandbox", "networkAccess": "enabled"},
            {"type": "workspaceWrite"},
        )
    ]
    assert policies == [
        DangerFullAccess(),
        ReadOnly(network_access=True),
        ExternalSandbox(network_access="enabled"),
        WorkspaceWrite(),
    ]


def test_resize_params_need_a_size() -> None:
    assert wire_error({"processId": "x"}, CommandExecResizeParams) == "missing field `size`"


def check_error(**params: Any) -> tuple[int, str]:
    with pytest.raises(RpcError) as caught:
        check_exec_params(read(params))
    return caught.value.code, caught.value.message


@pytest.mark.parametrize(
    ("params", "code", "message"),
    [
        (
            {"command": [], "tty": True, "size": {"rows": 0, "cols": 0}},
            INVALID_REQUEST,
            "command must not be empty",
        ),
        (
            {
                "command": ["a"],
                "permissionProfile": ":workspace",
                "sandboxPolicy": {"type": "dangerFullAccess"},
            },
            INVALID_REQUEST,
            "`permissionProfile` cannot be combined with `sandboxPolicy`",
        ),
        (
            {"command": ["a"], "size": {"rows": 0, "cols": 0}, "timeoutMs": -1},
            INVALID_PARAMS,
            "command/exec size requires tty: true",
        ),
        (
            {"command": ["a"], "outputBytesCap": 1, "disableOutputCap": True, "timeoutMs": -1},
            INVALID_PARAMS,
            "command/exec cannot set both outputBytesCap and disableOutputCap",
        ),
        (
            {"command": ["a"], "timeoutMs": -1, "disableTimeout": True},
            INVALID_PARAMS,
            "command/exec cannot set both timeoutMs and disableTimeout",
        ),
        (
            {"command": ["a"], "timeoutMs": -5, "tty": True, "size": {"rows": 0, "cols": 1}},
            INVALID_PARAMS,
            "command/exec timeoutMs must be non-negative, got -5",
        ),
        (
            {"command": ["a"], "permissionProfile": ":nope"},
            INVALID_REQUEST,
            "invalid permission profile: default_permissions refers to unknown built-in profile `:nope`",
        ),
        (
            {"command": ["a"], "tty": True, "size": {"rows": 0, "cols": 3}},
            INVALID_PARAMS,
            "command/exec size rows and cols must be greater than 0",
        ),
        (
            {"command": ["a"], "streamStdin": True},
            INVALID_REQUEST,
            "command/exec tty or streaming requires a client-supplied processId",
        ),
    ],
)
def test_semantic_checks_run_in_the_reference_order(params: dict[str, Any], code: int, message: str) -> None:
    assert check_error(**params) == (code, message)


def test_null_caps_and_timeouts_do_not_conflict_with_their_disable_flags() -> None:
    check_exec_params(
        read(
            {
                "command": ["a"],
                "outputBytesCap": None,
                "disableOutputCap": True,
                "timeoutMs": None,
                "disableTimeout": True,
                "processId": "",
            }
        )
    )


def test_process_ids_are_quoted_like_json_in_errors() -> None:
    assert no_active_process('a"b').message == 'no active command/exec for process id "a\\"b"'
    assert duplicate_process("x").message == 'duplicate active command/exec process id: "x"'


def test_responses_and_deltas_use_the_wire_names() -> None:
    assert unstructure(CommandExecResponse(3, "o", "e")) == {"exitCode": 3, "stdout": "o", "stderr": "e"}
    assert unstructure(CommandExecOutputDelta("p", "stderr", "YQ==", True)) == {
        "processId": "p",
        "stream": "stderr",
        "deltaBase64": "YQ==",
        "capReached": True,
    }
