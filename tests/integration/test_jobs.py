"""Story: every batch is a job; its progress is read, and it is paused, resumed and stopped
through the API, the CLI and the store, on both engines, across a restart."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
from click.testing import CliRunner
from sqlalchemy import select

from conftest import RelayRunner, build_settings
from mailgate.cli import main
from mailgate.ids import new_id
from mailgate.models import DeliveryStatus
from mailgate.store import DeliveryUpdate, NewJob, NewMessage, Store
from mailgate.store.job_actions import set_state
from mailgate.store.schema import deliveries

HELD = {"delivery": {"enabled": False}}


def batch(relay: Any, key: str, rcpts: list[str], **extra: Any) -> dict[str, Any]:
    body = {
        "from": "app@example.com",
        "subject": "Hi {{ name }}",
        "text": "Hello {{ name }}",
        "recipient_variables": {r: {"name": r.split("@")[0]} for r in rcpts},
        **extra,
    }
    r = httpx.post(
        f"{relay.http_url}/v1/messages/batch", json=body, headers={"x-api-key": key}, timeout=30
    )
    assert r.status_code == 202, r.text
    return r.json()["data"]


def job(relay: Any, key: str, job_id: str, action: str = "") -> httpx.Response:
    url = f"{relay.http_url}/v1/jobs/{job_id}" + (f"/{action}" if action else "")
    headers = {"x-api-key": key}
    if action:
        return httpx.post(url, headers=headers, timeout=30)
    return httpx.get(url, headers=headers, timeout=30)


def test_a_batch_is_a_job_paused_resumed_and_stopped_over_http(
    relay_factory: Callable[..., Any],
) -> None:
    relay = relay_factory(**HELD)
    key = relay.create_key("app")
    other = relay.create_key("other")
    data = batch(relay, key, ["a@dest.test", "b@dest.test", "bad"], campaign_id="spring-24")
    assert data["queued"] == 2 and data["job_id"]
    job_id = data["job_id"]
    ids = [m["id"] for m in data["messages"] if m["status"] == "queued"]

    got = job(relay, key, job_id).json()["data"]
    assert got["status"] == "queued" and got["campaign_id"] == "spring-24"
    assert got["progress"] == {"total": 2, "sent": 0, "failed": 0, "pending": 2, "percentage": 0.0}
    assert got["started_at"] is None and got["created_at"] and got["updated_at"]
    assert job(relay, other, job_id).status_code == 404  # another key's job
    assert job(relay, key, "no-such-job").json()["error"]["code"] == "not_found"
    listed = httpx.get(f"{relay.http_url}/v1/jobs", headers={"x-api-key": key}).json()["data"]
    assert [j["id"] for j in listed] == [job_id]
    others = httpx.get(f"{relay.http_url}/v1/jobs", headers={"x-api-key": other}).json()
    assert others["data"] == [] and others["meta"]["has_more"] is False

    paused = job(relay, key, job_id, "pause")
    assert paused.status_code == 200 and paused.json()["data"]["status"] == "paused"
    for m in ids:
        assert set(relay.statuses(m).values()) == {"held"}
        assert relay.message(m)["status"] == "held"
    resumed = job(relay, key, job_id, "resume").json()["data"]
    assert resumed["status"] == "queued" and resumed["progress"]["pending"] == 2
    assert all(set(relay.statuses(m).values()) == {"queued"} for m in ids)

    stopped = job(relay, key, job_id, "stop").json()["data"]
    assert stopped["status"] == "stopped"
    assert stopped["progress"] == {
        "total": 2,
        "sent": 0,
        "failed": 2,
        "pending": 0,
        "percentage": 0.0,
    }
    assert all(relay.message(m)["status"] == "cancelled" for m in ids)
    again = job(relay, key, job_id, "pause")
    assert again.status_code == 409 and again.json()["error"]["code"] == "job_not_active"
    # No DSN for a stop: the two messages are all there is.
    assert len(relay.call(relay.store.list_messages(limit=10))) == 2
    types = [e["type"] for e in relay.call(relay.store.jobs.events(job_id))]
    assert types == ["created", "paused", "resumed", "stopped"]

    # A batch where nothing is accepted makes no job.
    assert batch(relay, key, ["bad", "worse"])["job_id"] is None


def test_a_paused_job_holds_across_a_restart_until_resumed_then_completes(
    relay_factory: Callable[..., Any], tmp_path: Path
) -> None:
    first = RelayRunner(build_settings(tmp_path, **HELD)).start()
    try:
        key = first.create_key("app")
        data = batch(first, key, [f"r{i}@dest.test" for i in range(5)], campaign_id="c1")
        job_id = data["job_id"]
        assert job(first, key, job_id, "pause").json()["data"]["status"] == "paused"
    finally:
        first.stop()

    # Restart on the same data with delivery on: the pause holds, nothing goes out.
    relay = relay_factory()
    key = relay.create_key("app2", scope="admin")
    time.sleep(1.0)  # give the delivery loop the chance it must not take
    got = job(relay, key, job_id).json()["data"]
    assert got["status"] == "paused" and got["progress"]["pending"] == 5
    assert relay.call(relay.store.status_counts()) == {"held": 5}

    assert job(relay, key, job_id, "resume").status_code == 200
    deadline = time.monotonic() + 15
    while (got := job(relay, key, job_id).json()["data"])["status"] != "completed":
        assert time.monotonic() < deadline, got
        time.sleep(0.05)
    assert got["progress"] == {"total": 5, "sent": 5, "failed": 0, "pending": 0, "percentage": 100}
    assert got["started_at"] is not None
    # Completed: nothing is left to act on, a resume no more than a pause (it was a 200).
    for action in ("resume", "pause", "stop"):
        r = job(relay, key, job_id, action)
        assert r.status_code == 409 and r.json()["error"]["code"] == "job_not_active", action


def test_jobs_cli(tmp_path: Path) -> None:
    relay = RelayRunner(build_settings(tmp_path, **HELD)).start()
    try:
        key = relay.create_key("app")
        job_id = batch(relay, key, ["a@dest.test", "b@dest.test"], campaign_id="cli")["job_id"]
    finally:
        relay.stop()
    cfg = tmp_path / "relay.toml"
    cfg.write_text(
        f'[server]\nhostname = "relay.test"\ndata_dir = "{tmp_path / "data"}"\n'
        '[[domains]]\nname = "example.com"\n'
        f'[[providers]]\nname = "capture"\nkind = "maildir"\npath = "{tmp_path / "md"}"\n'
    )
    runner = CliRunner()

    def cli(*args: str) -> Any:
        return runner.invoke(main, ["jobs", *args, "--config", str(cfg)])

    listed = cli("list")
    assert listed.exit_code == 0 and job_id in listed.output and "cli" in listed.output
    shown = cli("show", job_id)
    assert shown.exit_code == 0 and "status:    queued" in shown.output
    assert "0/2 sent" in shown.output and "created" in shown.output
    assert "status:    paused" in cli("pause", job_id).output
    assert "status:    queued" in cli("resume", job_id).output
    stopped = cli("stop", job_id)
    assert stopped.exit_code == 0 and "2 failed, 0 pending" in stopped.output
    refused = cli("pause", job_id)
    assert refused.exit_code == 1 and "stopped" in refused.output
    assert cli("show", "nope").exit_code == 1
    events = cli("show", job_id).output.split("events:")[1].split()
    assert events[1::2] == ["created", "paused", "resumed", "stopped"]


# ------------------------------------------------------------------ the store, both engines


def _job_messages(
    job_id: str, n: int, *, scheduled_at: float | None = None, at: float | None = None
) -> list[NewMessage]:
    """``at``: when they were queued (and due), for tests that claim at a fixed time."""
    now = time.time() if at is None else at
    return [
        NewMessage(
            id=new_id(),
            created_at=now,
            sender="app@example.com",
            recipients=[f"r{i}a@dest.test", f"r{i}b@dest.test"],
            raw=b"Subject: x\r\n\r\nbody\r\n",
            job_id=job_id,
            scheduled_at=scheduled_at,
        )
        for i in range(n)
    ]


def _deferred(c: Any, now: float) -> DeliveryUpdate:
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


async def _statuses(store: Store, job_id: str) -> dict[str, int]:
    async with store.engine.connect() as conn:
        rows = await conn.execute(select(deliveries.c.status).where(deliveries.c.job_id == job_id))
        out: dict[str, int] = {}
        for (status,) in rows:
            out[status] = out.get(status, 0) + 1
        return out


def test_store_pause_resume_stop_and_in_flight_results(db_url: str, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setattr("mailgate.store.jobs.CONVERT_CHUNK", 3)  # several chunks per action

    async def main() -> None:
        store = await Store.open(db_url)
        try:
            now = time.time()
            job_id = new_id()
            later = now + 3600
            await store.enqueue(
                _job_messages(job_id, 3) + _job_messages(job_id, 1, scheduled_at=later),
                job=NewJob(job_id, "k1", "http", "camp", 8, now),
            )
            progress = await store.jobs.progress(job_id)
            assert progress is not None and progress.status == "queued"
            assert (progress.total, progress.pending, progress.key_id) == (8, 8, "k1")

            # Two deliveries in flight when the job is paused: one comes back deferred
            # (held), one sent; the rest are held at once.
            claimed = [
                c for m in await store.claim("n1", now + 1, 2, now + 60) for c in m.deliveries
            ]
            assert len(claimed) == 2
            assert await store.jobs.control(job_id, "pause", now) == "ok"
            # Scheduled mail keeps its time (a claim parks it if it comes due meanwhile).
            assert await _statuses(store, job_id) == {"held": 4, "queued": 2, "scheduled": 2}
            # Claims made now hand nothing of the job out, on any node.
            assert await store.claim("n2", now + 30, 10, now + 90) == []
            sent = DeliveryUpdate(
                claimed[1].message_id,
                claimed[1].rcpt_idx,
                claimed[1].recipient,
                DeliveryStatus.SENT,
                1,
                None,
                "p",
                "250 ok",
                "sent",
            )
            await store.record("n1", now, [_deferred(claimed[0], now), sent], jobs=[job_id])
            assert await _statuses(store, job_id) == {"held": 5, "sent": 1, "scheduled": 2}
            progress = await store.jobs.progress(job_id)
            assert progress is not None and progress.status == "paused"
            assert (progress.sent, progress.pending, progress.percentage) == (1, 7, 12.5)
            assert progress.started_at == now

            # Resume: the attempted one is deferred, the scheduled ones wait for their time.
            assert await store.jobs.control(job_id, "resume", now) == "ok"
            assert await _statuses(store, job_id) == {
                "deferred": 1,
                "queued": 4,
                "sent": 1,
                "scheduled": 2,
            }
            progress = await store.jobs.progress(job_id)
            assert progress is not None and progress.status == "processing"

            # Stop: all not sent is cancelled (no DSN: no new message), in flight included
            # when it comes back deferred.
            claimed = [
                c for m in await store.claim("n1", now + 1, 1, now + 60) for c in m.deliveries
            ]
            assert await store.jobs.control(job_id, "stop", now) == "ok"
            await store.record("n1", now, [_deferred(c, now) for c in claimed], jobs=[job_id])
            assert await _statuses(store, job_id) == {"cancelled": 7, "sent": 1}
            assert len(await store.list_messages(limit=100)) == 4
            progress = await store.jobs.progress(job_id)
            assert progress is not None and progress.status == "stopped"
            assert (progress.failed, progress.pending) == (7, 0)
            assert await store.jobs.control(job_id, "resume", now) == "not_active"
            assert await store.jobs.control("nope", "pause", now) == "missing"
            assert [j.id for j in await store.jobs.list("k1")] == [job_id]
            assert await store.jobs.list("k2") == []

            # Paused but its deliveries not changed yet (the first of control's two
            # transactions): a claim parks them rather than handing them out.
            other = new_id()
            # Due at the test's own clock: queued "now", however long the steps above took.
            await store.enqueue(
                _job_messages(other, 1, at=now), job=NewJob(other, "", "x", "", 2, now)
            )
            assert await store.writer.run(set_state, other, "pause", now) == "ok"
            assert await store.claim("n1", now + 1, 10, now + 60) == []
            assert await _statuses(store, other) == {"held": 2}

            # A scheduled delivery that comes due while its job is paused is parked too.
            assert await store.jobs.control(job_id, "resume", now) == "not_active"  # stopped
            third = new_id()
            await store.enqueue(
                _job_messages(third, 1, scheduled_at=now + 10),
                job=NewJob(third, "", "x", "", 2, now),
            )
            assert await store.jobs.control(third, "pause", now) == "ok"
            assert await _statuses(store, third) == {"scheduled": 2}
            assert await store.claim("n1", now + 20, 10, now + 60) == []
            assert await _statuses(store, third) == {"held": 2}
            assert await store.jobs.control(third, "resume", now + 20) == "ok"
            assert await _statuses(store, third) == {"queued": 2}

            # The statements recorded per job run for several jobs at once (executemany).
            rows = [{"j_id": j, "j_now": now} for j in (other, third)]
            await store.writer.write([("job_attempted", rows), ("job_guard", rows)])
        finally:
            await store.close()

    asyncio.run(main())


def test_job_actions_spare_deliveries_in_flight_and_leave_events(db_url: str) -> None:
    """A claim after a pause parks only what it leased itself, not what the same node is
    attempting; every delivery a job action changes has its event; a resume left half done
    is finished."""

    async def main() -> None:
        store = await Store.open(db_url)
        try:
            now = time.time()
            job_id = new_id()
            first = _job_messages(job_id, 1)
            later = _job_messages(job_id, 1, scheduled_at=now + 10)
            await store.enqueue(first + later, job=NewJob(job_id, "k", "http", "", 4, now))
            in_flight = [
                c for m in await store.claim("n1", now + 1, 10, now + 60) for c in m.deliveries
            ]
            assert {c.message_id for c in in_flight} == {first[0].id}
            assert await store.jobs.control(job_id, "pause", now + 2) == "ok"
            # The scheduled message comes due; the same node claims again.
            assert await store.claim("n1", now + 20, 10, now + 80) == []
            statuses = await _statuses(store, job_id)
            assert statuses == {"queued": 2, "held": 2}  # the two in flight keep their lease
            done = [
                DeliveryUpdate(
                    c.message_id,
                    c.rcpt_idx,
                    c.recipient,
                    DeliveryStatus.SENT,
                    1,
                    None,
                    "p",
                    "250 ok",
                    "sent",
                )
                for c in in_flight
            ]
            await store.record("n1", now + 21, done, jobs=[job_id])
            assert await _statuses(store, job_id) == {"sent": 2, "held": 2}
            held = [e["type"] for e in await store.events_of(later[0].id)]
            assert held == ["scheduled", "scheduled", "held", "held"]

            # A resume whose node died after the job's state committed: finished later.
            assert await store.writer.run(set_state, job_id, "resume", now + 30) == "ok"
            assert (await store.jobs.progress(job_id)).status == "processing"  # type: ignore[union-attr]
            assert await _statuses(store, job_id) == {"sent": 2, "held": 2}
            assert await store.jobs.finish_interrupted(now + 31) == 1
            assert await _statuses(store, job_id) == {"sent": 2, "queued": 2}
            assert await store.jobs.finish_interrupted(now + 32) == 0
            events = [e["type"] for e in await store.events_of(later[0].id)]
            assert events[-2:] == ["released", "released"]

            # Stop: every pending delivery cancelled, with its event.
            assert await store.jobs.control(job_id, "stop", now + 40) == "ok"
            assert await _statuses(store, job_id) == {"sent": 2, "cancelled": 2}
            events = [e["type"] for e in await store.events_of(later[0].id)]
            assert events[-2:] == ["cancelled", "cancelled"]
        finally:
            await store.close()

    asyncio.run(main())
