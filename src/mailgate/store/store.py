"""The queue store: every SQL statement of the queue lives here.

Writes go through the group-commit writer; reads use their own pooled connections
(SQLite WAL lets them run beside the writer). The same statements serve SQLite and
PostgreSQL, except that on SQLite the claim and the many-row writes take one-step forms
(bulk.py says why) and PostgreSQL's claim skips rows locked by other nodes.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy import (
    Connection,
    and_,
    bindparam,
    case,
    delete,
    func,
    insert,
    literal_column,
    select,
    text,
    tuple_,
    update,
)
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.sql import Executable

from mailgate.exceptions import StoreUnavailable
from mailgate.models import (
    ClaimedDelivery,
    DeliveryStatus,
    DeliveryUpdate,
    NewMessage,
    QueuedMessage,
    Suppression,
)
from mailgate.store.bulk import BulkForm, BulkIn, BulkInsert, BulkUpdate
from mailgate.store.engine import create_engine
from mailgate.store.jobs import (
    JOB_STATEMENTS,
    JobStore,
    NewJob,
    hold_released,
    job_ops,
    park_claimed,
)
from mailgate.store.keys import KeyStore
from mailgate.store.quota import QuotaRace, QuotaTake, take_and_enqueue
from mailgate.store.schema import deliveries, events, idempotency, messages, templates
from mailgate.store.suppressions import SuppressionStore, insert_ignoring_duplicates
from mailgate.store.suppressions import row as suppression_row
from mailgate.store.templates import TemplateStore
from mailgate.store.writer import GroupCommitWriter, Op
from mailgate.workers import WorkerUnavailable

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine

    from mailgate.store.requeue import Requeued

d = deliveries

_INSERT_MESSAGE = insert(messages)
_INSERT_DELIVERY = insert(deliveries)
_INSERT_EVENT = insert(events)
_INSERT_IDEMPOTENCY = insert(idempotency)
# Deliveries still to be attempted (held ones too: a release makes them due).
_PENDING = ("scheduled", "queued", "deferred", "held")
# A signature is kept only for the retries: when none of the message's deliveries is
# pending any more (the common case, everything sent at once) it is not written at all.
_SIGNATURE_NEEDED = (
    select(d.c.rcpt_idx)
    # The statuses inline, not an expanding parameter: this runs with executemany.
    .where(
        d.c.message_id == messages.c.id,
        d.c.status.in_([literal_column(repr(status)) for status in _PENDING]),
    )
    .exists()
)
_SET_DKIM = (
    update(messages)
    .where(messages.c.id == bindparam("k_id"), messages.c.dkim.is_(None), _SIGNATURE_NEEDED)
    .values(dkim=bindparam("k_dkim"))
)
_UPDATE_RESULT = (
    update(deliveries)
    .where(
        and_(
            d.c.message_id == bindparam("b_message_id"),
            d.c.rcpt_idx == bindparam("b_rcpt_idx"),
            d.c.lease_owner == bindparam("b_owner"),
        )
    )
    .values(
        status=bindparam("b_status"),
        attempts=bindparam("b_attempts"),
        next_attempt_at=bindparam("b_next_attempt_at"),
        lane=bindparam("b_lane"),
        provider=bindparam("b_provider"),
        last_response=bindparam("b_response"),
        provider_message_id=bindparam("b_upstream_id"),
        lease_owner=None,
        updated_at=bindparam("b_now"),
    )
)

# A message's status, derived from its deliveries (the most advanced/pending one wins).
_STATUS_ORDER = (
    *_PENDING,
    *("delivered", "sent", "bounced", "failed"),
)


def _derived_status() -> Any:
    """The first status of _STATUS_ORDER that any delivery of the message has (one MIN over
    a rank, literals inline: a third faster than a count per status with bound literals)."""
    d2 = deliveries.alias("d2")
    order = [(i, literal_column(repr(status))) for i, status in enumerate(_STATUS_ORDER)]
    best = func.min(case(*[(d2.c.status == status, i) for i, status in order]))
    expr = case(*[(best == i, status) for i, status in order], else_=literal_column("'cancelled'"))
    return select(expr).where(d2.c.message_id == messages.c.id).scalar_subquery()


_UPDATE_MESSAGE_STATUS = (
    update(messages).where(messages.c.id == bindparam("m_id")).values(status=_derived_status())
)

# PostgreSQL's claim: lease the due rows other nodes have not locked, and return them.
_CLAIM_SKIP_LOCKED = (
    update(d)
    .where(
        tuple_(d.c.message_id, d.c.rcpt_idx).in_(
            select(d.c.message_id, d.c.rcpt_idx)
            .where(d.c.lane == bindparam("c_lane"), d.c.next_attempt_at <= bindparam("c_now"))
            .order_by(d.c.next_attempt_at)
            .limit(bindparam("c_limit"))
            .with_for_update(skip_locked=True)
            .scalar_subquery()
        )
    )
    .values(
        lease_owner=bindparam("c_owner"),
        next_attempt_at=bindparam("c_until"),
        updated_at=bindparam("c_now"),
    )
    .returning(d.c.message_id, d.c.rcpt_idx, d.c.recipient, d.c.attempts, d.c.status)
)
# SQLite's claim (_claim_lane): the due deliveries as one JSON array of rows...
_DUE = (
    select(d.c.message_id, d.c.rcpt_idx, d.c.recipient, d.c.attempts, d.c.status)
    .where(d.c.lane == bindparam("c_lane"), d.c.next_attempt_at <= bindparam("c_now"))
    .order_by(d.c.next_attempt_at)
    .limit(bindparam("c_limit"))
    .subquery("due")
)
_CLAIM_DUE_JSON = select(func.json_group_array(func.json_array(*_DUE.c)))
# ...then the lease on exactly those rows.
_LEASE_JSON = text(
    "UPDATE deliveries SET lease_owner = :c_owner, next_attempt_at = :c_until,"
    " updated_at = :c_now WHERE (message_id, rcpt_idx) IN"
    " (SELECT value ->> 0, value ->> 1 FROM json_each(:c_rows))"
)

_LOAD_MESSAGES = select(
    messages.c.id,
    messages.c.sender,
    messages.c.raw,
    messages.c.created_at,
    messages.c.dkim,
    messages.c.job_id,
    messages.c.provider,
    messages.c.attempt_once,
).where(messages.c.id.in_(bindparam("ids", expanding=True)))

# The statements write jobs name (writer.py: ops travel by name, to a writer process too).
_WRITES: dict[str, Executable] = {
    "insert_message": _INSERT_MESSAGE,
    "insert_delivery": _INSERT_DELIVERY,
    "insert_event": _INSERT_EVENT,
    "insert_idempotency": _INSERT_IDEMPOTENCY,
    "update_result": _UPDATE_RESULT,
    "update_message_status": _UPDATE_MESSAGE_STATUS,
    "set_dkim": _SET_DKIM,
    "insert_template": insert(templates),
    **JOB_STATEMENTS,
}


@functools.cache
def write_statements(dialect: str) -> dict[str, Executable]:
    """The registry of named write statements for ``dialect``."""
    return {**_WRITES, "insert_suppression": insert_ignoring_duplicates(dialect)}


# SQLite: the forms that write all rows of these statements in one step (see bulk.py).
SQLITE_BULK: dict[str, BulkForm] = {
    "insert_message": BulkInsert(messages),
    "insert_delivery": BulkInsert(deliveries),
    "insert_event": BulkInsert(events),
    "update_result": BulkUpdate(
        deliveries,
        match={"message_id": "b_message_id", "rcpt_idx": "b_rcpt_idx", "lease_owner": "b_owner"},
        assign={
            "status": "b_status",
            "attempts": "b_attempts",
            "next_attempt_at": "b_next_attempt_at",
            "lane": "b_lane",
            "provider": "b_provider",
            "last_response": "b_response",
            "provider_message_id": "b_upstream_id",
            "updated_at": "b_now",
        },
        set_constant={"lease_owner": "NULL"},
    ),
    "update_message_status": BulkIn(
        update(messages)
        .where(messages.c.id.in_(bindparam("m_ids", expanding=True)))
        .values(status=_derived_status()),
        "m_ids",
        "m_id",
    ),
    "set_dkim": BulkUpdate(
        messages,
        match={"id": "k_id"},
        assign={"dkim": "k_dkim"},
        where_constant=[
            '"messages".dkim IS NULL',
            'EXISTS (SELECT 1 FROM deliveries WHERE deliveries.message_id = "messages".id'
            f" AND deliveries.status IN ({', '.join(repr(status) for status in _PENDING)}))",
        ],
    ),
}


@dataclass(frozen=True, slots=True)
class QueueFilter:
    """Which deliveries an operator command acts on; empty fields do not restrict."""

    message_ids: Sequence[str] = ()
    recipient: str = ""  # an address, or a domain (every address at it)
    sender: str = ""  # the same, for the envelope sender


# Operator actions on deliveries that are not in flight (not leased): the statuses each
# applies to, and the event it records.
QUEUE_ACTIONS: dict[str, tuple[tuple[str, ...], str]] = {
    "retry": (("queued", "deferred"), "retry"),
    "hold": (("queued", "deferred"), "held"),
    "release": (("held",), "released"),
    "delete": (_PENDING, "cancelled"),
}


@dataclass(frozen=True, slots=True)
class IdempotentAnswer:
    """The first answer to a request with an Idempotency-Key, stored with its commit."""

    key_id: str
    idem_key: str
    request_hash: str
    status_code: int
    body: str


class Store:
    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self.dialect = engine.dialect.name
        bulk = SQLITE_BULK if self.dialect == "sqlite" else None
        self.writer = GroupCommitWriter(engine, write_statements(self.dialect), bulk=bulk)
        self.keys = KeyStore(self)
        self.templates = TemplateStore(self)
        self.suppressions = SuppressionStore(self)
        self.jobs = JobStore(self)

    @classmethod
    async def open(cls, url: str, *, writer_process: bool = False, upgrade: bool = True) -> Store:
        """Connect, bring the schema up to date (online revisions only; SchemaMismatch
        otherwise, or with ``upgrade=False`` when any is pending) and start the writer: on
        SQLite in a process of its own with ``writer_process`` (``mailgate serve``)."""
        from mailgate.store import migrate

        engine = create_engine(url)
        try:
            if upgrade:
                await migrate.upgrade(engine, allow_offline=False)
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

    async def close(self) -> None:
        await self.writer.stop()
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
        ops += self._enqueue_ops(batch)
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
            await self.writer.write(ops)
            return
        used = await self.writer.run(take_and_enqueue, quota, ops)
        if used is not None:
            raise QuotaRace(used)

    @staticmethod
    def _enqueue_ops(batch: Sequence[NewMessage]) -> list[Op]:
        msg_rows: list[dict[str, Any]] = []
        dlv_rows: list[dict[str, Any]] = []
        evt_rows: list[dict[str, Any]] = []
        for m in batch:
            status = "queued" if m.scheduled_at is None else "scheduled"
            due = m.created_at if m.scheduled_at is None else m.scheduled_at
            msg_rows.append(
                {
                    "id": m.id,
                    "created_at": m.created_at,
                    "sender": m.sender,
                    "subject": m.subject,
                    "message_id_header": m.message_id_header,
                    "source": m.source,
                    "credential": m.credential,
                    "client_address": m.client_address,
                    "size": len(m.raw),
                    "raw": m.raw,
                    "key_id": m.key_id,
                    "status": status,
                    "display_to": json.dumps(list(m.display_to or m.recipients)),
                    # SMTP mail has none of these: skip json.dumps for the empty values.
                    "tags": json.dumps(list(m.tags)) if m.tags else "[]",
                    "metadata": json.dumps(m.metadata) if m.metadata else "{}",
                    "tracking": json.dumps(m.tracking) if m.tracking else "{}",
                    "scheduled_at": m.scheduled_at,
                    "job_id": m.job_id,
                    "provider": m.provider,
                    "attempt_once": int(m.attempt_once),
                }
            )
            for idx, rcpt in enumerate(m.recipients):
                dlv_rows.append(
                    {
                        "message_id": m.id,
                        "rcpt_idx": idx,
                        "recipient": rcpt,
                        "status": status,
                        "lane": 0,
                        "attempts": 0,
                        "next_attempt_at": due,
                        "lease_owner": None,
                        "provider": "",
                        "last_response": "",
                        "updated_at": m.created_at,
                        "job_id": m.job_id,
                    }
                )
                evt_rows.append(_event_row(m.id, idx, rcpt, status, m.created_at))
        return [
            ("insert_message", msg_rows),
            ("insert_delivery", dlv_rows),
            ("insert_event", evt_rows),
        ]

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
            _claim, owner, now, limit, lease_until, durable=False
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
                    _event_row(
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
                _event_row(
                    u.message_id, u.rcpt_idx, u.recipient, u.event, now, u.provider, u.response
                )
            )
        if upd_rows:
            # DSNs first: their events share the events statement, which runs at its first
            # position in the job (after their messages are inserted).
            ops: list[Op] = self._enqueue_ops(dsns) if dsns else []
            ops += [
                ("update_result", upd_rows),
                ("insert_event", evt_rows),
            ]
            if jobs:
                job_rows = [{"j_id": j, "j_now": now} for j in sorted(set(jobs))]
                ops += [("job_attempted", job_rows), ("job_guard", job_rows)]
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
    ) -> str | None:
        """A bounce that came back later (by mail) for a delivery that had gone out.

        With ``suppress`` the recipient is suppressed (hard bounce) in the same transaction.
        Returns the recipient, or None when there is no such delivery.
        """

        recipient: str | None = await self.writer.run(
            _record_bounce, message_id, rcpt_idx, response, now, suppress
        )
        return recipient

    async def operate(self, action: str, selection: QueueFilter, now: float) -> tuple[int, int]:
        """An operator's retry, hold, release or delete (see QUEUE_ACTIONS) of the
        deliveries ``selection`` matches; returns (deliveries, messages) changed.

        retry makes them due now; hold parks them (no attempts, no expiry) until release,
        which makes them due now; delete cancels them without a DSN. Deliveries being
        attempted right now (leased) are left alone.
        """
        changed: tuple[int, int] = await self.writer.run(_operate, action, selection, now)
        return changed

    async def requeue(self, targets: Sequence[tuple[str, int]], now: float) -> Requeued:
        """Bring failed or bounced deliveries, named (message_id, rcpt_idx), back: due now
        (status 'queued', attempts kept, a 'retry' event each). A recipient now on the
        suppression list is not requeued but returned in ``suppressed`` (see requeue.py)."""
        from mailgate.store.requeue import requeue

        done: Requeued = await self.writer.run(requeue, list(targets), now)
        return done

    async def release_leases(self, owner: str, now: float, *, prefix: bool = False) -> int:
        """Make deliveries leased to ``owner`` due now (shutdown, or restart after a crash)."""
        released: int = await self.writer.run(_release_leases, owner, now, prefix)
        return released

    # ------------------------------------------------------------------ reads

    async def _read(self, stmt: Any) -> list[Any]:
        try:
            async with self.engine.connect() as conn:
                return list((await conn.execute(stmt)).all())
        except (SQLAlchemyError, OSError) as exc:
            raise StoreUnavailable(str(exc)) from exc

    async def next_due_at(self) -> float | None:
        rows = await self._read(select(func.min(d.c.next_attempt_at)))
        return rows[0][0] if rows else None

    async def oldest_pending_created_at(self) -> float | None:
        """When the oldest message still waiting to go out was accepted (scheduled excluded)."""
        rows = await self._read(
            select(func.min(messages.c.created_at)).where(
                messages.c.id.in_(
                    select(d.c.message_id).where(
                        d.c.next_attempt_at.is_not(None), d.c.status != "scheduled"
                    )
                )
            )
        )
        return rows[0][0] if rows else None

    async def status_counts(self) -> dict[str, int]:
        rows = await self._read(select(d.c.status, func.count()).group_by(d.c.status))
        return {r[0]: r[1] for r in rows}

    _SUMMARY = (
        messages.c.id,
        messages.c.created_at,
        messages.c.sender,
        messages.c.subject,
        messages.c.message_id_header,
        messages.c.source,
        messages.c.credential,
        messages.c.client_address,
        messages.c.size,
        messages.c.key_id,
        messages.c.status,
        messages.c.display_to,
        messages.c.tags,
        messages.c.metadata,
        messages.c.tracking,
        messages.c.scheduled_at,
        messages.c.job_id,
        messages.c.provider,
    )

    @staticmethod
    def _summary(row: Any) -> dict[str, Any]:
        out = dict(row._mapping)
        for key in ("display_to", "tags", "metadata", "tracking"):
            out[key] = json.loads(out[key]) if out[key] else None
        return out

    def _filtered(
        self,
        *,
        key_id: str | None,
        status: str | None,
        to: str | None,
        since: float | None,
        until: float | None,
    ) -> list[Any]:
        cond: list[Any] = []
        if key_id is not None:
            cond.append(messages.c.key_id == key_id)
        if status is not None:
            cond.append(messages.c.status == status)
        if to is not None:
            cond.append(
                messages.c.id.in_(
                    select(d.c.message_id).where(func.lower(d.c.recipient) == to.lower())
                )
            )
        if since is not None:
            cond.append(messages.c.created_at >= since)
        if until is not None:
            cond.append(messages.c.created_at <= until)
        return cond

    async def list_messages(
        self,
        *,
        limit: int = 50,
        offset: int = 0,
        status: str | None = None,
        to: str | None = None,
        since: float | None = None,
        until: float | None = None,
        key_id: str | None = None,
        with_total: bool = False,
    ) -> list[dict[str, Any]] | tuple[list[dict[str, Any]], int]:
        """Newest first, each with its per-recipient deliveries (and the total if asked)."""
        cond = self._filtered(key_id=key_id, status=status, to=to, since=since, until=until)
        q = (
            select(*self._SUMMARY)
            .where(*cond)
            .order_by(messages.c.created_at.desc(), messages.c.id.desc())
            .limit(limit)
            .offset(offset)
        )
        result = [self._summary(r) for r in await self._read(q)]
        by_id = await self._deliveries_of([r["id"] for r in result])
        for r in result:
            r["deliveries"] = by_id.get(r["id"], [])
        if not with_total:
            return result
        total = (await self._read(select(func.count()).select_from(messages).where(*cond)))[0][0]
        return result, int(total)

    async def get_message(self, message_id: str) -> dict[str, Any] | None:
        """One message with its deliveries, and when it was first sent / delivered."""
        rows = await self._read(select(*self._SUMMARY).where(messages.c.id == message_id))
        if not rows:
            return None
        result = self._summary(rows[0])
        result["deliveries"] = (await self._deliveries_of([message_id])).get(message_id, [])
        firsts = await self._read(
            select(events.c.type, func.min(events.c.at))
            .where(events.c.message_id == message_id, events.c.type.in_(("sent", "delivered")))
            .group_by(events.c.type)
        )
        first = {r[0]: r[1] for r in firsts}
        result["sent_at"] = first.get("sent")
        result["delivered_at"] = first.get("delivered")
        return result

    async def list_scheduled(self, *, key_id: str | None, limit: int = 100) -> list[dict[str, Any]]:
        cond = self._filtered(key_id=key_id, status="scheduled", to=None, since=None, until=None)
        q = select(*self._SUMMARY).where(*cond).order_by(messages.c.scheduled_at).limit(limit)
        return [self._summary(r) for r in await self._read(q)]

    async def cancel_scheduled(self, message_id: str, now: float) -> bool:
        """Cancel a scheduled message that has not gone out; False if it already has."""

        cancelled: bool = await self.writer.run(_cancel_scheduled, message_id, now)
        return cancelled

    async def idempotent_answer(
        self, key_id: str, idem_key: str, newer_than: float
    ) -> IdempotentAnswer | None:
        rows = await self._read(
            select(idempotency.c.request_hash, idempotency.c.status_code, idempotency.c.body).where(
                idempotency.c.key_id == key_id,
                idempotency.c.idem_key == idem_key,
                idempotency.c.created_at > newer_than,
            )
        )
        if not rows:
            return None
        return IdempotentAnswer(key_id, idem_key, rows[0][0], rows[0][1], rows[0][2])

    async def purge_idempotency(self, older_than: float) -> int:
        purged: int = await self.writer.run(_purge_idempotency, older_than)
        return purged

    async def events_of(self, message_id: str) -> list[dict[str, Any]]:
        rows = await self._read(
            select(
                events.c.id,
                events.c.at,
                events.c.type,
                events.c.rcpt_idx,
                events.c.recipient,
                events.c.provider,
                events.c.response,
                events.c.detail,
            )
            .where(events.c.message_id == message_id)
            .order_by(events.c.id)
        )
        return [dict(r._mapping) for r in rows]

    async def deliveries_of(self, ids: Sequence[str]) -> dict[str, list[dict[str, Any]]]:
        """The deliveries of these messages, by message id (rcpt_idx order)."""
        return await self._deliveries_of(list(ids))

    async def queue_counts(self, key_id: str | None) -> dict[str, int]:
        """Deliveries of one key's messages (all with None) by status, the leased ones
        (being attempted right now) apart as "leased"."""
        leased = d.c.lease_owner.is_not(None) & d.c.next_attempt_at.is_not(None)
        stmt = select(d.c.status, leased, func.count()).group_by(d.c.status, leased)
        if key_id is not None:
            stmt = stmt.join(messages, messages.c.id == d.c.message_id).where(
                messages.c.key_id == key_id
            )
        out: dict[str, int] = {}
        for status, is_leased, count in await self._read(stmt):
            name = "leased" if is_leased else status
            out[name] = out.get(name, 0) + int(count)
        return out

    async def _deliveries_of(self, ids: list[str]) -> dict[str, list[dict[str, Any]]]:
        if not ids:
            return {}
        rows = await self._read(
            select(
                d.c.message_id,
                d.c.rcpt_idx,
                d.c.recipient,
                d.c.status,
                d.c.attempts,
                d.c.next_attempt_at,
                d.c.lease_owner,
                d.c.provider,
                d.c.last_response,
                d.c.updated_at,
                d.c.provider_message_id,
            )
            .where(d.c.message_id.in_(ids))
            .order_by(d.c.message_id, d.c.rcpt_idx)
        )
        out: dict[str, list[dict[str, Any]]] = {}
        for r in rows:
            row = dict(r._mapping)
            out.setdefault(row.pop("message_id"), []).append(row)
        return out


# ---------------------------------------------------------------------------------------
# Transactions the writer runs: module-level with plain arguments, since writer.py may run
# them in its own process. Each builds its statements and uses only the connection given.


def _claim(
    conn: Connection, owner: str, now: float, limit: int, until: float
) -> list[QueuedMessage]:
    got = _claim_lane(conn, 1, owner, now, max(1, limit // 4), until)
    got += _claim_lane(conn, 0, owner, now, limit - len(got), until)
    if len(got) < limit:
        got += _claim_lane(conn, 1, owner, now, limit - len(got), until)
    by_message: dict[str, list[ClaimedDelivery]] = {}
    for c in got:
        by_message.setdefault(c.message_id, []).append(c)
    if not by_message:
        return []
    # Deliveries cascade with their message, so every claimed one has its message here.
    rows = conn.execute(_LOAD_MESSAGES, {"ids": list(by_message)}).all()
    job_ids = {r[5] for r in rows if r[5] is not None}
    if job_ids:
        # Paused or stopped since these became due: parked here, not attempted.
        parked = park_claimed(conn, owner, job_ids, now)
        if parked:
            gone = [r[0] for r in rows if r[5] in parked]
            conn.execute(_UPDATE_MESSAGE_STATUS, [{"m_id": m} for m in gone])
            rows = [r for r in rows if r[5] not in parked]
    return [
        QueuedMessage(
            id=r[0],
            sender=r[1],
            raw=r[2],
            created_at=r[3],
            dkim=r[4],
            deliveries=by_message[r[0]],
            job_id=r[5],
            provider=r[6],
            attempt_once=bool(r[7]),
        )
        for r in rows
    ]


def _claim_lane(
    conn: Connection, lane: int, owner: str, now: float, limit: int, until: float
) -> list[ClaimedDelivery]:
    if limit <= 0:
        return []
    params = {"c_lane": lane, "c_now": now, "c_limit": limit}
    lease = {"c_owner": owner, "c_until": until, "c_now": now}
    if conn.dialect.name == "sqlite":
        # Two steps whatever the count (see bulk.py): the due rows as one JSON value,
        # then the lease on exactly those rows. RETURNING would step once per row.
        found = conn.execute(_CLAIM_DUE_JSON, params).scalar_one()
        got = [ClaimedDelivery(*r) for r in json.loads(found)] if found else []
        if got:
            conn.execute(_LEASE_JSON, {**lease, "c_rows": found})
        return got
    rows = conn.execute(_CLAIM_SKIP_LOCKED, {**params, **lease}).all()
    return [ClaimedDelivery(r[0], r[1], r[2], r[3], r[4]) for r in rows]


def _record_bounce(
    conn: Connection, message_id: str, rcpt_idx: int, response: str, now: float, suppress: bool
) -> str | None:
    row = (
        conn.execute(
            select(d.c.recipient).where(d.c.message_id == message_id, d.c.rcpt_idx == rcpt_idx)
        )
    ).first()
    if row is None:
        return None
    conn.execute(
        update(d)
        .where(d.c.message_id == message_id, d.c.rcpt_idx == rcpt_idx)
        .values(
            status=DeliveryStatus.BOUNCED.value,
            last_response=response,
            next_attempt_at=None,
            lease_owner=None,
            updated_at=now,
        )
    )
    event = _event_row(message_id, rcpt_idx, row[0], "bounced", now, "", response, "asynchronous")
    conn.execute(_INSERT_EVENT, [event])
    conn.execute(_UPDATE_MESSAGE_STATUS, [{"m_id": message_id}])
    if suppress:
        entry = Suppression(str(row[0]).lower(), "hard_bounce", response, message_id, now)
        insert_suppression = write_statements(conn.dialect.name)["insert_suppression"]
        conn.execute(insert_suppression, [suppression_row(entry)])
    return str(row[0])


def _operate(conn: Connection, action: str, selection: QueueFilter, now: float) -> tuple[int, int]:
    statuses, event = QUEUE_ACTIONS[action]
    cond = [d.c.status.in_(statuses), d.c.lease_owner.is_(None), *_matching(selection)]
    values: dict[str, Any] = {"updated_at": now}
    if action == "hold":
        values.update(status="held", next_attempt_at=None)
    elif action == "release":
        values.update(
            status=case((d.c.attempts > 0, "deferred"), else_="queued"), next_attempt_at=now
        )
    elif action == "delete":
        values.update(status="cancelled", next_attempt_at=None)
    else:
        values.update(next_attempt_at=now)
    stmt = update(d).where(*cond).values(**values)
    rows = conn.execute(stmt.returning(d.c.message_id, d.c.rcpt_idx, d.c.recipient)).all()
    touched = sorted({r[0] for r in rows})
    if rows:
        detail = f"{action} by an operator"
        conn.execute(
            _INSERT_EVENT, [_event_row(m, i, r, event, now, detail=detail) for m, i, r in rows]
        )
        conn.execute(_UPDATE_MESSAGE_STATUS, [{"m_id": m} for m in touched])
    return len(rows), len(touched)


def _release_leases(conn: Connection, owner: str, now: float, prefix: bool) -> int:
    cond = (
        d.c.lease_owner.startswith(owner, autoescape=True) if prefix else d.c.lease_owner == owner
    )
    held = hold_released(conn, cond, now)  # a paused or stopped job's are not made due
    if held:
        conn.execute(_UPDATE_MESSAGE_STATUS, [{"m_id": m} for m in held])
    stmt = (
        update(d)
        .where(cond, d.c.next_attempt_at.is_not(None))
        .values(lease_owner=None, next_attempt_at=now, updated_at=now)
    )
    return int(conn.execute(stmt).rowcount)


def _cancel_scheduled(conn: Connection, message_id: str, now: float) -> bool:
    held = conn.execute(
        select(d.c.rcpt_idx, d.c.recipient).where(
            d.c.message_id == message_id, d.c.status == "scheduled", d.c.lease_owner.is_(None)
        )
    ).all()
    total = conn.execute(
        select(func.count()).select_from(d).where(d.c.message_id == message_id)
    ).scalar_one()
    if not held or len(held) != total:
        return False
    conn.execute(
        update(d)
        .where(d.c.message_id == message_id)
        .values(status="cancelled", next_attempt_at=None, updated_at=now)
    )
    conn.execute(
        _INSERT_EVENT, [_event_row(message_id, r[0], r[1], "cancelled", now) for r in held]
    )
    conn.execute(_UPDATE_MESSAGE_STATUS, [{"m_id": message_id}])
    return True


def _purge_idempotency(conn: Connection, older_than: float) -> int:
    stmt = delete(idempotency).where(idempotency.c.created_at <= older_than)
    return int(conn.execute(stmt).rowcount)


def _address_match(column: Any, value: str) -> Any:
    """``value`` an address: that address; a domain: every address at it (any case)."""
    value = value.strip().lower()
    if "@" in value:
        return func.lower(column) == value
    return func.lower(column).endswith("@" + value.lstrip("@"), autoescape=True)


def _matching(selection: QueueFilter) -> list[Any]:
    cond: list[Any] = []
    if selection.message_ids:
        cond.append(d.c.message_id.in_(list(selection.message_ids)))
    if selection.recipient:
        cond.append(_address_match(d.c.recipient, selection.recipient))
    if selection.sender:
        senders = select(messages.c.id).where(_address_match(messages.c.sender, selection.sender))
        cond.append(d.c.message_id.in_(senders.scalar_subquery()))
    return cond


def _event_row(
    message_id: str,
    rcpt_idx: int | None,
    recipient: str,
    type_: str,
    at: float,
    provider: str = "",
    response: str = "",
    detail: str = "",
) -> dict[str, Any]:
    return {
        "message_id": message_id,
        "rcpt_idx": rcpt_idx,
        "recipient": recipient,
        "type": type_,
        "at": at,
        "provider": provider,
        "response": response,
        "detail": detail,
    }
