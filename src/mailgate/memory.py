"""Give memory back to the system after big messages (glibc's allocator).

Measured with ``scripts/bench-smtp --only memory``: after twenty 20 MB messages the queue
writer kept 783 MB and the delivery process 490 MB, 30 s after the last delivery. glibc
raises its mmap threshold each time a big mmapped block is freed (up to 32 MB), so later
big buffers come from the heap, and freed heap memory mostly stays with the process. A
fixed threshold keeps every big buffer (a message body, a pickle of it) in its own
mapping, returned on free; ``malloc_trim`` returns what the heap still holds once a burst
is over. Other allocators (musl, jemalloc): nothing to tune, the calls are skipped.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import threading
from functools import cache
from typing import Any

log = logging.getLogger(__name__)

# mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_M_ARENA_MAX = -8

MMAP_THRESHOLD = 256 * 1024  # blocks from here on are mappings of their own
TRIM_THRESHOLD = 4 * 1024 * 1024  # free heap top above this goes back at once
ARENAS = 2  # threads (signing, the writer thread) share these instead of 8 per core
BIG = 1024 * 1024  # a request or message this big is worth a trim afterwards
TRIM_PAUSE = 1.0  # s: at most one trim per this long


@cache
def _libc() -> Any | None:
    name = ctypes.util.find_library("c")
    if not name:
        return None
    try:
        libc = ctypes.CDLL(name)
        libc.mallopt  # noqa: B018 - glibc only
        libc.malloc_trim  # noqa: B018
    except (OSError, AttributeError):
        return None
    return libc


def tune_allocator() -> None:
    """At process start: fixed mmap and trim thresholds, few arenas."""
    libc = _libc()
    if libc is None:
        return
    for param, value in (
        (_M_MMAP_THRESHOLD, MMAP_THRESHOLD),
        (_M_TRIM_THRESHOLD, TRIM_THRESHOLD),
        (_M_ARENA_MAX, ARENAS),
    ):
        if libc.mallopt(param, value) != 1:
            log.debug("mallopt(%d, %d) refused", param, value)


def trim_now() -> None:
    """Return the free memory the heap holds to the system."""
    libc = _libc()
    if libc is not None:
        libc.malloc_trim(0)


class Trimmer:
    """``malloc_trim(0)`` once big work has been quiet for :data:`TRIM_PAUSE` seconds.

    A timer thread, so it also runs in a child blocked reading its next request; glibc
    locks its arenas, so trimming beside running code is safe.
    """

    def __init__(self, pause: float = TRIM_PAUSE) -> None:
        self._pause = pause
        self._timer: threading.Timer | None = None
        self._lock = threading.Lock()

    def note(self, size: int) -> None:
        """A request, message or answer of ``size`` bytes was handled or freed."""
        if size < BIG:
            return
        with self._lock:
            if self._timer is not None:
                self._timer.cancel()
            self._timer = threading.Timer(self._pause, self._run)
            self._timer.daemon = True
            self._timer.start()

    def _run(self) -> None:
        with self._lock:
            self._timer = None
        trim_now()


TRIMMER = Trimmer()  # this process's
