"""The PostgreSQL queue's group-commit transactions, through asyncpg on the relay's event
loop (``run_sync``; a round trip per statement is the network's cost anyway).

A writer process of its own, as SQLite has, was tried: under bench-pg's pg-1 load a
transaction of ~27 jobs executed in 7 ms instead of 10.5, but one node accepted no more
(the two cores were the limit, not the writer), and three nodes delivered half as much,
their unniced writer processes taking the cores their delivery processes needed.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from sqlalchemy.exc import SQLAlchemyError

from mailgate.store.bulk import BulkForm
from mailgate.store.engine import write_connection
from mailgate.store.write_batch import Statements, Work, execute_batch
from mailgate.store.write_errors import CommitUnknown, lost_connection

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine


class PgTransactions:
    """One transaction per call of :meth:`run`, each on a connection of its own, so that
    the next can run while one waits for its flush (the writer keeps two in flight)."""

    def __init__(
        self, engine: AsyncEngine, statements: Statements, bulk: Mapping[str, BulkForm]
    ) -> None:
        self._engine = engine
        self._statements = statements
        self._bulk = bulk
        self._idle: list[AsyncConnection] = []  # connections not in a transaction

    async def run(self, works: Sequence[Work], flush: bool) -> list[Any]:
        """One transaction of ``works``; its commit waits for the flush only if ``flush``
        (writer.py: ``durable``)."""
        conn = await self._connection()
        try:
            trans = await conn.begin()
            if not flush:
                await conn.exec_driver_sql("SET LOCAL synchronous_commit TO OFF")
            results = await conn.run_sync(execute_batch, works, self._statements, self._bulk)
        except BaseException:
            await _discard(conn)  # rolled back by closing
            raise
        try:
            await trans.commit()
        except BaseException as exc:
            await _discard(conn)
            if lost_connection(exc):
                raise CommitUnknown(f"the database connection was lost at COMMIT: {exc}") from exc
            raise
        self._idle.append(conn)
        return results

    async def close(self) -> None:
        while self._idle:
            with contextlib.suppress(SQLAlchemyError):
                await self._idle.pop().close()

    async def _connection(self) -> AsyncConnection:
        while self._idle:
            conn = self._idle.pop()
            if not (conn.closed or conn.invalidated):
                return conn
            with contextlib.suppress(SQLAlchemyError):
                await conn.close()
        conn = await write_connection(self._engine)
        # Every statement of the writer finds its rows by a key or an index, but a queue
        # starts empty and PostgreSQL's statistics lag its growth (autoanalyze comes a
        # minute or more later): plans made meanwhile, and kept by asyncpg's prepared
        # statements, scanned deliveries for each claim and result (bench-pg pg-1: 2,380
        # scans reading 37 M rows in 20 s). A scan is still made where no index serves.
        await conn.exec_driver_sql("SET enable_seqscan = off")
        await conn.commit()  # the SET began a transaction; committed, it holds for the session
        return conn


async def _discard(conn: AsyncConnection) -> None:
    """Close ``conn`` for good: after a failure it may be broken."""
    with contextlib.suppress(Exception):
        await conn.close()
