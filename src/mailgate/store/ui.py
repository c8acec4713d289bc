"""The dashboard's reads (store-side, so that no SQL lives in mailgate.ui): message search
with keyset pages, per-minute event counts, raw bodies, suppression search, and the
dashboard's session key, made once like the tracking key (store/tracking.py)."""

from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, Integer, cast, delete, func, or_, select

from mailgate.models import Suppression
from mailgate.store.schema import (
    deliveries,
    events,
    messages,
    settings,
    suppressions,
    ui_sessions_ended,
)
from mailgate.store.statements import PENDING
from mailgate.store.tracking import _insert_ignoring

if TYPE_CHECKING:
    from mailgate.store.store import Store

SESSION_KEY = "ui_session_key"
# The events the overview's chart counts, by the name it shows them under.
CHART_EVENTS = {
    "queued": "accepted",
    "sent": "delivered",
    "delivered": "delivered",
    "deferred": "deferred",
    "bounced": "bounced",
    "failed": "bounced",
}


def _ensure_setting(conn: Connection, name: str, candidate: str) -> str:
    conn.execute(_insert_ignoring(conn, settings, ["name"]).values(name=name, value=candidate))
    value: str = conn.execute(select(settings.c.value).where(settings.c.name == name)).scalar_one()
    return value


async def session_key(store: Store, candidate: bytes) -> bytes:
    """The relay-wide key that signs dashboard sessions: ``candidate`` if none exists yet
    (insert-if-absent, so every node and every restart signs with the same key)."""
    value = await store.writer.run(
        _ensure_setting, SESSION_KEY, base64.b64encode(candidate).decode("ascii")
    )
    return base64.b64decode(value)


def _end_session(conn: Connection, nonce: str, expires_at: float, now: float) -> None:
    ended = ui_sessions_ended.c
    conn.execute(delete(ui_sessions_ended).where(ended.expires_at < now))  # no use any more
    conn.execute(
        _insert_ignoring(conn, ui_sessions_ended, ["nonce"]).values(
            nonce=nonce, expires_at=expires_at
        )
    )


async def end_session(store: Store, nonce: str, expires_at: float, now: float) -> None:
    """A logout: the session (its nonce) is refused from now on, on every node, even if
    its signed cookie was copied; kept until it would have expired anyway."""
    await store.writer.run(_end_session, nonce, expires_at, now)


async def session_ended(store: Store, nonce: str) -> bool:
    """Whether a session was ended by a logout (one primary-key read per page)."""
    rows = await store._read(
        select(ui_sessions_ended.c.nonce).where(ui_sessions_ended.c.nonce == nonce)
    )
    return bool(rows)


@dataclass(frozen=True, slots=True)
class MessageQuery:
    """The messages page's search; empty fields do not restrict."""

    recipient: str = ""  # an address, exactly (case-insensitive)
    sender: str = ""  # an address, exactly (case-insensitive)
    subject: str = ""  # a substring
    status: str = ""
    tag: str = ""
    job: str = ""  # a job id, exactly
    since: float | None = None
    until: float | None = None
    # Keyset: only messages older than this (created_at, id), i.e. the next page.
    before: tuple[float, str] | None = None


def _like_escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


async def search_messages(store: Store, q: MessageQuery, limit: int) -> list[dict[str, Any]]:
    """Newest first on ix_messages_created_at (created_at, id): a page costs the rows it
    shows, however deep it is. Each row has its deliveries."""
    m = messages.c
    cond: list[Any] = []
    if q.recipient:
        cond.append(
            m.id.in_(
                select(deliveries.c.message_id).where(
                    func.lower(deliveries.c.recipient) == q.recipient.lower()
                )
            )
        )
    if q.sender:
        cond.append(func.lower(m.sender) == q.sender.lower())
    if q.subject:
        cond.append(m.subject.ilike(f"%{_like_escape(q.subject)}%", escape="\\"))
    if q.status:
        cond.append(m.status == q.status)
    if q.tag:
        # tags is a JSON list of strings: match the quoted element.
        cond.append(m.tags.like(f'%"{_like_escape(q.tag)}"%', escape="\\"))
    if q.job:
        cond.append(m.job_id == q.job)
    if q.since is not None:
        cond.append(m.created_at >= q.since)
    if q.until is not None:
        cond.append(m.created_at <= q.until)
    if q.before is not None:
        at, ident = q.before
        # The plain bound lets the index start there (an OR alone walks from the newest).
        cond.append(m.created_at <= at)
        cond.append(or_(m.created_at < at, (m.created_at == at) & (m.id < ident)))
    stmt = (
        select(*store._SUMMARY).where(*cond).order_by(m.created_at.desc(), m.id.desc()).limit(limit)
    )
    rows = [store._summary(r) for r in await store._read(stmt)]
    by_id = await store.deliveries_of([r["id"] for r in rows])
    for r in rows:
        r["deliveries"] = by_id.get(r["id"], [])
    return rows


async def message_raw(store: Store, message_id: str) -> bytes | None:
    """The stored source of a message (None when unknown or removed by retention)."""
    rows = await store._read(select(messages.c.raw).where(messages.c.id == message_id))
    if not rows or rows[0][0] is None:
        return None
    return bytes(rows[0][0])


async def message_signature(store: Store, message_id: str) -> bytes | None:
    """The DKIM-Signature field(s) kept for a message's retries (None when none is kept:
    not signed, or every delivery ended at the first attempt)."""
    rows = await store._read(select(messages.c.dkim).where(messages.c.id == message_id))
    if not rows or rows[0][0] is None:
        return None
    return bytes(rows[0][0])


async def queue_depth(store: Store) -> dict[str, int]:
    """Deliveries still to go out, by status: a range count of ix_deliveries_status over
    the waiting statuses only (counting every status read all 1,000,000 rows: 150 ms)."""
    stmt = (
        select(deliveries.c.status, func.count())
        .where(deliveries.c.status.in_(PENDING))
        .group_by(deliveries.c.status)
    )
    out = dict.fromkeys(PENDING, 0)
    out.update({str(status): int(count) for status, count in await store._read(stmt)})
    return out


async def oldest_waiting(store: Store) -> float | None:
    """When the oldest message with a delivery queued or deferred (scheduled and held
    ones aside) came in: from the messages' derived status, one seek per status on
    ix_messages_status (status, created_at). Store.oldest_pending_created_at reads every
    waiting delivery instead: 1.2 s with 190,000 of them."""
    m = messages.c
    firsts = [
        select(m.created_at)
        .where(m.status == status)
        .order_by(m.created_at)
        .limit(1)
        .scalar_subquery()
        for status in ("queued", "deferred")
    ]
    rows = await store._read(select(*firsts))
    found = [float(v) for v in rows[0] if v is not None] if rows else []
    return min(found) if found else None


async def events_per_minute(store: Store, now: float, minutes: int) -> dict[str, list[int]]:
    """Per CHART_EVENTS name, the count in each of the last ``minutes`` whole minutes
    (oldest first, the current minute last): one range scan of ix_events_at."""
    last = int(now // 60)
    first = last - minutes + 1
    if store.dialect == "postgresql":
        bucket = cast(func.floor(events.c.at / 60), Integer)
    else:
        bucket = cast(events.c.at / 60, Integer)  # SQLite truncates: at is positive
    stmt = (
        select(events.c.type, bucket.label("minute"), func.count())
        .where(events.c.at >= first * 60, events.c.type.in_(list(CHART_EVENTS)))
        .group_by(events.c.type, bucket)
    )
    out = {name: [0] * minutes for name in dict.fromkeys(CHART_EVENTS.values())}
    for type_, minute, count in await store._read(stmt):
        i = int(minute) - first
        if 0 <= i < minutes:
            out[CHART_EVENTS[str(type_)]][i] += int(count)
    return out


async def search_suppressions(
    store: Store,
    query: str,
    limit: int,
    before: tuple[float, str] | None = None,
) -> list[Suppression]:
    """Suppressed addresses containing ``query``, newest first, by keyset
    (created_at, address)."""
    s = suppressions.c
    cond: list[Any] = []
    if query:
        cond.append(s.address.like(f"%{_like_escape(query.lower())}%", escape="\\"))
    if before is not None:
        at, address = before
        cond.append(or_(s.created_at < at, (s.created_at == at) & (s.address < address)))
    stmt = (
        select(s.address, s.reason, s.detail, s.message_id, s.created_at)
        .where(*cond)
        .order_by(s.created_at.desc(), s.address.desc())
        .limit(limit)
    )
    return [Suppression(*r) for r in await store._read(stmt)]
