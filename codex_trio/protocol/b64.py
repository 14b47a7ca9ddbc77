"""Base64 as the reference reads and writes it (Rust `base64` 0.22, STANDARD, padded).

`fs/writeFile` and `command/exec/write` decode with it and must refuse exactly what the
reference refuses, with its words; `fs/readFile` and output deltas encode with it.
"""

from __future__ import annotations

import binascii
import re

import pybase64


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
