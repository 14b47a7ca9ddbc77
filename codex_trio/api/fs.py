"""The `fs/*` family: host filesystem access for clients (not sandboxed, as in the reference).

Handlers validate, then run the blocking part (`fs_ops`) in a worker thread under one
`CapacityLimiter` shared by every connection, so a huge read occupies one of FS_THREADS
threads and never the event loop. Two things run inline because a thread hop costs more
than the work: `fs/getMetadata` (one stat; clients also use it as a barrier) and the read of
a regular file of at most INLINE_READ_LIMIT bytes (the stat that `fs/readFile` does anyway
tells the size first).

Errors are mapped here, at the edge: `OSError` -> -32603 with the errno text, a NUL byte in
a path -> -32600 (as the reference), refusals raised by `fs_ops` pass through.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import orjson
import trio

from codex_trio.api import fs_ops
from codex_trio.api.fs_watch import FsWatchApi
from codex_trio.connection import Connection
from codex_trio.protocol.b64 import Base64Error, decode_base64, encode_base64
from codex_trio.protocol.errors import invalid_request, os_error
from codex_trio.protocol.fs import (
    INVALID_BASE64_PREFIX,
    NUL_IN_PATH_MESSAGE,
    FsCopyParams,
    FsCreateDirectoryParams,
    FsGetMetadataParams,
    FsGetMetadataResponse,
    FsReadDirectoryParams,
    FsReadDirectoryResponse,
    FsReadFileParams,
    FsRemoveParams,
    FsWriteFileParams,
)
from codex_trio.routing import RequestContext, Route, route

T = TypeVar("T")

#: worker threads for blocking file I/O, shared by all connections; more requests queue.
FS_THREADS = 8
#: bytes up to which `fs/readFile` reads inline, like the `stat` it does first: a read of a
#: few KiB from the page cache costs a few microseconds, a thread hop 50-200 (docs/fs.md).
INLINE_READ_LIMIT = 64 * 1024


class FsApi:
    """`fs/readFile` ... `fs/copy`, plus `fs/watch` / `fs/unwatch` (owned by FsWatchApi)."""

    def __init__(self) -> None:
        self._limiter = trio.CapacityLimiter(FS_THREADS)
        self.watch = FsWatchApi()

    def routes(self) -> list[Route]:
        """The family's methods (the watch methods are `FsWatchApi`'s)."""
        return [
            route("fs/readFile", FsReadFileParams, self.read_file),
            route("fs/writeFile", FsWriteFileParams, self.write_file),
            route("fs/createDirectory", FsCreateDirectoryParams, self.create_directory),
            route("fs/getMetadata", FsGetMetadataParams, self.get_metadata),
            route("fs/readDirectory", FsReadDirectoryParams, self.read_directory),
            route("fs/remove", FsRemoveParams, self.remove),
            route("fs/copy", FsCopyParams, self.copy),
            *self.watch.routes(),
        ]

    async def connection_closed(self, connection: Connection) -> None:
        """Close the connection's watches."""
        await self.watch.connection_closed(connection)

    # -------------------------------------------------------------- handlers
    async def read_file(self, ctx: RequestContext, params: FsReadFileParams) -> dict[str, Any]:
        """The reply is `FsReadFileResponse`, built as a dict around a pre-encoded fragment.

        Base64 text is plain ASCII, so it goes to the JSON encoder as an `orjson.Fragment`:
        for an 8 MiB file that skips an 11 MiB `str` and the encoder's escape scan.
        """
        try:
            info = fs_ops.regular_file_info(params.path)
            if info.st_size <= INLINE_READ_LIMIT:
                encoded = encode_base64(fs_ops.read_file(params.path, info))
            else:
                encoded = await self._in_thread(_read_base64, params.path, read_only=True)
        except (OSError, ValueError) as exc:
            raise _mapped(exc) from None
        return {"dataBase64": orjson.Fragment(b'"' + encoded + b'"')}

    async def write_file(self, ctx: RequestContext, params: FsWriteFileParams) -> None:
        """`fs/writeFile`: replace a file with decoded base64 content."""
        await self._in_thread(_decode_and_write, params.path, params.data_base64)

    async def create_directory(self, ctx: RequestContext, params: FsCreateDirectoryParams) -> None:
        """`fs/createDirectory`."""
        recursive = params.recursive is not False
        await self._in_thread(fs_ops.create_directory, params.path, recursive)

    async def get_metadata(self, ctx: RequestContext, params: FsGetMetadataParams) -> FsGetMetadataResponse:
        """`fs/getMetadata`."""
        try:
            return fs_ops.get_metadata(params.path)
        except (OSError, ValueError) as exc:
            raise _mapped(exc) from None

    async def read_directory(
        self, ctx: RequestContext, params: FsReadDirectoryParams
    ) -> FsReadDirectoryResponse:
        """`fs/readDirectory`."""
        entries = await self._in_thread(fs_ops.read_directory, params.path, read_only=True)
        return FsReadDirectoryResponse(entries)

    async def remove(self, ctx: RequestContext, params: FsRemoveParams) -> None:
        """`fs/remove`."""
        recursive = params.recursive is not False
        force = params.force is not False
        await self._in_thread(fs_ops.remove, params.path, recursive, force)

    async def copy(self, ctx: RequestContext, params: FsCopyParams) -> None:
        """`fs/copy`."""
        await self._in_thread(fs_ops.copy, params.source_path, params.destination_path, params.recursive)

    # -------------------------------------------------------------- plumbing
    async def _in_thread(self, fn: Callable[..., T], *args: object, read_only: bool = False) -> T:
        """Run blocking I/O in a worker thread and map its errors.

        A read may be abandoned when its request is cancelled (the thread finishes on its
        own and its result is dropped); a change to the filesystem always runs to its end,
        so a cancelled write still leaves the old or the new file, never a half-done one.
        """
        try:
            return await trio.to_thread.run_sync(
                fn, *args, limiter=self._limiter, abandon_on_cancel=read_only
            )
        except (OSError, ValueError) as exc:
            raise _mapped(exc) from None


def _mapped(exc: OSError | ValueError) -> BaseException:
    """The reference's error for a failed system call: errno text, or NUL-byte refusal."""
    if isinstance(exc, OSError):
        return os_error(exc)
    if "null byte" in str(exc):
        return invalid_request(NUL_IN_PATH_MESSAGE)
    return exc


def _read_base64(path: str) -> bytes:
    return encode_base64(fs_ops.read_file(path))


def _decode_and_write(path: str, data_base64: str) -> None:
    try:
        data = decode_base64(data_base64)
    except Base64Error as exc:
        raise invalid_request(INVALID_BASE64_PREFIX + str(exc)) from None
    fs_ops.write_file(path, data)
