"""Big message bodies read where they are sent, straight from the queue's database.

A claim carries bodies up to :data:`INLINE_BODY` (statements.LOAD_MESSAGES); a bigger one
stays in the database and the delivery process reads it here, once, when it attempts the
message. It used to travel in the claim: from the SQLite writer process to the relay and
on to the delivery process, pickled, framed and buffered at each hop (a dozen copies of a
20 MB message at once).

- SQLite: incremental blob I/O (``blobopen``), read straight into the one ``bytes``
  object returned, with no whole-row buffer in SQLite; WAL lets it read beside the writer.
  The body is in ``message_bodies`` when the writer put it there (big_rows.py), else in
  ``messages.raw`` (bodies under 1 MB, and those stored before revision 0008).
- PostgreSQL: ``substring`` in chunks, so neither the server nor the driver holds a
  second whole copy in one protocol message.

Plain sqlite3 and asyncpg, no SQLAlchemy: the delivery process does not import the store.
"""

from __future__ import annotations

import asyncio
import sqlite3
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

INLINE_BODY = 256 * 1024  # bytes: bodies up to this size travel with the claim
CHUNK = 1024 * 1024  # PostgreSQL: bytes per substring read

_SQLITE_LOCATE = (
    "SELECT b.rowid, m.rowid FROM messages m"
    " LEFT JOIN message_bodies b ON b.message_id = m.id WHERE m.id = ?"
)
_PG_SIZE = "SELECT length(raw) FROM messages WHERE id = $1"
_PG_CHUNK = "SELECT substring(raw FROM $2 FOR $3) FROM messages WHERE id = $1"


class BodyGone(LookupError):
    """The message is no longer in the queue (purged or deleted since the claim)."""


class BodyReader:
    """Reads bodies of the queue at ``database_url`` (Settings.database_url)."""

    def __init__(self, database_url: str) -> None:
        self._url = database_url
        self._sqlite: sqlite3.Connection | None = None
        self._thread: ThreadPoolExecutor | None = None
        self._pg: Any = None  # asyncpg pool
        self._pg_lock = asyncio.Lock()

    async def read(self, message_id: str) -> bytes:
        """The stored body of ``message_id``; BodyGone if there is none."""
        if self._url.startswith("sqlite"):
            if self._thread is None:
                self._thread = ThreadPoolExecutor(1, thread_name_prefix="mailgate-bodies")
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(self._thread, self._read_sqlite, message_id)
        return await self._read_pg(message_id)

    def _read_sqlite(self, message_id: str) -> bytes:
        if self._sqlite is None:
            path = Path(self._url.split(":///", 1)[1]).resolve()
            self._sqlite = sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True, timeout=10)
        # fetchall, not fetchone: a statement left unfinished keeps its read transaction
        # open, and the WAL could not be checkpointed behind it (the disk filled up).
        rows = self._sqlite.execute(_SQLITE_LOCATE, (message_id,)).fetchall()
        row = rows[0] if rows else None
        if row is None:
            raise BodyGone(message_id)
        table, rowid = ("messages", row[1]) if row[0] is None else ("message_bodies", row[0])
        with self._sqlite.blobopen(table, "raw", rowid, readonly=True) as blob:
            return blob.read()

    async def _read_pg(self, message_id: str) -> bytes:
        async with self._pg_lock:
            if self._pg is None:
                import asyncpg

                dsn = "postgresql://" + self._url.split("://", 1)[1]
                self._pg = await asyncpg.create_pool(dsn, min_size=0, max_size=4)
        async with self._pg.acquire() as conn:
            size = await conn.fetchval(_PG_SIZE, message_id)
            if size is None:
                raise BodyGone(message_id)
            chunks = [
                await conn.fetchval(_PG_CHUNK, message_id, start + 1, CHUNK)
                for start in range(0, size, CHUNK)
            ]
        return b"".join(chunks)

    async def close(self) -> None:
        if self._thread is not None:
            if self._sqlite is not None:
                await asyncio.get_running_loop().run_in_executor(self._thread, self._sqlite.close)
            self._thread.shutdown(wait=True)
            self._thread = None
        if self._pg is not None:
            await self._pg.close()
            self._pg = None
