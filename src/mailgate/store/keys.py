"""API key rows. Only the SHA-256 of a key is stored; see mailgate.credentials."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from sqlalchemy import Connection, insert, or_, select, update
from sqlalchemy.exc import IntegrityError

from mailgate.store.schema import api_keys, quota_usage

if TYPE_CHECKING:
    from mailgate.store.store import Store


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
)


def _record(row: tuple) -> KeyRecord:  # type: ignore[type-arg]
    domains = tuple(x for x in (row[4] or "").split(",") if x)
    return KeyRecord(
        row[0], row[1], row[2], row[3], domains, row[5], row[6], row[7] or "", row[8], row[9]
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


class KeyStore:
    def __init__(self, store: Store) -> None:
        self._store = store

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

    async def revoke(self, name_or_id: str, now: float) -> bool:
        revoked: bool = await self._store.writer.run(_revoke, name_or_id, now)
        return revoked
