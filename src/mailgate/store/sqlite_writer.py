"""The SQLite queue's group-commit transactions on one plain pysqlite connection.

They run in the relay's writer process (``writer_process.py``) under ``mailgate serve``,
or in a writer thread elsewhere (the CLI, tests of the store): the same code either way.
"""

from __future__ import annotations

import contextlib
import pickle
from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import Connection, Engine
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError

from mailgate.store.bulk import BulkForm
from mailgate.store.engine import create_sync_writer_engine
from mailgate.store.write_batch import Statements, Work, execute_batch
from mailgate.store.write_errors import store_error
from mailgate.worker_child import failure


class SqliteTransactions:
    """Group-commit transactions on one plain pysqlite connection, from one thread.

    Runs in the relay's writer process (``writer_process.py``) or in a writer thread.
    """

    def __init__(self, url: str, statements: Statements, bulk: Mapping[str, BulkForm]) -> None:
        self._engine: Engine = create_sync_writer_engine(make_url(url))
        self._statements = statements
        self._bulk = bulk
        self._conn: Connection | None = None
        self._flushing: bool | None = None  # the connection's synchronous setting

    def run(self, works: Sequence[Work], flush: bool) -> list[Any]:
        """One transaction of ``works``, flushed to disk at commit if ``flush``."""
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
