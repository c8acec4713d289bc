"""The queue store: the one object the relay writes and reads the queue through.

Writes go through the group-commit writer, as named statements (statements.py) or
transaction functions (transactions.py); reads (reads.py) use their own pooled
connections (SQLite WAL lets them run beside the writer). The same statements serve
SQLite and PostgreSQL, except that on SQLite the claim and the many-row writes take
one-step forms (bulk.py says why) and PostgreSQL's claim skips rows locked by other nodes.
Keys, templates, suppressions and jobs have modules of their own beside these.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Collection, Iterable, Sequence
from typing import TYPE_CHECKING, Any

from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from mailgate.exceptions import StoreUnavailable
from mailgate.models import (
    DeliveryUpdate,
    NewMessage,
    QueuedMessage,
    Suppression,
)
from mailgate.store.engine import create_engine
from mailgate.store.jobs import (
    JobStore,
    NewJob,
    job_ops,
)
from mailgate.store.keys import KeyStore
from mailgate.store.quota import QuotaRace, QuotaTake, take_and_enqueue
from mailgate.store.retention import RetentionStore
from mailgate.store.suppressions import SuppressionStore
from mailgate.store.suppressions import row as suppression_row
from mailgate.store.templates import TemplateStore
from mailgate.store.tracking import TrackingStore
from mailgate.store.webhooks import WebhookStore
from mailgate.store.write_batch import Op
from mailgate.store.write_errors import brief
from mailgate.store.writer import GroupCommitWriter
from mailgate.workers import WorkerUnavailable

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

    from mailgate.store.requeue import Requeued

from mailgate.store import transactions as txn
from mailgate.store.enqueue import enqueue_ops
from mailgate.store.operator import AdminReads, Bounced, DsnBuilder, bounce
from mailgate.store.rows import attempt_data, event_row
from mailgate.store.statements import (
    PG_BULK,
    SQLITE_BULK,
    IdempotentAnswer,
    QueueFilter,
    write_statements,
)


class Store(AdminReads):
    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self.dialect = engine.dialect.name
        bulk = SQLITE_BULK if self.dialect == "sqlite" else PG_BULK
        self.writer = GroupCommitWriter(engine, write_statements(self.dialect), bulk=bulk)
        self.keys = KeyStore(self)
        self.templates = TemplateStore(self)
        self.suppressions = SuppressionStore(self)
        self.jobs = JobStore(self)
        self.webhooks = WebhookStore(self)
        self.tracking = TrackingStore(self)
        self.retention = RetentionStore(self)
        self._node_lock: AsyncConnection | None = None  # claim_node's (PostgreSQL)

    @classmethod
    async def open(
        cls,
        url: str,
        *,
        writer_process: bool = False,
        upgrade: bool = True,
        only_new: bool = False,
    ) -> Store:
        """Connect, bring the schema up to date (on PostgreSQL online revisions only:
        SchemaMismatch before an offline one, or with ``upgrade=False`` before any; with
        ``only_new`` an empty database is built, an older one is SchemaMismatch) and
        start the writer: on SQLite in a process of its own with ``writer_process``."""
        from mailgate.store import migrate

        engine = create_engine(url)
        try:
            if upgrade:
                # SQLite has one node (serve locks its data_dir): nothing runs beside it.
                await migrate.upgrade(
                    engine, allow_offline=engine.dialect.name == "sqlite", only_new=only_new
                )
            else:
                found = await migrate.status(engine)
                if not found.up_to_date:
                    raise migrate.SchemaMismatch(
                        f"the database schema is at revision {found.current}, not "
                        f"{found.head}: run mailgate db upgrade"
                    )
        except migrate.SchemaMismatch:
            await engine.dispose()
            raise
        except (SQLAlchemyError, OSError) as exc:
            await engine.dispose()
            raise StoreUnavailable(f"cannot open the queue database: {exc}") from exc
        store = cls(engine)
        try:
            await store.writer.start(process=writer_process)
        except WorkerUnavailable as exc:
            await engine.dispose()
            raise StoreUnavailable(f"cannot start the queue's writer: {exc}") from exc
        return store

    async def claim_node(self, node_id: str) -> bool:
        """PostgreSQL: hold a session advisory lock named after ``node_id`` for as long as
        this store is open; False if another process holds it (a live node with the same
        node_id, whose leases a start would release as an earlier run's, sending its mail
        in flight twice). SQLite: True (``mailgate serve`` locks its data_dir)."""
        if self.engine.dialect.name != "postgresql":
            return True
        key = int.from_bytes(
            hashlib.sha256(b"mailgate node " + node_id.encode()).digest()[:8], "big", signed=True
        )
        try:
            # Autocommit: the lock is the session's, and no transaction stays open on it.
            conn = await self.engine.connect()
            conn = await conn.execution_options(isolation_level="AUTOCOMMIT")
            got = (await conn.execute(text("SELECT pg_try_advisory_lock(:k)"), {"k": key})).scalar()
        except (SQLAlchemyError, OSError) as exc:
            raise StoreUnavailable(f"cannot lock the node id: {brief(exc)}") from exc
        if not got:
            await conn.close()
            return False
        self._node_lock = conn
        return True

    async def close(self) -> None:
        await self.writer.stop()
        if self._node_lock is not None:
            with contextlib.suppress(SQLAlchemyError, OSError):
                await self._node_lock.close()
            self._node_lock = None
        await self.engine.dispose()

    # ----------------------------------------------------------------- writes

    async def enqueue(
        self,
        batch: Sequence[NewMessage],
        *,
        answer: IdempotentAnswer | None = None,
        job: NewJob | None = None,
        quota: QuotaTake | None = None,
    ) -> None:
        """Commit messages with one delivery and one 'queued' event per recipient.

        With ``answer``, the Idempotency-Key's answer commits in the same transaction, so a
        retried request either finds it or finds nothing queued (DuplicateEntry if taken).
        With ``job``, the job the messages belong to is created in it too. With ``quota``,
        its count is taken in the same transaction too; QuotaRace (nothing written) if it
        no longer fits.
        """
        ops = job_ops(job) if job is not None else []
        ops += enqueue_ops(batch)
        if answer is not None:
            ops.append(
                (
                    "insert_idempotency",
                    [
                        {
                            "key_id": answer.key_id,
                            "idem_key": answer.idem_key,
                            "request_hash": answer.request_hash,
                            "status_code": answer.status_code,
                            "body": answer.body,
                            "created_at": batch[0].created_at if batch else 0.0,
                        }
                    ],
                )
            )
        if quota is None:
            await self.writer.write(ops, new_mail=True)
            return
        used = await self.writer.run(take_and_enqueue, quota, ops, new_mail=True)
        if used is not None:
            raise QuotaRace(used)

    async def claim(
        self, owner: str, now: float, limit: int, lease_until: float
    ) -> list[QueuedMessage]:
        """Lease up to ``limit`` due deliveries to ``owner``; their messages, each with the
        deliveries claimed, read in the same transaction.

        Fresh mail (lane 0) is claimed before retries (lane 1), but retries always get a
        quarter of the batch so a steady stream of new mail cannot starve them. The bodies
        come with the claim so that no read of the relay's process (a thread that competes
        with the listeners for the GIL) is on the delivery path.
        """
        # A claim lost to a power cut only makes the deliveries due again.
        result: list[QueuedMessage] = await self.writer.run(
            txn.claim, owner, now, limit, lease_until, durable=False
        )
        return result

    async def record(
        self,
        owner: str,
        now: float,
        updates: Iterable[DeliveryUpdate],
        *,
        dkim: dict[str, bytes] | None = None,
        suppress: Sequence[Suppression] = (),
        dsns: Sequence[NewMessage] = (),
        jobs: Sequence[str] = (),
    ) -> None:
        """Record attempt results (only for deliveries still leased to ``owner``).

        In the same transaction: ``dkim`` signatures made during this attempt (kept so
        retries reuse them), addresses to ``suppress`` after hard bounces, and delivery
        status notifications (``dsns``) queued for the senders. ``jobs``: the jobs of the
        messages recorded; they are marked started, and a delivery that came back deferred
        while its job is paused is held (stopped: cancelled), so a pause holds on every node.
        """
        upd_rows: list[dict[str, Any]] = []
        evt_rows: list[dict[str, Any]] = []
        touched: set[str] = set()
        for u in updates:
            touched.add(u.message_id)
            for provider, response in u.failovers:
                evt_rows.append(
                    event_row(
                        u.message_id, u.rcpt_idx, u.recipient, "failover", now, provider, response
                    )
                )
            upd_rows.append(
                {
                    "b_message_id": u.message_id,
                    "b_rcpt_idx": u.rcpt_idx,
                    "b_owner": owner,
                    "b_status": u.status.value,
                    "b_attempts": u.attempts,
                    "b_next_attempt_at": u.next_attempt_at,
                    "b_lane": 1,
                    "b_provider": u.provider,
                    "b_response": u.response,
                    "b_upstream_id": u.provider_message_id,
                    "b_now": now,
                }
            )
            evt_rows.append(
                event_row(
                    u.message_id,
                    u.rcpt_idx,
                    u.recipient,
                    u.event,
                    now,
                    u.provider,
                    u.response,
                    category=u.category,
                    data=attempt_data(u),
                )
            )
        if upd_rows:
            # DSNs first: their events share the events statement, which runs at its first
            # position in the job (after their messages are inserted).
            ops: list[Op] = enqueue_ops(dsns) if dsns else []
            ops += [
                ("update_result", upd_rows),
                ("insert_event", evt_rows),
            ]
            if jobs:
                job_rows = [{"j_id": j, "j_now": now} for j in sorted(set(jobs))]
                ops += [
                    ("job_attempted", job_rows),
                    ("job_guard_events", job_rows),
                    ("job_guard", job_rows),
                    ("job_completed", job_rows),
                ]
            ops.append(("update_message_status", [{"m_id": m} for m in sorted(touched)]))
            if dkim:
                ops.append(("set_dkim", [{"k_id": k, "k_dkim": v} for k, v in dkim.items()]))
            if suppress:
                ops.append(("insert_suppression", [suppression_row(x) for x in suppress]))
            # Not flushed on its own (see writer): a result lost to a power cut means the
            # attempt is made again, with its DSN and suppression, as at-least-once allows.
            await self.writer.write(ops, durable=False)

    async def record_bounce(
        self,
        message_id: str,
        rcpt_idx: int,
        response: str,
        now: float,
        *,
        suppress: bool = False,
        category: str = "",
    ) -> str | None:
        """A bounce that came back later (by mail) for a delivery that had gone out.

        With ``suppress`` the recipient is suppressed (hard bounce) in the same transaction;
        ``category`` goes on the event. Returns the recipient, or None when there is no
        such delivery.
        """

        recipient: str | None = await self.writer.run(
            txn.record_bounce, message_id, rcpt_idx, response, now, suppress, category
        )
        return recipient

    async def record_complaint(
        self,
        now: float,
        *,
        named: tuple[str, int] | None = None,
        message_id_header: str = "",
        recipient: str = "",
        header_to: str = "",
        detail: str = "",
        data: str = "",
    ) -> tuple[str, int, str] | None:
        """A complaint (ARF) about a delivery: its 'complained' event and the recipient's
        suppression (reason "complaint"), in one transaction. The delivery is ``named``
        (VERP) or found by ``message_id_header`` and the reported ``recipient`` (else the
        original's To: ``header_to``, else the only recipient: txn.record_complaint);
        returns (message id, recipient index, recipient), or None when none matches."""
        found: tuple[str, int, str] | None = await self.writer.run(
            txn.record_complaint, named, message_id_header, recipient, header_to, detail, data, now
        )
        return found

    async def operate(self, action: str, selection: QueueFilter, now: float) -> tuple[int, int]:
        """An operator's retry, hold, release or delete (see QUEUE_ACTIONS) of the
        deliveries ``selection`` matches; returns (deliveries, messages) changed.

        retry makes them due now; hold parks them (no attempts, no expiry) until release,
        which makes them due now; delete cancels them without a DSN. Deliveries being
        attempted right now (leased) are left alone.
        """
        changed: tuple[int, int] = await self.writer.run(txn.operate, action, selection, now)
        return changed

    async def bounce(
        self, selection: QueueFilter, now: float, reason: str, build: DsnBuilder
    ) -> Bounced:
        """An operator's bounce of the waiting deliveries ``selection`` matches (not those
        in flight): 'bounced' with ``reason``, and the DSNs ``build`` makes queued for
        their senders, in one transaction (operator.py)."""
        done: Bounced = await self.writer.run(bounce, selection, now, reason, build)
        return done

    async def requeue(self, targets: Sequence[tuple[str, int]], now: float) -> Requeued:
        """Bring failed or bounced deliveries, named (message_id, rcpt_idx), back: due now
        (status 'queued', attempts kept, a 'retry' event each). A recipient now on the
        suppression list is not requeued but returned in ``suppressed`` (see requeue.py)."""
        from mailgate.store.requeue import requeue

        done: Requeued = await self.writer.run(requeue, list(targets), now)
        return done

    async def requeue_matching(self, selection: QueueFilter, now: float) -> Requeued:
        """The failed or bounced deliveries ``selection`` matches, as requeue() brings them
        back (the operator's ``requeue`` action)."""
        from mailgate.store.requeue import requeue_matching

        done: Requeued = await self.writer.run(requeue_matching, selection, now)
        return done

    async def renew_leases(self, owner: str, message_ids: Collection[str], until: float) -> int:
        """Extend ``owner``'s leases on the deliveries of ``message_ids`` to ``until`` (their
        attempts are in flight); how many deliveries."""
        renewed: int = await self.writer.run(txn.renew_leases, owner, list(message_ids), until)
        return renewed

    async def release_leases(
        self, owner: str, now: float, *, prefix: bool = False, keep: Collection[str] = ()
    ) -> int:
        """Make deliveries leased to ``owner`` due now (shutdown, restart after a crash, or
        a claim whose answer was lost), but those of the messages in ``keep``."""
        released: int = await self.writer.run(txn.release_leases, owner, now, prefix, keep)
        return released

    async def cancel_scheduled(self, message_id: str, now: float) -> bool:
        """Cancel a scheduled message that has not gone out; False if it already has."""

        cancelled: bool = await self.writer.run(txn.cancel_scheduled, message_id, now)
        return cancelled

    async def purge_idempotency(self, older_than: float) -> int:
        purged: int = await self.writer.run(txn.purge_idempotency, older_than)
        return purged
