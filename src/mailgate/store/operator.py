"""The operator's bounce of waiting deliveries, and the reads behind the admin API.

Bounce is Postfix's ``postsuper``/KumoMTA's ``kcli bounce``: the deliveries end as
'bounced' with a 'bounced' event (webhooks follow from events), and a DSN goes to each
sender, all in one transaction. The DSN's bytes are made by a function the caller passes
in (delivery.operator_bounce): the store knows no mail format, only rows.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, case, func, select, update

from mailgate.models import NewMessage
from mailgate.store.big_rows import STORED_RAW, WITH_BODIES
from mailgate.store.enqueue import enqueue_ops
from mailgate.store.reads import QueueReads
from mailgate.store.rows import event_row
from mailgate.store.schema import events, messages
from mailgate.store.statements import (
    INSERT_EVENT,
    PENDING,
    SQLITE_BULK,
    UPDATE_MESSAGE_STATUS,
    QueueFilter,
    d,
    write_statements,
)
from mailgate.store.transactions import matching
from mailgate.store.write_batch import Work, execute_batch

# The event types the admin API's rates are counted from (the store's names).
RATE_EVENTS = ("queued", "sent", "delivered", "deferred", "bounced", "failed")
RATE_WINDOWS = (60, 300, 900)  # 1, 5 and 15 minutes


@dataclass(frozen=True, slots=True)
class BouncedMessage:
    """A message some of whose deliveries an operator bounced: what its DSN needs."""

    id: str
    sender: str
    raw: bytes
    created_at: float
    attempt_once: bool
    recipients: tuple[str, ...]


DsnBuilder = Callable[[Sequence[BouncedMessage], str, float], list[NewMessage]]


@dataclass(frozen=True, slots=True)
class Bounced:
    deliveries: int
    messages: int
    dsns: list[str]  # ids of the DSN messages queued


def bounce(
    conn: Connection, selection: QueueFilter, now: float, reason: str, build: DsnBuilder
) -> Bounced:
    """Writer job: the waiting deliveries ``selection`` matches (not leased) become
    'bounced' with ``reason`` as their last response, and the DSNs ``build`` makes for
    their senders are queued in the same transaction."""
    cond = [d.c.status.in_(PENDING), d.c.lease_owner.is_(None), *matching(selection)]
    stmt = (
        update(d)
        .where(*cond)
        .values(status="bounced", next_attempt_at=None, last_response=reason, updated_at=now)
    )
    rows = conn.execute(stmt.returning(d.c.message_id, d.c.rcpt_idx, d.c.recipient)).all()
    if not rows:
        return Bounced(0, 0, [])
    rows = sorted(rows, key=lambda r: (r[0], r[1]))
    conn.execute(
        INSERT_EVENT,
        [
            event_row(m, i, r, "bounced", now, response=reason, detail="bounced by an operator")
            for m, i, r in rows
        ],
    )
    touched = sorted({str(r[0]) for r in rows})
    found = conn.execute(
        select(
            messages.c.id,
            messages.c.sender,
            STORED_RAW,
            messages.c.created_at,
            messages.c.attempt_once,
        )
        .select_from(WITH_BODIES)
        .where(messages.c.id.in_(touched))
    ).all()
    recipients: dict[str, list[str]] = {}
    for m, _, r in rows:
        recipients.setdefault(str(m), []).append(str(r))
    bounced = [
        BouncedMessage(
            str(f[0]),
            str(f[1]),
            bytes(f[2] or b""),
            float(f[3]),
            bool(f[4]),
            tuple(recipients[f[0]]),
        )
        for f in found
    ]
    dsns = build(bounced, reason, now)
    conn.execute(UPDATE_MESSAGE_STATUS, [{"m_id": m} for m in touched])
    if dsns:
        dialect = conn.dialect.name
        bulk = SQLITE_BULK if dialect == "sqlite" else None
        execute_batch(conn, [Work(ops=enqueue_ops(dsns))], write_statements(dialect), bulk)
    return Bounced(len(rows), len(touched), [m.id for m in dsns])


class AdminReads(QueueReads):
    """Reads of the admin API, added to the queue's reads (the Store's base class)."""

    async def queue_list(
        self,
        selection: QueueFilter,
        statuses: Sequence[str],
        *,
        limit: int = 100,
        offset: int = 0,
    ) -> list[dict[str, Any]]:
        """Deliveries ``selection`` matches in ``statuses``, newest message first."""
        stmt = (
            select(
                d.c.message_id,
                d.c.rcpt_idx,
                d.c.recipient,
                d.c.status,
                d.c.attempts,
                d.c.next_attempt_at,
                d.c.provider,
                d.c.last_response,
                d.c.lease_owner,
                d.c.updated_at,
                messages.c.created_at,
                messages.c.sender,
                messages.c.subject,
                messages.c.provider.label("pinned_provider"),
            )
            .join(messages, messages.c.id == d.c.message_id)
            .where(d.c.status.in_(list(statuses)), *matching(selection))
            .order_by(messages.c.created_at.desc(), d.c.message_id, d.c.rcpt_idx)
            .limit(limit)
            .offset(offset)
        )
        return [dict(r._mapping) for r in await self._read(stmt)]

    async def event_rates(self, now: float) -> dict[str, dict[int, int]]:
        """Per event type of RATE_EVENTS, how many were recorded in each of RATE_WINDOWS
        seconds before ``now`` (one range scan of ix_events_at)."""
        sums = [
            func.sum(case((events.c.at >= now - w, 1), else_=0)).label(f"w{w}")
            for w in RATE_WINDOWS
        ]
        stmt = (
            select(events.c.type, *sums)
            .where(events.c.at >= now - max(RATE_WINDOWS), events.c.type.in_(RATE_EVENTS))
            .group_by(events.c.type)
        )
        out = {t: dict.fromkeys(RATE_WINDOWS, 0) for t in RATE_EVENTS}
        for row in await self._read(stmt):
            out[str(row[0])] = {w: int(row[i + 1] or 0) for i, w in enumerate(RATE_WINDOWS)}
        return out
