"""Queue ids: UUIDv7, so ids sort by creation time and index inserts stay local."""

from __future__ import annotations

import os
import threading
import time

# 74 random bits around the version (7) and variant (0b10) fields of the low 80 bits.
_RAND_MASK = (0xFFF << 64) | ((1 << 62) - 1)
_VERSION_VARIANT = (0x7 << 76) | (0b10 << 62)
_MS_MASK = (1 << 48) - 1


# Random bytes are read from the kernel this many at a time: an API message took two
# reads of 10 and 16 bytes (its id, its MIME boundary), each a system call.
_POOL_BYTES = 4096


class _Pool(threading.local):
    """Each thread's unread bytes from os.urandom (a batch builds its messages in a thread)."""

    def __init__(self) -> None:
        self.data = b""
        self.pos = 0


_pool = _Pool()


def _forget_pool() -> None:
    """A forked child must not hand out the bytes its parent will also hand out."""
    global _pool
    _pool = _Pool()


os.register_at_fork(after_in_child=_forget_pool)


def random_bytes(n: int) -> bytes:
    """``n`` bytes from os.urandom, read ahead in blocks."""
    if n > _POOL_BYTES:
        return os.urandom(n)
    pool = _pool
    pos = pool.pos
    if pos + n > len(pool.data):
        pool.data, pos = os.urandom(_POOL_BYTES), 0
    pool.pos = pos + n
    return pool.data[pos : pos + n]


def random_hex(n: int) -> str:
    """``n`` random bytes as hex (secrets.token_hex(n), from the pool)."""
    return random_bytes(n).hex()


def new_id() -> str:
    """A UUIDv7 string; formatted directly (no uuid.UUID object: it runs once per message)."""
    ms = time.time_ns() // 1_000_000
    rand = int.from_bytes(random_bytes(10), "big") & _RAND_MASK
    h = f"{((ms & _MS_MASK) << 80) | _VERSION_VARIANT | rand:032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"
