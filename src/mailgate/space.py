"""The free-space reserve ([server] min_free_space): Postfix's ``queue_minfree``.

Below the reserve new mail is refused (SMTP 452 4.3.1, HTTP 507), while everything that
lets the queue drain (claims, attempt results, bounces, webhooks, retention) goes on
writing into the reserve; once retention has given space back, accepting resumes by itself.
A full disk reported by the database (SQLITE_FULL, PostgreSQL's disk_full) counts as below
the reserve until the file system shows room again.

statvfs is cheap but not free, and accepts come thousands a second: the figure is read at
most once per ``interval``, and in between the bytes of the mail accepted since are taken
off it (``consumed``), so that a burst of large messages cannot run a second past the
reserve. On PostgreSQL the database's disk is not ours to see: the
check covers the local data_dir only (docs/operations.md).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from pathlib import Path

from sqlalchemy.engine import make_url

from mailgate.ballast import Ballast, ballast_path
from mailgate.config import Settings

log = logging.getLogger(__name__)


def watched_path(settings: Settings) -> Path:
    """The directory whose file system holds the queue: the SQLite file's, else data_dir."""
    url = make_url(settings.database_url)
    if url.get_backend_name() == "sqlite" and url.database and url.database != ":memory:":
        return Path(url.database).resolve().parent
    return Path(settings.server.data_dir).resolve()


def ballast_for(settings: Settings) -> Ballast | None:
    """The reserve's ballast beside the SQLite file (ballast.py); None on PostgreSQL or
    with [server] ballast_size = 0. One left from before that is too big is deleted (and
    made again at the size set)."""
    url = make_url(settings.database_url)
    if url.get_backend_name() != "sqlite" or not url.database or url.database == ":memory:":
        return None
    ballast = Ballast(ballast_path(Path(url.database).resolve()), settings.ballast_size)
    if ballast.held() > ballast.size:
        ballast.path.unlink()
    return ballast if ballast.size else None


class FreeSpace:
    def __init__(
        self,
        path: Path,
        reserve: int,
        *,
        interval: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
        statvfs: Callable[[Path], os.statvfs_result] = os.statvfs,
        ballast: Ballast | None = None,
    ) -> None:
        self.path = path
        self.reserve = reserve
        self._ballast = ballast
        self._interval = interval
        self._clock = clock
        self._statvfs = statvfs
        self._free = 0
        self._consumed = 0  # bytes accepted since the last statvfs
        self._checked_at: float | None = None
        self._full = False  # the database said it is full; cleared by a statvfs with room
        self._low = False

    def free(self) -> int:
        """Bytes available to the relay on the queue's file system (cached ``interval``),
        less what a released ballast is to take back: that space is the drain's, not new
        mail's, so below the reserve retention goes on emptying bodies until the ballast
        can be made again."""
        now = self._clock()
        if self._checked_at is None or now - self._checked_at >= self._interval:
            self._checked_at = now
            try:
                st = self._statvfs(self.path)
            except OSError as exc:
                # Cannot tell: do not refuse mail on a guess (the commit still fails safe).
                log.warning("cannot check free space of %s: %s", self.path, exc)
                self._free = self.reserve
            else:
                self._free = st.f_bavail * st.f_frsize
                if self._ballast is not None:
                    self._free -= self._ballast.missing()
            self._consumed = 0
            if self._free >= self.reserve:
                self._full = False
            self._report(self._free < self.reserve or self._full)
        return max(0, self._free - self._consumed)

    def room(self) -> int:
        """Bytes free on the file system now: statvfs, not cached, nothing taken off."""
        st = self._statvfs(self.path)
        return st.f_bavail * st.f_frsize

    def low(self) -> bool:
        """Whether new mail must be refused now."""
        return self.free() < self.reserve or self._full

    def consumed(self, nbytes: int) -> None:
        """``nbytes`` of mail were just committed: less free space until the next look."""
        self._consumed += nbytes

    def note_full(self) -> None:
        """The database reported a full disk: refuse until statvfs shows the reserve again."""
        self._full = True
        self._checked_at = self._clock()  # held at least until the next look
        self._report(True)

    def _report(self, low: bool) -> None:
        if low and not self._low:
            log.warning(
                "free space on %s below [server] min_free_space (%d < %d bytes): refusing "
                "new mail until the queue drains and retention frees space",
                self.path,
                self._free,
                self.reserve,
            )
        elif self._low and not low:
            log.info("free space on %s back above the reserve: accepting mail", self.path)
        self._low = low
