"""Group commit: one writer, one transaction for every write waiting at that moment.

Concurrent accepts share one fsync instead of paying one each, which is what lets a
durable queue keep up with the SMTP listener (DESIGN.md, "Fast because of design").
SQLite allows one writer at a time anyway; on PostgreSQL the same batching saves
round trips and commits.

On SQLite the whole transaction runs in one dedicated thread on a plain pysqlite
connection: the event loop hands over a batch and gets the results back, one hop each
way. Through aiosqlite every statement, BEGIN and COMMIT would be a hop of its own, and
each hop waits for the event loop; with deliveries running that made a commit several
times slower and accepts waited behind it. On PostgreSQL the same synchronous batch runs
through asyncpg with ``run_sync``, where a round trip per statement is the network's
cost anyway.

Jobs are durable by default: their commit is flushed to disk (fsync) before they return.
The delivery loop's own bookkeeping (claims, attempt results) passes ``durable=False``;
a transaction made only of such jobs commits without the flush (SQLite
``synchronous=NORMAL``, PostgreSQL ``synchronous_commit = off``). A process crash loses
nothing either way; a power cut can lose the last of them, which at worst repeats a
delivery, and the next durable commit flushes them too. This halves the flushes while the
relay delivers, and accepted mail keeps its fsync before the 250.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeVar

from sqlalchemy import Connection, Engine
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from sqlalchemy.sql import Executable

from mailgate.exceptions import DuplicateEntry, StoreUnavailable
from mailgate.store.bulk import BulkForm
from mailgate.store.engine import create_sync_writer_engine, write_connection

log = logging.getLogger(__name__)

T = TypeVar("T")
Op = tuple[Executable, list[dict[str, Any]]]
# A function job: runs inside the group transaction on a synchronous connection.
TxnFn = Callable[[Connection], Any]
_Groups = dict[tuple[Executable, ...], dict[Executable, list[dict[str, Any]]]]


@dataclass(slots=True)
class _Job:
    ops: Sequence[Op] = ()
    fn: TxnFn | None = None
    durable: bool = True
    future: asyncio.Future[Any] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )


def execute_batch(
    conn: Connection, batch: Sequence[_Job], bulk: Mapping[Executable, BulkForm] | None = None
) -> list[Any]:
    """Run the jobs of one transaction on ``conn``; return each job's result.

    Jobs with the same statements (e.g. all accepts) are merged into one executemany per
    statement; each job's own statements stay in its order (messages before their
    deliveries and events; a statement listed twice in one job runs at its first
    position). Function jobs are barriers: they see everything queued before them.
    A statement with a form in ``bulk`` runs its rows through that form (see bulk.py).
    """
    results: list[Any] = []
    groups: _Groups = {}
    for job in batch:
        if job.fn is None:
            shape = tuple(stmt for stmt, _ in job.ops)
            merged = groups.setdefault(shape, {})
            for stmt, params in job.ops:
                merged.setdefault(stmt, []).extend(params)
            results.append(None)
        else:
            _flush(conn, groups, bulk)
            results.append(job.fn(conn))
    _flush(conn, groups, bulk)
    return results


def _flush(conn: Connection, groups: _Groups, bulk: Mapping[Executable, BulkForm] | None) -> None:
    for merged in groups.values():
        for stmt, params in merged.items():
            form = bulk.get(stmt) if bulk and len(params) > 1 else None
            if form is not None:
                form(conn, params)
            elif params:
                conn.execute(stmt, params)
    groups.clear()


class GroupCommitWriter:
    def __init__(
        self,
        engine: AsyncEngine,
        *,
        max_batch: int = 1000,
        bulk: Mapping[Executable, BulkForm] | None = None,
    ) -> None:
        """``bulk``: one-step forms of many-row statements, used on SQLite (bulk.py)."""
        self._engine = engine
        self._bulk = bulk or {}
        self._max_batch = max_batch
        self._queue: asyncio.Queue[_Job | None] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        # SQLite: a thread of its own with a synchronous connection (see the module doc).
        self._sync_engine: Engine | None = None
        self._sync_conn: Connection | None = None  # used only in the writer thread
        self._thread: ThreadPoolExecutor | None = None
        self._aconn: AsyncConnection | None = None  # PostgreSQL
        self._flushing: bool | None = None  # the SQLite connection's synchronous setting

    def start(self) -> None:
        if self._engine.dialect.name == "sqlite":
            self._sync_engine = create_sync_writer_engine(self._engine.url)
            self._thread = ThreadPoolExecutor(1, thread_name_prefix="mailgate-writer")
        self._task = asyncio.create_task(self._run(), name="mailgate-writer")

    async def stop(self) -> None:
        """Commit what is queued, then stop."""
        if self._task is None:
            return
        await self._queue.put(None)
        await self._task
        self._task = None
        if self._thread is not None:
            await asyncio.get_running_loop().run_in_executor(self._thread, self._shutdown_sync)
            self._thread.shutdown(wait=True)
            self._thread = None
        if self._aconn is not None:
            await self._aconn.close()
            self._aconn = None

    async def write(self, ops: Sequence[Op], *, durable: bool = True) -> None:
        """Execute the statements in the next group commit; return once committed (and
        flushed to disk unless ``durable`` is False; see the module doc)."""
        await self._submit(_Job(ops=ops, durable=durable))

    async def run(self, fn: Callable[[Connection], T], *, durable: bool = True) -> T:
        """Run fn inside the next group-commit transaction and return its result.

        ``fn`` is synchronous and runs in the writer (its own thread on SQLite): it must
        only use the connection it is given.
        """
        return await self._submit(_Job(fn=fn, durable=durable))  # type: ignore[no-any-return]

    async def _submit(self, job: _Job) -> Any:
        if self._task is None or self._task.done():
            raise StoreUnavailable("writer is not running")
        self._queue.put_nowait(job)
        return await job.future

    async def _run(self) -> None:
        self._stopping = False
        while not self._stopping:
            job = await self._queue.get()
            if job is None:
                break
            batch = [job]
            self._take_waiting(batch)
            await self._commit_batch(batch)

    def _take_waiting(self, batch: list[_Job]) -> None:
        """Move the jobs waiting in the queue into ``batch`` (up to max_batch)."""
        while len(batch) < self._max_batch and not self._queue.empty():
            nxt = self._queue.get_nowait()
            if nxt is None:
                self._stopping = True
                break
            batch.append(nxt)

    async def _commit_batch(self, batch: list[_Job]) -> None:
        try:
            results = await self._transaction(batch)
        except Exception as exc:
            if len(batch) == 1:
                self._fail(batch[0], exc)
                return
            # One bad job must not fail the others: retry each alone.
            log.warning("group commit of %d jobs failed (%s); retrying one by one", len(batch), exc)
            for job in batch:
                try:
                    (result,) = await self._transaction([job])
                except Exception as single_exc:
                    self._fail(job, single_exc)
                else:
                    if not job.future.done():
                        job.future.set_result(result)
            return
        for job, result in zip(batch, results, strict=True):
            if not job.future.done():
                job.future.set_result(result)

    @staticmethod
    def _fail(job: _Job, exc: Exception) -> None:
        if job.future.done():
            return
        if isinstance(exc, IntegrityError):
            dup = DuplicateEntry(str(exc.orig))
            dup.__cause__ = exc
            job.future.set_exception(dup)
        elif isinstance(exc, SQLAlchemyError | OSError):
            log.error("store write failed: %s", exc)
            err: Exception = StoreUnavailable(str(exc))
            err.__cause__ = exc
            job.future.set_exception(err)
        else:
            job.future.set_exception(exc)

    async def _transaction(self, batch: list[_Job]) -> list[Any]:
        """Run ``batch`` in one transaction; return each job's result."""
        if self._thread is not None:
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(self._thread, self._sync_transaction, batch)
        conn = await self._async_connection()
        try:
            async with conn.begin():
                if not any(job.durable for job in batch):
                    await conn.exec_driver_sql("SET LOCAL synchronous_commit TO OFF")
                return await conn.run_sync(execute_batch, batch)
        except BaseException:
            # Start the next batch on a fresh connection: this one may be broken.
            self._aconn = None
            with contextlib.suppress(Exception):
                await conn.close()
            raise

    # ------------------------------------------------------------- writer thread

    def _sync_transaction(self, batch: list[_Job]) -> list[Any]:
        if self._sync_conn is None or self._sync_conn.closed or self._sync_conn.invalidated:
            self._close_sync()
            assert self._sync_engine is not None
            self._sync_conn = self._sync_engine.connect()
        conn = self._sync_conn
        flush = any(job.durable for job in batch)
        try:
            if flush is not self._flushing:
                # Outside a transaction, straight on the driver: SQLAlchemy would begin one.
                dbapi = conn.connection.dbapi_connection
                assert dbapi is not None
                dbapi.execute(f"PRAGMA synchronous={'FULL' if flush else 'NORMAL'}")
                self._flushing = flush
            with conn.begin():
                return execute_batch(conn, batch, self._bulk)
        except BaseException:
            self._close_sync()  # the next batch starts on a fresh connection
            raise

    def _shutdown_sync(self) -> None:
        self._close_sync()
        if self._sync_engine is not None:
            self._sync_engine.dispose()

    def _close_sync(self) -> None:
        self._flushing = None
        if self._sync_conn is not None:
            with contextlib.suppress(SQLAlchemyError):
                self._sync_conn.close()
            self._sync_conn = None

    # ---------------------------------------------------------------- PostgreSQL

    async def _async_connection(self) -> AsyncConnection:
        if self._aconn is None or self._aconn.closed or self._aconn.invalidated:
            if self._aconn is not None:
                with contextlib.suppress(SQLAlchemyError):
                    await self._aconn.close()
            self._aconn = await write_connection(self._engine)
        return self._aconn
