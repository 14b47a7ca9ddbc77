"""Whole-file writes that a crash or a full disk never leaves half done.

The one way this package replaces a file (config.toml, auth.json, installation_id, files an
`apply_patch` edits): a temporary file in the same directory, fsync'd, then `os.replace`d
over the target; on any failure the temporary file is removed and the target is untouched.
Blocking: async callers run it through `trio.to_thread.run_sync`. A leaf: imports nothing of ours.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path


def write_atomic(path: Path, data: str | bytes, *, mode: int | None = None) -> None:
    """Replace `path` with `data` (text is UTF-8, newlines written as given).

    `mode` sets the new file's permission bits (before any data is written, so a secret is
    never readable by others); None keeps an existing file's mode, and a new file gets the
    temporary file's owner-only 0o600.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    keep = None
    if mode is None:
        with contextlib.suppress(FileNotFoundError):
            keep = path.stat().st_mode & 0o7777
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        if mode is not None:
            os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as f:
            f.write(data.encode("utf-8") if isinstance(data, str) else data)
            f.flush()
            os.fsync(f.fileno())
        if keep is not None:
            os.chmod(tmp, keep)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
