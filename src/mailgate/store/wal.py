"""SQLite's WAL checkpoint on a connection of its own (a checkpoint cannot run inside the
writer's transactions): used below the free-space reserve and on a full disk."""

from __future__ import annotations

import sqlite3


def checkpoint(path: str, mode: str = "TRUNCATE", *, timeout: float = 1.0) -> bool:
    """``PRAGMA wal_checkpoint(mode)`` on ``path``: copy the WAL into the database, and
    with RESTART or TRUNCATE wait (up to ``timeout`` s) for readers so that the next write
    starts the WAL over (TRUNCATE also cuts the file to nothing). True if it got that far,
    False if readers held it back; sqlite3.Error if it could not write (a full disk)."""
    conn = sqlite3.connect(path, timeout=timeout, isolation_level=None)
    try:
        busy, _log, _done = conn.execute(f"PRAGMA wal_checkpoint({mode})").fetchone()
    finally:
        conn.close()
    return not busy
