"""Retention's SQL: empty old bodies, delete old records, give freed pages back, and the
figures of ``mailgate db stats``.

The purges run in the writer (``store.writer.run``), a small batch per call, so that
accepts committing in between wait for one short transaction at most. "Finished at" is
when a message's last delivery reached a final state: its status is final (store/
statements.py derives it from the deliveries) and no delivery changed since.
"""

from __future__ import annotations

import asyncio
import sqlite3
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, delete, exists, func, or_, select, text, update
from sqlalchemy.exc import SQLAlchemyError

from mailgate.exceptions import StoreUnavailable
from mailgate.models import DeliveryStatus
from mailgate.store.schema import (
    deliveries,
    jobs,
    message_bodies,
    messages,
    metadata,
    webhook_deliveries,
)
from mailgate.store.wal import checkpoint
from mailgate.store.webhook_outbox import first_id_since
from mailgate.store.write_errors import brief

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine

    from mailgate.store.store import Store

m = messages
d = deliveries
w = webhook_deliveries

FINAL = tuple(s.value for s in DeliveryStatus if s.is_final)

# The column that dates each table's rows, for "oldest row" (tables without one: none).
DATED = {
    "messages": "created_at",
    "message_tags": "created_at",
    "deliveries": "updated_at",
    "events": "at",
    "jobs": "created_at",
    "job_events": "at",
    "webhook_deliveries": "created_at",
    "webhook_endpoints": "created_at",
    "idempotency": "created_at",
    "suppressions": "created_at",
    "unsubscribes": "created_at",
    "api_keys": "created_at",
    "templates": "created_at",
}


def _finished_before(before: float) -> Any:
    """Messages whose deliveries are all final and unchanged since ``before``. The walk is
    along created_at, oldest first: the status test is an expression, which no index
    serves (left to itself SQLite walks ix_messages_status, every finished message, and
    sorts them)."""
    return (
        m.c.created_at < before,
        m.c.status.concat("").in_(FINAL),
        ~exists().where(
            d.c.message_id == m.c.id,
            or_(d.c.updated_at >= before, d.c.next_attempt_at.is_not(None)),
        ),
    )


def purge_bodies(conn: Connection, before: float, now: float, limit: int) -> int:
    """Empty the body (and DKIM signature) of up to ``limit`` messages finished before
    ``before``, oldest first, marking them ``purged_at``; the rows stay (a big body's row
    in message_bodies goes). How many."""
    ids = [
        r[0]
        for r in conn.execute(
            select(m.c.id)
            .where(m.c.purged_at.is_(None), *_finished_before(before))
            .order_by(m.c.created_at)
            .limit(limit)
        )
    ]
    if not ids:
        return 0
    # purged_at IS NULL again, and the rows counted: another node's retention may have
    # taken the same ids meanwhile (PostgreSQL reads them before either commits).
    emptied = conn.execute(
        update(m)
        .where(m.c.id.in_(ids), m.c.purged_at.is_(None))
        .values(raw=b"", dkim=None, purged_at=now)
    ).rowcount
    conn.execute(delete(message_bodies).where(message_bodies.c.message_id.in_(ids)))
    return int(emptied)


def purge_messages(conn: Connection, before: float, limit: int) -> int:
    """Delete up to ``limit`` messages finished before ``before`` with their deliveries
    and events (ON DELETE CASCADE). How many messages (deleted here: another node's
    retention may have taken some of the same)."""
    ids = [
        r[0]
        for r in conn.execute(
            select(m.c.id).where(*_finished_before(before)).order_by(m.c.created_at).limit(limit)
        )
    ]
    return int(conn.execute(delete(m).where(m.c.id.in_(ids))).rowcount) if ids else 0


def purge_webhook_deliveries(conn: Connection, before: float, limit: int) -> int:
    """Delete up to ``limit`` webhook deliveries made before ``before`` that are final
    (sent or given up: no next attempt), oldest first, along the primary key (no index on
    created_at: webhook_outbox.first_id_since)."""
    ids = [
        r[0]
        for r in conn.execute(
            select(w.c.id)
            .where(
                w.c.id < first_id_since(conn, before),
                w.c.created_at < before,
                w.c.next_attempt_at.is_(None),
            )
            .order_by(w.c.id)
            .limit(limit)
        )
    ]
    return int(conn.execute(delete(w).where(w.c.id.in_(ids))).rowcount) if ids else 0


def purge_jobs(conn: Connection, before: float, limit: int) -> int:
    """Delete up to ``limit`` jobs made before ``before`` none of whose deliveries is left
    (their messages purged already), with their job events (ON DELETE CASCADE)."""
    ids = [
        r[0]
        for r in conn.execute(
            select(jobs.c.id)
            .where(jobs.c.created_at < before, ~exists().where(d.c.job_id == jobs.c.id))
            .order_by(jobs.c.created_at)
            .limit(limit)
        )
    ]
    return int(conn.execute(delete(jobs).where(jobs.c.id.in_(ids))).rowcount) if ids else 0


def vacuum_step(conn: Connection, pages: int) -> int:
    """SQLite: return up to ``pages`` free pages to the file system (auto_vacuum
    INCREMENTAL, revision 0004); how many. PostgreSQL's autovacuum reuses them itself: 0."""
    if conn.dialect.name != "sqlite":
        return 0
    before = int(conn.exec_driver_sql("PRAGMA freelist_count").scalar_one())
    if before == 0:
        return 0
    # pysqlite steps a statement that returns no rows once, and each step of this pragma
    # frees one page: so one page per statement (about 7 microseconds each here).
    for _ in range(min(pages, before)):
        conn.exec_driver_sql("PRAGMA incremental_vacuum(1)")
    after = int(conn.exec_driver_sql("PRAGMA freelist_count").scalar_one())
    return before - after


@dataclass(frozen=True, slots=True)
class TableStats:
    name: str
    rows: int
    oldest: float | None  # the oldest row's time (Unix seconds), None if empty or undated


@dataclass(frozen=True, slots=True)
class DbStats:
    dialect: str
    size: int  # bytes: the SQLite file (WAL not included) or the PostgreSQL database
    free: int  # bytes inside it free for reuse (SQLite's free pages; PostgreSQL: not known)
    tables: tuple[TableStats, ...]


def db_stats(conn: Connection) -> DbStats:
    """Size, rows per table and each table's oldest row. Counts every row: on a large
    queue this takes a while (seconds per ten million rows), which the command accepts."""
    if conn.dialect.name == "sqlite":
        page = int(conn.exec_driver_sql("PRAGMA page_size").scalar_one())
        size = int(conn.exec_driver_sql("PRAGMA page_count").scalar_one()) * page
        free = int(conn.exec_driver_sql("PRAGMA freelist_count").scalar_one()) * page
    else:
        size = int(conn.execute(text("SELECT pg_database_size(current_database())")).scalar_one())
        free = 0
    tables = []
    for name, table in sorted(metadata.tables.items()):
        rows = int(conn.execute(select(func.count()).select_from(table)).scalar_one())
        column = DATED.get(name)
        oldest = None
        if column is not None and rows:
            oldest = conn.execute(select(func.min(table.c[column]))).scalar_one()
        tables.append(TableStats(name, rows, oldest))
    return DbStats(conn.dialect.name, size, free, tuple(tables))


async def read_stats(engine: AsyncEngine) -> DbStats:
    """db_stats on a connection of ``engine`` (StoreUnavailable if it cannot be read)."""
    try:
        async with engine.connect() as conn:
            found: DbStats = await conn.run_sync(db_stats)
            return found
    except (SQLAlchemyError, OSError) as exc:
        raise StoreUnavailable(brief(exc)) from exc


class RetentionStore:
    """The purges as writer jobs, and the stats as a read. The purges are not flushed on
    their own (``durable=False``): one lost to a power cut is simply made again."""

    def __init__(self, store: Store) -> None:
        self._store = store

    async def purge_bodies(self, before: float, now: float, limit: int) -> int:
        done: int = await self._store.writer.run(purge_bodies, before, now, limit, durable=False)
        return done

    async def purge_messages(self, before: float, limit: int) -> int:
        done: int = await self._store.writer.run(purge_messages, before, limit, durable=False)
        return done

    async def purge_webhook_deliveries(self, before: float, limit: int) -> int:
        done: int = await self._store.writer.run(
            purge_webhook_deliveries, before, limit, durable=False
        )
        return done

    async def purge_jobs(self, before: float, limit: int) -> int:
        done: int = await self._store.writer.run(purge_jobs, before, limit, durable=False)
        return done

    async def vacuum_step(self, pages: int) -> int:
        done: int = await self._store.writer.run(vacuum_step, pages, durable=False)
        return done

    async def checkpoint(self) -> None:
        """SQLite: copy the WAL into the database and cut the WAL to nothing (wal.checkpoint,
        in a thread). Used below the free-space reserve, where the WAL would otherwise keep
        what the drain, a purge and its vacuum wrote while readers held it from restarting.
        Nothing on PostgreSQL."""
        url = self._store.engine.url
        if url.get_backend_name() != "sqlite" or not url.database:
            return
        try:
            await asyncio.to_thread(checkpoint, url.database, "TRUNCATE")
        except sqlite3.Error as exc:
            raise StoreUnavailable(f"checkpoint: {exc}") from exc

    async def stats(self) -> DbStats:
        return await read_stats(self._store.engine)
