"""Webhook endpoints and their deliveries (the outbox the triggers of revision 0003 fill).

Writes are transaction functions the writer runs (module-level, plain arguments: on
SQLite they may run in the writer's process); reads use the store's pooled connections.
The outbox's own transactions (claim, outcomes, release, replay) are in webhook_outbox.py.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, delete, func, insert, select, text, update

from mailgate.store.schema import (
    events,
    job_events,
    webhook_deliveries,
    webhook_endpoints,
    webhook_subscriptions,
)
from mailgate.store.webhook_outbox import (
    FAILED,
    Result,
    claim,
    record_results,
    release,
    replay,
)

if TYPE_CHECKING:
    from mailgate.store.store import Store

wd = webhook_deliveries
we = webhook_endpoints
ws = webhook_subscriptions


@dataclass(frozen=True)
class Endpoint:
    id: str
    url: str
    events: list[str]
    secret: str
    previous_secret: str
    previous_until: float | None
    description: str
    source: str  # "config" or "api"
    disabled_at: float | None
    disabled_reason: str
    created_at: float
    updated_at: float

    def secrets(self, now: float) -> list[str]:
        """The secrets that sign now: during a rotation, the new one and the previous."""
        if self.previous_secret and self.previous_until and self.previous_until > now:
            return [self.secret, self.previous_secret]
        return [self.secret]


@dataclass(frozen=True)
class WebhookDelivery:
    id: int
    endpoint_id: str
    event_type: str
    status: str
    attempts: int
    next_attempt_at: float | None
    last_status: int | None
    last_error: str
    created_at: float
    updated_at: float | None


def _endpoint(row: Any) -> Endpoint:
    return Endpoint(
        id=row.id,
        url=row.url,
        events=json.loads(row.events),
        secret=row.secret,
        previous_secret=row.previous_secret,
        previous_until=row.previous_until,
        description=row.description,
        source=row.source,
        disabled_at=row.disabled_at,
        disabled_reason=row.disabled_reason,
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


# ---- transactions (the writer runs them)


def _subscribe(conn: Connection, endpoint_id: str, types: Sequence[str] | None) -> None:
    """What the triggers fan events out to: nothing while disabled (``types`` None)."""
    conn.execute(delete(ws).where(ws.c.endpoint_id == endpoint_id))
    if types:
        conn.execute(insert(ws), [{"type": t, "endpoint_id": endpoint_id} for t in types])


# Why sync_config disabled an endpoint of source "config": a node's relay.toml lacks it.
# A node whose file has it again enables it (a 410's disable stays).
NOT_IN_CONFIG = "not in [[webhooks.endpoints]] of node "
# Serialises sync_config across nodes starting together (PostgreSQL advisory lock key).
_SYNC_LOCK = 0x6D67_7768  # "mgwh"


def sync_config(conn: Connection, rows: list[dict[str, Any]], now: float, node: str) -> list[str]:
    """Make the endpoints of source "config" those of this node's relay.toml (keeping a
    410's disable). One that the file lacks is disabled, not deleted: nodes share the
    table, so a node started with an older file removed it for all of them, with its
    pending webhooks. Returns the URLs disabled now.

    On PostgreSQL nodes starting together ran this at once: a duplicate key or a deadlock
    stopped one of them. An advisory lock held to the end of the transaction serialises
    them (SQLite has one writer)."""
    if conn.dialect.name == "postgresql":
        conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _SYNC_LOCK})
    keep = [r["id"] for r in rows]
    gone = conn.execute(
        select(we.c.id, we.c.url).where(
            we.c.source == "config", we.c.id.not_in(keep), we.c.disabled_at.is_(None)
        )
    ).all()
    for endpoint_id, _url in gone:
        conn.execute(
            update(we)
            .where(we.c.id == endpoint_id)
            .values(disabled_at=now, disabled_reason=NOT_IN_CONFIG + node, updated_at=now)
        )
        _subscribe(conn, endpoint_id, None)
    for r in rows:
        found = conn.execute(
            select(we.c.disabled_at, we.c.disabled_reason).where(we.c.id == r["id"])
        ).first()
        values = {
            "url": r["url"],
            "events": json.dumps(r["events"]),
            "secret": r["secret"],
            "description": r["description"],
            "updated_at": now,
        }
        disabled = found is not None and found[0] is not None
        if disabled and str(found[1]).startswith(NOT_IN_CONFIG):  # type: ignore[index]
            values.update(disabled_at=None, disabled_reason="")
            disabled = False
        if found is None:
            conn.execute(insert(we).values(id=r["id"], source="config", created_at=now, **values))
        else:
            conn.execute(update(we).where(we.c.id == r["id"]).values(**values))
        _subscribe(conn, r["id"], None if disabled else r["events"])
    return [url for _id, url in gone]


def create(conn: Connection, row: dict[str, Any]) -> None:
    conn.execute(insert(we).values(**{**row, "events": json.dumps(row["events"])}))
    _subscribe(conn, row["id"], row["events"])


def change(conn: Connection, endpoint_id: str, values: dict[str, Any], now: float) -> bool:
    """Update an endpoint (``enabled`` True/False among the values re-enables or disables
    it); False if there is no such endpoint."""
    row = conn.execute(select(we).where(we.c.id == endpoint_id)).first()
    if row is None:
        return False
    values = dict(values)
    enabled = values.pop("enabled", None)
    if enabled is True:
        values.update(disabled_at=None, disabled_reason="")
    elif enabled is False and row.disabled_at is None:
        values.update(disabled_at=now, disabled_reason="disabled by an operator")
    if "events" in values:
        values["events"] = json.dumps(values["events"])
    conn.execute(update(we).where(we.c.id == endpoint_id).values(updated_at=now, **values))
    after = conn.execute(select(we).where(we.c.id == endpoint_id)).one()
    _subscribe(conn, endpoint_id, None if after.disabled_at else json.loads(after.events))
    return True


def remove(conn: Connection, endpoint_id: str) -> bool:
    conn.execute(delete(wd).where(wd.c.endpoint_id == endpoint_id))
    conn.execute(delete(ws).where(ws.c.endpoint_id == endpoint_id))
    return bool(conn.execute(delete(we).where(we.c.id == endpoint_id)).rowcount)


def record(
    conn: Connection,
    owner: str,
    results: Sequence[Result],
    disable: Sequence[tuple[str, str]],
    now: float,
) -> None:
    """Attempts' outcomes (those still leased to ``owner``), and endpoints to disable
    (id, reason: a 410 Gone)."""
    record_results(conn, owner, results, now)
    for endpoint_id, reason in disable:
        conn.execute(
            update(we)
            .where(we.c.id == endpoint_id, we.c.disabled_at.is_(None))
            .values(disabled_at=now, disabled_reason=reason, updated_at=now)
        )
        _subscribe(conn, endpoint_id, None)


# ---- the store's face


class WebhookStore:
    def __init__(self, store: Store) -> None:
        self._store = store

    async def sync_config(self, rows: list[dict[str, Any]], now: float, node: str) -> list[str]:
        disabled: list[str] = await self._store.writer.run(sync_config, rows, now, node)
        return disabled

    async def create(self, row: dict[str, Any]) -> None:
        await self._store.writer.run(create, row)

    async def change(self, endpoint_id: str, values: dict[str, Any], now: float) -> bool:
        changed: bool = await self._store.writer.run(change, endpoint_id, values, now)
        return changed

    async def remove(self, endpoint_id: str) -> bool:
        removed: bool = await self._store.writer.run(remove, endpoint_id)
        return removed

    async def claim(
        self, endpoint_id: str, owner: str, now: float, limit: int, until: float
    ) -> list[dict[str, Any]]:
        # A claim lost to a power cut only makes the deliveries due again.
        rows: list[dict[str, Any]] = await self._store.writer.run(
            claim, endpoint_id, owner, now, limit, until, durable=False
        )
        return rows

    async def record(
        self,
        owner: str,
        results: Sequence[Result],
        disable: Sequence[tuple[str, str]],
        now: float,
    ) -> None:
        # Lost to a power cut, an outcome only sends its webhook again (at least once).
        await self._store.writer.run(
            record, owner, list(results), list(disable), now, durable=False
        )

    async def release(self, owner_prefix: str, now: float) -> int:
        released: int = await self._store.writer.run(release, owner_prefix, now)
        return released

    async def replay(
        self,
        since: float,
        now: float,
        *,
        endpoint_id: str | None = None,
        statuses: Sequence[str] = ("failed",),
        ids: Sequence[int] | None = None,
    ) -> int:
        count: int = await self._store.writer.run(
            replay, since, endpoint_id, list(statuses), now, None if ids is None else list(ids)
        )
        return count

    async def endpoints(self) -> list[Endpoint]:
        rows = await self._store._read(select(we).order_by(we.c.created_at, we.c.id))
        return [_endpoint(r) for r in rows]

    async def endpoint(self, endpoint_id: str) -> Endpoint | None:
        rows = await self._store._read(select(we).where(we.c.id == endpoint_id))
        return _endpoint(rows[0]) if rows else None

    async def deliveries(
        self,
        endpoint_id: str,
        *,
        status: str | None = None,
        limit: int = 50,
        before: int | None = None,
    ) -> list[WebhookDelivery]:
        """Newest first, by keyset (``before``: the last id of the previous page): failed
        ones through their own index, the others along ix_webhook_deliveries_listing."""
        q = (
            select(
                wd,
                func.coalesce("message." + events.c.type, "job." + job_events.c.type).label(
                    "event_type"
                ),
            )
            .select_from(
                wd.outerjoin(events, events.c.id == wd.c.event_id).outerjoin(
                    job_events, job_events.c.id == wd.c.job_event_id
                )
            )
            .where(wd.c.endpoint_id == endpoint_id)
            .order_by(wd.c.id.desc())
            .limit(limit)
        )
        if status is not None:
            q = q.where(wd.c.status == (FAILED if status == "failed" else status))
        if before is not None:
            q = q.where(wd.c.id < before)
        return [
            WebhookDelivery(
                id=r.id,
                endpoint_id=r.endpoint_id,
                event_type=r.event_type or "",
                status=r.status,
                attempts=r.attempts,
                next_attempt_at=r.next_attempt_at,
                last_status=r.last_status,
                last_error=r.last_error,
                created_at=r.created_at,
                updated_at=r.updated_at,
            )
            for r in await self._store._read(q)
        ]

    async def backlog(self) -> int:
        """Deliveries still to be sent, all endpoints."""
        rows = await self._store._read(
            select(func.count()).select_from(wd).where(wd.c.next_attempt_at.is_not(None))
        )
        return int(rows[0][0])
