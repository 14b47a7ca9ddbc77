"""Kernel pipe buffers: how far a writer may run ahead of its reader.

A Linux pipe holds 64 KiB by default, less than one base64-encoded 64 KiB output chunk: a
streamed chunk then crosses it in several write/wake/read hand-offs. Widening the pipes we
read (command output) and write (stdio to the client) to 1 MiB lets each side run a chunk or
more ahead of the other. Imports nothing of the project.
"""

from __future__ import annotations

import fcntl
from contextlib import suppress

#: bytes of kernel buffer asked for (Linux caps it at fs.pipe-max-size, 1 MiB by default).
PIPE_BUFFER = 1024 * 1024
#: fcntl F_SETPIPE_SZ (Linux; `fcntl.F_SETPIPE_SZ` from Python 3.10, spelled out for the type checker).
F_SETPIPE_SZ = getattr(fcntl, "F_SETPIPE_SZ", 1031)


def widen_pipe(fd: int) -> None:
    """Ask for a PIPE_BUFFER-byte buffer on `fd`. Best effort: not a pipe, or over the
    per-user pipe quota or the sysctl limit, leaves the buffer as it is."""
    with suppress(OSError):
        fcntl.fcntl(fd, F_SETPIPE_SZ, PIPE_BUFFER)
