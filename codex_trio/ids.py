"""Wall-clock milliseconds and the time-ordered ids (UUIDv7) the reference gives threads,
turns and items. A leaf: imports nothing of ours."""

from __future__ import annotations

import os
import time
import uuid


def now_ms() -> int:
    """Milliseconds since the epoch: the wire's `*AtMs` fields and the rollouts' timestamps."""
    return time.time_ns() // 1_000_000


def uuid7() -> str:
    """A UUID version 7 (RFC 9562): 48 bits of milliseconds, then random bits."""
    rand = int.from_bytes(os.urandom(10), "big")
    value = (now_ms() & ((1 << 48) - 1)) << 80
    value |= 0x7 << 76
    value |= ((rand >> 62) & 0xFFF) << 64
    value |= 0b10 << 62
    value |= rand & ((1 << 62) - 1)
    return str(uuid.UUID(int=value))
