"""Confining a child process to a `SandboxPolicy` with bubblewrap (Linux).

`command/exec` and the model's `exec_command` both spawn through `spawn_confined`: with a
`Confinement` the argv is wrapped in `bwrap`, otherwise it is `process.spawn` unchanged. What
a confined child gets (see docs/sandbox.md for the table):

* the whole filesystem bound read-only, a minimal /dev and a /proc of its own pid namespace;
* under `workspaceWrite`, the cwd, the writable roots, /tmp and $TMPDIR (unless excluded)
  bound read-write, except the protected names (`.git`, `.agents`, `.codex`, `.aws`) at the
  top of each writable root, which stay read-only (or, when missing, are occupied by an empty
  read-only tmpfs so they cannot be created: a *synthetic* mount target, removed afterwards);
* the server's secrets (CODEX_HOME's credential files, the websocket auth secret files) bound
  over by /dev/null, and the control-socket directory by an empty, unreadable tmpfs;
* new user, pid and IPC namespaces, no capabilities, `--die-with-parent`: killing the bwrap
  process group kills everything in the sandbox, grandchildren that left the group included
  (the pid namespace dies with its init);
* with network off, a new network namespace (loopback only) plus a seccomp filter refusing
  every socket call but the creation of AF_UNIX sockets, as the reference's filter does, and
  `CODEX_SANDBOX_NETWORK_DISABLED=1` in the environment.

Whether bubblewrap works here is probed once per program path (`sandbox_support.check_support`);
a server that cannot confine says so and never runs a confining policy unconfined behind its back.
"""

from __future__ import annotations

import logging
import os
import platform
import struct
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager, suppress
from pathlib import Path
from typing import Any

import attrs

from codex_trio.process import Child, SpawnSpec, spawn
from codex_trio.protocol.converter import WireError
from codex_trio.protocol.sandbox import (
    DangerFullAccess,
    ReadOnly,
    SandboxPolicy,
    WorkspaceWrite,
    structure_sandbox_policy,
)
from codex_trio.records import by_value
from codex_trio.sandbox_support import MISSING_BWRAP, SandboxSupport
from codex_trio.settings import ServerSettings

log = logging.getLogger(__name__)

#: names at the top of every writable root that stay read-only (the reference's list).
PROTECTED_NAMES = (".git", ".agents", ".codex", ".aws")
#: files in CODEX_HOME that hold credentials; never readable inside the sandbox.
CREDENTIAL_FILES = ("auth.json", ".credentials.json")
NETWORK_DISABLED_ENV = "CODEX_SANDBOX_NETWORK_DISABLED"


class SandboxUnavailable(Exception):
    """A confining policy was asked for on a machine where bubblewrap cannot run."""


# ---------------------------------------------------------------------------- policies
def policy_of(value: SandboxPolicy | Mapping[str, Any] | None) -> SandboxPolicy:
    """A policy from its attrs form or its wire (camelCase) form; None is read-only."""
    if value is None:
        return ReadOnly()
    if isinstance(value, Mapping):
        try:
            policy = structure_sandbox_policy(dict(value))
        except WireError as exc:  # validated on the way in; never fall back to less confinement
            log.warning("unreadable sandbox policy %r (%s); using read-only", dict(value), exc)
            return ReadOnly()
        return ReadOnly() if policy is None else policy
    return value


def policy_from_config(config: Mapping[str, Any]) -> SandboxPolicy:
    """The configured default: `sandbox_mode` plus its `[sandbox_workspace_write]` table."""
    mode = config.get("sandbox_mode")
    if mode == "danger-full-access":
        return DangerFullAccess()
    if mode != "workspace-write":
        return ReadOnly()
    table = config.get("sandbox_workspace_write")
    table = table if isinstance(table, Mapping) else {}
    roots = [r for r in table.get("writable_roots") or () if isinstance(r, str) and os.path.isabs(r)]
    return WorkspaceWrite(
        writable_roots=tuple(os.path.normpath(r) for r in roots),
        network_access=table.get("network_access") is True,
        exclude_tmpdir_env_var=table.get("exclude_tmpdir_env_var") is True,
        exclude_slash_tmp=table.get("exclude_slash_tmp") is True,
    )


def policy_from_profile(profile: str) -> SandboxPolicy | None:
    """A built-in permission profile (`:read-only`, `:workspace`, `:danger-full-access`)."""
    profiles: dict[str, SandboxPolicy] = {
        ":read-only": ReadOnly(),
        ":workspace": WorkspaceWrite(),
        ":danger-full-access": DangerFullAccess(),
    }
    return profiles.get(profile)


def confines(policy: SandboxPolicy) -> bool:
    """True for the policies this server enforces with a sandbox."""
    return isinstance(policy, ReadOnly | WorkspaceWrite)


def network_disabled(policy: SandboxPolicy) -> bool:
    return isinstance(policy, ReadOnly | WorkspaceWrite) and not policy.network_access


def writable_roots(policy: SandboxPolicy, cwd: Path, environ: Mapping[str, str] | None = None) -> list[Path]:
    """The directories a `workspaceWrite` child may write to (resolved, existing, outer first)."""
    if not isinstance(policy, WorkspaceWrite):
        return []
    env = os.environ if environ is None else environ
    candidates = [cwd, *(Path(r) for r in policy.writable_roots)]
    if not policy.exclude_slash_tmp:
        candidates.append(Path("/tmp"))
    tmpdir = env.get("TMPDIR")
    if not policy.exclude_tmpdir_env_var and tmpdir and os.path.isabs(tmpdir):
        candidates.append(Path(tmpdir))
    roots: list[Path] = []
    for candidate in candidates:
        resolved = Path(os.path.realpath(candidate))
        if resolved.is_dir() and resolved not in roots:
            roots.append(resolved)
    return sorted(roots, key=lambda p: len(p.parts))


def can_write(path: Path, policy: SandboxPolicy, cwd: Path) -> bool:
    """Would a confined child be allowed to write `path`? (apply_patch checks its targets.)"""
    if not confines(policy):
        return True
    target = Path(os.path.realpath(path))
    containing = [root for root in writable_roots(policy, cwd) if target.is_relative_to(root)]
    # Every root's protected names are mounted read-only over it, nested roots included.
    return bool(containing) and not any(
        target.relative_to(root).parts[:1] and target.relative_to(root).parts[0] in PROTECTED_NAMES
        for root in containing
    )


def hidden_paths(settings: ServerSettings) -> tuple[Path, ...]:
    """What a sandboxed child must not read: credentials, auth secrets, the control socket."""
    from codex_trio.transport.unix import private_dir

    paths = [settings.codex_home / name for name in CREDENTIAL_FILES]
    paths += settings.secret_files
    paths.append(private_dir())
    return tuple(paths)


@by_value
@attrs.frozen(repr=False, eq=False)
class Confinement:
    """How to wrap one child: the bwrap program, the policy and the paths to hide."""

    bwrap: str
    policy: ReadOnly | WorkspaceWrite
    hidden: tuple[Path, ...] = ()


def confinement_for(
    policy: SandboxPolicy, support: SandboxSupport, hidden: Sequence[Path] = ()
) -> Confinement | None:
    """None for an unconfined policy; raises SandboxUnavailable when it cannot be enforced."""
    if not isinstance(policy, ReadOnly | WorkspaceWrite):
        return None
    if not support.usable or support.bwrap is None:
        raise SandboxUnavailable(support.problem or MISSING_BWRAP)
    return Confinement(support.bwrap, policy, tuple(hidden))


# ---------------------------------------------------------------------------- bwrap
#: synthetic mount targets in use: a missing protected path bwrap created -> users.
_synthetic: dict[Path, int] = {}


def _claim_synthetic(paths: Iterable[Path]) -> list[Path]:
    claimed = []
    for path in paths:
        if path in _synthetic or not os.path.lexists(path):
            _synthetic[path] = _synthetic.get(path, 0) + 1
            claimed.append(path)
    return claimed


def _release_synthetic(paths: Iterable[Path]) -> None:
    """Remove the empty directories bwrap created as mount points, once nobody uses them."""
    for path in paths:
        _synthetic[path] -= 1
        if _synthetic[path] == 0:
            del _synthetic[path]
            # already gone, or something real was put there in between: leave it
            with suppress(OSError):
                path.rmdir()


def bwrap_argv(
    confinement: Confinement, argv: Sequence[str], cwd: Path, *, tty: bool, seccomp_fd: int | None
) -> tuple[list[str], list[Path]]:
    """The bwrap command line, and the protected paths that are missing (synthetic targets)."""
    args = [confinement.bwrap]
    if not tty:
        # The reference's guard against TIOCSTI into the server's terminal. A PTY child keeps
        # its session: its controlling terminal is its own PTY, and resize needs it.
        args.append("--new-session")
    args += ["--die-with-parent", "--ro-bind", "/", "/", "--dev", "/dev"]
    missing: list[Path] = []
    for root in writable_roots(confinement.policy, cwd):
        args += ["--bind", str(root), str(root)]
        for name in PROTECTED_NAMES:
            protected = root / name
            if os.path.lexists(protected):
                if not protected.is_symlink():
                    args += ["--ro-bind", str(protected), str(protected)]
            else:
                missing.append(protected)
                args += ["--perms", "555", "--tmpfs", str(protected), "--remount-ro", str(protected)]
    for path in confinement.hidden:
        real = os.path.realpath(path)
        if os.path.isdir(real):
            args += ["--perms", "000", "--tmpfs", real, "--remount-ro", real]
        elif os.path.exists(real):
            args += ["--ro-bind", "/dev/null", real]
    args += ["--unshare-user", "--unshare-pid", "--unshare-ipc"]
    if not confinement.policy.network_access:
        args.append("--unshare-net")
    args += ["--proc", "/proc", "--cap-drop", "ALL"]
    if seccomp_fd is not None:
        args += ["--seccomp", str(seccomp_fd)]
    args += ["--chdir", str(cwd), "--", *argv]
    return args, missing


@asynccontextmanager
async def spawn_confined(spec: SpawnSpec, confinement: Confinement | None) -> AsyncIterator[Child]:
    """`process.spawn(spec)`, inside the sandbox when `confinement` is given."""
    if confinement is None:
        async with spawn(spec) as child:
            yield child
        return
    program = network_filter() if not confinement.policy.network_access else None
    seccomp_fd: int | None = None
    if program is not None:
        seccomp_fd, write_end = os.pipe()
        try:
            os.write(write_end, program)  # a few hundred bytes: fits the pipe buffer
        finally:
            os.close(write_end)
    argv, missing = bwrap_argv(
        confinement, spec.argv, spec.cwd, tty=spec.tty is not None, seccomp_fd=seccomp_fd
    )
    env = dict(spec.env)
    if network_disabled(confinement.policy):
        env[NETWORK_DISABLED_ENV] = "1"
    claimed = _claim_synthetic(missing)
    try:
        wrapped = attrs.evolve(
            spec, argv=tuple(argv), env=env, pass_fds=() if seccomp_fd is None else (seccomp_fd,)
        )
        async with spawn(wrapped) as child:
            if seccomp_fd is not None:
                os.close(seccomp_fd)
                seccomp_fd = None
            yield child
    finally:
        if seccomp_fd is not None:
            os.close(seccomp_fd)
        _release_synthetic(claimed)


# ---------------------------------------------------------------------------- seccomp
_AUDIT_ARCH = {"x86_64": 0xC000003E, "aarch64": 0xC00000B7}
#: (socket, socketpair) and the socket calls refused outright, per architecture.
_SOCKET_CALLS = {"x86_64": (41, 53), "aarch64": (198, 199)}
_DENIED_CALLS = {
    # connect accept accept4 bind listen getpeername getsockname shutdown sendto sendmmsg
    # recvmmsg getsockopt setsockopt
    "x86_64": (42, 43, 288, 49, 50, 52, 51, 48, 44, 307, 299, 55, 54),
    "aarch64": (203, 202, 242, 200, 201, 205, 204, 210, 206, 269, 243, 209, 208),
}
_X32_SYSCALL_BIT = 0x40000000
_AF_UNIX = 1
_EPERM = 1
_RET_ALLOW = 0x7FFF0000
_RET_ERRNO = 0x00050000
_RET_KILL_PROCESS = 0x80000000
_LD_ABS_W = 0x20
_JEQ_K = 0x15
_JGE_K = 0x35
_RET_K = 0x06


def network_filter(machine: str | None = None) -> bytes | None:
    """The seccomp BPF program for `bwrap --seccomp`, or None on an unknown architecture.

    Refuses (EPERM) socket()/socketpair() for any family but AF_UNIX, and the calls that use
    a socket to talk or listen; a foreign-architecture syscall kills the process.
    """
    arch = machine or platform.machine()
    if arch not in _AUDIT_ARCH:
        return None
    socket_nr, socketpair_nr = _SOCKET_CALLS[arch]
    # (code, jt-label, jf-label, k); labels are resolved to relative jumps below.
    code: list[tuple[int, str | int, str | int, int]] = [
        (_LD_ABS_W, 0, 0, 4),
        (_JEQ_K, 1, 0, _AUDIT_ARCH[arch]),
        (_RET_K, 0, 0, _RET_KILL_PROCESS),
        (_LD_ABS_W, 0, 0, 0),
    ]
    if arch == "x86_64":
        code.append((_JGE_K, "deny", 0, _X32_SYSCALL_BIT))
    code += [(_JEQ_K, "deny", 0, nr) for nr in _DENIED_CALLS[arch]]
    code += [(_JEQ_K, "domain", 0, socket_nr), (_JEQ_K, "domain", 0, socketpair_nr)]
    code.append((_RET_K, 0, 0, _RET_ALLOW))
    labels = {"domain": len(code)}
    code += [(_LD_ABS_W, 0, 0, 16), (_JEQ_K, "allow", 0, _AF_UNIX)]
    labels["deny"] = len(code)
    code.append((_RET_K, 0, 0, _RET_ERRNO | _EPERM))
    labels["allow"] = len(code)
    code.append((_RET_K, 0, 0, _RET_ALLOW))

    def offset(at: int, target: str | int) -> int:
        return target if isinstance(target, int) else labels[target] - at - 1

    return b"".join(
        struct.pack("<HBBI", op, offset(i, jt), offset(i, jf), k) for i, (op, jt, jf, k) in enumerate(code)
    )


# ---------------------------------------------------------------------------- failures
_DENIAL_MARKERS = (
    "operation not permitted",
    "permission denied",
    "read-only file system",
    "seccomp",
    "sandbox",
    "bwrap:",
)


def looks_like_denial(exit_code: int | None, output: str) -> bool:
    """A failed confined command whose output says the sandbox stopped it (the reference's test)."""
    if exit_code in (None, 0):
        return False
    text = output.lower()
    return any(marker in text for marker in _DENIAL_MARKERS)
