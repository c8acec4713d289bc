"""Suppressed addresses: rows, and the statements that add, remove and list them."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, delete, func, select

from mailgate.models import Suppression
from mailgate.store.schema import suppressions

if TYPE_CHECKING:
    from mailgate.store.store import Store


def insert_ignoring_duplicates(dialect: str) -> Any:
    """INSERT that keeps the first suppression of an address (its original reason)."""
    from sqlalchemy.dialects import postgresql, sqlite

    if dialect == "postgresql":
        return postgresql.insert(suppressions).on_conflict_do_nothing(index_elements=["address"])
    return sqlite.insert(suppressions).on_conflict_do_nothing(index_elements=["address"])


def row(s: Suppression) -> dict[str, Any]:
    return {
        "address": s.address.lower(),
        "reason": s.reason,
        "detail": s.detail[:1000],
        "message_id": s.message_id,
        "created_at": s.created_at,
    }


def _remove(conn: Connection, address: str) -> bool:
    stmt = delete(suppressions).where(suppressions.c.address == address)
    return conn.execute(stmt).rowcount > 0


class SuppressionStore:
    def __init__(self, store: Store) -> None:
        self._store = store

    async def add(self, entries: list[Suppression]) -> None:
        if entries:
            await self._store.writer.write([("insert_suppression", [row(e) for e in entries])])

    async def remove(self, address: str) -> bool:
        removed: bool = await self._store.writer.run(_remove, address.lower())
        return removed

    async def get(self, address: str) -> Suppression | None:
        rows = await self._store._read(
            select(*suppressions.c).where(suppressions.c.address == address.lower())
        )
        return Suppression(*rows[0]) if rows else None

    async def list(self, *, limit: int = 100, offset: int = 0) -> list[Suppression]:
        rows = await self._store._read(
            select(*suppressions.c)
            .order_by(suppressions.c.created_at.desc())
            .limit(limit)
            .offset(offset)
        )
        return [Suppression(*r) for r in rows]

    async def addresses(self) -> set[str]:
        rows = await self._store._read(select(suppressions.c.address))
        return {r[0] for r in rows}

    async def fingerprint(self) -> tuple[int, float]:
        """Changes whenever an address is added or removed (count, newest)."""
        rows = await self._store._read(
            select(func.count(), func.coalesce(func.max(suppressions.c.created_at), 0.0))
        )
        return int(rows[0][0]), float(rows[0][1])
