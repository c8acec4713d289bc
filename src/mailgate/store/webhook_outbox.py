"""The outbox's transactions: claim due webhook deliveries, record their outcomes, release
an earlier run's leases, replay. The writer runs them (module-level, plain arguments: on
SQLite they may run in the writer's process).

A delivery is claimed like a mail delivery: ``next_attempt_at`` moves to the lease's
expiry, so what a dead node held is sent again after it, with the same id.

Claims and outcomes come about twenty times a second each at 1,000 webhooks/s, and every
accept waiting for the writer waits behind them, so each is a fixed, prebuilt statement
or two whatever its row count (as the mail claim, statements.py): on SQLite the due rows
with their events and messages as one JSON value, then the lease over ``json_each``; on
PostgreSQL one UPDATE ... RETURNING joined to the events. Outcomes are one UPDATE over
all the rows (bulk.py's form for SQLite, pg_bulk.py's for PostgreSQL). Built per call
with SQLAlchemy and run row by row, a claim of 50 cost the SQLite writer 1.4-1.6 ms of
CPU and its outcomes 0.6 ms (scripts/bench/webhook_writer.py).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, bindparam, case, func, literal_column, select, text, update

from mailgate.pickling import by_fields
from mailgate.store.bulk import BulkUpdate
from mailgate.store.jobs import PROGRESS_COLUMNS, progress_of
from mailgate.store.pg_bulk import PgUpdate
from mailgate.store.schema import (
    events,
    job_events,
    jobs,
    messages,
    webhook_deliveries,
    webhook_endpoints,
)

wd = webhook_deliveries


@by_fields  # they cross the pipe to the writer process (pickling.py)
@dataclass(frozen=True, slots=True)
class Result:
    """One attempt's outcome, as the dispatcher records it."""

    id: int
    status: str  # pending (to retry at next_attempt_at), succeeded, failed
    next_attempt_at: float | None
    http_status: int | None
    error: str


# What a claimed row carries (store.webhooks' callers and events/webhook_payload.py read
# these keys): the outbox row, its event and the event's message, or its job event.
_KEYS = (
    "id",
    "attempts",
    "created_at",
    "id_event",
    "message_id",
    "recipient",
    "type",
    "at",
    "provider",
    "response",
    "detail",
    "category",
    "data",
    "tags",
    "metadata",
    "subject",
    "job_id",
    "event_job_id",
    "job_event_type",
    "job_event_at",
)


def _with_payload(due: Any) -> Any:
    """``due`` (the claimed rows: id, attempts, created_at, event_id, job_event_id) joined
    to what their payloads are made of, in _KEYS' order."""
    columns = (
        due.c.id,
        due.c.attempts,
        due.c.created_at,
        events.c.id,
        events.c.message_id,
        events.c.recipient,
        events.c.type,
        events.c.at,
        events.c.provider,
        events.c.response,
        events.c.detail,
        events.c.category,
        events.c.data,
        messages.c.tags,
        messages.c.metadata,
        messages.c.subject,
        messages.c.job_id,
        job_events.c.job_id,
        job_events.c.type,
        job_events.c.at,
    )
    joined = (
        due.outerjoin(events, events.c.id == due.c.event_id)
        .outerjoin(messages, messages.c.id == events.c.message_id)
        .outerjoin(job_events, job_events.c.id == due.c.job_event_id)
    )
    return columns, joined


_CLAIMED = (wd.c.id, wd.c.attempts, wd.c.created_at, wd.c.event_id, wd.c.job_event_id)


def _due(*columns: Any) -> Any:
    return (
        select(*columns)
        .where(
            wd.c.endpoint_id == bindparam("w_endpoint"),
            wd.c.next_attempt_at <= bindparam("w_now"),
        )
        .order_by(wd.c.next_attempt_at)
        .limit(bindparam("w_limit"))
    )


# SQLite: the due rows with their payloads' columns as one JSON array (one step)...
_cols, _joined = _with_payload(_due(*_CLAIMED).subquery("due"))
# (JSON has the times to 15 digits, 10 us: as text with 17 they come back exact.)
_TIMES = [_KEYS.index(k) for k in ("created_at", "at", "job_event_at")]
_exact = [
    case((c.is_(None), None), else_=func.printf("%!.17g", c)) if i in _TIMES else c
    for i, c in enumerate(_cols)
]
CLAIM_JSON = select(func.json_group_array(func.json_array(*_exact))).select_from(_joined)
# ...then the lease on exactly those rows.
LEASE_JSON = text(
    "UPDATE webhook_deliveries SET lease_owner = :w_owner, next_attempt_at = :w_until"
    " WHERE id IN (SELECT value ->> 0 FROM json_each(:w_rows))"
)

# PostgreSQL: the lease (rows other nodes hold locked are skipped) and the payloads' read
# in one statement.
_leased = (
    update(wd)
    .where(wd.c.id.in_(_due(wd.c.id).with_for_update(skip_locked=True).scalar_subquery()))
    .values(lease_owner=bindparam("w_owner"), next_attempt_at=bindparam("w_until"))
    .returning(*_CLAIMED)
    .cte("leased")
)
_cols, _joined = _with_payload(_leased)
CLAIM_PG = select(*_cols).select_from(_joined)

_RECORD_FORM = {
    "match": {"id": "r_id", "lease_owner": "r_owner"},
    "assign": {
        "status": "r_status",
        "next_attempt_at": "r_next",
        "last_status": "r_http",
        "last_error": "r_error",
        "updated_at": "r_now",
    },
    "set_constant": {"attempts": '"webhook_deliveries".attempts + 1', "lease_owner": "NULL"},
}
# Outcomes (of deliveries still leased to their owner), all rows in one statement.
RECORD = {"sqlite": BulkUpdate(wd, **_RECORD_FORM), "postgresql": PgUpdate(wd, **_RECORD_FORM)}


def claim(
    conn: Connection, endpoint_id: str, owner: str, now: float, limit: int, until: float
) -> list[dict[str, Any]]:
    """Lease up to ``limit`` due deliveries of one endpoint, oldest due first, each with
    what its payload is made of (the event, its message's tags and metadata, or the job);
    in id order."""
    params = {"w_endpoint": endpoint_id, "w_now": now, "w_limit": limit}
    lease = {"w_owner": owner, "w_until": until}
    if conn.dialect.name == "sqlite":
        found = conn.execute(CLAIM_JSON, params).scalar_one()
        rows = json.loads(found) if found else []
        if rows:
            conn.execute(LEASE_JSON, {**lease, "w_rows": found})
        for r in rows:
            for i in _TIMES:
                if r[i] is not None:
                    r[i] = float(r[i])
    else:
        rows = conn.execute(CLAIM_PG, {**params, **lease}).all()
    claimed = sorted((dict(zip(_KEYS, r, strict=True)) for r in rows), key=lambda r: r["id"])
    for item in claimed:
        if item["event_job_id"] is not None:
            item["job"] = _job_counts(conn, item["event_job_id"])
    return claimed


def _job_counts(conn: Connection, job_id: str) -> dict[str, Any]:
    row = conn.execute(select(*PROGRESS_COLUMNS).where(jobs.c.id == job_id)).first()
    if row is None:
        return {"job_id": job_id}
    p = progress_of(row)
    return {
        "job_id": p.id,
        "status": p.status,
        "campaign_id": p.campaign_id,
        "total": p.total,
        "sent": p.sent,
        "failed": p.failed,
    }


def record_results(conn: Connection, owner: str, results: Sequence[Result], now: float) -> None:
    """Attempts' outcomes, for the deliveries still leased to ``owner``."""
    if not results:
        return
    RECORD[conn.dialect.name](
        conn,
        [
            {
                "r_id": r.id,
                "r_owner": owner,
                "r_status": r.status,
                "r_next": r.next_attempt_at,
                "r_http": r.http_status,
                "r_error": r.error[:500],
                "r_now": now,
            }
            for r in results
        ],
    )


def release(conn: Connection, owner_prefix: str, now: float) -> int:
    """Make what an earlier run of this node leased due now."""
    return int(
        conn.execute(
            update(wd)
            .where(wd.c.lease_owner.startswith(owner_prefix, autoescape=True))
            .values(lease_owner=None, next_attempt_at=now)
        ).rowcount
    )


# The first row at or after an id (its created_at), and the ids there are.
_FROM_ID = select(wd.c.id, wd.c.created_at).where(wd.c.id >= bindparam("w_id")).order_by(wd.c.id)
_ID_RANGE = select(func.min(wd.c.id), func.max(wd.c.id))
FAILED = literal_column("'failed'")  # inline: the partial index ix_webhook_deliveries_failed


def first_id_since(conn: Connection, at: float) -> int:
    """The lowest id of the deliveries made at or after ``at`` (one past the last id if
    none): rows get their id and created_at (their event's time) as the event is
    inserted, so ids follow created_at, and a binary search over the primary key finds it
    in a few dozen reads; no index on created_at is kept (revision 0007). Rows around the
    bound may be out of order by the moments between events' times and their inserts."""
    low, high = conn.execute(_ID_RANGE).one()
    if low is None:
        return 0
    high += 1  # rows below ``low`` are older than ``at``; from ``high`` on, not
    while low < high:
        mid = (low + high) // 2
        found = conn.execute(_FROM_ID.limit(1), {"w_id": mid}).first()
        if found is None or found.created_at >= at:
            high = mid
        else:
            low = found.id + 1
    return int(low)


def replay(
    conn: Connection,
    since: float,
    endpoint_id: str | None,
    statuses: Sequence[str],
    now: float,
    ids: Sequence[int] | None = None,
) -> int:
    """Send again the deliveries made since ``since`` in ``statuses`` (``ids``: only
    those), with a fresh schedule; their ids (webhook-id) stay, so receivers can tell a
    replay. Endpoint by endpoint: failed ones through their index, the others from
    ``since``'s first id on."""
    if endpoint_id is not None:
        endpoints = [endpoint_id]
    else:
        endpoints = list(conn.execute(select(webhook_endpoints.c.id)).scalars())
    start = first_id_since(conn, since)
    count = 0
    for status in statuses:
        cond = [
            wd.c.id >= start,
            wd.c.created_at >= since,
            wd.c.status == (FAILED if status == "failed" else status),
        ]
        if ids is not None:
            cond.append(wd.c.id.in_(list(ids)))
        for endpoint in endpoints:
            count += conn.execute(
                update(wd)
                .where(wd.c.endpoint_id == endpoint, *cond)
                .values(status="pending", attempts=0, next_attempt_at=now, lease_owner=None)
            ).rowcount
    return count
