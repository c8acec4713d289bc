"""API key rows. Only the SHA-256 of a key is stored; see mailgate.credentials."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

from sqlalchemy import Connection, insert, or_, select, update
from sqlalchemy.exc import IntegrityError

from mailgate.store.schema import api_keys, quota_usage

if TYPE_CHECKING:
    from mailgate.store.store import Store

log = logging.getLogger(__name__)

# A key's last use is written at most this often per key and process: a send does not
# wait for it, and a busy key costs one small write a minute.
LAST_USED_EVERY = 60.0


@dataclass(frozen=True, slots=True)
class KeyRecord:
    id: str
    name: str
    key_hash: str
    scope: str
    domains: tuple[str, ...]
    created_at: float
    revoked_at: float | None
    rate: str = ""
    default_from: str = ""  # sender of API requests that name none
    quota: str = ""  # accepted recipients per calendar period, e.g. "10000/month"
    last_used_at: float | None = None  # to within LAST_USED_EVERY; None: never

    @property
    def active(self) -> bool:
        return self.revoked_at is None


class DuplicateKeyName(ValueError):
    pass


_COLUMNS = (
    api_keys.c.id,
    api_keys.c.name,
    api_keys.c.key_hash,
    api_keys.c.scope,
    api_keys.c.domains,
    api_keys.c.created_at,
    api_keys.c.revoked_at,
    api_keys.c.rate,
    api_keys.c.default_from,
    api_keys.c.quota,
    api_keys.c.last_used_at,
)


def _record(row: tuple) -> KeyRecord:  # type: ignore[type-arg]
    domains = tuple(x for x in (row[4] or "").split(",") if x)
    return KeyRecord(
        row[0],
        row[1],
        row[2],
        row[3],
        domains,
        row[5],
        row[6],
        row[7] or "",
        row[8],
        row[9],
        row[10],
    )


def _add(conn: Connection, record: KeyRecord) -> None:
    exists = conn.execute(select(api_keys.c.id).where(api_keys.c.name == record.name))
    if exists.first() is not None:
        raise DuplicateKeyName(record.name)
    stmt = insert(api_keys).values(
        id=record.id,
        name=record.name,
        key_hash=record.key_hash,
        scope=record.scope,
        domains=",".join(record.domains),
        created_at=record.created_at,
        revoked_at=None,
        rate=record.rate,
        default_from=record.default_from,
        quota=record.quota,
    )
    try:
        conn.execute(stmt)
    except IntegrityError as exc:
        raise DuplicateKeyName(record.name) from exc


def _revoke(conn: Connection, name_or_id: str, now: float) -> bool:
    stmt = (
        update(api_keys)
        .where(
            or_(api_keys.c.name == name_or_id, api_keys.c.id == name_or_id),
            api_keys.c.revoked_at.is_(None),
        )
        .values(revoked_at=now)
    )
    return conn.execute(stmt).rowcount > 0


def _set_limits(conn: Connection, key_id: str, values: dict[str, str]) -> bool:
    stmt = update(api_keys).where(api_keys.c.id == key_id, api_keys.c.revoked_at.is_(None))
    return conn.execute(stmt.values(**values)).rowcount > 0


def _touch(conn: Connection, key_id: str, now: float) -> None:
    conn.execute(
        update(api_keys)
        .where(
            api_keys.c.id == key_id,
            or_(api_keys.c.last_used_at.is_(None), api_keys.c.last_used_at < now),
        )
        .values(last_used_at=now)
    )


class KeyStore:
    def __init__(self, store: Store) -> None:
        self._store = store
        self._noted: dict[str, float] = {}
        self._writes: set[asyncio.Task[None]] = set()

    def note_used(self, key_id: str, now: float) -> None:
        """Record that the key authenticated, in the background: at most once per
        LAST_USED_EVERY per key, never awaited by the caller (a send or a login)."""
        if now - self._noted.get(key_id, float("-inf")) < LAST_USED_EVERY:
            return
        if len(self._noted) > 100_000:
            self._noted.clear()
        self._noted[key_id] = now
        task = asyncio.get_running_loop().create_task(self._write_used(key_id, now))
        self._writes.add(task)
        task.add_done_callback(self._writes.discard)

    async def _write_used(self, key_id: str, now: float) -> None:
        try:
            await self._store.writer.run(_touch, key_id, now, durable=False)
        except Exception as exc:  # a lost "last used" is not worth failing anything for
            log.debug("could not record the last use of key %s: %s", key_id, exc)

    async def add(self, record: KeyRecord) -> None:
        await self._store.writer.run(_add, record)

    async def get(self, key_id: str) -> KeyRecord | None:
        rows = await self._store._read(select(*_COLUMNS).where(api_keys.c.id == key_id))
        return _record(rows[0]) if rows else None

    async def by_name(self, name: str) -> KeyRecord | None:
        rows = await self._store._read(select(*_COLUMNS).where(api_keys.c.name == name))
        return _record(rows[0]) if rows else None

    async def all(self) -> list[KeyRecord]:
        rows = await self._store._read(select(*_COLUMNS).order_by(api_keys.c.created_at))
        return [_record(r) for r in rows]

    async def quota_usage(self, key_id: str, period: str) -> int:
        """Recipients accepted for the key in ``period`` ("2026-12" or "2026-12-03")."""
        rows = await self._store._read(
            select(quota_usage.c.used).where(
                quota_usage.c.key_id == key_id, quota_usage.c.period == period
            )
        )
        return int(rows[0][0]) if rows else 0

    async def set_limits(
        self, key_id: str, *, rate: str, quota: str, domains: tuple[str, ...]
    ) -> bool:
        """Change an active key's rate ("" = [http] rate), quota ("" = none) and sender
        domains (empty = all), checked by the caller (credentials.key_limits). False: no
        such active key. API lookups cache a key for seconds: it applies within them."""
        values = {"rate": rate, "quota": quota, "domains": ",".join(domains)}
        changed: bool = await self._store.writer.run(_set_limits, key_id, values)
        return changed

    async def revoke(self, name_or_id: str, now: float) -> bool:
        revoked: bool = await self._store.writer.run(_revoke, name_or_id, now)
        return revoked
