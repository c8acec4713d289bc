"""The transactions the writer runs as functions: claims, bounces that came back later,
operator actions, lease releases, cancellations. Module-level with plain arguments,
since writer.py may run them in its own process; each uses only the connection given.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Collection
from typing import Any, TypeVar

from sqlalchemy import (
    Connection,
    case,
    delete,
    func,
    or_,
    select,
    update,
)

from mailgate.models import (
    ClaimedDelivery,
    DeliveryStatus,
    QueuedMessage,
    Suppression,
)
from mailgate.store.job_actions import (
    hold_released,
    park_claimed,
)
from mailgate.store.rows import event_row
from mailgate.store.schema import idempotency, messages
from mailgate.store.statements import (
    CLAIM_DUE_JSON,
    CLAIM_SKIP_LOCKED,
    INSERT_EVENT,
    LEASE_JSON,
    LOAD_MESSAGES,
    QUEUE_ACTIONS,
    RENEW_SKIP_LOCKED,
    UPDATE_MESSAGE_STATUS,
    QueueFilter,
    d,
    write_statements,
)
from mailgate.store.suppressions import row as suppression_row

T = TypeVar("T")

FRESH, RETRY = 0, 1  # the lanes: mail not tried yet, and retries (deferred, requeued)


def by_lanes(limit: int, take: Callable[[int, int], list[T]]) -> list[T]:
    """Up to ``limit`` items from ``take(lane, n)``: retries first get up to a quarter,
    fresh mail the rest, then retries whatever fresh mail left. A backlog of retries
    cannot hold up new mail, and new mail cannot starve the retries."""
    got = take(RETRY, max(1, limit // 4))
    got += take(FRESH, limit - len(got))
    if len(got) < limit:
        got += take(RETRY, limit - len(got))
    return got


def claim(
    conn: Connection, owner: str, now: float, limit: int, until: float
) -> list[QueuedMessage]:
    got = by_lanes(limit, lambda lane, n: claim_lane(conn, lane, owner, now, n, until))
    by_message: dict[str, list[ClaimedDelivery]] = {}
    for c in got:
        by_message.setdefault(c.message_id, []).append(c)
    if not by_message:
        return []
    # Deliveries cascade with their message, so every claimed one has its message here.
    rows = conn.execute(LOAD_MESSAGES[conn.dialect.name], {"ids": list(by_message)}).all()
    job_of = {r[0]: r[5] for r in rows if r[5] is not None}
    if job_of:
        # Paused or stopped since these became due: parked here, not attempted.
        parked = park_claimed(conn, owner, until, job_of, now)
        if parked:
            gone = [r[0] for r in rows if r[5] in parked]
            conn.execute(UPDATE_MESSAGE_STATUS, [{"m_id": m} for m in gone])
            rows = [r for r in rows if r[5] not in parked]
    return [
        QueuedMessage(
            id=r[0],
            sender=r[1],
            raw=r[2] if r[2] is not None else b"",  # b"": big, read by the delivery process
            size=r[9],
            created_at=r[3],
            dkim=r[4],
            deliveries=by_message[r[0]],
            job_id=r[5],
            provider=r[6],
            attempt_once=bool(r[7]),
            tracking=json.loads(r[8]) if r[8] != "{}" else None,
        )
        for r in rows
    ]


def claim_lane(
    conn: Connection, lane: int, owner: str, now: float, limit: int, until: float
) -> list[ClaimedDelivery]:
    if limit <= 0:
        return []
    params = {"c_lane": lane, "c_now": now, "c_limit": limit}
    lease = {"c_owner": owner, "c_until": until, "c_now": now}
    if conn.dialect.name == "sqlite":
        # Two steps whatever the count (see bulk.py): the due rows as one JSON value,
        # then the lease on exactly those rows. RETURNING would step once per row.
        found = conn.execute(CLAIM_DUE_JSON, params).scalar_one()
        got = [ClaimedDelivery(*r[:6]) for r in json.loads(found)] if found else []
        if got:
            conn.execute(LEASE_JSON, {**lease, "c_rows": found})
        return got
    rows = conn.execute(CLAIM_SKIP_LOCKED, {**params, **lease}).all()
    return [ClaimedDelivery(r[0], r[1], r[2], r[3], r[4], r[5]) for r in rows]


def record_bounce(
    conn: Connection,
    message_id: str,
    rcpt_idx: int,
    response: str,
    now: float,
    suppress: bool,
    category: str = "",
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
    event = event_row(
        message_id, rcpt_idx, row[0], "bounced", now, "", response, "asynchronous", category
    )
    conn.execute(INSERT_EVENT, [event])
    conn.execute(UPDATE_MESSAGE_STATUS, [{"m_id": message_id}])
    if suppress:
        entry = Suppression(str(row[0]).lower(), "hard_bounce", response, message_id, now)
        insert_suppression = write_statements(conn.dialect.name)["insert_suppression"]
        conn.execute(insert_suppression, [suppression_row(entry)])
    return str(row[0])


def record_complaint(
    conn: Connection,
    named: tuple[str, int] | None,
    message_id_header: str,
    recipient: str,
    header_to: str,
    detail: str,
    data: str,
    now: float,
) -> tuple[str, int, str] | None:
    """A recipient complained (ARF): a 'complained' event and the address suppressed.

    The delivery is ``named`` (from a VERP address) or found by the original's Message-ID
    and the reported ``recipient`` (Original-Rcpt-To), else the original's To:
    (``header_to``), else the message's only recipient, unless the reported address is of
    another domain: a Message-ID is the client's and need not be unique (a redacted address,
    RFC 6590, keeps its domain). Returns (message id, recipient index, recipient), or None
    when nothing matches.
    """
    found = _complained_delivery(conn, named, message_id_header, recipient, header_to)
    if found is None:
        return None
    message_id, rcpt_idx, recipient = found
    event = event_row(message_id, rcpt_idx, recipient, "complained", now, detail=detail, data=data)
    conn.execute(INSERT_EVENT, [event])
    entry = Suppression(recipient.lower(), "complaint", detail, message_id, now)
    insert_suppression = write_statements(conn.dialect.name)["insert_suppression"]
    conn.execute(insert_suppression, [suppression_row(entry)])
    return found


def _complained_delivery(
    conn: Connection,
    named: tuple[str, int] | None,
    message_id_header: str,
    recipient: str,
    header_to: str,
) -> tuple[str, int, str] | None:
    if named is not None:
        row = conn.execute(
            select(d.c.recipient).where(d.c.message_id == named[0], d.c.rcpt_idx == named[1])
        ).first()
        return (named[0], named[1], str(row[0])) if row is not None else None
    bare = message_id_header.strip().strip("<>").strip()
    if not bare:
        return None
    candidates = [f"<{bare}>", bare]
    newest = (
        select(messages.c.id)
        .where(messages.c.message_id_header.in_(candidates))
        .order_by(messages.c.created_at.desc())
        .limit(1)
    ).scalar_subquery()
    rows = conn.execute(
        select(d.c.message_id, d.c.rcpt_idx, d.c.recipient)
        .where(d.c.message_id == newest)
        .order_by(d.c.rcpt_idx)
    ).all()
    reported = recipient.strip().strip("<>").lower()
    hint = reported or header_to.strip().strip("<>").lower()
    matching = [r for r in rows if str(r[2]).lower() == hint] if hint else []
    if not matching and len(rows) == 1:
        # One recipient: the report is about it, unless it names an address of another
        # domain (a redacted one, RFC 6590, keeps its domain; one without "@" says nothing).
        reported_domain = reported.rpartition("@")[2] if "@" in reported else ""
        if reported_domain in ("", str(rows[0][2]).lower().rpartition("@")[2]):
            matching = rows
    if not matching:
        return None
    r = matching[0]
    return str(r[0]), int(r[1]), str(r[2])


def operate(conn: Connection, action: str, selection: QueueFilter, now: float) -> tuple[int, int]:
    statuses, event = QUEUE_ACTIONS[action]
    cond = [d.c.status.in_(statuses), d.c.lease_owner.is_(None), *matching(selection)]
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
            INSERT_EVENT, [event_row(m, i, r, event, now, detail=detail) for m, i, r in rows]
        )
        conn.execute(UPDATE_MESSAGE_STATUS, [{"m_id": m} for m in touched])
    return len(rows), len(touched)


def renew_leases(conn: Connection, owner: str, message_ids: list[str], until: float) -> int:
    """Move the leases ``owner`` holds on these messages' deliveries to ``until``: their
    attempts are still in flight (a slow upstream, a rate limit's wait), and an expired
    lease lets another node, or the next claim of this one, send them again.

    On PostgreSQL the rows are locked with SKIP LOCKED first: a plain UPDATE waited for
    rows another transaction was changing (a result being recorded, another node's
    claim), while that one waited for a row this group commit holds (a job's row that
    both nodes' results update): "deadlock detected" every minute under two nodes."""
    if conn.dialect.name == "postgresql":
        return int(
            conn.execute(
                RENEW_SKIP_LOCKED, {"r_owner": owner, "r_ids": message_ids, "r_until": until}
            ).rowcount
        )
    stmt = (
        update(d)
        .where(
            d.c.lease_owner == owner,
            d.c.message_id.in_(message_ids),
            d.c.next_attempt_at.is_not(None),
        )
        .values(next_attempt_at=until)
    )
    return int(conn.execute(stmt).rowcount)


def release_leases(
    conn: Connection, owner: str, now: float, prefix: bool, keep: Collection[str] = ()
) -> int:
    """``prefix``: the leases of every owner whose name starts with ``owner`` (a node's, at
    its start). Those owners are read first from the lease index, whose entries past its
    NULLs are only the leases in flight: a LIKE would read every delivery (SQLite's LIKE
    is case-insensitive, so it uses no index; nor can PostgreSQL's default collation).
    ``keep``: ids of messages whose leases stay (their attempts are in flight)."""
    if prefix:
        leased = select(d.c.lease_owner).where(d.c.lease_owner.is_not(None)).distinct()
        owners = [o for (o,) in conn.execute(leased) if o.startswith(owner)]
        if not owners:
            return 0
        cond = d.c.lease_owner.in_(owners)
    else:
        cond = d.c.lease_owner == owner
    if keep:
        cond = cond & d.c.message_id.not_in(list(keep))
    held = hold_released(conn, cond, now)  # a paused or stopped job's are not made due
    if held:
        conn.execute(UPDATE_MESSAGE_STATUS, [{"m_id": m} for m in held])
    stmt = (
        update(d)
        .where(cond, d.c.next_attempt_at.is_not(None))
        .values(lease_owner=None, next_attempt_at=now, updated_at=now)
    )
    return int(conn.execute(stmt).rowcount)


def cancel_scheduled(conn: Connection, message_id: str, now: float) -> bool:
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
    conn.execute(INSERT_EVENT, [event_row(message_id, r[0], r[1], "cancelled", now) for r in held])
    conn.execute(UPDATE_MESSAGE_STATUS, [{"m_id": message_id}])
    return True


def purge_idempotency(conn: Connection, older_than: float) -> int:
    stmt = delete(idempotency).where(idempotency.c.created_at <= older_than)
    return int(conn.execute(stmt).rowcount)


def _address_match(column: Any, value: str) -> Any:
    """``value`` an address: that address; a domain: every address at it (any case)."""
    value = value.strip().lower()
    if "@" in value:
        return func.lower(column) == value
    return func.lower(column).endswith("@" + value.lstrip("@"), autoescape=True)


def matching(selection: QueueFilter) -> list[Any]:
    """The conditions on deliveries that ``selection`` stands for (operator actions, the
    admin API's queue list)."""
    cond: list[Any] = []
    if selection.message_ids:
        cond.append(d.c.message_id.in_(list(selection.message_ids)))
    if selection.recipient:
        cond.append(_address_match(d.c.recipient, selection.recipient))
    if selection.sender:
        senders = select(messages.c.id).where(_address_match(messages.c.sender, selection.sender))
        cond.append(d.c.message_id.in_(senders.scalar_subquery()))
    if selection.provider:
        pinned = select(messages.c.id).where(messages.c.provider == selection.provider)
        cond.append(
            or_(d.c.provider == selection.provider, d.c.message_id.in_(pinned.scalar_subquery()))
        )
    if selection.created_before is not None:
        old = select(messages.c.id).where(messages.c.created_at <= selection.created_before)
        cond.append(d.c.message_id.in_(old.scalar_subquery()))
    return cond
