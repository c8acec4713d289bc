"""Story: what the relay has finished with goes away on time. Bodies of finished mail are
emptied after [retention] bodies (rows kept, marked); messages with their deliveries and
events, final webhook deliveries and finished jobs are deleted after [retention] records;
on SQLite the freed pages go back to the file system. Pending mail is never touched.
``mailgate db stats`` shows size, rows and the oldest row; an older SQLite database gets
incremental auto-vacuum from revision 0004."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from pathlib import Path

from click.testing import CliRunner
from sqlalchemy import func, insert, select
from tests.conftest import sent_updates

from mailgate.cli import main
from mailgate.config import load_settings
from mailgate.retention import Retention
from mailgate.store import NewJob, NewMessage, Store, migrate
from mailgate.store.engine import create_engine
from mailgate.store.schema import (
    deliveries,
    events,
    jobs,
    messages,
    webhook_deliveries,
    webhook_endpoints,
)

DAY = 86400.0
T0 = 1_700_000_000.0
BODY = b"Subject: x\r\n\r\n" + b"y" * 20_000 + b"\r\n"


def msg(i: int, job: str | None = None) -> NewMessage:
    return NewMessage(
        id=f"msg-{i:05d}",
        created_at=T0,
        sender="app@example.com",
        recipients=["a@dest.test", "b@dest.test"],
        raw=BODY,
        subject="x",
        job_id=job,
    )


async def count(store: Store, table, *where) -> int:  # type: ignore[no-untyped-def]
    async with store.engine.connect() as conn:
        stmt = select(func.count()).select_from(table)
        if where:
            stmt = stmt.where(*where)
        return int((await conn.execute(stmt)).scalar_one())


def retention(store: Store, at: float) -> Retention:
    settings = load_settings(data={"delivery": {"enabled": False}}, environ={})
    return Retention(settings, store, clock=lambda: at, batch=7, pause=0)


def test_bodies_then_records_are_purged_and_pending_mail_kept(db_url: str) -> None:
    async def scenario() -> None:
        store = await Store.open(db_url)
        try:
            await store.enqueue(
                [msg(i, "job-1") for i in range(20)], job=NewJob("job-1", "", "http", "", 40, T0)
            )
            await store.enqueue([msg(i) for i in range(20, 30)])
            claimed = await store.claim("n:1", T0 + 5, 60, T0 + 600)
            finished = [m for m in claimed if m.id < "msg-00020"]
            updates = sent_updates(finished, "250 ok")
            await store.record("n:1", T0 + 10, updates)
            await store.release_leases("n:1", T0 + 10)  # msg-00020.. stay pending
            async with store.engine.begin() as conn:
                await conn.execute(
                    insert(webhook_endpoints).values(
                        id="ep",
                        url="https://h.test/",
                        events="[]",
                        secret="whsec_x",
                        source="api",
                        created_at=T0,
                        updated_at=T0,
                    )
                )
                await conn.execute(
                    insert(webhook_deliveries),
                    [
                        {
                            "endpoint_id": "ep",
                            "event_id": i,
                            "status": st,
                            "attempts": 1,
                            "next_attempt_at": nxt,
                            "created_at": T0,
                        }
                        for i, (st, nxt) in enumerate(
                            [("succeeded", None), ("failed", None), ("pending", T0 + 100 * DAY)]
                        )
                    ],
                )

            # Within the windows: nothing goes.
            done = await retention(store, T0 + 6 * DAY).round()
            assert done.bodies == done.messages == done.webhook_deliveries == done.jobs == 0

            # After [retention] bodies (7 d): the 20 finished bodies, none of the pending.
            done = await retention(store, T0 + 8 * DAY).round()
            assert done.bodies == 20 and done.messages == 0
            assert len(done.batches) >= 3  # batches of 7
            assert await count(store, messages, messages.c.purged_at.is_not(None)) == 20
            assert await count(store, messages, func.length(messages.c.raw) == 0) == 20
            assert await count(store, messages, messages.c.purged_at.is_(None)) == 10
            assert await count(store, events) == 30 * 2 + 20 * 2
            if db_url.startswith("sqlite"):
                async with store.engine.connect() as conn:
                    free = (await conn.exec_driver_sql("PRAGMA freelist_count")).scalar_one()
                assert done.pages > 50 and free == 0
                # Given back to the file system at once: the WAL was copied into the file,
                # which shrank, and cut to nothing.
                path = Path(db_url.split("///", 1)[1])
                assert path.with_name(path.name + "-wal").stat().st_size == 0

            # After [retention] records (90 d): the finished messages with their rows, the
            # final webhook deliveries and the job; pending mail and its events stay.
            done = await retention(store, T0 + 91 * DAY).round()
            assert done.messages == 20 and done.webhook_deliveries == 2 and done.jobs == 1
            assert await count(store, messages) == 10
            assert await count(store, deliveries) == 20
            assert await count(store, events) == 20
            assert await count(store, webhook_deliveries) == 1
            assert await count(store, jobs) == 0
            pending = await store.claim("n:2", T0 + 91 * DAY, 100, T0 + 92 * DAY)
            assert len(pending) == 10 and all(m.raw == BODY for m in pending)
        finally:
            await store.close()

    asyncio.run(scenario())


def test_db_stats_command(tmp_path: Path) -> None:
    data = tmp_path / "data"
    cfg = tmp_path / "relay.toml"
    cfg.write_text(f'[server]\ndata_dir = "{data}"\n[delivery]\nenabled = false\n')

    async def fill() -> None:
        store = await Store.open(f"sqlite+aiosqlite:///{data / 'mailgate.db'}")
        try:
            await store.enqueue([msg(i) for i in range(3)])
        finally:
            await store.close()

    asyncio.run(fill())
    result = CliRunner().invoke(main, ["db", "stats", "--config", str(cfg), "--json"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.output)
    assert doc["engine"] == "sqlite" and doc["size"] > 60_000
    assert doc["tables"]["messages"] == {"rows": 3, "oldest": T0}
    assert doc["tables"]["deliveries"]["rows"] == 6
    assert doc["tables"]["events"]["rows"] == 6
    assert doc["tables"]["settings"]["oldest"] is None
    text = CliRunner().invoke(main, ["db", "stats", "--config", str(cfg)])
    assert text.exit_code == 0
    assert "messages" in text.output and "2023-11-14T22:13:20Z" in text.output


def test_revision_0004_turns_on_incremental_vacuum_in_an_older_sqlite_file(
    tmp_path: Path,
) -> None:
    path = tmp_path / "old.db"
    with sqlite3.connect(path) as conn:  # made before 0004: auto_vacuum NONE
        conn.execute("PRAGMA auto_vacuum=NONE")
        conn.execute("CREATE TABLE kept (x)")
        conn.execute("INSERT INTO kept VALUES (42)")

    async def upgrade() -> None:
        engine = create_engine(f"sqlite+aiosqlite:///{path}")
        try:
            await migrate.upgrade(engine)
            assert (await migrate.status(engine)).up_to_date
        finally:
            await engine.dispose()

    asyncio.run(upgrade())
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA auto_vacuum").fetchone() == (2,)
        assert conn.execute("SELECT x FROM kept").fetchall() == [(42,)]
        version = conn.execute("SELECT version_num FROM alembic_version").fetchone()
        assert version == (migrate.head(),)


def test_emptying_bodies_writes_little_more_than_the_rows(tmp_path: Path) -> None:
    """SQLite with secure_delete on (Debian's default) zeroed every page a purge freed, so
    the WAL took the size of the bodies emptied: on a full disk the purge meant to make
    room could never commit. Emptying 4 MB of bodies must write far less than 4 MB."""
    path = tmp_path / "q.db"

    async def scenario() -> None:
        store = await Store.open(f"sqlite+aiosqlite:///{path}")
        try:
            big = b"Subject: x\r\n\r\n" + b"y" * 200_000 + b"\r\n"
            await store.enqueue(
                [
                    NewMessage(
                        id=f"big-{i:03d}",
                        created_at=T0,
                        sender="app@example.com",
                        recipients=["a@dest.test"],
                        raw=big,
                        subject="x",
                    )
                    for i in range(20)
                ]
            )
            claimed = await store.claim("n:1", T0 + 5, 60, T0 + 600)
            await store.record("n:1", T0 + 10, sent_updates(claimed, "250 ok"))
            async with store.engine.connect() as conn:
                mode = (await conn.exec_driver_sql("PRAGMA secure_delete")).scalar_one()
            assert mode == 2  # FAST: zeroes only what is written anyway
            await store.retention.checkpoint()
            assert path.with_name("q.db-wal").stat().st_size == 0
            assert await store.retention.purge_bodies(T0 + 8 * DAY, T0 + 8 * DAY, 100) == 20
            assert path.with_name("q.db-wal").stat().st_size < 400_000
        finally:
            await store.close()

    asyncio.run(scenario())


def test_nodes_purging_together_count_each_message_once(pg_url: str) -> None:
    """Two PostgreSQL nodes' retention took the same ids (each reads them before the other
    commits) and both counted them: 690 and 1,084 "deleted" of 1,570 in the probe."""
    url = "postgresql+asyncpg://" + pg_url.split("://", 1)[1]

    async def scenario() -> None:
        a, b = await Store.open(url), await Store.open(url)
        try:
            await a.enqueue([msg(i) for i in range(40)])
            claimed = await a.claim("n:1", T0 + 5, 100, T0 + 600)
            await a.record("n:1", T0 + 10, sent_updates(claimed, "250 ok"))
            later = T0 + 91 * DAY
            got = await asyncio.gather(
                a.retention.purge_bodies(later, later, 100),
                b.retention.purge_bodies(later, later, 100),
            )
            assert sum(got) == 40, got
            got = await asyncio.gather(
                a.retention.purge_messages(later, 100), b.retention.purge_messages(later, 100)
            )
            assert sum(got) == 40, got
        finally:
            await a.close()
            await b.close()

    asyncio.run(scenario())
