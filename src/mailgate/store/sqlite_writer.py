"""The SQLite queue's group-commit transactions on one plain pysqlite connection.

They run in the relay's writer process (``writer_process.py``) under ``mailgate serve``,
or in a writer thread elsewhere (the CLI, tests of the store): the same code either way.

A full disk must not wedge the queue. SQLite checkpoints only after a commit, so once the
WAL cannot grow nothing commits and nothing would ever checkpoint: a transaction that
drains the queue (any but new mail, write_batch.Work) and finds the disk full makes room
and runs again: first a checkpoint, which lets the next write start the WAL over in the
space its file already has; if that is not enough, the reserve's ballast is released
(ballast.py) and the checkpoint made again. New mail is refused instead (452, space.py),
and once the ballast is released every new message is, until the relay makes it again.
"""

from __future__ import annotations

import contextlib
import logging
import pickle
import sqlite3
from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import Connection, Engine
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError

from mailgate.ballast import Ballast, ballast_path
from mailgate.exceptions import InsufficientStorage
from mailgate.logs import Repeats
from mailgate.store.bulk import BulkForm
from mailgate.store.engine import create_sync_writer_engine
from mailgate.store.wal import checkpoint
from mailgate.store.write_batch import Statements, Work, execute_batch
from mailgate.store.write_errors import disk_full, store_error
from mailgate.worker_child import failure

log = logging.getLogger(__name__)


class SqliteTransactions:
    """Group-commit transactions on one plain pysqlite connection, from one thread.

    Runs in the relay's writer process (``writer_process.py``) or in a writer thread.
    """

    def __init__(self, url: str, statements: Statements, bulk: Mapping[str, BulkForm]) -> None:
        parsed = make_url(url)
        self._engine: Engine = create_sync_writer_engine(parsed)
        self._path = parsed.database if parsed.database != ":memory:" else None
        # Deleted, never made, here: the relay's process makes it (ballast.keep).
        self._ballast = Ballast(ballast_path(self._path), 0) if self._path else None
        self._checkpoint_failures = Repeats(log, logging.WARNING)
        self._released = False  # this writer released the ballast; not made again yet
        self._statements = statements
        self._bulk = bulk
        self._conn: Connection | None = None
        self._flushing: bool | None = None  # the connection's synchronous setting

    def run(self, works: Sequence[Work], flush: bool) -> list[Any]:
        """One transaction of ``works``, flushed to disk at commit if ``flush``; on a full
        disk, once more after making room if none of them is new mail (the module doc)."""
        new_mail = any(w.new_mail for w in works)
        if new_mail and self._released:
            self._refuse_new_mail()
        try:
            return self._run(works, flush)
        except Exception as exc:
            if new_mail or self._path is None or not disk_full(exc):
                raise
            full = exc
        if self._checkpoint():
            try:
                return self._run(works, flush)
            except Exception as exc:
                if not disk_full(exc):
                    raise
                full = exc
        if self._ballast is None or not self._ballast.release():
            raise full
        self._released = True
        self._checkpoint()
        return self._run(works, flush)

    def _refuse_new_mail(self) -> None:
        """Since the ballast was released, new mail is refused here until the relay has
        made it again: its free-space check looks once a second, and mail accepted in
        between would take the space the drain was given."""
        assert self._ballast is not None
        if self._ballast.held():
            self._released = False
            return
        raise InsufficientStorage("the reserve's ballast is released: new mail waits")

    def _checkpoint(self) -> bool:
        """A RESTART checkpoint (wal.checkpoint): True if the next write starts the WAL
        over, False if readers held it back past a second or the disk is too full for it
        (the database file grows when the WAL's pages are copied in past its end)."""
        assert self._path is not None
        try:
            done = checkpoint(self._path, "RESTART")
        except sqlite3.Error as exc:
            self._checkpoint_failures.log("checkpoint on a full disk failed: %s", exc)
            return False
        self._checkpoint_failures.ok()
        return done

    def _run(self, works: Sequence[Work], flush: bool) -> list[Any]:
        if self._conn is None or self._conn.closed or self._conn.invalidated:
            self._close_conn()
            self._conn = self._engine.connect()
        conn = self._conn
        try:
            if flush is not self._flushing:
                # Outside a transaction, straight on the driver: SQLAlchemy would begin one.
                dbapi = conn.connection.dbapi_connection
                assert dbapi is not None
                dbapi.execute(f"PRAGMA synchronous={'FULL' if flush else 'NORMAL'}")
                self._flushing = flush
            with conn.begin():
                results = execute_batch(conn, works, self._statements, self._bulk)
        except BaseException:
            self._close_conn()  # the next batch starts on a fresh connection
            raise
        # The connection is kept after big messages too: their bodies are written by blob
        # I/O (big_rows.py), never bound, so none stays in pysqlite's statement cache.
        return results

    def answer(self, request: tuple[Sequence[Work], bool]) -> tuple[bool, Any]:
        """:meth:`run` for a writer process: (True, results) or (False, the exception the
        callers get), never raising, so typed errors cross the pipe."""
        works, flush = request
        try:
            return True, self.run(works, flush)
        except Exception as exc:
            err = store_error(exc)
            err.__cause__ = None  # driver exceptions do not always pickle
            try:
                pickle.dumps(err)
            except Exception:
                err = RuntimeError(failure(exc))
            return False, err

    def close(self) -> None:
        self._close_conn()
        self._engine.dispose()

    def _close_conn(self) -> None:
        self._flushing = None
        if self._conn is not None:
            with contextlib.suppress(SQLAlchemyError):
                self._conn.close()
            self._conn = None
