"""Story: the dashboard's subject and tag search answer through their indexes (revision
0006) on SQLite and PostgreSQL, answer what a plain scan answers, and lose their rows
with the messages retention deletes; messages stored before the revision are found too."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from sqlalchemy import Connection, func, select, text
from tests.conftest import sent_updates

from mailgate.store import NewMessage, Store, migrate
from mailgate.store import ui as store_ui
from mailgate.store.schema import SQLITE_SUBJECT_FTS, message_tags
from mailgate.store.ui import MessageQuery, search_messages

SUBJECTS = ["Order shipped", "Weekly news", "Your invoice 100%", "Re: ORDER_shipped", "Hi"]


def msg(i: int, at: float) -> NewMessage:
    tags: tuple[str, ...] = ("orders",) if i % 2 else ("news", "News")
    if i % 10 == 3:
        tags += ("vip", "vip")  # a repeated tag is one row
    return NewMessage(
        id=f"msg-{i:04d}",
        created_at=at,
        sender="app@example.com",
        recipients=[f"r{i}@dest.test"],
        raw=b"Subject: x\r\n\r\nbody\r\n",
        subject=SUBJECTS[i % len(SUBJECTS)] + f" #{i}",
        tags=tags,
    )


async def _all(store: Store, q: MessageQuery, page: int = 7) -> list[str]:
    """Every page of a search, by keyset, as ids."""
    found: list[str] = []
    while True:
        rows = await search_messages(store, q, page)
        found += [r["id"] for r in rows]
        if len(rows) < page:
            return found
        last = rows[-1]
        q = MessageQuery(**{**_fields(q), "before": (last["created_at"], last["id"])})


def _fields(q: MessageQuery) -> dict[str, Any]:
    return {f: getattr(q, f) for f in q.__slots__}  # type: ignore[attr-defined]


def _expected(n: int, at: float, keep: Any) -> list[str]:
    """Newest first: what a scan of every message answers."""
    return [
        m.id
        for m in sorted((msg(i, at + i) for i in range(n)), key=lambda m: -m.created_at)
        if keep(m)
    ]


@pytest.mark.parametrize("few", [1, 100_000], ids=["walk", "index"])
def test_subject_and_tag_search_through_the_indexes(
    db_url: str, few: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    # few=1: every tag and subject counts as common (the newest-first walk); 100,000:
    # every one as rare (the index's hits). Both answer what a scan answers.
    monkeypatch.setattr(store_ui, "_FEW", few)
    n, at = 60, time.time() - 3600

    async def main() -> None:
        store = await Store.open(db_url)
        try:
            await store.enqueue([msg(i, at + i) for i in range(n)])
            cases = {
                MessageQuery(tag="vip"): lambda m: "vip" in m.tags,
                MessageQuery(tag="news"): lambda m: "news" in m.tags,
                MessageQuery(tag="News"): lambda m: "News" in m.tags,  # exact, case-sensitive
                MessageQuery(tag="new"): lambda m: False,
                MessageQuery(subject="shipped"): lambda m: "shipped" in m.subject.lower(),
                MessageQuery(subject="order_SHIPPED"): lambda m: (
                    "order_shipped" in m.subject.lower()
                ),
                MessageQuery(subject="100%"): lambda m: "100%" in m.subject,
                MessageQuery(subject="ews #1"): lambda m: "ews #1" in m.subject,
                MessageQuery(subject="nothing like it"): lambda m: False,
                MessageQuery(subject="Hi"): lambda m: "hi" in m.subject.lower(),  # short: a scan
                MessageQuery(subject="ship", tag="vip"): lambda m: (
                    "ship" in m.subject and "vip" in m.tags
                ),
                MessageQuery(tag="orders", since=at + 20, until=at + 40): lambda m: (
                    "orders" in m.tags and at + 20 <= m.created_at <= at + 40
                ),
            }
            for q, keep in cases.items():
                assert await _all(store, q) == _expected(n, at, keep), q

            # The tag rows: one per distinct tag of a message, none for a message without.
            async with store.engine.connect() as conn:
                vip = await conn.execute(select(func.count()).where(message_tags.c.tag == "vip"))
                assert vip.scalar_one() == len([i for i in range(n) if i % 10 == 3])
        finally:
            await store.close()

    asyncio.run(main())


def test_retention_takes_the_index_rows_with_the_messages(db_url: str) -> None:
    at = time.time() - 10 * 86400

    async def main() -> None:
        store = await Store.open(db_url)
        try:
            await store.enqueue([msg(i, at + i) for i in range(20)])
            claimed = await store.claim("node:1", time.time(), 100, time.time() + 60)
            updates = sent_updates(claimed)
            await store.record("node:1", time.time(), updates)
            assert await _all(store, MessageQuery(subject="shipped"))
            done = await store.retention.purge_messages(time.time() + 1, 1000)
            assert done == 20
            assert await _all(store, MessageQuery(tag="news")) == []
            assert await _all(store, MessageQuery(subject="shipped")) == []
            async with store.engine.connect() as conn:
                tags = await conn.execute(select(func.count()).select_from(message_tags))
                assert tags.scalar_one() == 0
                if store.dialect == "sqlite":
                    fts = await conn.execute(text(f"SELECT count(*) FROM {SQLITE_SUBJECT_FTS}"))
                    assert fts.scalar_one() == 0
        finally:
            await store.close()

    asyncio.run(main())


def test_the_indexes_serve_the_search(tmp_path: Path) -> None:
    """SQLite's plans: a rare subject is an FTS5 lookup, a tag walks ix_message_tags_tag."""

    async def main() -> None:
        store = await Store.open(f"sqlite+aiosqlite:///{tmp_path / 'q.db'}")
        try:
            async with store.engine.connect() as conn:
                plan = await conn.execute(
                    text(
                        f"EXPLAIN QUERY PLAN SELECT rowid FROM {SQLITE_SUBJECT_FTS}"
                        f" WHERE {SQLITE_SUBJECT_FTS} MATCH '\"invoice\"'"
                    )
                )
                assert "VIRTUAL TABLE INDEX" in " ".join(str(r) for r in plan)
                plan = await conn.execute(
                    text(
                        "EXPLAIN QUERY PLAN SELECT m.id FROM messages m JOIN message_tags t"
                        " ON t.message_id = m.id WHERE t.tag = 'vip'"
                        " ORDER BY t.created_at DESC, t.message_id DESC LIMIT 51"
                    )
                )
                steps = " ".join(str(r) for r in plan)
                assert "ix_message_tags_tag" in steps and "TEMP B-TREE" not in steps
        finally:
            await store.close()

    asyncio.run(main())


def test_messages_stored_before_the_revision_are_indexed(db_url: str) -> None:
    at = time.time() - 60

    def at_0005(conn: Connection) -> None:
        command.upgrade(migrate.alembic_config(conn), "0005")
        for i, (subject, tags) in enumerate(
            [("Old invoice", '["legacy", "legacy"]'), ("Old news", "[]"), ("x", '"odd"')]
        ):
            conn.execute(
                text(
                    "INSERT INTO messages (id, created_at, sender, subject, message_id_header,"
                    " source, credential, client_address, size, raw, key_id, status,"
                    " display_to, tags, metadata, tracking) VALUES (:id, :at, 'a@example.com',"
                    " :subject, '', 'smtp', '', '', 1, :raw, '', 'sent', '[]', :tags, '{}',"
                    " '{}')"
                ),
                {"id": f"old-{i}", "at": at + i, "subject": subject, "raw": b"x", "tags": tags},
            )

    async def main() -> None:
        from mailgate.store.engine import create_engine

        engine = create_engine(db_url)
        try:
            async with engine.begin() as conn:
                await conn.run_sync(at_0005)
        finally:
            await engine.dispose()
        store = await Store.open(db_url)  # applies 0006 (online)
        try:
            assert await _all(store, MessageQuery(tag="legacy")) == ["old-0"]
            assert await _all(store, MessageQuery(subject="invoice")) == ["old-0"]
            assert await _all(store, MessageQuery(subject="old ")) == ["old-1", "old-0"]
            assert await _all(store, MessageQuery(tag="odd")) == []  # not a list: no tags
        finally:
            await store.close()

    asyncio.run(main())
