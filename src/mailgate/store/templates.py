"""Template rows (name, subject, html, text) for the HTTP API."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, delete, select, update

from mailgate.store.schema import templates

if TYPE_CHECKING:
    from mailgate.store.store import Store


@dataclass(frozen=True, slots=True)
class TemplateRecord:
    id: str
    name: str
    subject: str
    html: str
    text: str
    active: bool
    created_at: float
    updated_at: float
    from_address: str = ""  # the sender of requests that name none ("" = the key's)


_COLUMNS = (
    templates.c.id,
    templates.c.name,
    templates.c.subject,
    templates.c.html,
    templates.c.text,
    templates.c.active,
    templates.c.created_at,
    templates.c.updated_at,
    templates.c.from_address,
)


def _record(row: Any) -> TemplateRecord:
    return TemplateRecord(
        row[0], row[1], row[2], row[3], row[4], bool(row[5]), row[6], row[7], row[8]
    )


def _update(conn: Connection, template_id: str, values: dict[str, Any]) -> bool:
    stmt = update(templates).where(templates.c.id == template_id).values(**values)
    return conn.execute(stmt).rowcount > 0


def _delete(conn: Connection, template_id: str) -> bool:
    stmt = delete(templates).where(templates.c.id == template_id)
    return conn.execute(stmt).rowcount > 0


# How long a template read is reused: every send that names a template reads it, and the
# read was a quarter of a send's CPU in the relay. Changes made on this node are seen at
# once; other nodes' within this long.
CACHE_SECONDS = 2.0
_CACHE_MAX = 1000


class TemplateStore:
    def __init__(self, store: Store) -> None:
        self._store = store
        self._cache: dict[str, tuple[TemplateRecord | None, float]] = {}

    async def add(self, record: TemplateRecord) -> None:
        await self._store.writer.write(
            [
                (
                    "insert_template",
                    [
                        {
                            "id": record.id,
                            "name": record.name,
                            "subject": record.subject,
                            "html": record.html,
                            "text": record.text,
                            "active": int(record.active),
                            "created_at": record.created_at,
                            "updated_at": record.updated_at,
                            "from_address": record.from_address,
                        }
                    ],
                )
            ]
        )
        self._cache.pop(record.id, None)  # "none such" may be cached

    async def get(self, template_id: str) -> TemplateRecord | None:
        now = time.monotonic()
        hit = self._cache.get(template_id)
        if hit is not None and hit[1] > now:
            return hit[0]
        rows = await self._store._read(select(*_COLUMNS).where(templates.c.id == template_id))
        record = _record(rows[0]) if rows else None
        if len(self._cache) >= _CACHE_MAX:
            self._cache.clear()
        self._cache[template_id] = (record, now + CACHE_SECONDS)
        return record

    async def all(self, *, limit: int = 100, offset: int = 0) -> list[TemplateRecord]:
        rows = await self._store._read(
            select(*_COLUMNS).order_by(templates.c.created_at).limit(limit).offset(offset)
        )
        return [_record(r) for r in rows]

    async def update(self, template_id: str, values: dict[str, Any]) -> bool:
        updated: bool = await self._store.writer.run(_update, template_id, values)
        self._cache.pop(template_id, None)
        return updated

    async def delete(self, template_id: str) -> bool:
        deleted: bool = await self._store.writer.run(_delete, template_id)
        self._cache.pop(template_id, None)
        return deleted
