"""Wire types of the `fs/*` family and the reference's strict base64 rules.

Pure: no trio, no I/O. The params and responses mirror the reference's schema
(`Fs*Params`, `Fs*Response`, `FsChangedNotification`); key order follows the reference.
`decode_base64` accepts exactly what the reference's decoder (Rust `base64`, STANDARD engine:
padding required, canonical trailing bits) accepts and words its refusals the same way.
"""

from __future__ import annotations

import binascii
import re

import attrs
import pybase64

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
class Base64Error(ValueError):
    """Input the reference's decoder refuses; the text is its `DecodeError` display."""


_PAD = ord("=")
_ALPHABET = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
_VALUE = {byte: index for index, byte in enumerate(_ALPHABET)}
_NOT_ALPHABET = re.compile(rb"[^A-Za-z0-9+/]")


def encode_base64(data: bytes) -> bytes:
    """Standard padded base64 (SIMD, and without holding the GIL for large inputs)."""
    return pybase64.b64encode(data)


def decode_base64(text: str) -> bytes:
    """Decode standard, padded, canonical base64 or raise Base64Error with the reference's text.

    The SIMD decoder does the work; the exact error (or a non-canonical tail, which it lets
    through) is worked out by `base64_error`, which follows the reference step by step.
    """
    data = text.encode("utf-8", "surrogatepass")
    try:
        decoded = pybase64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise Base64Error(base64_error(data) or "Invalid padding") from None
    if len(data) % 4 == 0 and _canonical_tail(data):
        return decoded
    message = base64_error(data)
    if message is not None:
        raise Base64Error(message)
    return decoded


def _canonical_tail(data: bytes) -> bool:
    """True when the bits a padded final quad drops are zero (Python does not check this)."""
    if data.endswith(b"=="):
        return len(data) >= 4 and _VALUE.get(data[-3], 1) & 0x0F == 0
    if data.endswith(b"="):
        return len(data) >= 4 and _VALUE.get(data[-2], 1) & 0x03 == 0
    return True


def base64_error(data: bytes) -> str | None:
    """The reference decoder's verdict on `data`: its error text, or None when it is valid.

    Mirrors Rust `base64` 0.22 (`GeneralPurpose` with `PAD`): a lone trailing invalid byte is
    reported first; then the first invalid byte of every quad but the last; then the last
    quad's padding, length and trailing-bit checks.
    """
    length = len(data)
    remainder = length % 4
    if remainder == 1 and data[-1] != _PAD and data[-1] not in _VALUE:
        return _invalid_byte(length - 1, data[-1])
    body = length - remainder if remainder else max(0, length - 4)
    bad = _NOT_ALPHABET.search(data, 0, body)
    if bad is not None:
        return _invalid_byte(bad.start(), data[bad.start()])
    morsels: list[int] = []
    padding = 0
    first_padding = 0
    last_symbol = 0
    for index, byte in enumerate(data[body:]):
        if byte == _PAD:
            if index < 2:
                return _invalid_byte(body + index, byte)
            if padding == 0:
                first_padding = index
            padding += 1
            continue
        if padding:
            return _invalid_byte(body + first_padding, _PAD)
        last_symbol = byte
        value = _VALUE.get(byte)
        if value is None:
            return _invalid_byte(body + index, byte)
        morsels.append(value)
    if length and len(morsels) < 2:
        return f"Invalid input length: {body + len(morsels)}"
    if (padding + len(morsels)) % 4:
        return "Invalid padding"
    kept_bytes = len(morsels) * 6 // 8
    packed = 0
    for shift, value in zip((26, 20, 14, 8), morsels, strict=False):
        packed |= value << shift
    if packed & (0xFFFFFFFF >> (kept_bytes * 8)):
        return f"Invalid last symbol {last_symbol}, offset {body + len(morsels) - 1}."
    return None


def _invalid_byte(offset: int, byte: int) -> str:
    return f"Invalid symbol {byte}, offset {offset}."
