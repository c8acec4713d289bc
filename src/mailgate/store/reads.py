"""What is read back about the queue: messages with their deliveries and events, queue
depth and due times, Idempotency-Key answers. Reads use pooled connections of their own
(SQLite's WAL lets them run beside the writer); the Store has them as a base class.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from sqlalchemy import func, select
from sqlalchemy.exc import SQLAlchemyError

from mailgate.exceptions import StoreUnavailable
from mailgate.store.schema import events, idempotency, messages
from mailgate.store.statements import IdempotentAnswer, d
from mailgate.store.write_errors import brief

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine


# The events that carry a bounce category (events/categories.py).
FAILURE_EVENTS = ("bounced", "deferred", "failed")


def _json_object(text: str) -> dict[str, Any]:
    """An event's ``data`` column as an object; "" (most events) or a non-object is {}."""
    if not text:
        return {}
    try:
        value = json.loads(text)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


class QueueReads:
    engine: AsyncEngine

    async def _read(self, stmt: Any) -> list[Any]:
        try:
            async with self.engine.connect() as conn:
                return list((await conn.execute(stmt)).all())
        except (SQLAlchemyError, OSError) as exc:
            raise StoreUnavailable(brief(exc)) from exc

    async def next_due_at(self) -> float | None:
        rows = await self._read(select(func.min(d.c.next_attempt_at)))
        return rows[0][0] if rows else None

    async def leased_to(self, owner: str, message_id: str) -> bool:
        """Whether a delivery of ``message_id`` is still leased to ``owner``. A recorded
        result ends the lease: after a result whose COMMIT answer was lost, this says
        whether it committed."""
        found = select(d.c.rcpt_idx).where(d.c.message_id == message_id, d.c.lease_owner == owner)
        return bool(await self._read(found.limit(1)))

    async def oldest_pending_created_at(self) -> float | None:
        """When the oldest message waiting to go out (queued or deferred; scheduled and
        held ones aside) was accepted: from the messages' derived status, one seek per
        status on ix_messages_status (status, created_at). /metrics, the admin stats and
        the dashboard read it. The form it replaced read every waiting delivery, a scan of
        ``deliveries`` on SQLite: 1.2 s with 190,000 of them, at every scrape."""
        m = messages.c
        firsts = [
            select(m.created_at)
            .where(m.status == status)
            .order_by(m.created_at)
            .limit(1)
            .scalar_subquery()
            for status in ("queued", "deferred")
        ]
        rows = await self._read(select(*firsts))
        found = [float(v) for v in rows[0] if v is not None] if rows else []
        return min(found) if found else None

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
        by_id = await self.deliveries_of([r["id"] for r in result])
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
        result["deliveries"] = (await self.deliveries_of([message_id])).get(message_id, [])
        firsts = await self._read(
            select(events.c.type, func.min(events.c.at))
            .where(
                events.c.message_id == message_id,
                events.c.type.in_(("sent", "delivered", "opened")),
            )
            .group_by(events.c.type)
        )
        first = {r[0]: r[1] for r in firsts}
        result["sent_at"] = first.get("sent")
        result["delivered_at"] = first.get("delivered")
        categories = await self._read(
            select(events.c.rcpt_idx, events.c.category)
            .where(
                events.c.message_id == message_id,
                events.c.type.in_(FAILURE_EVENTS),
                events.c.category != "",
            )
            .order_by(events.c.id)
        )
        latest = {r[0]: r[1] for r in categories}  # the last failure's category wins
        for delivery in result["deliveries"]:
            delivery["bounce_category"] = latest.get(delivery["rcpt_idx"], "")
        result["opened_at"] = first.get("opened")
        return result

    async def list_scheduled(
        self, *, key_id: str | None, limit: int = 100, offset: int = 0
    ) -> list[dict[str, Any]]:
        cond = self._filtered(key_id=key_id, status="scheduled", to=None, since=None, until=None)
        q = (
            select(*self._SUMMARY)
            .where(*cond)
            .order_by(messages.c.scheduled_at, messages.c.id)
            .limit(limit)
            .offset(offset)
        )
        return [self._summary(r) for r in await self._read(q)]

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

    async def events_of(self, message_id: str) -> list[dict[str, Any]]:
        """A message's events in order; ``data`` decoded (an object, {} when none)."""
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
                events.c.category,
                events.c.data,
            )
            .where(events.c.message_id == message_id)
            .order_by(events.c.id)
        )
        out = []
        for r in rows:
            row = dict(r._mapping)
            row["data"] = _json_object(row["data"])
            out.append(row)
        return out

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

    async def deliveries_of(self, ids: Sequence[str]) -> dict[str, list[dict[str, Any]]]:
        """The deliveries of these messages, by message id (rcpt_idx order)."""
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
