"""Story: the queue store behaves the same on SQLite and PostgreSQL (claims, leases, lanes)."""

from __future__ import annotations

import asyncio
import time
from dataclasses import replace
from pathlib import Path

from sqlalchemy import Connection, select, text
from tests.conftest import sent_updates

from mailgate.exceptions import DuplicateEntry
from mailgate.models import ClaimedDelivery, DeliveryStatus
from mailgate.store import DeliveryUpdate, NewMessage, QueueFilter, Store
from mailgate.store.jobs import NewJob
from mailgate.store.schema import messages
from mailgate.store.transactions import release_leases


def msg(i: int, rcpts: int = 1, at: float | None = None) -> NewMessage:
    return NewMessage(
        id=f"msg-{i:05d}",
        created_at=at if at is not None else time.time(),
        sender="app@example.com",
        recipients=[f"r{j}@dest.test" for j in range(rcpts)],
        raw=b"Subject: x\r\n\r\nbody\r\n",
        subject="x",
    )


def run(coro):  # type: ignore[no-untyped-def]
    return asyncio.run(coro)


async def claim(
    store: Store, owner: str, now: float, limit: int, until: float
) -> list[ClaimedDelivery]:
    """The deliveries a claim leased, whatever message each came with."""
    claimed = await store.claim(owner, now, limit, until)
    for m in claimed:
        assert m.deliveries and {c.message_id for c in m.deliveries} == {m.id}
    return [c for m in claimed for c in m.deliveries]


async def stored_dkim(store: Store, ids: list[str]) -> dict[str, bytes | None]:
    async with store.engine.connect() as conn:
        rows = await conn.execute(
            select(messages.c.id, messages.c.dkim).where(messages.c.id.in_(ids))
        )
        return {r[0]: r[1] for r in rows}


def sent(c, owner_attempts: int = 1) -> DeliveryUpdate:  # type: ignore[no-untyped-def]
    return DeliveryUpdate(
        c.message_id, c.rcpt_idx, c.recipient, DeliveryStatus.SENT, 1, None, "p", "250 ok", "sent"
    )


def test_enqueue_claim_record(db_url: str) -> None:
    async def main() -> None:
        store = await Store.open(db_url)
        try:
            await asyncio.gather(*(store.enqueue([msg(i, rcpts=2)]) for i in range(50)))
            now = time.time()
            claimed = await claim(store, "node-a:1", now, 30, now + 60)
            assert len(claimed) == 30
            again = await claim(store, "node-b:1", now, 100, now + 60)
            assert len(again) == 70  # the leased 30 are not claimed twice
            keys = {(c.message_id, c.rcpt_idx) for c in claimed}
            assert keys.isdisjoint({(c.message_id, c.rcpt_idx) for c in again})
            await store.record("node-a:1", now, [sent(c) for c in claimed])
            counts = await store.status_counts()
            assert counts == {"sent": 30, "queued": 70}
            # A result from a node that no longer holds the lease is not applied.
            await store.record("node-zzz", now, [sent(c) for c in again[:5]])
            assert (await store.status_counts())["sent"] == 30
            msg0 = await store.get_message(claimed[0].message_id)
            assert msg0 is not None and len(msg0["deliveries"]) == 2
            events = await store.events_of(claimed[0].message_id)
            assert [e["type"] for e in events].count("queued") == 2
        finally:
            await store.close()

    run(main())


def test_expired_lease_is_claimed_again(db_url: str) -> None:
    async def main() -> None:
        store = await Store.open(db_url)
        try:
            await store.enqueue([msg(1)])
            now = time.time()
            (first,) = await claim(store, "dead-node:1", now, 10, now + 5)
            assert await claim(store, "other:1", now + 1, 10, now + 60) == []
            (again,) = await claim(store, "other:1", now + 6, 10, now + 60)
            assert (again.message_id, again.rcpt_idx) == (first.message_id, first.rcpt_idx)
        finally:
            await store.close()

    run(main())


def test_an_expired_lease_is_not_held_up_by_a_backlog_of_fresh_mail(db_url: str) -> None:
    """A node died during an attempt: its delivery is due at the lease's end, after mail
    queued in the meantime, yet it is claimed with the next claim (the retry lane's share),
    not after that backlog drains (DESIGN.md: within the lease plus a few seconds)."""

    async def main() -> None:
        store = await Store.open(db_url)
        try:
            t0 = time.time()
            await store.enqueue([msg(1, at=t0)])
            (first,) = await claim(store, "dead-node:1", t0 + 1, 10, t0 + 5)
            await store.enqueue([msg(100 + i, at=t0 + 2) for i in range(20)])  # the backlog
            got = await claim(store, "other:1", t0 + 6, 8, t0 + 60)
            assert (first.message_id, first.rcpt_idx) in {(c.message_id, c.rcpt_idx) for c in got}
        finally:
            await store.close()

    run(main())


def test_release_leases_by_node_prefix(db_url: str) -> None:
    async def main() -> None:
        store = await Store.open(db_url)
        try:
            await store.enqueue([msg(i) for i in range(4)])
            now = time.time()
            await claim(store, "node_a:1", now, 2, now + 900)
            await claim(store, "node%b:1", now, 2, now + 900)
            assert await store.release_leases("node_a:", now, prefix=True) == 2
            assert len(await claim(store, "x", now, 10, now + 900)) == 2
        finally:
            await store.close()

    run(main())


def test_renew_leases_moves_only_the_owners_leases(db_url: str) -> None:
    """A renewal extends this node's leases of the named messages, no one else's: past
    the old lease's end they are not claimable, the others' are."""

    async def main() -> None:
        store = await Store.open(db_url)
        try:
            await store.enqueue([msg(i) for i in range(4)])
            now = time.time()
            mine = await claim(store, "node_a:1", now, 2, now + 5)
            theirs = await claim(store, "node_b:1", now, 2, now + 5)
            ids = [c.message_id for c in mine + theirs]  # node_b's too: not node_a's to move
            assert await store.renew_leases("node_a:1", ids, now + 60) == 2
            later = await claim(store, "x", now + 10, 10, now + 900)
            assert {c.message_id for c in later} == {c.message_id for c in theirs}
            if store.dialect != "postgresql":
                return
            # A row another transaction holds is skipped, not waited for (it waited, and
            # two nodes deadlocked on it and a job's row).
            kept = later[0].message_id
            async with store.engine.connect() as other, other.begin():
                await other.execute(
                    text("SELECT 1 FROM deliveries WHERE message_id = :m FOR UPDATE"), {"m": kept}
                )
                renewed = await asyncio.wait_for(
                    store.renew_leases("x", [c.message_id for c in later], now + 990), 5
                )
                assert renewed == 1  # the locked one skipped
        finally:
            await store.close()

    run(main())


def test_release_leases_keeps_those_of_the_messages_in_flight(db_url: str) -> None:
    """After a claim whose answer was lost: the node's other leases are released, not those
    of the attempts it is making."""

    async def main() -> None:
        store = await Store.open(db_url)
        try:
            await store.enqueue([msg(i) for i in range(4)])
            now = time.time()
            got = await claim(store, "node_a:1", now, 3, now + 900)
            flying = got[0].message_id
            released = await store.release_leases("node_a:1", now, keep={flying})
            assert released == 2
            again = await claim(store, "x", now, 10, now + 900)
            assert flying not in {c.message_id for c in again} and len(again) == 3
        finally:
            await store.close()

    run(main())


def test_leased_to_says_whether_a_result_was_recorded(db_url: str) -> None:
    async def main() -> None:
        store = await Store.open(db_url)
        try:
            await store.enqueue([msg(1)])
            now = time.time()
            (claimed,) = await store.claim("node_a:1", now, 10, now + 900)
            assert await store.leased_to("node_a:1", claimed.id)
            assert not await store.leased_to("node_b:1", claimed.id)
            await store.record("node_a:1", now, sent_updates([claimed]))
            assert not await store.leased_to("node_a:1", claimed.id)
        finally:
            await store.close()

    run(main())


def test_a_nodes_leases_are_found_without_reading_every_delivery(tmp_path: Path) -> None:
    """release_leases at a node's start: every statement it runs seeks an index (SQLite's
    plans; a LIKE on the owner read the whole table, 107-117 ms at 1,000,000 deliveries,
    and the paused or stopped jobs were looked for among all jobs before revision 0010)."""

    async def main() -> None:
        store = await Store.open(f"sqlite+aiosqlite:///{tmp_path / 'q.db'}")
        try:
            await store.enqueue([msg(i) for i in range(4)])
            now = time.time()
            await claim(store, "node_a:1", now, 2, now + 900)

            def traced(conn: Connection) -> tuple[int, list[str]]:
                statements: list[str] = []
                dbapi = conn.connection.dbapi_connection
                assert dbapi is not None
                dbapi.set_trace_callback(statements.append)
                try:
                    released = release_leases(conn, "node_a:", now, True)
                finally:
                    dbapi.set_trace_callback(None)
                plans = [
                    str(row[-1])
                    for sql in statements
                    if sql.lstrip().upper().startswith(("SELECT", "UPDATE"))
                    for row in conn.exec_driver_sql("EXPLAIN QUERY PLAN " + sql).all()
                ]
                return released, plans

            released, plans = await store.writer.run(traced)
            assert released == 2
            scans = [p for p in plans if p.startswith(("SCAN deliveries", "SCAN jobs"))]
            assert plans and not scans, plans
        finally:
            await store.close()

    run(main())


def test_retries_do_not_starve_and_fresh_mail_goes_first(db_url: str) -> None:
    async def main() -> None:
        store = await Store.open(db_url)
        try:
            old = time.time() - 100
            await store.enqueue([msg(i, at=old) for i in range(20)])
            now = time.time()
            claimed = await claim(store, "n", now, 20, now + 1)
            deferred = [
                DeliveryUpdate(
                    c.message_id,
                    c.rcpt_idx,
                    c.recipient,
                    DeliveryStatus.DEFERRED,
                    1,
                    now - 1,
                    "p",
                    "451 later",
                    "deferred",
                )
                for c in claimed
            ]
            await store.record("n", now, deferred)  # 20 retries due now, lane 1
            await store.enqueue([msg(100 + i) for i in range(20)])  # 20 fresh
            batch = await claim(store, "n", time.time(), 8, now + 60)
            fresh = [c for c in batch if c.attempts == 0]
            retries = [c for c in batch if c.attempts == 1]
            assert len(retries) == 2 and len(fresh) == 6  # a quarter for retries
        finally:
            await store.close()

    run(main())


def test_one_bad_write_does_not_fail_the_group(db_url: str) -> None:
    async def main() -> None:
        store = await Store.open(db_url)
        try:
            await store.enqueue([msg(1)])
            results = await asyncio.gather(
                store.enqueue([msg(1)]),  # duplicate id: fails
                store.enqueue([msg(2)]),
                store.enqueue([msg(3)]),
                return_exceptions=True,
            )
            assert isinstance(results[0], DuplicateEntry)
            assert results[1] is None and results[2] is None
            assert await store.get_message("msg-00002") is not None
        finally:
            await store.close()

    run(main())


def test_relay_end_to_end_on_postgresql(relay_factory, pg_url: str) -> None:  # type: ignore[no-untyped-def]
    import smtplib

    relay = relay_factory(database={"url": pg_url})
    key = relay.create_key("pg")
    with smtplib.SMTP("127.0.0.1", relay.port(), timeout=10) as c:
        c.login("apikey", key)
        assert c.sendmail("app@example.com", ["a@dest.test"], b"Subject: pg\r\n\r\nx\r\n") == {}
    qid = relay.call(relay.store.list_messages(limit=1))[0]["id"]
    relay.wait_status(qid, lambda s: s == {"a@dest.test": "sent"})
    assert relay.store.dialect == "postgresql"


def _sleep(conn, seconds: float) -> str:  # type: ignore[no-untyped-def]
    conn.exec_driver_sql(f"SELECT pg_sleep({seconds})")
    return "slow"


def _mark(conn) -> str:  # type: ignore[no-untyped-def]
    conn.exec_driver_sql("SELECT 1")
    return "quick"


def test_postgresql_writer_commits_the_next_transaction_while_one_waits(pg_url: str) -> None:
    """Two group commits in flight on PostgreSQL, each on its own connection: a transaction
    that waits (here on pg_sleep, in production on its flush) does not hold up the next."""

    async def main() -> None:
        store = await Store.open("postgresql+asyncpg://" + pg_url.split("://", 1)[1])
        try:
            done: list[str] = []

            async def job(fn, *args) -> None:  # type: ignore[no-untyped-def]
                done.append(await store.writer.run(fn, *args))

            slow = asyncio.create_task(job(_sleep, 1.0))
            await asyncio.sleep(0.2)
            await asyncio.wait_for(job(_mark), 0.7)
            await slow
            assert done == ["quick", "slow"]
        finally:
            await store.close()

    run(main())


def _plan(conn) -> str:  # type: ignore[no-untyped-def]
    """The generic plan (what a prepared statement keeps from its sixth run, made without
    the values) of an update shaped like the writer's many-row ones (pg_bulk.PgUpdate)."""
    conn.exec_driver_sql("SET LOCAL plan_cache_mode = force_generic_plan")
    conn.exec_driver_sql(
        "PREPARE mg_plan(varchar[], int[], int[]) AS UPDATE deliveries SET attempts = v.a"
        " FROM unnest($1, $2, $3) AS v(m, r, a)"
        " WHERE deliveries.message_id = v.m AND deliveries.rcpt_idx = v.r"
    )
    try:
        rows = conn.exec_driver_sql("EXPLAIN EXECUTE mg_plan('{x}', '{0}', '{1}')")
        return "\n".join(r[0] for r in rows)
    finally:
        conn.exec_driver_sql("DEALLOCATE mg_plan")


def test_postgresql_writer_finds_rows_by_index_in_a_queue_too_new_for_statistics(
    pg_url: str,
) -> None:
    """A queue starts empty and autoanalyze comes later: the writer's statements must not
    plan a scan of deliveries meanwhile (bench-pg pg-1 spent its backend on them)."""

    async def main() -> None:
        store = await Store.open("postgresql+asyncpg://" + pg_url.split("://", 1)[1])
        try:
            await store.enqueue([msg(i) for i in range(300)])
            plan = await store.writer.run(_plan)
            assert "Seq Scan on deliveries" not in plan, plan
            assert "deliveries_pkey" in plan, plan
        finally:
            await store.close()

    run(main())


def test_mixed_group_commit_keeps_each_jobs_order(db_url: str, caplog) -> None:  # type: ignore[no-untyped-def]
    """Results and new messages in one group commit: new events must follow their message."""

    async def main() -> None:
        store = await Store.open(db_url)
        try:
            await store.enqueue([msg(i) for i in range(5)])
            now = time.time()
            claimed = await claim(store, "n", now, 5, now + 60)
            jobs = [store.record("n", now, [sent(c)]) for c in claimed]
            jobs += [store.enqueue([msg(100 + i)]) for i in range(5)]
            results = await asyncio.gather(*jobs, return_exceptions=True)
            assert results == [None] * 10
            assert await store.status_counts() == {"sent": 5, "queued": 5}
            m = await store.get_message(claimed[0].message_id)
            assert m is not None and m["status"] == "sent"
            # One transaction for all ten, not a failed group retried one by one.
            assert "retrying one by one" not in caplog.text
        finally:
            await store.close()

    run(main())


def test_results_of_two_jobs_in_one_group_commit_complete_both(db_url: str, caplog) -> None:  # type: ignore[no-untyped-def]
    """Several jobs' rows in one executemany: the completion check must not use an
    expanding IN (SQLAlchemy refuses it with executemany, and the whole group was then
    retried one transaction, one fsync, per job)."""

    async def main() -> None:
        store = await Store.open(db_url)
        try:
            now = time.time()
            for j in range(2):
                batch = [replace(msg(10 * j + i), job_id=f"job-{j}") for i in range(3)]
                job = NewJob(f"job-{j}", "", "http", "", len(batch), now)
                await store.enqueue(batch, job=job)
            later = time.time() + 1
            claimed = await claim(store, "n", later, 10, later + 60)
            assert len(claimed) == 6
            job_of = {f"msg-{10 * j + i:05d}": f"job-{j}" for j in range(2) for i in range(3)}
            await asyncio.gather(
                *(store.record("n", now, [sent(c)], jobs=[job_of[c.message_id]]) for c in claimed)
            )
            assert "retrying one by one" not in caplog.text
            for j in range(2):
                types = [e["type"] for e in await store.jobs.events(f"job-{j}")]
                assert types.count("completed") == 1, types
        finally:
            await store.close()

    run(main())


def test_suppressions_and_bounce_records(db_url: str) -> None:
    from mailgate.store import Suppression

    async def main() -> None:
        store = await Store.open(db_url)
        try:
            now = time.time()
            entry = Suppression("gone@dest.test", "hard_bounce", "550 5.1.1", "m", now)
            await store.suppressions.add([entry])
            await store.suppressions.add([Suppression("gone@dest.test", "manual", "", "", now)])
            got = await store.suppressions.get("GONE@dest.test")
            assert got is not None and got.reason == "hard_bounce"  # the first reason stays
            assert await store.suppressions.addresses() == {"gone@dest.test"}
            assert (await store.suppressions.fingerprint())[0] == 1
            await store.enqueue([msg(1, rcpts=2)])
            recipient = await store.record_bounce(
                "msg-00001", 1, "550 5.1.1 user unknown", now, suppress=True
            )
            assert recipient == "r1@dest.test"
            assert await store.record_bounce("nope", 0, "550", now) is None
            m = await store.get_message("msg-00001")
            assert m is not None and [d["status"] for d in m["deliveries"]] == ["queued", "bounced"]
            assert m["status"] == "queued"  # derived: one recipient still pending
            assert await store.suppressions.get("r1@dest.test") is not None
            assert await store.suppressions.remove("gone@dest.test")
            assert not await store.suppressions.remove("gone@dest.test")
        finally:
            await store.close()

    run(main())


def test_operator_hold_release_retry_delete(db_url: str) -> None:
    """mailgate queue hold/release/retry/delete: by id, recipient or sender domain; a
    delivery being attempted (leased) is never touched; each change is an event."""

    async def main() -> None:
        store = await Store.open(db_url)
        try:
            await store.enqueue([msg(1, rcpts=2)])
            now = time.time()
            (inflight,) = await claim(store, "node-a:1", now, 1, now + 60)
            other = NewMessage(
                id="msg-other",
                created_at=time.time(),
                sender="news@Other.example",
                recipients=["x@elsewhere.test"],
                raw=b"Subject: y\r\n\r\nbody\r\n",
            )
            await store.enqueue([msg(2), other])
            now = time.time()

            held = await store.operate("hold", QueueFilter(recipient="DEST.test"), now)
            assert held == (2, 2)  # msg-00001's other recipient and msg-00002; not leased one
            assert (await store.status_counts())["held"] == 2
            # Held deliveries are not claimed: only msg-other was due.
            got = await claim(store, "node-b:1", now, 10, now + 60)
            assert [c.message_id for c in got] == ["msg-other"]
            await store.release_leases("node-b:1", now)
            assert await store.operate("release", QueueFilter(["msg-00002"]), now) == (1, 1)
            msg2 = await store.get_message("msg-00002")
            assert msg2 is not None and msg2["deliveries"][0]["status"] == "queued"

            # A deferred delivery due later comes due now with retry.
            deferred = DeliveryUpdate(
                inflight.message_id,
                inflight.rcpt_idx,
                inflight.recipient,
                DeliveryStatus.DEFERRED,
                1,
                now + 3600,
                "p",
                "451 later",
                "deferred",
            )
            await store.record("node-a:1", now, [deferred])
            assert await store.operate("retry", QueueFilter(sender="example.com"), now) == (2, 2)
            due = await claim(store, "node-d:1", now + 1, 10, now + 60)
            assert {(c.message_id, c.rcpt_idx) for c in due} >= {
                (inflight.message_id, inflight.rcpt_idx),
                ("msg-00002", 0),
            }
            await store.release_leases("node-d:1", now)

            assert await store.operate("delete", QueueFilter(), now) == (4, 3)
            assert await store.status_counts() == {"cancelled": 4}
            msg1 = await store.get_message("msg-00001")
            assert msg1 is not None and msg1["status"] == "cancelled"
            types = [e["type"] for e in await store.events_of("msg-00001")]
            assert types.count("held") == 1 and "retry" in types and "cancelled" in types
            assert await store.operate("release", QueueFilter(), now) == (0, 0)
        finally:
            await store.close()

    run(main())


def test_many_row_writes_and_claims_round_trip(db_url: str) -> None:
    """Writes and claims of many rows (SQLite runs them as one-step statements, in chunks)
    keep every value, byte and order that row-by-row statements keep."""

    async def main() -> None:
        store = await Store.open(db_url)
        try:
            raw = b"Subject: \xff\x00 bin\r\n\r\n" + bytes(range(256)) + b"\r\n"
            odd = "q\"uote's,[x]\\ \u00e9\u4e2d@dest.test"
            batch = [
                NewMessage(
                    id=f"bulk-{i:04d}",
                    created_at=1000.0 + i,
                    sender="app@example.com",
                    recipients=[f"r{i}@dest.test", odd],
                    raw=raw,
                    subject=f"s{i}",
                    tags=["a", "b"] if i % 2 else [],
                )
                for i in range(450)
            ]
            await store.enqueue(batch)  # 450 messages, 900 deliveries and events: one job
            now = time.time()
            claimed = await claim(store, "node-a:1", now, 700, now + 60)
            assert len(claimed) == 700
            assert {type(c.rcpt_idx) for c in claimed} == {int}
            assert {c.attempts for c in claimed} == {0} and {c.status for c in claimed} == {
                "queued"
            }
            assert odd in {c.recipient for c in claimed}
            # Oldest first: the 350 messages created first, both recipients each.
            assert {c.message_id for c in claimed} == {f"bulk-{i:04d}" for i in range(350)}
            rest = await claim(store, "node-b:1", now, 700, now + 60)
            assert len(rest) == 200  # nothing claimed twice

            # The second recipient of the first 100 messages is deferred: its retry will
            # need the signature. The other messages are done: theirs is not kept.
            def result(c: ClaimedDelivery) -> DeliveryUpdate:
                if c.rcpt_idx == 1 and int(c.message_id[5:]) < 100:
                    return DeliveryUpdate(
                        c.message_id,
                        c.rcpt_idx,
                        c.recipient,
                        DeliveryStatus.DEFERRED,
                        1,
                        now + 60,
                        "p",
                        "451 later",
                        "deferred",
                    )
                return sent(c)

            updates = [result(c) for c in claimed]
            signatures = {
                c.message_id: b"DKIM-Signature: v=1; " + c.message_id.encode() for c in claimed
            }
            await store.record("node-a:1", now, updates, dkim=signatures)
            # Another node's results change nothing; a second signature does not replace
            # the first, and is kept only for a message still to be attempted.
            await store.record("node-b:1", now, updates[:10])
            late = {"bulk-0001": b"other", "bulk-0350": b"other", "bulk-0351": b"other"}
            done = [sent(c) for c in rest if c.message_id == "bulk-0350"]
            await store.record("node-b:1", now, done, dkim=late)
            counts = await store.status_counts()
            assert counts == {"sent": 602, "deferred": 100, "queued": 198}

            wanted = ["bulk-0000", "bulk-0001", "bulk-0200", "bulk-0350", "bulk-0351"]
            assert await stored_dkim(store, wanted) == {
                "bulk-0000": b"DKIM-Signature: v=1; bulk-0000",
                "bulk-0001": b"DKIM-Signature: v=1; bulk-0001",
                "bulk-0200": None,  # sent to everyone: no retry needs it
                "bulk-0350": None,
                "bulk-0351": b"other",
            }
            # The retries' claim brings each message's bytes and signature with it.
            retries = await store.claim("node-c:1", now + 61, 1000, now + 120)
            by_id = {m.id: m for m in retries}
            assert len(by_id) == 199  # 100 deferred, 99 whose lease expired
            assert by_id["bulk-0000"].raw == raw and by_id["bulk-0000"].sender == "app@example.com"
            assert by_id["bulk-0000"].dkim == b"DKIM-Signature: v=1; bulk-0000"
            assert [(c.rcpt_idx, c.attempts) for c in by_id["bulk-0000"].deliveries] == [(1, 1)]
            assert by_id["bulk-0351"].dkim == b"other"
            assert len(by_id["bulk-0351"].deliveries) == 2
            m = await store.get_message("bulk-0301")
            assert m is not None and m["status"] == "sent" and m["tags"] == ["a", "b"]
            assert [d["recipient"] for d in m["deliveries"]] == ["r301@dest.test", odd]
            types = [(e["type"], e["recipient"]) for e in await store.events_of("bulk-0301")]
            assert types == [
                ("queued", "r301@dest.test"),
                ("queued", odd),
                ("sent", "r301@dest.test"),
                ("sent", odd),
            ]
        finally:
            await store.close()

    run(main())


def test_requeue_of_many_failed_deliveries(db_url: str) -> None:
    """The operator's requeue --all after an outage that failed thousands: one IN list of
    9,000 keys exceeded PostgreSQL's stack depth (and 140,000 SQLite's variables)."""

    async def main() -> None:
        store = await Store.open(db_url)
        try:
            total = 9_500
            for start in range(0, total, 1000):
                await store.enqueue([msg(i) for i in range(start, min(total, start + 1000))])
            async with store.engine.begin() as conn:
                await conn.execute(text("UPDATE deliveries SET status = 'failed'"))
            done = await store.requeue_matching(QueueFilter(), time.time())
            assert len(done.requeued) == total and done.suppressed == []
            async with store.engine.connect() as conn:
                left = await conn.execute(
                    text("SELECT count(*) FROM deliveries WHERE status = 'failed'")
                )
                assert left.scalar_one() == 0
        finally:
            await store.close()

    run(main())
