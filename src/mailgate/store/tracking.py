"""Engagement: the tracking key, opened/clicked events, per-domain unsubscribes.

The statements live here; the writer runs ``insert_engagement`` by name (registered in
statements.py), so the events of many concurrent opens and clicks share one group commit
and one executemany.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, bindparam, func, insert, literal, select
from sqlalchemy.dialects import postgresql, sqlite

from mailgate.store.rows import event_row
from mailgate.store.schema import deliveries, events, messages, settings, unsubscribes

if TYPE_CHECKING:
    from mailgate.store.store import Store

TRACKING_KEY = "tracking_key"

# An opened/clicked event for a delivery that exists (retention may have removed it: then
# nothing), its recipient copied from the delivery row.
_ENGAGEMENT = insert(events).from_select(
    ["message_id", "rcpt_idx", "recipient", "type", "at", "data"],
    select(
        deliveries.c.message_id,
        deliveries.c.rcpt_idx,
        deliveries.c.recipient,
        bindparam("e_type"),
        bindparam("e_at"),
        bindparam("e_data"),
    ).where(
        deliveries.c.message_id == bindparam("e_message_id"),
        deliveries.c.rcpt_idx == bindparam("e_rcpt_idx"),
    ),
)

TRACKING_STATEMENTS = {"insert_engagement": _ENGAGEMENT}


@dataclass(frozen=True, slots=True)
class Engagement:
    """One open or click (``type_`` "opened" or "clicked"), as the endpoint saw it."""

    message_id: str
    rcpt_idx: int
    type_: str
    at: float
    user_agent: str = ""
    ip: str = ""
    url: str = ""

    def row(self) -> dict[str, Any]:
        data: dict[str, str] = {"user_agent": self.user_agent[:512], "ip": self.ip}
        if self.url:
            data["url"] = self.url
        return {
            "e_message_id": self.message_id,
            "e_rcpt_idx": self.rcpt_idx,
            "e_type": self.type_,
            "e_at": self.at,
            "e_data": json.dumps(data, separators=(",", ":")),
        }


@dataclass(frozen=True, slots=True)
class Unsubscribed:
    address: str
    domain: str
    new: bool  # False: it was already unsubscribed from that domain


def _insert_ignoring(conn: Connection, table: Any, keys: list[str]) -> Any:
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    return dialect.insert(table).on_conflict_do_nothing(index_elements=keys)


def ensure_key(conn: Connection, candidate: str) -> str:
    """The relay's tracking key: ``candidate`` if none exists yet, else the one that does.
    Insert-if-absent, so two nodes starting together agree on the first one committed."""
    conn.execute(
        _insert_ignoring(conn, settings, ["name"]).values(name=TRACKING_KEY, value=candidate)
    )
    value: str = conn.execute(
        select(settings.c.value).where(settings.c.name == TRACKING_KEY)
    ).scalar_one()
    return value


def _target(conn: Connection, message_id: str, rcpt_idx: int) -> tuple[str, str] | None:
    row = conn.execute(_TARGET, {"m": message_id, "i": rcpt_idx}).first()
    if row is None:
        return None
    return str(row[0]), str(row[1]).rpartition("@")[2].lower()


_TARGET = (
    select(deliveries.c.recipient, messages.c.sender)
    .join(messages, messages.c.id == deliveries.c.message_id)
    .where(deliveries.c.message_id == bindparam("m"), deliveries.c.rcpt_idx == bindparam("i"))
)


def unsubscribe(
    conn: Connection, message_id: str, rcpt_idx: int, now: float, source: str, data: str
) -> Unsubscribed | None:
    """Unsubscribe the delivery's recipient from its sender's domain; an ``unsubscribed``
    event the first time only (a repeated POST changes nothing)."""
    found = _target(conn, message_id, rcpt_idx)
    if found is None:
        return None
    recipient, domain = found
    address = recipient.lower()
    added = conn.execute(
        _insert_ignoring(conn, unsubscribes, ["address", "domain"]).values(
            address=address, domain=domain, message_id=message_id, source=source, created_at=now
        )
    ).rowcount
    if added:
        event = event_row(
            message_id, rcpt_idx, recipient, "unsubscribed", now, detail=source, data=data
        )
        conn.execute(insert(events), [event])
    return Unsubscribed(address, domain, bool(added))


class TrackingStore:
    def __init__(self, store: Store) -> None:
        self._store = store

    async def key(self, candidate: bytes) -> bytes:
        """The relay-wide HMAC key, made from ``candidate`` by the first node to start."""
        value = await self._store.writer.run(
            ensure_key, base64.b64encode(candidate).decode("ascii")
        )
        return base64.b64decode(value)

    async def record(self, batch: list[Engagement]) -> None:
        """Opens and clicks. Not flushed on their own (durable=False): a power cut may lose
        the last few, which is a lost statistic, never lost mail."""
        if batch:
            await self._store.writer.write(
                [("insert_engagement", [e.row() for e in batch])], durable=False
            )

    async def unsubscribe(
        self, message_id: str, rcpt_idx: int, now: float, source: str, data: str = ""
    ) -> Unsubscribed | None:
        """Durable before it returns: the 200 to a one-click POST means it holds."""
        done: Unsubscribed | None = await self._store.writer.run(
            unsubscribe, message_id, rcpt_idx, now, source, data
        )
        return done

    async def target(self, message_id: str, rcpt_idx: int) -> tuple[str, str] | None:
        """(recipient, sending domain) of a delivery, for the confirmation page."""
        rows = await self._store._read(_TARGET.params(m=message_id, i=rcpt_idx))
        if not rows:
            return None
        return str(rows[0][0]), str(rows[0][1]).rpartition("@")[2].lower()

    async def unsubscribed(self) -> set[tuple[str, str]]:
        rows = await self._store._read(select(unsubscribes.c.address, unsubscribes.c.domain))
        return {(r[0], r[1]) for r in rows}

    async def fingerprint(self) -> tuple[int, float]:
        """Changes whenever an unsubscribe is added (or removed by an operator)."""
        rows = await self._store._read(
            select(func.count(), func.coalesce(func.max(unsubscribes.c.created_at), literal(0.0)))
        )
        return int(rows[0][0]), float(rows[0][1])
