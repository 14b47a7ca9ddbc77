"""The blocking half of `fs/*`: plain functions meant for a worker thread.

No trio here: each function does the whole operation with ordinary system calls and either
returns or raises. `OSError` is left for the caller to map to -32603 (the reference's errno
text); semantic refusals are raised as `RpcError` (-32600) with the reference's wording.

Where the reference can lose data we do not:
* `write_file` never truncates the old file: it writes a temporary file in the same
  directory, gives it the old file's permissions, flushes it and renames it over the target,
  so a crash or a failed write leaves the old content or the new, never a torn file;
* `copy_file` compares source and destination by inode after opening both, so copying a
  file onto itself (also through a symlink or a hard link) leaves it intact.
"""

from __future__ import annotations

import errno
import os
import secrets
import stat
from collections.abc import Iterator
from contextlib import ExitStack, suppress
from typing import Any

from codex_trio.protocol.errors import invalid_request
from codex_trio.protocol.fs import (
    COPY_INTO_ITSELF_MESSAGE,
    COPY_NEEDS_RECURSIVE_MESSAGE,
    COPY_UNSUPPORTED_TYPE_MESSAGE,
    FsGetMetadataResponse,
    FsReadDirectoryEntry,
    not_a_file_message,
)

#: Linux's limit on symlinks followed while resolving one path (ELOOP beyond it).
MAX_SYMLINK_HOPS = 40
#: bytes per copy_file_range / read call when copying.
COPY_CHUNK = 8 * 1024 * 1024
#: marks the temporary files of atomic writes: `.<name>.<random>.codex-tmp`.
TEMP_SUFFIX = ".codex-tmp"
#: bytes of the target's name kept in a temporary name (NAME_MAX is 255).
_TEMP_NAME_KEEP = 160


def is_temp_name(name: str | bytes) -> bool:
    """True for the name of an atomic write's temporary file (watchers leave them out)."""
    if isinstance(name, bytes):
        return name.startswith(b".") and name.endswith(TEMP_SUFFIX.encode())
    return name.startswith(".") and name.endswith(TEMP_SUFFIX)


# ---------------------------------------------------------------------- metadata
def get_metadata(path: str) -> FsGetMetadataResponse:
    """`fs/getMetadata`: flags of the target, `isSymlink` of the path itself.

    A plain stat of a local path costs about a microsecond, so callers run it inline.
    `createdAtMs` is 0: the reference (a musl build) never reports a birth time on Linux.
    """
    link = os.lstat(path)
    info = os.stat(path) if stat.S_ISLNK(link.st_mode) else link
    mode = info.st_mode
    return FsGetMetadataResponse(
        is_directory=stat.S_ISDIR(mode),
        is_file=stat.S_ISREG(mode),
        is_symlink=stat.S_ISLNK(link.st_mode),
        created_at_ms=0,
        modified_at_ms=max(0, info.st_mtime_ns // 1_000_000),
    )


# ---------------------------------------------------------------------- read
def regular_file_info(path: str) -> os.stat_result:
    """`stat` a path for `fs/readFile`; anything but a regular file is refused.

    The check comes before opening (opening a FIFO or a device can block or have effects);
    callers use the size to decide where to read.
    """
    info = os.stat(path)
    if not stat.S_ISREG(info.st_mode):
        raise invalid_request(not_a_file_message(path))
    return info


def read_file(path: str, info: os.stat_result | None = None) -> bytes:
    """`fs/readFile`: the whole content of a regular file (`info`: its `stat`, if known).

    The type is checked with `stat` before opening and again on the opened descriptor, so a
    swap in between cannot make the read block on a FIFO. One `read` of the known size plus
    one byte normally gets everything; a file that grew meanwhile is read to its end.
    """
    if info is None:
        info = regular_file_info(path)
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
    try:
        opened = os.fstat(fd)
        if not stat.S_ISREG(opened.st_mode):
            raise invalid_request(not_a_file_message(path))
        data = os.read(fd, opened.st_size + 1)
        if len(data) <= opened.st_size:
            return data
        chunks = [data]
        while chunk := os.read(fd, COPY_CHUNK):
            chunks.append(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


def read_directory(path: str) -> list[FsReadDirectoryEntry]:
    """`fs/readDirectory`: direct children in readdir order; flags follow symlinks.

    A symlink whose target cannot be stat'ed (broken, a loop) is left out, as the reference
    does. Names that are not UTF-8 are decoded lossily (U+FFFD), as Rust's `to_string_lossy`.
    """
    entries: list[FsReadDirectoryEntry] = []
    with os.scandir(path) as listing:
        for entry in listing:
            if entry.is_symlink():
                try:
                    mode = entry.stat().st_mode
                except OSError:
                    continue
                is_directory, is_file = stat.S_ISDIR(mode), stat.S_ISREG(mode)
            else:
                is_directory = entry.is_dir(follow_symlinks=False)
                is_file = entry.is_file(follow_symlinks=False)
            entries.append(FsReadDirectoryEntry(lossy_name(entry.name), is_directory, is_file))
    return entries


def lossy_name(name: str) -> str:
    """A file name as valid UTF-8 text: undecodable bytes become U+FFFD."""
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return os.fsencode(name).decode("utf-8", "replace")
    return name


# ---------------------------------------------------------------------- write
def write_file(path: str, data: bytes) -> None:
    """`fs/writeFile`: create or replace the file at `path` (through symlinks), atomically.

    The target is the end of `path`'s symlink chain. A regular or new target is replaced by
    rename from a temporary file in its directory (fsync'ed first); an existing file keeps its
    permission bits (and owner, where allowed), a new one gets 0666 minus the umask. Devices
    and FIFOs are written in place (a FIFO with no reader gives ENXIO instead of hanging).
    When the directory refuses new files but the file itself is writable, the file is
    rewritten in place, as the reference always does.
    """
    target, info = resolve_symlinks(path)
    if info is not None and stat.S_ISDIR(info.st_mode):
        raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), path)
    if info is not None and not stat.S_ISREG(info.st_mode):
        _write_in_place(target, data, os.O_NONBLOCK)
        return
    try:
        fd, temp = _create_temp(target)
    except PermissionError:
        if info is None:
            raise
        _write_in_place(target, data, os.O_TRUNC)
        return
    try:
        if info is not None:
            os.fchmod(fd, stat.S_IMODE(info.st_mode))
            if (info.st_uid, info.st_gid) != (os.geteuid(), os.getegid()):
                _try_fchown(fd, info.st_uid, info.st_gid)
        _write_all(fd, data)
        os.fsync(fd)
        os.close(fd)
        fd = -1
        os.rename(temp, target)
    except BaseException:
        if fd >= 0:
            os.close(fd)
        _unlink_quietly(temp)
        raise


def resolve_symlinks(path: str) -> tuple[str, os.stat_result | None]:
    """Follow `path`'s final symlinks; the end of the chain and its lstat (None if absent)."""
    current = path
    for _ in range(MAX_SYMLINK_HOPS + 1):
        try:
            info = os.lstat(current)
        except FileNotFoundError:
            return current, None
        if not stat.S_ISLNK(info.st_mode):
            return current, info
        current = os.path.join(os.path.dirname(current), os.readlink(current))
    raise OSError(errno.ELOOP, os.strerror(errno.ELOOP), path)


def _create_temp(target: str) -> tuple[int, bytes]:
    directory, name = os.path.split(os.fsencode(target))
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC
    while True:
        temp = os.path.join(
            directory,
            b"." + name[:_TEMP_NAME_KEEP] + b"." + secrets.token_hex(6).encode() + TEMP_SUFFIX.encode(),
        )
        try:
            return os.open(temp, flags, 0o666), temp
        except FileExistsError:
            continue


def _write_in_place(target: str, data: bytes, extra_flags: int) -> None:
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC | extra_flags, 0o666)
    try:
        if extra_flags & os.O_NONBLOCK:
            os.set_blocking(fd, True)
        _write_all(fd, data)
    finally:
        os.close(fd)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def _try_fchown(fd: int, uid: int, gid: int) -> None:
    with suppress(PermissionError):
        os.fchown(fd, uid, gid)


def _unlink_quietly(path: bytes) -> None:
    with suppress(OSError):
        os.unlink(path)


# ---------------------------------------------------------------------- directories
def create_directory(path: str, recursive: bool) -> None:
    """`fs/createDirectory`: `mkdir -p` when recursive, else one `mkdir`."""
    if recursive:
        os.makedirs(path, exist_ok=True)
    else:
        os.mkdir(path)


def remove(path: str, recursive: bool, force: bool) -> None:
    """`fs/remove`: a symlink is removed as a link; `force` forgives only "not found"."""
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        if force:
            return
        raise
    if not stat.S_ISDIR(info.st_mode):
        os.unlink(path)
    elif recursive:
        remove_tree(path)
    else:
        os.rmdir(path)


_DIRECTORY_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def remove_tree(path: str) -> None:
    """`rm -r` of a directory, never following a symlink, like Rust's `remove_dir_all`.

    Works relative to open directory descriptors, so a directory swapped for a symlink
    meanwhile cannot redirect the removal; iterative, so depth is bounded by descriptors
    (one per level), not by Python's recursion limit. An entry that vanishes meanwhile
    counts as removed.
    """
    # one level per open directory: (its fd, its listing, its name in the level above)
    levels: list[tuple[int, Any, str]] = []

    def descend(fd: int, name: str) -> None:
        try:
            levels.append((fd, os.scandir(fd), name))
        except BaseException:
            os.close(fd)
            raise

    def ascend() -> None:
        fd, listing, _ = levels.pop()
        listing.close()
        os.close(fd)

    try:
        descend(os.open(path, _DIRECTORY_FLAGS), "")
        while levels:
            fd, listing, name = levels[-1]
            entry = next(listing, None)
            if entry is None:
                ascend()
                if levels:
                    _quietly_missing(os.rmdir, name, dir_fd=levels[-1][0])
            elif entry.is_dir(follow_symlinks=False):
                try:
                    child = os.open(entry.name, _DIRECTORY_FLAGS, dir_fd=fd)
                except FileNotFoundError:
                    continue
                descend(child, entry.name)
            else:
                _quietly_missing(os.unlink, entry.name, dir_fd=fd)
    finally:
        while levels:
            ascend()
    os.rmdir(path)


def _quietly_missing(function: Any, name: str, *, dir_fd: int) -> None:
    with suppress(FileNotFoundError):
        function(name, dir_fd=dir_fd)


# ---------------------------------------------------------------------- copy
def copy(source: str, destination: str, recursive: bool) -> None:
    """`fs/copy` with the reference's rules (see docs/fs.md), minus its self-copy data loss."""
    info = os.lstat(source)
    if stat.S_ISDIR(info.st_mode):
        if not recursive:
            raise invalid_request(COPY_NEEDS_RECURSIVE_MESSAGE)
        if is_same_or_descendant(source, destination):
            raise invalid_request(COPY_INTO_ITSELF_MESSAGE)
        copy_tree(source, destination)
    elif stat.S_ISLNK(info.st_mode):
        os.symlink(os.readlink(source), destination)
    elif stat.S_ISREG(info.st_mode):
        copy_file(source, destination)
    else:
        raise invalid_request(COPY_UNSUPPORTED_TYPE_MESSAGE)


def is_same_or_descendant(source: str, destination: str) -> bool:
    """Whether `destination` resolves to `source` or below it (symlinks resolved).

    The destination need not exist: its longest existing prefix is resolved and the rest
    appended, as the reference does.
    """
    real_source = os.path.realpath(source, strict=True)
    existing, rest = destination, []
    while not os.path.exists(existing):
        parent, name = os.path.split(existing)
        if parent == existing:
            break
        rest.append(name)
        existing = parent
    resolved = os.path.join(os.path.realpath(existing, strict=True), *reversed(rest))
    if real_source == "/":
        return True
    return resolved == real_source or resolved.startswith(real_source + "/")


def copy_file(source: str, destination: str) -> None:
    """Copy one regular file like Rust's `std::fs::copy`, but never onto itself.

    The destination is opened without truncation and compared with the source by inode;
    only a different file is truncated and written. The destination gets the source's
    permission bits. A FIFO destination without a reader gives ENXIO rather than hanging.
    """
    with ExitStack() as stack:
        source_fd = os.open(source, os.O_RDONLY | os.O_CLOEXEC)
        stack.callback(os.close, source_fd)
        source_info = os.fstat(source_fd)
        mode = stat.S_IMODE(source_info.st_mode)
        target_fd = os.open(destination, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC | os.O_NONBLOCK, mode)
        stack.callback(os.close, target_fd)
        target_info = os.fstat(target_fd)
        if (target_info.st_dev, target_info.st_ino) == (source_info.st_dev, source_info.st_ino):
            return
        os.set_blocking(target_fd, True)
        if stat.S_ISREG(target_info.st_mode):
            os.ftruncate(target_fd, 0)
            os.fchmod(target_fd, mode)
        _copy_data(source_fd, target_fd)


def _copy_data(source_fd: int, target_fd: int) -> None:
    try:
        while os.copy_file_range(source_fd, target_fd, COPY_CHUNK):
            pass
        return
    except OSError as exc:
        if exc.errno not in (errno.EXDEV, errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP, errno.EBADF):
            raise
    while chunk := os.read(source_fd, COPY_CHUNK):
        _write_all(target_fd, chunk)


def copy_tree(source: str, destination: str) -> None:
    """Copy a directory's contents into `destination` (created, or merged into if it exists).

    Files are copied with `copy_file`, symlinks as symlinks, subdirectories recursively;
    FIFOs, sockets and devices are skipped, as the reference does. Iterative, so a deep
    tree cannot exhaust Python's recursion limit.
    """
    with ExitStack() as stack:
        os.makedirs(destination, exist_ok=True)
        pending: list[tuple[Iterator[os.DirEntry[str]], str]] = [(_listing(stack, source), destination)]
        while pending:
            listing, target = pending[-1]
            entry = next(listing, None)
            if entry is None:
                pending.pop()
                continue
            entry_target = os.path.join(target, entry.name)
            if entry.is_dir(follow_symlinks=False):
                os.makedirs(entry_target, exist_ok=True)
                pending.append((_listing(stack, entry.path), entry_target))
            elif entry.is_file(follow_symlinks=False):
                copy_file(entry.path, entry_target)
            elif entry.is_symlink():
                os.symlink(os.readlink(entry.path), entry_target)


def _listing(stack: ExitStack, directory: Any) -> Iterator[os.DirEntry[Any]]:
    """A scandir listing (of a path or an open directory fd) closed with `stack`."""
    return stack.enter_context(os.scandir(directory))
