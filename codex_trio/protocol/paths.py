"""`AbsolutePath`: the wire type of every path param the reference calls `AbsolutePathBuf`.

Pure: no I/O. A path param must be absolute; it is normalized *lexically* when it is read
(`.` and empty segments dropped, `..` pops a segment and stops at the root, a trailing slash
goes), exactly as the reference does, so `<abs>/missing/../f` names `<abs>/f` even when
`missing` does not exist. Symlinks are not resolved. `~` is not expanded: like every other
relative path it is refused, because the reference gives the server no base path.

Importing this module registers its structure hook with the one converter.
"""

from __future__ import annotations

from typing import Any, NewType

from codex_trio.protocol.converter import WireError, describe, register_structure_hook

#: An absolute, lexically normalized path (a plain `str` at runtime).
AbsolutePath = NewType("AbsolutePath", str)

#: serde's error for a relative path (the reference deserializes with no base path set).
RELATIVE_PATH_MESSAGE = "AbsolutePathBuf deserialized without a base path"


def normalize_absolute(raw: str) -> AbsolutePath:
    """Lexically normalize an absolute path; raise WireError for a relative one."""
    if not raw.startswith("/"):
        raise WireError(RELATIVE_PATH_MESSAGE)
    if "/." not in raw and "//" not in raw and not (raw.endswith("/") and len(raw) > 1):
        return AbsolutePath(raw)  # already normal: the common case, no allocation
    parts: list[str] = []
    for part in raw.split("/"):
        if part in ("", "."):
            continue
        if part == "..":
            if parts:
                parts.pop()
            continue
        parts.append(part)
    return AbsolutePath("/" + "/".join(parts))


def _structure(value: Any, _: type) -> AbsolutePath:
    if not isinstance(value, str):
        raise WireError(f"invalid type: {describe(value)}, expected path string")
    return normalize_absolute(value)


register_structure_hook(AbsolutePath, _structure)
