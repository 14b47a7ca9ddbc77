"""How the reference words an OS error: Rust's `io::Error` display over musl's strerror.

A leaf (imports nothing of ours): `protocol.errors` puts this text in JSON-RPC errors and
`process` in spawn failures, and the process layer knows nothing of JSON-RPC.
"""

from __future__ import annotations

import errno
import os

#: where the reference's libc (musl) words an errno differently from glibc's strerror.
MUSL_ERRNO_TEXT = {
    errno.ELOOP: "Symbolic link loop",
    errno.ENAMETOOLONG: "Filename too long",
    errno.EXDEV: "Cross-device link",
    errno.EMFILE: "No file descriptors available",
    errno.EBUSY: "Resource busy",
}


def os_error_text(exc: OSError) -> str:
    """Rust's `io::Error` display as the reference prints it: `No such file or directory (os error 2)`."""
    if exc.errno is None:
        return str(exc)
    text = MUSL_ERRNO_TEXT.get(exc.errno) or os.strerror(exc.errno)
    return f"{text} (os error {exc.errno})"
