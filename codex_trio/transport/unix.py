"""The unix control socket: `unix://` and `unix://PATH`, websocket over a unix domain socket.

Same framing as `ws://` (see `websocket.py`) but no HTTP surface, no Origin or auth checks:
anything but a websocket upgrade is closed without a byte. Any request path is accepted (the
TUI uses `/rpc`).

Files, as the reference lays them out:

* PATH (default `CODEX_HOME/app-server-control/app-server-control.sock`; relative paths are
  taken against the working directory; missing parents are created 0700; an existing parent
  must belong to the user or root and, if others may write to it, be sticky) is a **symlink** to
* `<tmp>/codex-daemon-<uid>/<sha256 of PATH>`, the real socket (mode 0600) in a private 0700
  directory. The short real path keeps PATH usable beyond the kernel's ~108-byte limit.
* `<tmp>/codex-daemon-<uid>/<sha256>.lock` is flock()ed while the server runs, so two servers
  cannot race for one PATH.

A stale socket at PATH (nobody accepts) is replaced; a live one, or anything that is not a
socket, is a start-up error. All three files are removed when the listener ends.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import logging
import os
import socket as stdlib_socket
import stat
import tempfile
from pathlib import Path

import attrs
import trio

from codex_trio.records import by_value
from codex_trio.transport import http_head
from codex_trio.transport.listen import UnixListen
from codex_trio.transport.websocket import MAX_FRAME_BYTES, Adopt, WebSocketAcceptor, serve_acceptor

log = logging.getLogger(__name__)

CONTROL_DIR_NAME = "app-server-control"
CONTROL_SOCKET_NAME = "app-server-control.sock"
SOCKET_MODE = 0o600
PRIVATE_DIR_MODE = 0o700
#: longest real socket path we bind (sun_path is 108 bytes including the NUL).
MAX_SOCKET_PATH = 107
#: pending connections the kernel queues before accept.
LISTEN_BACKLOG = 128
#: the 101 response advertises the frame limit, as the reference does on this socket.
ACCEPT_HEADERS = [(b"x-codex-websocket-max-unfragmented-message-bytes", str(MAX_FRAME_BYTES).encode())]


class ControlSocketError(Exception):
    """The control socket cannot be set up; the message is shown as `Error: <message>`."""


@by_value
@attrs.frozen(repr=False, eq=False)
class ControlSocket:
    """The files of a listening control socket."""

    path: Path
    real_path: Path
    lock_path: Path


def default_socket_path(codex_home: Path) -> Path:
    return codex_home / CONTROL_DIR_NAME / CONTROL_SOCKET_NAME


def socket_path_for(listen: UnixListen, codex_home: Path, cwd: Path) -> Path:
    """The absolute PATH for a `unix://` listen URL (not resolving symlinks)."""
    if listen.path is None:
        return Path(os.path.abspath(default_socket_path(codex_home)))
    return Path(os.path.normpath(cwd / listen.path))


def private_dir() -> Path:
    """`<tmp>/codex-daemon-<uid>`, falling back to /tmp when $TMPDIR is too long for sockets."""
    name = f"codex-daemon-{os.getuid()}"
    base = Path(tempfile.gettempdir())
    if len(str(base / name)) + 1 + 64 > MAX_SOCKET_PATH:
        base = Path("/tmp")
    return base / name


def connectable_path(path: Path) -> str:
    """A path a client can `connect()` to: PATH itself, or its link target when PATH is too long.

    The kernel refuses socket paths over ~108 bytes; the symlink indirection makes the target
    short, so a client that resolves the link reaches any PATH.
    """
    if len(os.fsencode(path)) <= MAX_SOCKET_PATH:
        return os.fspath(path)
    return os.path.realpath(path)


def _ensure_private_dir(directory: Path) -> None:
    directory.mkdir(mode=PRIVATE_DIR_MODE, parents=True, exist_ok=True)
    info = directory.lstat()
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid():
        raise ControlSocketError(
            f"control socket directory {directory} is not a directory owned by this user"
        )
    if stat.S_IMODE(info.st_mode) != PRIVATE_DIR_MODE:
        directory.chmod(PRIVATE_DIR_MODE)


PARENT_UNSAFE = (
    "socket parent must be owned by the user or root and prevent other users from replacing socket entries"
)


def _make_parents(directory: Path) -> None:
    """Create the missing directories of an explicit PATH, each one 0700 (as the default's)."""
    missing: list[Path] = []
    while not os.path.lexists(directory) and directory != directory.parent:
        missing.append(directory)
        directory = directory.parent
    for created in reversed(missing):
        with contextlib.suppress(FileExistsError):
            created.mkdir(mode=PRIVATE_DIR_MODE)


def _check_parent(directory: Path) -> None:
    """Refuse a parent another user could use to swap PATH for a link to their own listener.

    As the reference: the directory must belong to this user or root, and if others may
    write to it, the sticky bit must stop them from replacing entries they do not own.
    """
    info = directory.stat()
    writable_by_others = info.st_mode & (stat.S_IWGRP | stat.S_IWOTH)
    if info.st_uid not in (os.getuid(), 0) or (writable_by_others and not info.st_mode & stat.S_ISVTX):
        raise ControlSocketError(PARENT_UNSAFE)


def _clear_stale(path: Path) -> None:
    """Remove a stale socket (or dangling link) at `path`; refuse a live socket or a non-socket."""
    if not os.path.lexists(path):
        return
    try:
        info = path.stat()
    except FileNotFoundError:
        path.unlink()  # a dangling symlink left by a killed server
        return
    if not stat.S_ISSOCK(info.st_mode):
        raise ControlSocketError(f"app-server control socket path exists and is not a socket: {path}")
    with stdlib_socket.socket(stdlib_socket.AF_UNIX, stdlib_socket.SOCK_STREAM) as probe:
        try:
            probe.connect(connectable_path(path))
        except ConnectionRefusedError:
            pass
        except OSError as exc:
            if exc.errno != errno.ENOENT:
                raise
        else:
            raise ControlSocketError(f"app-server control socket is already in use at {path}")
    path.unlink()


def _lock(lock_path: Path, path: Path) -> int:
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, SOCKET_MODE)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise ControlSocketError(f"app-server control socket is already in use at {path}") from None
    return fd


async def _bind(files: ControlSocket) -> trio.SocketListener:
    sock = trio.socket.socket(trio.socket.AF_UNIX, trio.socket.SOCK_STREAM)
    try:
        await sock.bind(os.fspath(files.real_path))
        os.chmod(files.real_path, SOCKET_MODE)
        sock.listen(LISTEN_BACKLOG)
    except BaseException:
        sock.close()
        raise
    return trio.SocketListener(sock)


def _remove(files: ControlSocket) -> None:
    """Remove PATH (only if it still points at our socket), the socket and the lock file."""
    with contextlib.suppress(OSError):
        if files.path.is_symlink() and Path(os.readlink(files.path)) == files.real_path:
            files.path.unlink()
    for leftover in (files.real_path, files.lock_path):
        with contextlib.suppress(FileNotFoundError):
            leftover.unlink()


async def serve_control_socket(
    listen: UnixListen,
    codex_home: Path,
    cwd: Path,
    adopt: Adopt,
    listener_scope: trio.CancelScope,
    *,
    task_status: trio.TaskStatus[ControlSocket] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve the control socket until the listener scope is cancelled and its connections close.

    Raises ControlSocketError (or OSError) before `task_status.started` when PATH is taken.
    """
    path = socket_path_for(listen, codex_home, cwd)
    if listen.path is None:
        _ensure_private_dir(path.parent)
    else:
        _make_parents(path.parent)
        _check_parent(path.parent)
    _clear_stale(path)
    directory = private_dir()
    _ensure_private_dir(directory)
    digest = hashlib.sha256(os.fsencode(path)).hexdigest()
    files = ControlSocket(path, directory / digest, directory / f"{digest}.lock")
    lock_fd = _lock(files.lock_path, path)
    try:
        with contextlib.suppress(FileNotFoundError):
            files.real_path.unlink()  # we hold the lock: whatever is there is stale
        listener = await _bind(files)
        try:
            os.symlink(files.real_path, path)
        except FileExistsError:
            await listener.aclose()
            raise ControlSocketError(f"app-server control socket is already in use at {path}") from None
        log.info("app-server control socket listening socket_path=%s", files.real_path)

        acceptor = WebSocketAcceptor(
            adopt=adopt,
            decide=http_head.decide_unix,
            malformed=http_head.Drop(),
            transport_name="unix_socket",
            accept_headers=ACCEPT_HEADERS,
        )

        async with trio.open_nursery() as nursery:
            await nursery.start(serve_acceptor, [listener], acceptor, listener_scope)
            task_status.started(files)
    finally:
        _remove(files)
        os.close(lock_fd)
