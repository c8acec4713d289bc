"""Engine creation for SQLite and PostgreSQL (migrations: mailgate.store.migrate)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import Engine, event
from sqlalchemy import create_engine as create_sync_engine
from sqlalchemy.engine import URL, make_url

if TYPE_CHECKING:
    # Imported where used: the queue's writer process has no use for asyncio engines,
    # which cost it 8 MB of memory.
    from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

WRITE_OPTION = "mailgate_write"
WAL_SIZE_LIMIT = 16 * 1024 * 1024


async def write_connection(engine: AsyncEngine) -> AsyncConnection:
    """A connection whose transactions begin as writers (BEGIN IMMEDIATE on SQLite)."""
    conn = await engine.connect()
    await conn.execution_options(**{WRITE_OPTION: True})
    return conn


def create_engine(url: str) -> AsyncEngine:
    """An async engine with the durability settings the queue relies on.

    SQLite: WAL with synchronous=FULL (an acknowledged message survives power loss),
    explicit ``BEGIN IMMEDIATE`` so a write transaction takes the lock up front instead of
    failing half-way, and a busy timeout for the CLI writing beside a running server.
    """
    from sqlalchemy.ext.asyncio import create_async_engine

    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_async_engine(url, pool_size=4, max_overflow=4, hide_parameters=True)
        _sqlite_settings(engine.sync_engine)
        return engine
    return create_async_engine(
        url, pool_size=8, max_overflow=8, pool_pre_ping=True, hide_parameters=True
    )


def create_sync_writer_engine(url: URL) -> Engine:
    """The SQLite group-commit writer's own engine: plain pysqlite, used from one thread.

    Same settings as the async engine (WAL, synchronous=FULL, BEGIN IMMEDIATE for
    writers), on its own connection to the same file. Every engine hides statement
    parameters from its errors' text: they hold message bodies.
    """
    engine = create_sync_engine(
        url.set(drivername="sqlite+pysqlite"),
        pool_size=1,
        max_overflow=0,
        connect_args={"check_same_thread": False},
        hide_parameters=True,
    )
    _sqlite_settings(engine)
    return engine.execution_options(**{WRITE_OPTION: True})


def _sqlite_settings(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection, _record) -> None:  # type: ignore[no-untyped-def]
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        # Takes effect only in a database with no table yet (revision 0004 converts older
        # ones): retention's freed pages are returned in steps (store/retention.py).
        cursor.execute("PRAGMA auto_vacuum=INCREMENTAL")
        cursor.execute("PRAGMA journal_mode=WAL")
        # A WAL grown past this (a long reader held checkpoints back) is cut back to it
        # after the next checkpoint: the space goes back to the file system.
        cursor.execute(f"PRAGMA journal_size_limit={WAL_SIZE_LIMIT}")
        cursor.execute("PRAGMA synchronous=FULL")
        cursor.execute("PRAGMA busy_timeout=10000")
        cursor.execute("PRAGMA foreign_keys=ON")
        # Statement journals (a multi-row INSERT's undo) in memory: on disk they cost the
        # writer about 50 small writes per group commit, for nothing a crash could use.
        cursor.execute("PRAGMA temp_store=MEMORY")
        # Debian's SQLite (and others) default to secure_delete=ON: every page freed is
        # written again as zeros, so emptying a body wrote its whole size into the WAL
        # (62 MB for 62 purged 1 MB bodies, against 0.4 MB), and on a full disk the purge
        # meant to make room could never commit. FAST zeroes deleted content only where
        # the page is written anyway.
        cursor.execute("PRAGMA secure_delete=FAST")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn) -> None:  # type: ignore[no-untyped-def]
        # Writers take the lock up front; readers must not (WAL lets them run freely).
        write = conn.get_execution_options().get(WRITE_OPTION, False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")
