"""Group commit: one writer task, one transaction for every write waiting at that moment.

Concurrent accepts share one fsync instead of paying one each, which is what lets a
durable queue keep up with the SMTP listener (DESIGN.md, "Fast because of design").
SQLite allows one writer at a time anyway; on PostgreSQL the same batching saves
round trips and commits.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from sqlalchemy.sql import Executable

from mailgate.exceptions import DuplicateEntry, StoreUnavailable
from mailgate.store.engine import write_connection

log = logging.getLogger(__name__)

T = TypeVar("T")
Op = tuple[Executable, list[dict[str, Any]]]
TxnFn = Callable[[AsyncConnection], Awaitable[Any]]


@dataclass(slots=True)
class _Job:
    ops: Sequence[Op] = ()
    fn: TxnFn | None = None
    future: asyncio.Future[Any] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )


class GroupCommitWriter:
    def __init__(self, engine: AsyncEngine, *, max_batch: int = 1000) -> None:
        self._engine = engine
        self._max_batch = max_batch
        self._queue: asyncio.Queue[_Job | None] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None
        self._conn: AsyncConnection | None = None
        self._stopping = False

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="mailgate-writer")

    async def stop(self) -> None:
        """Commit what is queued, then stop."""
        if self._task is None:
            return
        await self._queue.put(None)
        await self._task
        self._task = None
        if self._conn is not None:
            await self._conn.close()
            self._conn = None

    async def write(self, ops: Sequence[Op]) -> None:
        """Execute the statements in the next group commit; return once durable."""
        await self._submit(_Job(ops=ops))

    async def run(self, fn: Callable[[AsyncConnection], Awaitable[T]]) -> T:
        """Run fn inside the next group-commit transaction and return its result."""
        return await self._submit(_Job(fn=fn))

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
            results = await self._transaction(batch, grow=True)  # grows ``batch`` in place
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

    async def _connection(self) -> AsyncConnection:
        if self._conn is None or self._conn.closed or self._conn.invalidated:
            if self._conn is not None:
                with contextlib.suppress(SQLAlchemyError):
                    await self._conn.close()
            self._conn = await write_connection(self._engine)
        return self._conn

    async def _transaction(self, batch: list[_Job], *, grow: bool = False) -> list[Any]:
        """Run ``batch`` in one transaction; return each job's result.

        With ``grow``, the jobs that arrived while BEGIN was under way (a few event-loop
        turns under load) join ``batch`` first: they share this commit instead of waiting
        a whole commit for the next one. On failure the caller retries the grown batch.
        """
        conn = await self._connection()
        results: list[Any] = []
        try:
            async with conn.begin():
                if grow and not self._stopping:
                    self._take_waiting(batch)
                # Jobs with the same statements (e.g. all accepts) are merged into one
                # executemany per statement; each job's own statements stay in its order
                # (messages before their deliveries and events; a statement listed twice
                # in one job runs at its first position). Function jobs are barriers:
                # they see everything queued before them.
                groups: dict[tuple[Executable, ...], dict[Executable, list[dict[str, Any]]]] = {}
                for job in batch:
                    if job.fn is None:
                        shape = tuple(stmt for stmt, _ in job.ops)
                        merged = groups.setdefault(shape, {})
                        for stmt, params in job.ops:
                            merged.setdefault(stmt, []).extend(params)
                        results.append(None)
                    else:
                        await self._flush(conn, groups)
                        results.append(await job.fn(conn))
                await self._flush(conn, groups)
        except BaseException:
            # Start the next batch on a fresh connection: this one may be broken.
            self._conn = None
            try:
                await conn.close()
            except Exception:
                log.debug("closing a failed writer connection raised", exc_info=True)
            raise
        return results

    @staticmethod
    async def _flush(
        conn: AsyncConnection,
        groups: dict[tuple[Executable, ...], dict[Executable, list[dict[str, Any]]]],
    ) -> None:
        for merged in groups.values():
            for stmt, params in merged.items():
                if params:
                    await conn.execute(stmt, params)
        groups.clear()
