"""Story: on SQLite an accepted message's subject waits in messages_subject_pending until
the relay indexes it in bulk (revision 0009); the search finds it either way, a deleted
message leaves nothing behind, and the running relay keeps the index up to date."""

from __future__ import annotations

import asyncio
import smtplib
import time
from pathlib import Path

from alembic import command
from sqlalchemy import Connection, text
from tests.integration.test_message_search import _all, msg

from mailgate.store import Store, migrate
from mailgate.store.engine import create_engine
from mailgate.store.schema import SQLITE_SUBJECT_FTS, SQLITE_SUBJECT_PENDING
from mailgate.store.subject_index import BATCH, index_pending
from mailgate.store.ui import MessageQuery


async def _counts(store: Store) -> tuple[int, int]:
    """(pending, indexed) rows."""
    async with store.engine.connect() as conn:
        pending = await conn.execute(text(f"SELECT count(*) FROM {SQLITE_SUBJECT_PENDING}"))
        indexed = await conn.execute(text(f"SELECT count(*) FROM {SQLITE_SUBJECT_FTS}"))
        return pending.scalar_one(), indexed.scalar_one()


def test_subjects_are_found_before_and_after_the_bulk_index_takes_them(tmp_path: Path) -> None:
    at = time.time() - 600

    async def main() -> None:
        store = await Store.open(f"sqlite+aiosqlite:///{tmp_path / 'q.db'}")
        try:
            await store.enqueue([msg(i, at + i) for i in range(30)])
            assert await _counts(store) == (30, 0)
            waiting = await _all(store, MessageQuery(subject="shipped"))
            assert len(waiting) == 12  # "Order shipped" and "Re: ORDER_shipped", 6 of each

            # Oldest first, a limited number a pass, until nothing is pending.
            assert await store.writer.run(index_pending, 20) == 20
            assert await _counts(store) == (10, 20)
            assert await _all(store, MessageQuery(subject="shipped")) == waiting
            assert await store.writer.run(index_pending, BATCH) == 10
            assert await store.writer.run(index_pending, BATCH) == 0
            assert await _counts(store) == (0, 30)
            assert await _all(store, MessageQuery(subject="shipped")) == waiting
            assert await _all(store, MessageQuery(subject="invoice 100%")) == [
                f"msg-{i:04d}" for i in (27, 22, 17, 12, 7, 2)
            ]

            # One indexed message and one pending, both deleted: nothing of them is left.
            await store.enqueue([msg(30, at + 30)])
            async with store.engine.begin() as conn:
                await conn.execute(
                    text("DELETE FROM messages WHERE id IN ('msg-0000', 'msg-0030')")
                )
            assert await _counts(store) == (0, 29)
            # A new message may take the rowid of the newest one deleted: it is indexed.
            await store.enqueue([msg(31, at + 31)])
            assert await store.writer.run(index_pending, BATCH) == 1
            assert await _all(store, MessageQuery(subject="#31")) == ["msg-0031"]
            assert await _counts(store) == (0, 30)
        finally:
            await store.close()

    asyncio.run(main())


def test_downgrade_indexes_what_is_pending_and_restores_the_insert_trigger(
    tmp_path: Path,
) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'q.db'}"

    def downgrade(conn: Connection) -> None:
        command.downgrade(migrate.alembic_config(conn), "0008")

    async def main() -> None:
        store = await Store.open(url)
        try:
            await store.enqueue([msg(i, time.time()) for i in range(5)])
        finally:
            await store.close()
        engine = create_engine(url)
        try:
            async with engine.begin() as conn:
                await conn.run_sync(downgrade)
            async with engine.begin() as conn:
                await conn.execute(
                    text(
                        "INSERT INTO messages (id, created_at, sender, subject, message_id_header,"
                        " source, credential, client_address, size, raw, key_id, status,"
                        " display_to, tags, metadata, tracking) VALUES ('after', 0, 'a@x.test',"
                        " 'Unique words', '', 'smtp', '', '', 1, x'78', '', 'sent', '[]', '[]',"
                        " '{}', '{}')"
                    )
                )
            async with engine.connect() as conn:
                tables = await conn.execute(text("SELECT name FROM sqlite_master"))
                assert SQLITE_SUBJECT_PENDING not in {r[0] for r in tables}
                indexed = await conn.execute(text(f"SELECT count(*) FROM {SQLITE_SUBJECT_FTS}"))
                assert indexed.scalar_one() == 6  # the 5 pending and the one inserted since
        finally:
            await engine.dispose()
        store = await Store.open(url)  # 0009 again
        try:
            assert await _all(store, MessageQuery(subject="unique")) == ["after"]
            assert await _counts(store) == (0, 6)
        finally:
            await store.close()

    asyncio.run(main())


def test_the_running_relay_indexes_what_it_accepts(relay) -> None:  # type: ignore[no-untyped-def]
    key = relay.create_key("subjects")
    with smtplib.SMTP("127.0.0.1", relay.port()) as client:
        client.login("apikey", key)
        for i in range(3):
            client.sendmail(
                "app@example.com", ["to@dest.test"], f"Subject: Receipt {i}\r\n\r\nx".encode()
            )
    deadline = time.monotonic() + 15
    while relay.call(_counts(relay.store)) != (0, 3):
        assert time.monotonic() < deadline, relay.call(_counts(relay.store))
        time.sleep(0.1)
    found = relay.call(_all(relay.store, MessageQuery(subject="receipt")))
    assert len(found) == 3


def test_a_pass_walks_the_pending_rows_not_every_message(tmp_path: Path) -> None:
    """The pass's join starts from the pending rows: with the plain JOIN of revision 0009's
    first form, SQLite walked every message kept (25 ms a pass at 20,000, growing with the
    queue's history) to find the few pending ones."""
    from mailgate.store.subject_index import _INDEX

    async def main() -> None:
        store = await Store.open(f"sqlite+aiosqlite:///{tmp_path / 'q.db'}")
        try:
            await store.enqueue([msg(i, time.time()) for i in range(5)])

            def plan(conn: Connection) -> list[str]:
                select = _INDEX[_INDEX.index("SELECT") :]
                rows = conn.exec_driver_sql("EXPLAIN QUERY PLAN " + select, (10**12,)).all()
                return [str(row[-1]) for row in rows]

            steps = await store.writer.run(plan)
            assert steps[0].startswith("SEARCH p USING INTEGER PRIMARY KEY"), steps
            assert steps[1] == "SEARCH m USING INTEGER PRIMARY KEY (rowid=?)", steps
        finally:
            await store.close()

    asyncio.run(main())
