"""Story: the webhook outbox's own transactions, on both engines, against a real store. A
claim leases an endpoint's due rows with their events and messages, in id order; outcomes
land only on rows still leased to their owner; retention and replay find a moment's
rows by id (there is no index on created_at), and the failed listing walks the index that
only failures enter."""

from __future__ import annotations

import asyncio
from typing import Any

from sqlalchemy import insert, select

from mailgate.models import NewMessage
from mailgate.store import Store
from mailgate.store import webhook_outbox as outbox
from mailgate.store.schema import webhook_deliveries as wd
from mailgate.store.webhooks import Result

T0 = 1_700_000_000.0
OWNER = "node:1"


def endpoint(endpoint_id: str, events: list[str]) -> dict[str, Any]:
    return {
        "id": endpoint_id,
        "url": f"https://{endpoint_id}.test/",
        "events": events,
        "secret": "whsec_" + "A" * 32,
        "source": "api",
        "created_at": T0,
        "updated_at": T0,
    }


def message(i: int) -> NewMessage:
    return NewMessage(
        id=f"m-{i:03d}",
        created_at=T0 + i + 0.123456789,  # all 17 digits of a time must come back
        sender="app@example.com",
        recipients=["ann@example.net"],
        raw=b"Subject: x\r\n\r\nhi\r\n",
        subject=f"s{i}",
        tags=("t",),
    )


async def rows(store: Store) -> list[Any]:
    async with store.engine.connect() as conn:
        return list(await conn.execute(select(wd).order_by(wd.c.id)))


def test_the_relays_own_dsns_make_no_webhooks(db_url: str) -> None:
    """A DSN (source "dsn") is the relay's mail about a bounce: the bounced message's own
    event reports it; the DSN's queued and sent events are nobody's webhooks."""

    async def scenario() -> None:
        store = await Store.open(db_url)
        try:
            await store.webhooks.create(endpoint("a", ["message.queued"]))
            dsn = message(1)
            dsn.source, dsn.sender = "dsn", ""
            await store.enqueue([message(0), dsn, message(2)])
            got = await store.webhooks.claim("a", OWNER, T0 + 100, 10, T0 + 200)
            assert sorted(g["message_id"] for g in got) == ["m-000", "m-002"]
        finally:
            await store.close()

    asyncio.run(scenario())


def test_claim_and_outcomes_keep_to_the_lease(db_url: str) -> None:
    async def scenario() -> None:
        store = await Store.open(db_url)
        try:
            await store.webhooks.create(endpoint("a", ["message.queued"]))
            await store.webhooks.create(endpoint("b", ["message.sent"]))
            await store.enqueue([message(i) for i in range(5)])
            # Each queued event made one row, for the endpoint subscribed to it only.
            assert [(r.endpoint_id, r.status) for r in await rows(store)] == [("a", "pending")] * 5

            got = await store.webhooks.claim("a", OWNER, T0 + 100, 3, T0 + 200)
            assert [g["id"] for g in got] == sorted(g["id"] for g in got)
            # The oldest due (on PostgreSQL the trigger numbers one statement's rows in no
            # particular order).
            assert sorted(g["message_id"] for g in got) == ["m-000", "m-001", "m-002"]
            assert {(g["type"], g["tags"], g["subject"], g["attempts"]) for g in got} == {
                ("queued", '["t"]', s, 0) for s in ("s0", "s1", "s2")
            }
            times = {g["message_id"]: g["at"] for g in got}
            assert times["m-000"] == T0 + 0.123456789  # the event's time, exact
            # Leased rows are not due again before the lease ends; the other two are.
            rest = await store.webhooks.claim("a", OWNER, T0 + 100, 10, T0 + 200)
            assert sorted(g["message_id"] for g in rest) == ["m-003", "m-004"]
            assert await store.webhooks.claim("b", OWNER, T0 + 100, 10, T0 + 200) == []

            first, second, third = (g["id"] for g in got)
            await store.webhooks.record(
                OWNER,
                [
                    Result(first, "succeeded", None, 200, ""),
                    Result(second, "pending", T0 + 300, 500, "HTTP 500"),
                ],
                [],
                T0 + 101,
            )
            # Another owner's outcome (its lease ran out, this node took the row) is dropped.
            await store.webhooks.record(
                "node:2", [Result(third, "failed", None, 410, "HTTP 410")], [], T0 + 101
            )
            by_id = {r.id: r for r in await rows(store)}
            assert (by_id[first].status, by_id[first].attempts) == ("succeeded", 1)
            assert (by_id[first].next_attempt_at, by_id[first].lease_owner) == (None, None)
            assert by_id[first].last_status == 200 and by_id[first].updated_at == T0 + 101
            assert (by_id[second].status, by_id[second].next_attempt_at) == ("pending", T0 + 300)
            assert (by_id[second].last_error, by_id[second].lease_owner) == ("HTTP 500", None)
            assert (by_id[third].status, by_id[third].lease_owner) == ("pending", OWNER)
            assert by_id[third].attempts == 0

            # At its retry time: the retry, and the rows whose leases ran out meanwhile.
            again = await store.webhooks.claim("a", OWNER, T0 + 300, 10, T0 + 400)
            assert [(g["id"], g["attempts"]) for g in again] == sorted(
                [(second, 1), (third, 0), *((g["id"], 0) for g in rest)]
            )
        finally:
            await store.close()

    asyncio.run(scenario())


def test_retention_replay_and_listing_find_their_rows_by_id(db_url: str) -> None:
    async def scenario() -> None:
        store = await Store.open(db_url)
        try:
            await store.webhooks.create(endpoint("a", []))
            await store.webhooks.create(endpoint("b", []))
            # 60 rows an hour apart, alternately a's and b's; every third one failed.
            made = [
                {
                    "endpoint_id": "ab"[i % 2],
                    "event_id": i,
                    "status": "failed" if i % 3 == 0 else "succeeded",
                    "attempts": 1,
                    "next_attempt_at": None,
                    "created_at": T0 + i * 3600,
                }
                for i in range(60)
            ]
            async with store.engine.begin() as conn:
                assert await conn.run_sync(outbox.first_id_since, T0) == 0  # no rows yet
                await conn.execute(insert(wd), made)
            ids = [r.id for r in await rows(store)]
            async with store.engine.connect() as conn:
                for i in (0, 1, 17, 59):
                    at = T0 + i * 3600
                    assert await conn.run_sync(outbox.first_id_since, at) == ids[i]
                    assert await conn.run_sync(outbox.first_id_since, at - 1) == ids[i]
                assert await conn.run_sync(outbox.first_id_since, T0 + 60 * 3600) == ids[-1] + 1

            failed = await store.webhooks.deliveries("a", status="failed", limit=3)
            assert [d.id for d in failed] == [ids[i] for i in (54, 48, 42)]
            page = await store.webhooks.deliveries("a", status="failed", before=ids[42])
            assert [d.id for d in page] == [ids[i] for i in range(36, -1, -6)]
            listed = await store.webhooks.deliveries("b", status="succeeded", limit=2)
            assert [d.id for d in listed] == [ids[59], ids[55]]

            # Replay of what failed in the last 12 hours: rows 48 and 54 (a's) and 51, 57.
            replayed = await store.webhooks.replay(T0 + 48 * 3600, T0 + 61 * 3600)
            assert replayed == 4
            pending = [r.id for r in await rows(store) if r.status == "pending"]
            assert pending == [ids[i] for i in (48, 51, 54, 57)]
            just_b = await store.webhooks.replay(
                T0, T0 + 61 * 3600, endpoint_id="b", statuses=("succeeded",), ids=[ids[1]]
            )
            assert just_b == 1

            # Retention after 30 hours: the final rows made before then (not row 1, pending
            # again since its replay).
            purged = await store.retention.purge_webhook_deliveries(T0 + 30 * 3600, 100)
            assert purged == 29
            left = [r.id for r in await rows(store)]
            assert left == [ids[1], *ids[30:]]
        finally:
            await store.close()

    asyncio.run(scenario())


def test_the_failed_listing_walks_its_own_index(tmp_path: Any) -> None:
    """SQLite's plan (the index serves the failed listing and replay only when the status
    is written inline, which store.webhooks does)."""

    async def scenario() -> None:
        store = await Store.open(f"sqlite+aiosqlite:///{tmp_path / 'q.db'}")
        try:
            failed = (
                select(wd.c.id)
                .where(wd.c.endpoint_id == "a", wd.c.status == outbox.FAILED)
                .order_by(wd.c.id.desc())
                .limit(50)
            )
            async with store.engine.connect() as conn:
                sql = str(failed.compile(conn.sync_engine))
                plan = (await conn.exec_driver_sql("EXPLAIN QUERY PLAN " + sql, ("a", 50, 0))).all()
            assert "USING INDEX ix_webhook_deliveries_failed" in plan[0][-1]
        finally:
            await store.close()

    asyncio.run(scenario())


def config_row(endpoint_id: str) -> dict[str, Any]:
    return {
        "id": endpoint_id,
        "url": f"https://{endpoint_id}.test/",
        "events": ["message.queued"],
        "secret": "whsec_" + "A" * 32,
        "description": "",
    }


def test_a_node_without_a_configured_endpoint_disables_it_and_keeps_its_webhooks(
    db_url: str,
) -> None:
    """Nodes share the endpoints table: one started with an older relay.toml deleted the
    others' configured endpoint, and its pending webhooks with it. It is disabled now, and
    enabled again by a node whose file has it."""

    async def scenario() -> None:
        store = await Store.open(db_url)
        try:
            both = [config_row("a"), config_row("b")]
            assert await store.webhooks.sync_config(both, T0, "n1") == []
            await store.enqueue([message(1)])
            assert len(await rows(store)) == 2  # one queued webhook per endpoint
            gone = await store.webhooks.sync_config([config_row("a")], T0 + 1, "n2")
            assert gone == ["https://b.test/"]
            b = await store.webhooks.endpoint("b")
            assert b is not None and b.disabled_at == T0 + 1
            assert b.disabled_reason == "not in [[webhooks.endpoints]] of node n2"
            await store.enqueue([message(2)])
            got = await rows(store)
            assert [r.endpoint_id for r in got] == ["a", "b", "a"]  # kept; no new one for b
            assert await store.webhooks.sync_config(both, T0 + 2, "n1") == []
            b = await store.webhooks.endpoint("b")
            assert b is not None and b.disabled_at is None and b.disabled_reason == ""
            await store.enqueue([message(3)])
            assert [r.endpoint_id for r in await rows(store)][-2:] == ["a", "b"]
        finally:
            await store.close()

    asyncio.run(scenario())


def test_nodes_starting_together_sync_the_configured_endpoints_without_errors(
    pg_url: str,
) -> None:
    """Three PostgreSQL nodes started at once ran sync_config together: one of them died of a
    duplicate key or a deadlock."""
    url = "postgresql+asyncpg://" + pg_url.split("://", 1)[1]

    async def scenario() -> None:
        stores = [await Store.open(url) for _ in range(3)]
        try:
            wanted = [config_row(f"e{i}") for i in range(8)]
            for attempt in range(6):
                async with stores[0].engine.begin() as conn:
                    await conn.exec_driver_sql("DELETE FROM webhook_endpoints")
                await asyncio.gather(
                    *(
                        s.webhooks.sync_config(wanted, T0 + attempt, f"n{i}")
                        for i, s in enumerate(stores)
                    )
                )
            listed = await stores[0].webhooks.endpoints()
            assert sorted(e.id for e in listed) == [f"e{i}" for i in range(8)]
        finally:
            for s in stores:
                await s.close()

    asyncio.run(scenario())
