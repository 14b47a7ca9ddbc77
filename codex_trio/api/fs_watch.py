"""`fs/watch` / `fs/unwatch` and the throttled `fs/changed` notification, on Linux inotify.

Ownership: every connection that watches something gets one `ConnectionWatches`: one
inotify descriptor (non-blocking, from ctypes) and one task in the connection's nursery
that awaits the descriptor with `trio.lowlevel.wait_readable`. No thread is involved, so
cancellation is immediate: when the connection closes, its nursery cancels the task, which
closes the descriptor and with it every kernel watch. `fs/unwatch` of a connection's last
watch does the same, so idle connections hold no descriptor.

How one watch of a path P is kept (all kernel watches are on directories, except one on P's
own inode when P is not a directory):

* P's parent directory is watched and its events are filtered to P's name: that reports P
  being created, deleted, renamed, written or chmod'ed, and it survives P being replaced by
  rename (the reference's file watches go deaf after the first replace);
* if P is a directory, P itself is watched, and each event names a direct child P/name;
* if P is a file (or a symlink), its inode is watched as well, so writes through other
  paths (a symlink P pointing elsewhere) are seen;
* if P's parent does not exist yet, the nearest existing ancestor is watched for the next
  missing component; every event there re-arms the watch one level deeper. When P finally
  appears as a directory, its current children are reported with it.

Kernel watch descriptors are shared: the kernel returns the same descriptor for the same
inode, so a table maps each descriptor to every (watch, role) that uses it, and events go to
all of them (two watches on one directory under two path strings both work).

Changes are collected per watch id: the first change opens a window of FS_CHANGED_THROTTLE
seconds; when it closes one `fs/changed` carries the deduplicated, sorted paths.
"""

from __future__ import annotations

import ctypes
import errno
import logging
import math
import os
import stat
import struct
from typing import Literal

import attrs
import trio

from codex_trio.api.fs_ops import is_temp_name
from codex_trio.connection import Connection
from codex_trio.protocol.converter import unstructure
from codex_trio.protocol.errors import invalid_request, os_error
from codex_trio.protocol.fs import (
    FsChangedNotification,
    FsUnwatchParams,
    FsWatchParams,
    FsWatchResponse,
    watch_id_exists_message,
)
from codex_trio.records import by_value
from codex_trio.routing import RequestContext, Route, route

log = logging.getLogger(__name__)

#: seconds a batch of changes collects before one fs/changed goes out (the reference: 200 ms).
FS_CHANGED_THROTTLE = 0.2
#: bytes per read of the inotify descriptor: room for hundreds of events with long names.
READ_SIZE = 64 * 1024
#: reads per wake-up before the loop yields (a busy directory cannot starve the flush).
READS_PER_WAKEUP = 16
#: children reported at most when a watched directory appears after the watch started.
APPEARED_CHILDREN_LIMIT = 1000
#: times a watch is re-armed in a row when the path keeps appearing while it is being armed.
ARM_ATTEMPTS = 4

# inotify(7)
IN_MODIFY = 0x00000002
IN_ATTRIB = 0x00000004
IN_CLOSE_WRITE = 0x00000008
IN_MOVED_FROM = 0x00000040
IN_MOVED_TO = 0x00000080
IN_CREATE = 0x00000100
IN_DELETE = 0x00000200
IN_DELETE_SELF = 0x00000400
IN_MOVE_SELF = 0x00000800
IN_UNMOUNT = 0x00002000
IN_Q_OVERFLOW = 0x00004000
IN_IGNORED = 0x00008000
IN_ONLYDIR = 0x01000000
IN_NONBLOCK = os.O_NONBLOCK
IN_CLOEXEC = os.O_CLOEXEC

#: what every kernel watch asks for (the set the reference's watcher uses).
WATCH_MASK = (
    IN_MODIFY
    | IN_ATTRIB
    | IN_CLOSE_WRITE
    | IN_MOVED_FROM
    | IN_MOVED_TO
    | IN_CREATE
    | IN_DELETE
    | IN_DELETE_SELF
    | IN_MOVE_SELF
)
_NAME_CHANGED = IN_CREATE | IN_DELETE | IN_MOVED_FROM | IN_MOVED_TO
_SELF_GONE = IN_DELETE_SELF | IN_MOVE_SELF | IN_IGNORED | IN_UNMOUNT
_FILE_CHANGED = IN_MODIFY | IN_ATTRIB | IN_CLOSE_WRITE | IN_DELETE_SELF | IN_MOVE_SELF
_EVENT_HEADER = struct.Struct("iIII")


# ---------------------------------------------------------------------- inotify
class _Libc:
    """The three inotify calls, looked up once; absent off Linux."""

    def __init__(self) -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        self.init1 = libc.inotify_init1
        self.init1.argtypes = [ctypes.c_int]
        self.init1.restype = ctypes.c_int
        self.add_watch = libc.inotify_add_watch
        self.add_watch.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32]
        self.add_watch.restype = ctypes.c_int
        self.rm_watch = libc.inotify_rm_watch
        self.rm_watch.argtypes = [ctypes.c_int, ctypes.c_int]
        self.rm_watch.restype = ctypes.c_int


_libc: _Libc | None = None


def _get_libc() -> _Libc:
    global _libc
    if _libc is None:
        try:
            _libc = _Libc()
        except (OSError, AttributeError):
            raise OSError(errno.ENOSYS, os.strerror(errno.ENOSYS)) from None
    return _libc


def _errno_error(path: bytes | None = None) -> OSError:
    code = ctypes.get_errno()
    return OSError(code, os.strerror(code), path)


@by_value
@attrs.frozen(repr=False, eq=False)
class InotifyEvent:
    """One decoded inotify event."""

    wd: int
    mask: int
    name: bytes


class Inotify:
    """One inotify instance: a non-blocking descriptor, read when trio says it is readable."""

    def __init__(self) -> None:
        self._libc = _get_libc()
        fd = self._libc.init1(IN_NONBLOCK | IN_CLOEXEC)
        if fd < 0:
            raise _errno_error()
        self._fd = fd

    def add_watch(self, path: bytes, *, only_dir: bool) -> int:
        """Watch `path` (symlinks followed); the kernel's descriptor, shared per inode."""
        wd = self._libc.add_watch(self._fd, path, WATCH_MASK | (IN_ONLYDIR if only_dir else 0))
        if wd < 0:
            raise _errno_error(path)
        return int(wd)

    def remove_watch(self, wd: int) -> None:
        """Drop a kernel watch; one the kernel already dropped (EINVAL) is fine."""
        if self._fd >= 0:
            self._libc.rm_watch(self._fd, wd)

    async def read_events(self) -> list[InotifyEvent]:
        """Wait until events are queued, then take what is there (never blocks a thread)."""
        await trio.lowlevel.wait_readable(self._fd)
        events: list[InotifyEvent] = []
        for _ in range(READS_PER_WAKEUP):
            try:
                data = os.read(self._fd, READ_SIZE)
            except BlockingIOError:
                break
            offset = 0
            while offset + _EVENT_HEADER.size <= len(data):
                wd, mask, _cookie, length = _EVENT_HEADER.unpack_from(data, offset)
                start = offset + _EVENT_HEADER.size
                events.append(InotifyEvent(wd, mask, data[start : start + length].rstrip(b"\0")))
                offset = start + length
        return events

    def close(self) -> None:
        """Close the descriptor (idempotent); the kernel drops every watch with it."""
        if self._fd >= 0:
            fd, self._fd = self._fd, -1
            trio.lowlevel.notify_closing(fd)
            os.close(fd)


# ---------------------------------------------------------------------- one connection's watches
Role = Literal["parent", "dir", "file", "ancestor"]
Kind = Literal["missing", "dir", "file"]


@attrs.define(eq=False)
class _Watch:
    """One fs/watch: its path, the kernel watches it uses and its pending batch."""

    watch_id: str
    path: str
    #: the path as bytes for the kernel; None when it cannot name a file (a NUL inside).
    raw: bytes | None
    kind: Kind = "missing"
    uses: list[tuple[int, _Use]] = attrs.Factory(list)
    pending: set[str] = attrs.Factory(set)
    deadline: float | None = None


@attrs.frozen(eq=False)
class _Use:
    """What one kernel watch means to one fs/watch."""

    watch: _Watch
    role: Role
    #: for "parent": the watched path's name; for "ancestor": the missing component.
    name: bytes = b""


def _path_key(path: str) -> list[str]:
    """Sort like Rust's `Path` ordering: component by component."""
    return path.split("/")


def _kind_of(path: bytes) -> Kind:
    try:
        mode = os.stat(path).st_mode
    except (OSError, ValueError):
        return "missing"
    return "dir" if stat.S_ISDIR(mode) else "file"


class ConnectionWatches:
    """All watches of one connection, one inotify descriptor and the task that reads it."""

    def __init__(self, connection: Connection, inotify: Inotify) -> None:
        self._connection = connection
        self._inotify = inotify
        self._watches: dict[str, _Watch] = {}
        self._uses: dict[int, list[_Use]] = {}
        self.cancel_scope = trio.CancelScope()

    def __contains__(self, watch_id: str) -> bool:
        return watch_id in self._watches

    def __len__(self) -> int:
        return len(self._watches)

    @property
    def kernel_watches(self) -> int:
        """Kernel watch descriptors in use (for tests and logs)."""
        return len(self._uses)

    def add(self, watch_id: str, path: str) -> None:
        """Start watching `path` under `watch_id`."""
        raw = None if "\0" in path else path.encode("utf-8", "surrogateescape")
        watch = _Watch(watch_id, path, raw)
        self._watches[watch_id] = watch
        self._arm(watch, initial=True)

    def remove(self, watch_id: str) -> None:
        """Stop watching under `watch_id`."""
        watch = self._watches.pop(watch_id, None)
        if watch is not None:
            self._disarm(watch)

    def close(self) -> None:
        """Stop the reader task; it closes the descriptor on its way out."""
        self.cancel_scope.cancel()

    async def run(self) -> None:
        """Read events and flush batches until cancelled (connection closed, last unwatch)."""
        try:
            with self.cancel_scope:
                while True:
                    deadline = min(
                        (w.deadline for w in self._watches.values() if w.deadline is not None),
                        default=math.inf,
                    )
                    with trio.move_on_at(deadline):
                        self._handle(await self._inotify.read_events())
                    await self._flush_due()
        finally:
            self._inotify.close()

    # -------------------------------------------------------------- arming
    def _arm(self, watch: _Watch, *, initial: bool) -> None:
        previous = watch.kind
        for _ in range(ARM_ATTEMPTS):
            self._disarm(watch)
            if watch.raw is None:
                return
            if self._arm_once(watch, watch.raw):
                break
        if not initial and watch.kind != previous:
            self._report(watch, watch.path)
            if watch.kind == "dir" and watch.raw is not None:
                self._report_children(watch, watch.raw)

    def _arm_once(self, watch: _Watch, path: bytes) -> bool:
        """Set up the kernel watches for `watch`; False if the path changed meanwhile."""
        if path == b"/":
            watch.kind = _kind_of(path)
            self._use(watch, "dir", path, only_dir=True)
            return True
        parent, name = os.path.split(path)
        if self._use(watch, "parent", parent, name, only_dir=True):
            # The parent is watched first and P examined after, so a change in between
            # is either seen here or arrives as an event.
            watch.kind = _kind_of(path)
            if watch.kind != "missing":
                self._use(watch, watch.kind, path, only_dir=watch.kind == "dir")
            return True
        watch.kind = "missing"
        missing = parent
        while missing != b"/":
            ancestor, component = os.path.split(missing)
            if self._use(watch, "ancestor", ancestor, component, only_dir=True):
                # The component may have been created before the watch was in place.
                return not os.path.isdir(missing)
            missing = ancestor
        return True

    def _use(self, watch: _Watch, role: Role, path: bytes, name: bytes = b"", *, only_dir: bool) -> bool:
        try:
            wd = self._inotify.add_watch(path, only_dir=only_dir)
        except OSError as exc:
            if exc.errno == errno.ENOSPC:
                log.warning("inotify watch limit reached; %s is not watched", os.fsdecode(path))
            return False
        use = _Use(watch, role, name)
        self._uses.setdefault(wd, []).append(use)
        watch.uses.append((wd, use))
        return True

    def _disarm(self, watch: _Watch) -> None:
        for wd, use in watch.uses:
            uses = self._uses.get(wd)
            if uses is None:
                continue
            uses.remove(use)
            if not uses:
                del self._uses[wd]
                self._inotify.remove_watch(wd)
        watch.uses.clear()

    # -------------------------------------------------------------- events
    def _handle(self, events: list[InotifyEvent]) -> None:
        rearm: dict[int, _Watch] = {}
        for event in events:
            if event.mask & IN_Q_OVERFLOW:
                log.warning("inotify queue overflowed; reporting every watched path")
                for watch in self._watches.values():
                    self._report(watch, watch.path)
                    rearm[id(watch)] = watch
                continue
            for use in tuple(self._uses.get(event.wd, ())):
                if self._route(use, event):
                    rearm[id(use.watch)] = use.watch
        for watch in rearm.values():
            if self._watches.get(watch.watch_id) is watch:
                self._arm(watch, initial=False)

    def _route(self, use: _Use, event: InotifyEvent) -> bool:
        """Record what `event` means for one watch; True if the watch must be re-armed."""
        watch, mask, name = use.watch, event.mask, event.name
        if use.role == "parent":
            if not name:
                return bool(mask & _SELF_GONE)
            if name != use.name:
                return False
            self._report(watch, watch.path)
            return bool(mask & _NAME_CHANGED)
        if use.role == "dir":
            if name:
                if not is_temp_name(name):
                    self._report(watch, _child(watch.path, name))
                return False
            if mask & (IN_ATTRIB | IN_DELETE_SELF | IN_MOVE_SELF):
                self._report(watch, watch.path)
            return bool(mask & _SELF_GONE)
        if use.role == "file":
            if mask & _FILE_CHANGED:
                self._report(watch, watch.path)
            return bool(mask & _SELF_GONE)
        # "ancestor": waiting for the next missing component of the path
        return name == use.name if name else bool(mask & _SELF_GONE)

    def _report(self, watch: _Watch, path: str) -> None:
        if watch.deadline is None:
            watch.deadline = trio.current_time() + FS_CHANGED_THROTTLE
        watch.pending.add(path)

    def _report_children(self, watch: _Watch, path: bytes) -> None:
        """A directory appeared after the watch began: what it already holds changed too."""
        try:
            with os.scandir(path) as listing:
                for count, entry in enumerate(listing):
                    if count >= APPEARED_CHILDREN_LIMIT:
                        break
                    if not is_temp_name(entry.name):
                        self._report(watch, _child(watch.path, entry.name))
        except OSError:
            pass

    async def _flush_due(self) -> None:
        now = trio.current_time()
        for watch in list(self._watches.values()):
            if watch.deadline is None or watch.deadline > now:
                continue
            paths = sorted(watch.pending, key=_path_key)
            watch.pending = set()
            watch.deadline = None
            # An unwatch may have happened while an earlier notification waited for room.
            if paths and self._watches.get(watch.watch_id) is watch:
                notification = FsChangedNotification(watch.watch_id, paths)
                await self._connection.notify("fs/changed", unstructure(notification))


def _child(parent: str, name: bytes) -> str:
    text = name.decode("utf-8", "replace")
    return f"{parent}/{text}" if parent != "/" else f"/{text}"


# ---------------------------------------------------------------------- the family part
class FsWatchApi:
    """`fs/watch` and `fs/unwatch`; watch ids are scoped to their connection."""

    def __init__(self) -> None:
        self._by_connection: dict[int, ConnectionWatches] = {}

    def routes(self) -> list[Route]:
        """The family's methods."""
        return [
            route("fs/watch", FsWatchParams, self.watch),
            route("fs/unwatch", FsUnwatchParams, self.unwatch),
        ]

    def watches_of(self, connection: Connection) -> ConnectionWatches | None:
        """The connection's watch table, if it watches anything (for tests)."""
        return self._by_connection.get(connection.id)

    async def watch(self, ctx: RequestContext, params: FsWatchParams) -> FsWatchResponse:
        """`fs/watch`: watch a path for this connection under the client's `watchId`."""
        connection = ctx.connection
        watches = self._by_connection.get(connection.id)
        if watches is not None and params.watch_id in watches:
            raise invalid_request(watch_id_exists_message(params.watch_id))
        if watches is None:
            watches = self._open(connection)
        watches.add(params.watch_id, params.path)
        return FsWatchResponse(params.path)

    def _open(self, connection: Connection) -> ConnectionWatches:
        try:
            inotify = Inotify()
        except OSError as exc:
            raise os_error(exc) from None
        watches = ConnectionWatches(connection, inotify)
        try:
            connection.nursery.start_soon(watches.run, name=f"fs/watch reader of connection {connection.id}")
        except RuntimeError:
            inotify.close()
            raise
        self._by_connection[connection.id] = watches
        return watches

    async def unwatch(self, ctx: RequestContext, params: FsUnwatchParams) -> None:
        """`fs/unwatch`: stop a watch (an unknown id is not an error)."""
        watches = self._by_connection.get(ctx.connection.id)
        if watches is None:
            return
        watches.remove(params.watch_id)
        if not watches:
            del self._by_connection[ctx.connection.id]
            watches.close()

    async def connection_closed(self, connection: Connection) -> None:
        """Forget the connection's watches (its reader task dies with it)."""
        watches = self._by_connection.pop(connection.id, None)
        if watches is not None:
            watches.close()
