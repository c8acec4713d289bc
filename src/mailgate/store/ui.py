"""The dashboard's reads (store-side, so that no SQL lives in mailgate.ui): message search
with keyset pages, per-minute event counts, raw bodies, suppression search, and the
dashboard's session key, made once like the tracking key (store/tracking.py)."""

from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy import (
    Connection,
    Integer,
    cast,
    delete,
    exists,
    func,
    insert,
    literal_column,
    or_,
    select,
    text,
)

from mailgate.models import Suppression
from mailgate.store.big_rows import STORED_RAW, WITH_BODIES
from mailgate.store.schema import (
    SQLITE_SUBJECT_FTS,
    SQLITE_SUBJECT_PENDING,
    deliveries,
    events,
    message_tags,
    messages,
    settings,
    suppressions,
    ui_sessions,
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
    "scheduled": "accepted",  # accepted for later: it has no "queued" event, ever
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


@dataclass(frozen=True, slots=True)
class UiSession:
    nonce: str
    key_id: str
    created_at: float
    expires_at: float
    client: str
    user_agent: str


def _add_session(conn: Connection, row: dict[str, Any]) -> None:
    conn.execute(delete(ui_sessions).where(ui_sessions.c.expires_at < row["created_at"]))
    conn.execute(insert(ui_sessions).values(**row))


async def add_session(store: Store, session: UiSession) -> None:
    """A login: the session is listed (sessions_of) until it ends or expires."""
    row = {f: getattr(session, f) for f in UiSession.__slots__}
    row["user_agent"] = row["user_agent"][:300]
    await store.writer.run(_add_session, row)


async def sessions_of(store: Store, key_id: str, now: float) -> list[UiSession]:
    """The key's sessions that have neither expired nor ended, newest first."""
    s = ui_sessions.c
    ended = select(ui_sessions_ended.c.nonce).where(ui_sessions_ended.c.nonce == s.nonce)
    rows = await store._read(
        select(s.nonce, s.key_id, s.created_at, s.expires_at, s.client, s.user_agent)
        .where(s.key_id == key_id, s.expires_at > now, ~ended.exists())
        .order_by(s.created_at.desc())
    )
    return [UiSession(*r) for r in rows]


def _end_session(conn: Connection, nonce: str, expires_at: float, now: float) -> None:
    ended = ui_sessions_ended.c
    conn.execute(delete(ui_sessions_ended).where(ended.expires_at < now))  # no use any more
    conn.execute(delete(ui_sessions).where(ui_sessions.c.nonce == nonce))
    conn.execute(
        _insert_ignoring(conn, ui_sessions_ended, ["nonce"]).values(
            nonce=nonce, expires_at=expires_at
        )
    )


async def end_session(store: Store, nonce: str, expires_at: float, now: float) -> None:
    """A logout: the session (its nonce) is refused from now on, on every node, even if
    its signed cookie was copied; kept until it would have expired anyway."""
    await store.writer.run(_end_session, nonce, expires_at, now)


def _end_listed(conn: Connection, key_id: str, nonce: str, now: float) -> bool:
    s = ui_sessions.c
    row = conn.execute(
        select(s.expires_at).where(s.nonce == nonce, s.key_id == key_id, s.expires_at > now)
    ).first()
    if row is None:
        return False
    _end_session(conn, nonce, row[0], now)
    return True


async def end_session_of(store: Store, key_id: str, nonce: str, now: float) -> bool:
    """End one listed session of ``key_id`` (as its logout would); False when it is not
    one of that key's active sessions."""
    ended: bool = await store.writer.run(_end_listed, key_id, nonce, now)
    return ended


async def session_ended(store: Store, nonce: str) -> bool:
    """Whether a session was ended by a logout (one primary-key read per page)."""
    rows = await store._read(
        select(ui_sessions_ended.c.nonce).where(ui_sessions_ended.c.nonce == nonce)
    )
    return bool(rows)


# The subject indexes (FTS5 trigram on SQLite, pg_trgm on PostgreSQL) find substrings of
# this many characters or more; a shorter subject search reads the messages themselves.
SUBJECT_MIN = 3
# A subject or tag that fewer messages than this have is searched through its index (its
# hits, newest first); one that more have is found soon enough walking the newest messages
# (or the index of another filter).
_FEW = 5000


@dataclass(frozen=True, slots=True)
class MessageQuery:
    """The messages page's search; empty fields do not restrict."""

    recipient: str = ""  # an address, exactly (case-insensitive)
    sender: str = ""  # an address, exactly (case-insensitive)
    subject: str = ""  # a substring (case-insensitive; indexed from SUBJECT_MIN characters)
    status: str = ""
    tag: str = ""  # one tag, exactly (case-sensitive)
    job: str = ""  # a job id, exactly
    since: float | None = None
    until: float | None = None
    # Keyset: only messages older than this (created_at, id), i.e. the next page.
    before: tuple[float, str] | None = None


def _like_escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _fts_phrase(value: str) -> str:
    """An FTS5 query that matches ``value`` as a substring (trigram tokenizer)."""
    return '"' + value.replace('"', '""') + '"'


async def search_messages(store: Store, q: MessageQuery, limit: int) -> list[dict[str, Any]]:
    """Newest first, keyset pages on (created_at, id), each row with its deliveries.

    The walk is along an index in that order and stops at a page, so a page costs the rows
    it reads, however deep it is. A tag or subject that few messages have is searched
    through its index instead (counted first, up to _FEW, on that index): a rare tag walks
    ix_message_tags_tag (tag, created_at, message_id); a rare subject takes the hits of the
    subject index (FTS5 on SQLite, pg_trgm on PostgreSQL) as a set. Every hit is checked
    against the subject itself (ILIKE; SQLite folds ASCII letters only), so both ways
    answer the same."""
    m = messages.c
    cond: list[Any] = []
    source: Any = messages
    at, ident = m.created_at, m.id
    tg = message_tags.c
    few_tagged = bool(q.tag) and await _tag_hits(store, q.tag, _FEW) < _FEW
    if few_tagged:
        # Walk the tag's own index: its rows are the page, newest first.
        source = messages.join(message_tags, tg.message_id == m.id)
        at, ident = tg.created_at, tg.message_id  # equal to the message's
        cond.append(tg.tag == q.tag)
    elif q.tag:
        # A common tag: the newest messages (or another filter's index) find a page soon.
        cond.append(exists().where(tg.message_id == m.id, tg.tag == q.tag))
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
    if q.status:
        cond.append(m.status == q.status)
    if q.job:
        cond.append(m.job_id == q.job)
    if q.since is not None:
        cond.append(at >= q.since)
    if q.until is not None:
        cond.append(at <= q.until)
    if q.before is not None:
        before_at, before_id = q.before
        # The plain bound lets the index start there (an OR alone walks from the newest).
        cond.append(at <= before_at)
        cond.append(or_(at < before_at, (at == before_at) & (ident < before_id)))

    if q.subject:
        # ILIKE: lower(subject) LIKE on SQLite; on PostgreSQL what gin_trgm_ops serves and
        # what its statistics estimate (lower(subject) has none: it chose a full scan).
        cond.append(_subject_like(q.subject))
        if (
            not few_tagged
            and len(q.subject) >= SUBJECT_MIN
            and await _subject_hits(store, q.subject, _FEW) < _FEW
        ):
            cond.append(_subject_index(store, q.subject))
    stmt = (
        select(*store._SUMMARY)
        .select_from(source)
        .where(*cond)
        .order_by(at.desc(), ident.desc())
        .limit(limit)
    )
    found = await store._read(stmt)
    rows = [store._summary(r) for r in found]
    by_id = await store.deliveries_of([r["id"] for r in rows])
    for r in rows:
        r["deliveries"] = by_id.get(r["id"], [])
    return rows


def _subject_like(subject: str) -> Any:
    return messages.c.subject.ilike(f"%{_like_escape(subject)}%", escape="\\")


async def _tag_hits(store: Store, tag: str, most: int) -> int:
    """How many messages have ``tag``, counting up to ``most`` on ix_message_tags_tag."""
    tagged = select(literal_column("1")).where(message_tags.c.tag == tag).limit(most).subquery()
    rows = await store._read(select(func.count()).select_from(tagged))
    return int(rows[0][0])


# SQLite's subject hits for :q, as rowids of messages: the FTS5 index's, and the messages
# whose subjects it does not hold yet (store/subject_index.py; each hit is checked anyway).
_SQLITE_SUBJECT_HITS = (
    f"SELECT rowid FROM {SQLITE_SUBJECT_FTS} WHERE {SQLITE_SUBJECT_FTS} MATCH :q"
    f" UNION ALL SELECT message_rowid FROM {SQLITE_SUBJECT_PENDING}"
)


async def _subject_hits(store: Store, subject: str, most: int) -> int:
    """How many messages the subject index finds for ``subject``, counting up to ``most``
    (an index walk that stops there: cheap however common the subject is)."""
    if store.dialect == "sqlite":
        stmt: Any = text(f"SELECT count(*) FROM ({_SQLITE_SUBJECT_HITS} LIMIT :most)").bindparams(
            q=_fts_phrase(subject), most=most
        )
    else:
        hits = (
            select(literal_column("1"))
            .select_from(messages)
            .where(_subject_like(subject))
            .limit(most)
            .subquery()
        )
        stmt = select(func.count()).select_from(hits)
    rows = await store._read(stmt)
    return int(rows[0][0])


def _subject_index(store: Store, subject: str) -> Any:
    """A condition that finds the messages whose subject contains ``subject`` (at least
    SUBJECT_MIN characters) through the engine's subject index: its hits as a set, so
    that the planner cannot walk created_at instead and read the whole table. On SQLite
    the messages whose subjects are not indexed yet are hits too (store/subject_index.py)."""
    if store.dialect == "sqlite":
        hits = text(_SQLITE_SUBJECT_HITS)
        return literal_column("messages.rowid").in_(
            hits.bindparams(q=_fts_phrase(subject)).columns(literal_column("rowid"))
        )
    found = (
        select(messages.c.id)
        .where(_subject_like(subject))
        .cte("subject_hits")
        .prefix_with("MATERIALIZED")
    )
    return messages.c.id.in_(select(found.c.id))


async def message_raw(store: Store, message_id: str) -> bytes | None:
    """The stored source of a message (None when unknown or removed by retention)."""
    rows = await store._read(
        select(STORED_RAW).select_from(WITH_BODIES).where(messages.c.id == message_id)
    )
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
