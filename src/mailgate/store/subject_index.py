"""SQLite's subject index, filled in bulk: accepted messages wait in
``messages_subject_pending`` (a trigger puts each one's rowid there) until
:class:`SubjectIndexer` moves their subjects into the FTS5 table, up to BATCH in one
statement. Revision 0009 says why; the search reads both (store/ui.py).

PostgreSQL's pg_trgm index is written by the insert itself and needs none of this.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from sqlalchemy import Connection, text

from mailgate.exceptions import InsufficientStorage, MailgateError, StoreUnavailable
from mailgate.store.schema import SQLITE_SUBJECT_FTS, SQLITE_SUBJECT_PENDING

if TYPE_CHECKING:
    from mailgate.store.store import Store

log = logging.getLogger(__name__)

# Subjects per statement: FTS5 writes a segment per statement, so in statements of 1,000
# a subject took 8.6 us of SQLite's time, in 17 (an accepts' commit) 19.8 us. A pass holds
# the accepts waiting for the writer about 10 ms, and the merges that FTS5 makes now and
# then (up to 20-25 ms either way) fall on a pass instead of on an accepts' commit.
BATCH = 1000
INTERVAL = 1.0  # s between passes while nothing more is pending

_LAST = (
    f"SELECT max(message_rowid), count(*) FROM (SELECT message_rowid"
    f" FROM {SQLITE_SUBJECT_PENDING} ORDER BY message_rowid LIMIT ?)"
)
# CROSS JOIN: SQLite's way to keep the pending rows the outer loop. With a plain JOIN the
# planner chose to walk messages up to the last pending rowid (every message still kept,
# read whole, on every pass) and look each one up among the pending.
_INDEX = (
    f"INSERT INTO {SQLITE_SUBJECT_FTS} (rowid, subject)"
    f" SELECT m.rowid, m.subject FROM {SQLITE_SUBJECT_PENDING} p"
    " CROSS JOIN messages m ON m.rowid = p.message_rowid WHERE p.message_rowid <= ?"
)
_ANY = f"SELECT 1 FROM {SQLITE_SUBJECT_PENDING} LIMIT 1"
_DONE = f"DELETE FROM {SQLITE_SUBJECT_PENDING} WHERE message_rowid <= ?"


def index_pending(conn: Connection, limit: int) -> int:
    """A writer transaction: index up to ``limit`` pending subjects, oldest first; how many.

    A pending row always has its message: the delete trigger takes both away together."""
    last, count = conn.exec_driver_sql(_LAST, (limit,)).one()
    if not count:
        return 0
    conn.exec_driver_sql(_INDEX, (last,))
    conn.exec_driver_sql(_DONE, (last,))
    return int(count)


class SubjectIndexer:
    """The relay's task that keeps the subject index up to date (SQLite only)."""

    def __init__(self, store: Store) -> None:
        self._store = store

    async def _pending(self) -> bool:
        """Whether a subject waits, read beside the writer: an idle relay's passes cost
        the writer nothing."""
        try:
            rows = await self._store._read(text(_ANY))
        except StoreUnavailable:
            return True  # the pass reports it
        return bool(rows)

    async def run(self) -> None:
        full = False
        while True:
            if not await self._pending():
                await asyncio.sleep(INTERVAL)
                continue
            try:
                # new_mail: on a full disk it waits rather than spend the reserve kept for
                # draining the queue (sqlite_writer.py). Not durable: a pass lost with the
                # power is undone whole (its pending rows are back) and made again.
                moved = await self._store.writer.run(
                    index_pending, BATCH, new_mail=True, durable=False
                )
                full = False
            except InsufficientStorage as exc:
                if not full:
                    log.warning("subject index paused, the disk is full: %s", exc)
                full, moved = True, 0
            except MailgateError as exc:
                log.warning("subject index pass failed: %s", exc)
                moved = 0
            await asyncio.sleep(0 if moved >= BATCH else INTERVAL)
