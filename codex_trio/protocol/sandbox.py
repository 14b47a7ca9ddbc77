"""The wire `SandboxPolicy`: a union tagged by `type`, shared by command/exec and turns.

Pure: no trio, no I/O. The structure hook reproduces serde's wording for this internally
tagged enum, so a bad policy is refused with the reference's `Invalid request: ...` text.
"""

from __future__ import annotations

import os
from typing import Any, Literal, cast

import attrs

from codex_trio.protocol.converter import WireError, describe, expected_variants, register_structure_hook
from codex_trio.protocol.errors import invalid_request
from codex_trio.records import by_value

NetworkAccess = Literal["restricted", "enabled"]

#: the serde name of the enum, used in its "expected ..." texts.
_ENUM_NAME = "internally tagged enum SandboxPolicyDeserialize"


@by_value
@attrs.frozen(repr=False, eq=False)
class DangerFullAccess:
    """No sandbox: the command runs with the server's own rights."""

    type: Literal["dangerFullAccess"] = "dangerFullAccess"


@by_value
@attrs.frozen(repr=False, eq=False)
class ReadOnly:
    """The file system is read-only for the command."""

    type: Literal["readOnly"] = "readOnly"
    network_access: bool = False


@by_value
@attrs.frozen(repr=False, eq=False)
class ExternalSandbox:
    """The host already sandboxes the server; codex adds nothing."""

    type: Literal["externalSandbox"] = "externalSandbox"
    network_access: NetworkAccess = "restricted"


@by_value
@attrs.frozen(repr=False, eq=False)
class WorkspaceWrite:
    """The working directory and `writable_roots` (absolute paths) are writable."""

    type: Literal["workspaceWrite"] = "workspaceWrite"
    writable_roots: tuple[str, ...] = ()
    network_access: bool = False
    exclude_tmpdir_env_var: bool = False
    exclude_slash_tmp: bool = False


SandboxPolicy = DangerFullAccess | ReadOnly | ExternalSandbox | WorkspaceWrite

_VARIANTS: dict[str, type[Any]] = {
    "dangerFullAccess": DangerFullAccess,
    "readOnly": ReadOnly,
    "externalSandbox": ExternalSandbox,
    "workspaceWrite": WorkspaceWrite,
}


def _bool_field(value: dict[str, Any], key: str) -> None:
    if key in value and not isinstance(value[key], bool):
        raise WireError(f"invalid type: {describe(value[key])}, expected a boolean")


def structure_sandbox_policy(value: Any, _: Any = None) -> SandboxPolicy | None:
    """Wire JSON -> a policy, with serde's messages for every malformed shape."""
    if value is None:
        return None
    if not isinstance(value, dict):
        raise WireError(f"invalid type: {describe(value)}, expected {_ENUM_NAME}")
    if "type" not in value:
        raise WireError("missing field `type`")
    tag = value["type"]
    if not isinstance(tag, str):
        raise WireError(f"invalid type: {describe(tag)}, expected variant identifier")
    cls = _VARIANTS.get(tag)
    if cls is None:
        raise WireError(f"unknown variant `{tag}`, {expected_variants(list(_VARIANTS))}")
    if cls is ExternalSandbox:
        access = value.get("networkAccess", "restricted")
        if not isinstance(access, str):
            raise WireError(f"invalid type: {describe(access)}, expected string or map")
        if access in ("restricted", "enabled"):
            return ExternalSandbox(network_access=cast(NetworkAccess, access))
        raise WireError(f"unknown variant `{access}`, expected `restricted` or `enabled`")
    if cls is WorkspaceWrite:
        roots = value.get("writableRoots", [])
        if not isinstance(roots, list):
            raise WireError(f"invalid type: {describe(roots)}, expected a sequence")
        for root in roots:
            if not isinstance(root, str):
                raise WireError(f"invalid type: {describe(root)}, expected a string")
            if not os.path.isabs(root):
                raise WireError("AbsolutePathBuf deserialized without a base path")
        for key in ("networkAccess", "excludeTmpdirEnvVar", "excludeSlashTmp"):
            _bool_field(value, key)
        return WorkspaceWrite(
            writable_roots=tuple(os.path.normpath(root) for root in roots),
            network_access=value.get("networkAccess", False),
            exclude_tmpdir_env_var=value.get("excludeTmpdirEnvVar", False),
            exclude_slash_tmp=value.get("excludeSlashTmp", False),
        )
    if cls is ReadOnly:
        _bool_field(value, "networkAccess")
        return ReadOnly(network_access=value.get("networkAccess", False))
    return DangerFullAccess()


# cattrs flattens `SandboxPolicy | None` into one union, so both spellings get the hook.
register_structure_hook(SandboxPolicy, structure_sandbox_policy)
register_structure_hook(SandboxPolicy | None, structure_sandbox_policy)


#: the `AskForApproval` names (a `{"granular": …}` object is the other form).
APPROVAL_POLICIES = ("untrusted", "on-request", "on-failure", "never")


def policy_overrides(approval_policy: Any, sandbox_policy: Any) -> dict[str, Any]:
    """A request's approval / sandbox overrides (None: unchanged), refused with the reference's
    `Invalid request: ...` texts (raises RpcError)."""
    updates: dict[str, Any] = {}
    if approval_policy is not None:
        policy = approval_policy
        if not (policy in APPROVAL_POLICIES or (isinstance(policy, dict) and "granular" in policy)):
            expected = expected_variants(APPROVAL_POLICIES)
            raise invalid_request(f"Invalid request: unknown variant `{policy}`, {expected}")
        updates["approval_policy"] = policy
    if sandbox_policy is not None:
        try:
            structure_sandbox_policy(sandbox_policy)
        except WireError as exc:
            raise invalid_request(f"Invalid request: {exc}") from None
        updates["sandbox_policy"] = dict(sandbox_policy)
    return updates
