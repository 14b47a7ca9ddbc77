"""Wire types of the `fs/*` family and the reference's strict base64 rules.

Pure: no trio, no I/O. The params and responses mirror the reference's schema
(`Fs*Params`, `Fs*Response`, `FsChangedNotification`); key order follows the reference.
`decode_base64` accepts exactly what the reference's decoder (Rust `base64`, STANDARD engine:
padding required, canonical trailing bits) accepts and words its refusals the same way.
"""

from __future__ import annotations

import attrs

from codex_trio.protocol.paths import AbsolutePath


# ---------------------------------------------------------------------- params / responses
@attrs.frozen
class FsReadFileParams:
    path: AbsolutePath


@attrs.frozen
class FsReadFileResponse:
    data_base64: str


@attrs.frozen
class FsWriteFileParams:
    path: AbsolutePath
    data_base64: str


@attrs.frozen
class FsCreateDirectoryParams:
    path: AbsolutePath
    #: absent or null means true.
    recursive: bool | None = None


@attrs.frozen
class FsGetMetadataParams:
    path: AbsolutePath


@attrs.frozen
class FsGetMetadataResponse:
    is_directory: bool
    is_file: bool
    is_symlink: bool
    created_at_ms: int
    modified_at_ms: int


@attrs.frozen
class FsReadDirectoryParams:
    path: AbsolutePath


@attrs.frozen
class FsReadDirectoryEntry:
    file_name: str
    is_directory: bool
    is_file: bool


@attrs.frozen
class FsReadDirectoryResponse:
    entries: list[FsReadDirectoryEntry]


@attrs.frozen
class FsRemoveParams:
    path: AbsolutePath
    #: absent or null means true.
    recursive: bool | None = None
    #: absent or null means true; only "not found" is forgiven.
    force: bool | None = None


@attrs.frozen
class FsCopyParams:
    source_path: AbsolutePath
    destination_path: AbsolutePath
    #: required for directories, ignored for files; unlike createDirectory, null is refused.
    recursive: bool = False


@attrs.frozen
class FsWatchParams:
    path: AbsolutePath
    watch_id: str


@attrs.frozen
class FsWatchResponse:
    #: the request path after lexical normalization (symlinks are not resolved).
    path: str


@attrs.frozen
class FsUnwatchParams:
    watch_id: str


@attrs.frozen
class FsChangedNotification:
    watch_id: str
    changed_paths: list[str]


# ---------------------------------------------------------------------- messages
def not_a_file_message(path: str) -> str:
    return f"path `{path}` is not a file"


NUL_IN_PATH_MESSAGE = "file name contained an unexpected NUL byte"
COPY_NEEDS_RECURSIVE_MESSAGE = "fs/copy requires recursive: true when sourcePath is a directory"
COPY_INTO_ITSELF_MESSAGE = "fs/copy cannot copy a directory to itself or one of its descendants"
COPY_UNSUPPORTED_TYPE_MESSAGE = "fs/copy only supports regular files, directories, and symlinks"
INVALID_BASE64_PREFIX = "fs/writeFile requires valid base64 dataBase64: "


def watch_id_exists_message(watch_id: str) -> str:
    return f"watchId already exists: {watch_id}"


# ---------------------------------------------------------------------- base64
