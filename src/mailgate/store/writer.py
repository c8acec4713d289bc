"""Group commit: one writer, one transaction for every write waiting at that moment.

Concurrent accepts share one fsync instead of paying one each, which is what lets a
durable queue keep up with the SMTP listener (DESIGN.md, "Fast because of design").
SQLite allows one writer at a time anyway; on PostgreSQL the same batching saves
round trips and commits.

What a job writes travels as data, not as code bound to this process: statements by name
(the store's registry, ``mailgate.store.statements.write_statements``) with their rows, or a
module-level function with its arguments. So the same transaction can run in three
places:

- SQLite, ``mailgate serve``: in a writer process of its own (``writer_process.py``).
  pysqlite gives the GIL up and takes it back around every step, and in a thread of the
  relay's process each of those waited for the busy event loop (and the loop for it), so
  commits and therefore accepts slowed down exactly while the relay delivered.
- SQLite elsewhere (the CLI, tests of the store): in a thread, with the same code.
- PostgreSQL: through asyncpg with ``run_sync`` (pg_writer.py says why not in a process).

Jobs are durable by default: their commit is flushed to disk (fsync) before they return.
The delivery loop's own bookkeeping (claims, attempt results) passes ``durable=False``;
a transaction made only of such jobs commits without the flush (SQLite
``synchronous=NORMAL``, PostgreSQL ``synchronous_commit = off``). A process crash loses
nothing either way; a power cut can lose the last of them, which at worst repeats a
delivery, and the next durable commit flushes them too. This halves the flushes while the
relay delivers, and accepted mail keeps its fsync before the 250.

Here: the loop that gathers jobs into transactions and hands them on. What a job is and
how a transaction runs are in write_batch.py, SQLite's transactions in sqlite_writer.py,
the exceptions callers get in write_errors.py.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Coroutine, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from mailgate.exceptions import StoreUnavailable
from mailgate.logs import Repeats
from mailgate.store import writer_process
from mailgate.store.bulk import BulkForm
from mailgate.store.pg_writer import PgTransactions
from mailgate.store.sqlite_writer import SqliteTransactions
from mailgate.store.write_batch import Op, Statements, TxnFn, Work, bodies_beside
from mailgate.store.write_errors import CommitUnknown, store_error
from mailgate.workers import WorkerPool, WorkerUnavailable

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine

log = logging.getLogger(__name__)

# Transactions under way at once: handed to SQLite's writer process before the first of
# them has committed, or on PostgreSQL each on its own connection (pg_writer.py).
IN_FLIGHT = 2


@dataclass(slots=True)
class _Job:
    work: Work
    durable: bool = True
    future: asyncio.Future[Any] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )


class WriterLost(CommitUnknown):
    """The writer process died with the transaction handed to it: it may or may not have
    committed (the transaction it was making, or the next one, already in its pipe)."""


class GroupCommitWriter:
    def __init__(
        self,
        engine: AsyncEngine,
        statements: Statements,
        *,
        bulk: Mapping[str, BulkForm] | None = None,
        max_batch: int = 1000,
    ) -> None:
        """``statements``: the registry ops name; ``bulk``: one-step forms of many-row
        statements (bulk.py for SQLite, pg_bulk.py for PostgreSQL)."""
        self._engine = engine
        self._statements = statements
        self._bulk = bulk or {}
        self._max_batch = max_batch
        self._queue: asyncio.Queue[_Job | None] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        # A writer process is handed its batches from callbacks, not from _run (_dispatch).
        self._waiting: deque[_Job] = deque()
        self._in_flight = 0
        self._dispatch_soon = False
        self._retries: set[asyncio.Task[None]] = set()
        self._settled = asyncio.Event()  # a batch was answered (stop() waits for the last)
        self._stop_asked = asyncio.Event()
        # While the database is away or its disk full, every job fails the same way.
        self._failures = Repeats(log, logging.ERROR)
        # SQLite: a writer process, or a thread with the same transactions.
        self._process: WorkerPool | None = None
        self._sqlite: SqliteTransactions | None = None  # used only in the writer thread
        self._thread: ThreadPoolExecutor | None = None
        self._pg: PgTransactions | None = None

    async def start(self, *, process: bool = False) -> None:
        """Start writing; on SQLite in a writer process if ``process`` (see the module doc).

        Raises WorkerUnavailable if the writer process does not start.
        """
        if self._engine.dialect.name == "sqlite":
            url = self._engine.url.render_as_string(hide_password=False)
            if process:
                self._process = writer_process.WriterProcess(url)
                await self._process.start()
            else:
                self._thread = ThreadPoolExecutor(1, thread_name_prefix="mailgate-writer")
                self._sqlite = SqliteTransactions(url, self._statements, self._bulk)
        else:
            self._pg = PgTransactions(self._engine, self._statements, self._bulk)
        self._task = asyncio.create_task(self._run(), name="mailgate-writer")

    @property
    def pid(self) -> int | None:
        """The writer process's pid, if it runs in one."""
        pids = self._process.pids() if self._process is not None else []
        return pids[0] if pids else None

    async def stop(self) -> None:
        """Commit what is queued, then stop."""
        if self._task is None:
            return
        if self._process is not None:
            self._stop_asked.set()
        else:
            await self._queue.put(None)
        await self._task
        self._task = None
        if self._process is not None:
            await self._process.close()
            self._process = None
        if self._thread is not None:
            sqlite = self._sqlite
            assert sqlite is not None
            await asyncio.get_running_loop().run_in_executor(self._thread, sqlite.close)
            self._thread.shutdown(wait=True)
            self._thread = None
        if self._pg is not None:
            await self._pg.close()
            self._pg = None

    async def write(
        self, ops: Sequence[Op], *, durable: bool = True, new_mail: bool = False
    ) -> None:
        """Execute the statements in the next group commit; return once committed (and
        flushed to disk unless ``durable`` is False; see the module doc). ``new_mail``: an
        accept, which a full disk refuses (write_batch.Work)."""
        await self._submit(_Job(Work(ops=ops, new_mail=new_mail), durable))

    async def run(self, fn: TxnFn, *args: Any, durable: bool = True, new_mail: bool = False) -> Any:
        """Run ``fn(conn, *args)`` inside the next group-commit transaction; its result.

        ``fn`` is synchronous, module-level, and must only use the connection it is given:
        it may run in another thread or process.
        """
        return await self._submit(_Job(Work(fn=fn, args=args, new_mail=new_mail), durable))

    async def _submit(self, job: _Job) -> Any:
        if self._task is None or self._task.done():
            raise StoreUnavailable("writer is not running")
        if self._process is not None:
            self._waiting.append(job)
            if not self._dispatch_soon:  # the jobs of this loop iteration go together
                self._dispatch_soon = True
                asyncio.get_running_loop().call_soon(self._dispatch)
        else:
            self._queue.put_nowait(job)
        return await job.future

    # ------------------------------------------------------------- the writer process
    #
    # Each batch goes to the writer process as soon as one of IN_FLIGHT is free, and its
    # answer settles its jobs and sends the next batch from the callback that reads it.
    # A task per batch (below, for the thread and PostgreSQL) woke a loop iteration after
    # the answer came, and the next batch went a loop iteration after that: under load an
    # iteration of the relay's loop is a millisecond or more, and every accept waited.

    def _dispatch(self) -> None:
        self._dispatch_soon = False
        while self._waiting and self._in_flight < IN_FLIGHT:
            batch = [self._waiting.popleft()]
            while self._waiting and len(batch) < self._max_batch:
                batch.append(self._waiting.popleft())
            self._hand_over(batch)

    def _hand_over(self, batch: list[_Job]) -> None:
        assert self._process is not None
        self._in_flight += 1
        try:
            self._process.submit(
                _process_request(batch), lambda ok, answer: self._answered(batch, ok, answer)
            )
        except WorkerUnavailable:
            # No writer process right now (one is starting again): a task waits for it.
            self._retry(self._commit_batch(batch), settles=True)
        except Exception as exc:  # it did not pickle (nothing was written): as an SQL error
            self._answered(batch, False, exc)

    def _answered(self, batch: list[_Job], ok: bool, answer: Any) -> None:
        """``batch``'s answer, as _commit_batch settles it."""
        try:
            self._settle(batch, ok, answer)
        except Exception as exc:  # a bug: no job may wait for ever
            log.exception("settling a group commit failed")
            for job in batch:
                self._fail(job, exc)
        finally:
            self._in_flight -= 1
            self._settled.set()
        if self._waiting:
            self._dispatch()  # at once, not an iteration later

    def _settle(self, batch: list[_Job], ok: bool, answer: Any) -> None:
        """``ok``: ``answer`` is SqliteTransactions.answer's (committed, results or error);
        else the exception of WorkerPool.submit's callback."""
        if ok and answer[0]:
            self._succeed(batch, answer[1])
            return
        if ok:
            exc = answer[1]  # the transaction failed
        elif isinstance(answer, WorkerUnavailable):
            exc = _lost(answer)
        else:
            exc = answer
        if not self._fail_all(batch, exc):
            self._retry(self._one_by_one(batch, exc))

    def _retry(self, work: Coroutine[Any, Any, None], *, settles: bool = False) -> None:
        async def run() -> None:
            try:
                await work
            finally:
                if settles:
                    self._in_flight -= 1
                    if self._waiting:
                        self._dispatch()
                self._settled.set()

        task = asyncio.create_task(run())
        self._retries.add(task)
        task.add_done_callback(self._retries.discard)

    async def _drain(self) -> None:
        """At stop: what is waiting is committed, then what is under way is answered."""
        while self._waiting or self._in_flight or self._retries:
            self._settled.clear()
            self._dispatch()
            await self._settled.wait()

    # -------------------------------------------------------------------------------

    async def _run(self) -> None:
        self._stopping = False
        if self._process is not None:
            await self._stop_asked.wait()
            await self._drain()
            return
        # The next transaction can be on its way while one commits. A writer process runs
        # its requests one after another and starts the next at once instead of idling for
        # the round trip through the relay's (busy) event loop; on PostgreSQL the next
        # runs on a second connection while the first waits for its flush.
        slots = asyncio.Semaphore(1 if self._thread is not None else IN_FLIGHT)
        commits: set[asyncio.Task[None]] = set()
        while not self._stopping:
            job = await self._queue.get()
            if job is None:
                break
            await slots.acquire()  # meanwhile more jobs join the queue, and this batch
            batch = [job]
            self._take_waiting(batch)
            task = asyncio.create_task(self._commit_and_release(batch, slots))
            commits.add(task)
            task.add_done_callback(commits.discard)
            # Not kept until the next job comes: they hold the bodies of a batch committed.
            del job, batch
        if commits:
            await asyncio.wait(commits)

    async def _commit_and_release(self, batch: list[_Job], slots: asyncio.Semaphore) -> None:
        try:
            await self._commit_batch(batch)
        finally:
            slots.release()

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
            if not self._fail_all(batch, exc):
                await self._one_by_one(batch, exc)
            return
        self._succeed(batch, results)

    def _succeed(self, batch: list[_Job], results: Sequence[Any]) -> None:
        self._failures.ok()
        for job, result in zip(batch, results, strict=True):
            if not job.future.done():
                job.future.set_result(result)

    def _fail_all(self, batch: list[_Job], exc: Exception) -> bool:
        """Fail every job of ``batch`` with ``exc`` when retrying each alone cannot help:
        a single job, or CommitUnknown (whether it committed is unknown, so a retry could
        commit twice). False: retry them one by one."""
        if len(batch) > 1 and not isinstance(exc, CommitUnknown):
            return False
        for job in batch:
            self._fail(job, exc)
        return True

    async def _one_by_one(self, batch: list[_Job], exc: Exception) -> None:
        """One bad job must not fail the others: each retried alone."""
        log.warning("group commit of %d jobs failed (%s); retrying one by one", len(batch), exc)
        for job in batch:
            try:
                results = await self._transaction([job])
            except Exception as single_exc:
                self._fail(job, single_exc)
            else:
                self._succeed([job], results)

    def _fail(self, job: _Job, exc: Exception) -> None:
        if job.future.done():
            return
        err = store_error(exc)
        if isinstance(err, StoreUnavailable):
            self._failures.log("store write failed: %s", err)
        job.future.set_exception(err)

    async def _transaction(self, batch: list[_Job]) -> list[Any]:
        """Run ``batch`` in one transaction; return each job's result."""
        if self._process is not None:
            try:
                ok, payload = await self._process.call(_process_request(batch))
            except WorkerUnavailable as exc:
                raise _lost(exc) from exc
            if not ok:
                raise payload
            return payload  # type: ignore[no-any-return]
        works = [job.work for job in batch]
        flush = any(job.durable for job in batch)
        if self._thread is not None:
            sqlite = self._sqlite
            assert sqlite is not None
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(self._thread, sqlite.run, works, flush)
        assert self._pg is not None
        return await self._pg.run(works, flush)


def _process_request(batch: list[_Job]) -> tuple[list[Work], bool]:
    """What the writer process is sent for ``batch``: its works (big bodies beside the
    pickle) and whether to flush."""
    return bodies_beside([job.work for job in batch]), any(job.durable for job in batch)


def _lost(exc: WorkerUnavailable) -> WriterLost:
    return WriterLost(f"the queue's writer process: {exc}")
