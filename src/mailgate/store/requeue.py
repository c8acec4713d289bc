"""A retry of deliveries that ended (failed or bounced): due again now.

Runs in the writer (store.writer.run), so it is module-level with plain arguments. Apart
from the operator's other queue actions (transactions.operate), which act on pending
deliveries: this one acts on final ones, named (a client's retry, the dashboard's) or by
filter (``mailgate queue requeue``), and refuses suppressed recipients.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

from sqlalchemy import Connection, exists, select, tuple_, update

from mailgate.store.rows import event_row
from mailgate.store.schema import deliveries, messages, suppressions
from mailgate.store.statements import INSERT_EVENT, UPDATE_MESSAGE_STATUS, QueueFilter
from mailgate.store.transactions import matching

d = deliveries

# What a retry may bring back: the deliveries that ended without reaching anyone.
REQUEUEABLE = ("failed", "bounced")


class Requeued(NamedTuple):
    """Deliveries made due again, and those refused because the recipient is suppressed;
    each (message_id, rcpt_idx, recipient). Targets in neither were not failed/bounced
    (or do not exist)."""

    requeued: list[tuple[str, int, str]]
    suppressed: list[tuple[str, int, str]]

    @property
    def messages(self) -> int:
        """How many messages the requeued deliveries belong to."""
        return len({message_id for message_id, _, _ in self.requeued})


# Deliveries per statement: a (message_id, rcpt_idx) IN list of 9,000 pairs exceeded
# PostgreSQL's stack depth, and SQLite's variable limit at 140,000.
CHUNK = 500


def requeue(conn: Connection, targets: Sequence[tuple[str, int]], now: float) -> Requeued:
    """Failed or bounced deliveries among ``targets`` (not suppressed) due now, lane 1,
    attempts kept, each with a 'retry' event; their messages' status follows."""
    keys = sorted({(str(m), int(i)) for m, i in targets})
    done = Requeued([], [])
    for start in range(0, len(keys), CHUNK):
        part = _requeue(conn, keys[start : start + CHUNK], now)
        done.requeued.extend(part.requeued)
        done.suppressed.extend(part.suppressed)
    return done


def _requeue(conn: Connection, keys: list[tuple[str, int]], now: float) -> Requeued:
    found = conn.execute(
        select(d.c.message_id, d.c.rcpt_idx, d.c.recipient).where(
            tuple_(d.c.message_id, d.c.rcpt_idx).in_(keys),
            d.c.status.in_(REQUEUEABLE),
            d.c.lease_owner.is_(None),
            # A body emptied by retention cannot be sent again.
            ~exists().where(messages.c.id == d.c.message_id, messages.c.purged_at.is_not(None)),
        )
    ).all()
    rows = [(str(r[0]), int(r[1]), str(r[2])) for r in found]
    addresses = sorted({r[2].lower() for r in rows})
    blocked: set[str] = set()
    if addresses:
        blocked = {
            str(a)
            for (a,) in conn.execute(
                select(suppressions.c.address).where(suppressions.c.address.in_(addresses))
            )
        }
    refused = [r for r in rows if r[2].lower() in blocked]
    chosen = [r for r in rows if r[2].lower() not in blocked]
    if not chosen:
        return Requeued([], refused)
    conn.execute(
        update(d)
        .where(
            tuple_(d.c.message_id, d.c.rcpt_idx).in_([(m, i) for m, i, _ in chosen]),
            d.c.status.in_(REQUEUEABLE),
        )
        .values(
            status="queued",
            lane=1,
            next_attempt_at=now,
            lease_owner=None,
            updated_at=now,
            retried_at=now,  # [retry] max_age counts from here
        )
    )
    conn.execute(
        INSERT_EVENT,
        [event_row(m, i, r, "retry", now, detail="retry requested") for m, i, r in chosen],
    )
    conn.execute(UPDATE_MESSAGE_STATUS, [{"m_id": m} for m in sorted({m for m, _, _ in chosen})])
    return Requeued(chosen, refused)


def requeue_matching(conn: Connection, selection: QueueFilter, now: float) -> Requeued:
    """The failed or bounced deliveries ``selection`` matches, requeued as requeue() does
    (the operator's ``requeue``: Postfix's ``postsuper -r`` for mail that ended)."""
    found = conn.execute(
        select(d.c.message_id, d.c.rcpt_idx).where(
            d.c.status.in_(REQUEUEABLE), d.c.lease_owner.is_(None), *matching(selection)
        )
    ).all()
    return requeue(conn, [(str(m), int(i)) for m, i in found], now)
