"""Wire types of the `fs/*` family and the reference's strict base64 rules.

Pure: no trio, no I/O. The params and responses mirror the reference's schema
(`Fs*Params`, `Fs*Response`, `FsChangedNotification`); key order follows the reference.
`decode_base64` accepts exactly what the reference's decoder (Rust `base64`, STANDARD engine:
padding required, canonical trailing bits) accepts and words its refusals the same way.
"""

from __future__ import annotations

import attrs

from codex_trio.protocol.paths import AbsolutePath
from codex_trio.records import by_value


# ---------------------------------------------------------------------- params / responses
@by_value
@attrs.frozen(repr=False, eq=False)
class FsReadFileParams:
    """`fs/readFile` params: the file to read whole."""

    path: AbsolutePath


@by_value
@attrs.frozen(repr=False, eq=False)
class FsReadFileResponse:
    """`fs/readFile` result: the content, base64."""

    data_base64: str


@by_value
@attrs.frozen(repr=False, eq=False)
class FsWriteFileParams:
    """`fs/writeFile` params: the file and its new content (strict base64)."""

    path: AbsolutePath
    data_base64: str


@by_value
@attrs.frozen(repr=False, eq=False)
class FsCreateDirectoryParams:
    """`fs/createDirectory` params."""

    path: AbsolutePath
    #: absent or null means true.
    recursive: bool | None = None


@by_value
@attrs.frozen(repr=False, eq=False)
class FsGetMetadataParams:
    """`fs/getMetadata` params."""

    path: AbsolutePath


@by_value
@attrs.frozen(repr=False, eq=False)
class FsGetMetadataResponse:
    """`fs/getMetadata` result: the kind of what the path leads to, whether it is a symlink, times in ms."""

    is_directory: bool
    is_file: bool
    is_symlink: bool
    created_at_ms: int
    modified_at_ms: int


@by_value
@attrs.frozen(repr=False, eq=False)
class FsReadDirectoryParams:
    """`fs/readDirectory` params."""

    path: AbsolutePath


@by_value
@attrs.frozen(repr=False, eq=False)
class FsReadDirectoryEntry:
    """One entry of `fs/readDirectory`."""

    file_name: str
    is_directory: bool
    is_file: bool


@by_value
@attrs.frozen(repr=False, eq=False)
class FsReadDirectoryResponse:
    """`fs/readDirectory` result."""

    entries: list[FsReadDirectoryEntry]


@by_value
@attrs.frozen(repr=False, eq=False)
class FsRemoveParams:
    """`fs/remove` params; absent `recursive` / `force` mean true, as in the reference."""

    path: AbsolutePath
    #: absent or null means true.
    recursive: bool | None = None
    #: absent or null means true; only "not found" is forgiven.
    force: bool | None = None


@by_value
@attrs.frozen(repr=False, eq=False)
class FsCopyParams:
    """`fs/copy` params; a directory needs `recursive: true`."""

    source_path: AbsolutePath
    destination_path: AbsolutePath
    #: required for directories, ignored for files; unlike createDirectory, null is refused.
    recursive: bool = False


@by_value
@attrs.frozen(repr=False, eq=False)
class FsWatchParams:
    """`fs/watch` params: the client names the watch (`watchId`)."""

    path: AbsolutePath
    watch_id: str


@by_value
@attrs.frozen(repr=False, eq=False)
class FsWatchResponse:
    #: the request path after lexical normalization (symlinks are not resolved).
    """`fs/watch` result: the path being watched."""

    path: str


@by_value
@attrs.frozen(repr=False, eq=False)
class FsUnwatchParams:
    """`fs/unwatch` params."""

    watch_id: str


@by_value
@attrs.frozen(repr=False, eq=False)
class FsChangedNotification:
    """`fs/changed`: paths that changed under one watch."""

    watch_id: str
    changed_paths: list[str]


# ---------------------------------------------------------------------- messages
def not_a_file_message(path: str) -> str:
    """The reference's error text for `fs/readFile` on something that is not a file."""
    return f"path `{path}` is not a file"


NUL_IN_PATH_MESSAGE = "file name contained an unexpected NUL byte"
COPY_NEEDS_RECURSIVE_MESSAGE = "fs/copy requires recursive: true when sourcePath is a directory"
COPY_INTO_ITSELF_MESSAGE = "fs/copy cannot copy a directory to itself or one of its descendants"
COPY_UNSUPPORTED_TYPE_MESSAGE = "fs/copy only supports regular files, directories, and symlinks"
INVALID_BASE64_PREFIX = "fs/writeFile requires valid base64 dataBase64: "


def watch_id_exists_message(watch_id: str) -> str:
    """The reference's error text for a `watchId` already in use on this connection."""
    return f"watchId already exists: {watch_id}"


# ---------------------------------------------------------------------- base64
