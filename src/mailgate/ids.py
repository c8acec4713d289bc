"""Queue ids: UUIDv7, so ids sort by creation time and index inserts stay local."""

from __future__ import annotations

import os
import time

# 74 random bits around the version (7) and variant (0b10) fields of the low 80 bits.
_RAND_MASK = (0xFFF << 64) | ((1 << 62) - 1)
_VERSION_VARIANT = (0x7 << 76) | (0b10 << 62)
_MS_MASK = (1 << 48) - 1


def new_id() -> str:
    """A UUIDv7 string; formatted directly (no uuid.UUID object: it runs once per message)."""
    ms = time.time_ns() // 1_000_000
    rand = int.from_bytes(os.urandom(10), "big") & _RAND_MASK
    h = f"{((ms & _MS_MASK) << 80) | _VERSION_VARIANT | rand:032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"
