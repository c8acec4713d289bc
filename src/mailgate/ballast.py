"""The reserve's ballast: a preallocated file beside the SQLite queue, given back to the
file system when the queue could otherwise not drain.

The free-space reserve ([server] min_free_space, space.py) keeps the relay's own accepts
from filling the disk. It cannot keep something else from taking the last byte (another
program, a log, the WAL of the drain itself), and then SQLite can commit nothing: not a
claim, not an attempt's result, not the purge that would free space. So while there is
room the relay holds ``<database>-reserve`` ([server] ballast_size bytes, allocated on disk),
and when a write that drains the queue (anything but new mail) finds the disk full and a
checkpoint does not make room, the writer deletes it and commits into the space it held
(store/sqlite_writer.py). New mail is refused until free space is back above the reserve
plus the ballast and :func:`keep` has made it again.

Both processes touch the file: the SQLite writer process deletes it, the relay's process
makes it. A new ballast is written under a temporary name and renamed into place, so the
file is either whole or absent. On PostgreSQL the database's disk is not ours: no ballast.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from mailgate.space import FreeSpace

log = logging.getLogger(__name__)

SUFFIX = "-reserve"  # beside the SQLite file, as its -wal and -shm are
# At least the WAL's size limit (store.engine.WAL_SIZE_LIMIT): pages a transaction added to
# the database wait in the WAL until a checkpoint copies them in, and on a full disk that
# copy needs as much room again in the database file; until it is made the WAL cannot
# start over and nothing commits.
MIN_SIZE = 16 * 1024**2
MAX_SIZE = 64 * 1024**2
CHECK_INTERVAL = 1.0  # s between looks whether a released ballast can be made again
_ZEROS = 1024 * 1024  # bytes per write where the file system cannot preallocate


def default_size(reserve: int) -> int:
    """A quarter of the reserve, at least MIN_SIZE and at most MAX_SIZE."""
    return min(MAX_SIZE, max(MIN_SIZE, reserve // 4))


def ballast_path(database: str | os.PathLike[str]) -> Path:
    """The ballast of the SQLite file ``database``."""
    db = Path(database)
    return db.with_name(db.name + SUFFIX)


class Ballast:
    def __init__(self, path: Path, size: int) -> None:
        self.path = path
        self.size = size

    def held(self) -> int:
        """Bytes the ballast holds now (0 once released)."""
        try:
            return self.path.stat().st_size
        except OSError:
            return 0

    def missing(self) -> int:
        """Bytes to allocate to make the ballast whole."""
        return max(0, self.size - self.held())

    def make(self) -> bool:
        """Allocate the ballast on disk (no-op if whole). False if the disk has no room."""
        if not self.missing():
            return True
        tmp = self.path.with_name(self.path.name + ".tmp")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            try:
                _allocate(fd, self.size)
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, self.path)
            _fsync_dir(self.path.parent)
        except OSError as exc:
            with contextlib.suppress(OSError):
                tmp.unlink()
            if exc.errno not in (errno.ENOSPC, errno.EDQUOT):
                log.warning("cannot make the reserve ballast %s: %s", self.path, exc)
            return False
        log.info("reserve ballast of %d bytes made at %s", self.size, self.path)
        return True

    def release(self) -> int:
        """Give the ballast back to the file system; the bytes it held (0: none)."""
        held = self.held()
        try:
            self.path.unlink()
        except FileNotFoundError:
            return 0
        log.warning(
            "disk full: released the reserve ballast %s (%d bytes) so that claims, results "
            "and retention can commit; it is made again once free space is back above "
            "[server] min_free_space + ballast_size",
            self.path,
            held,
        )
        return held


def _allocate(fd: int, size: int) -> None:
    """Blocks on disk for ``size`` bytes: posix_fallocate, else written zeros (a sparse
    file would hold nothing)."""
    try:
        os.posix_fallocate(fd, 0, size)
        return
    except OSError as exc:
        if exc.errno not in (errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS):
            raise
    zeros = bytes(_ZEROS)
    left = size
    while left > 0:
        left -= os.write(fd, zeros[: min(left, _ZEROS)])


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


async def keep(ballast: Ballast, space: FreeSpace) -> None:
    """Until cancelled: make the ballast again once it is missing and free space is above
    the reserve plus what it takes. ``space`` counts a missing ballast as taken already
    (FreeSpace.free), so making it does not stop accepting, and accepting resumes when it
    is made (the writer refuses new mail until then, sqlite_writer.py)."""
    waiting = False  # logged that there is no room for it yet
    while True:
        missing = ballast.missing()
        # A fresh look, not the accept check's figure of up to a second ago: the writer
        # may have just released the ballast into a full disk.
        with contextlib.suppress(OSError):  # cannot look: try again later
            if missing and space.room() >= space.reserve + missing:
                waiting = not await asyncio.to_thread(ballast.make)
            elif missing and not waiting:
                waiting = True
                log.warning(
                    "no room yet for the reserve ballast %s (%d bytes): new mail is refused "
                    "until free space is above [server] min_free_space + ballast_size",
                    ballast.path,
                    missing,
                )
        await asyncio.sleep(CHECK_INTERVAL)
