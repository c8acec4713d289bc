"""The delivery loop (delivery/scheduler.py) against a fake store and fake attempts, with
an injected clock: what it claims, how many attempts it keeps in flight, what it records
when an attempt or the store fails, when it looks again, and what stop releases."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Any

import pytest

from mailgate.config import Settings
from mailgate.delivery.outcome import AttemptRecord
from mailgate.delivery.scheduler import DUE_RECHECK, IDLE_RECHECK, Scheduler
from mailgate.exceptions import StoreUnavailable
from mailgate.models import (
    ClaimedDelivery,
    DeliveryStatus,
    DeliveryUpdate,
    QueuedMessage,
)
from mailgate.store.write_errors import CommitUnknown

NOW = 1_800_000_000.0


def settings(concurrency: int = 10, claim_batch: int = 10, lease: str = "60s") -> Settings:
    return Settings.model_validate(
        {
            "domains": [{"name": "example.com"}],
            "providers": [{"name": "c", "kind": "maildir", "path": "/nonexistent"}],
            "delivery": {"concurrency": concurrency, "claim_batch": claim_batch, "lease": lease},
            "retry": {"min_backoff": "60s", "jitter": 0},
        }
    )


def message(n: int, job: str | None = None) -> QueuedMessage:
    d = ClaimedDelivery(f"m{n}", 0, f"r{n}@dest.test", 0, "queued")
    return QueuedMessage(f"m{n}", "app@example.com", b"x", NOW, [d], job_id=job)


def sent(msg: QueuedMessage) -> AttemptRecord:
    return AttemptRecord(
        [
            DeliveryUpdate(
                msg.id, d.rcpt_idx, d.recipient, DeliveryStatus.SENT, 1, None, "c", "250 ok", "sent"
            )
            for d in msg.deliveries
        ]
    )


class FakeStore:
    """The store calls the loop makes, on a list of due messages."""

    def __init__(self, due: Sequence[QueuedMessage] = (), next_due: float | None = None) -> None:
        self.due = list(due)
        self.next_due = next_due
        self.claims: list[tuple[str, float, int, float]] = []
        self.records: list[dict[str, Any]] = []
        self.due_reads = 0
        self.released: list[str] = []
        self.kept: list[set[str]] = []  # release_leases' keep, each call
        self.refuse: set[str] = set()  # ids of messages whose record raises StoreUnavailable
        self.answer_lost: set[str] = set()  # ids whose record commits, then CommitUnknown
        # The next claim commits (its messages leased) but its answer is lost.
        self.lose_next_claim = False
        self.leased: list[QueuedMessage] = []
        self.renewals: list[tuple[str, list[str], float]] = []
        self.taken: set[str] = set()  # ids whose lease another claim took after it ended

    async def claim(self, owner: str, now: float, limit: int, until: float) -> list[QueuedMessage]:
        self.claims.append((owner, now, limit, until))
        got, self.due = self.due[:limit], self.due[limit:]
        self.leased += got
        if self.lose_next_claim:
            self.lose_next_claim = False
            raise StoreUnavailable("connection was closed in the middle of operation")
        return got

    async def record(
        self, owner: str, now: float, updates: list[DeliveryUpdate], **kw: Any
    ) -> None:
        if updates and updates[0].message_id in self.refuse:
            raise StoreUnavailable("database is locked")
        self.records.append({"owner": owner, "now": now, "updates": updates, **kw})
        if updates and updates[0].message_id in self.answer_lost:
            self.answer_lost.discard(updates[0].message_id)
            raise CommitUnknown("the database connection was lost at COMMIT")

    async def leased_to(self, owner: str, message_id: str) -> bool:
        if message_id in self.taken:
            return False
        return not any(r["updates"][0].message_id == message_id for r in self.records)

    async def renew_leases(self, owner: str, message_ids: list[str], until: float) -> int:
        self.renewals.append((owner, sorted(message_ids), until))
        return len(message_ids)

    async def next_due_at(self) -> float | None:
        self.due_reads += 1
        return self.next_due

    async def release_leases(self, owner: str, now: float, keep: Sequence[str] = ()) -> int:
        self.released.append(owner)
        self.kept.append(set(keep))
        back = [m for m in self.leased if m.id not in keep]
        self.leased = [m for m in self.leased if m.id in keep]
        self.due += back
        return len(back)


class FakeAttempts:
    """Attempts that finish when the test lets them (``gate``), or at once."""

    def __init__(self, answer: Callable[[QueuedMessage], AttemptRecord] = sent) -> None:
        self.answer = answer
        self.gate: asyncio.Event | None = None
        self.in_flight = 0
        self.most = 0
        self.started: list[str] = []

    async def attempt(self, msg: QueuedMessage) -> AttemptRecord:
        self.started.append(msg.id)
        self.in_flight += 1
        self.most = max(self.most, self.in_flight)
        try:
            if self.gate is not None:
                await self.gate.wait()
            return self.answer(msg)
        finally:
            self.in_flight -= 1


async def until(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    """Wait for ``condition`` (the loop runs on the same event loop), or fail."""
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.001)


def loop(store: FakeStore, attempts: FakeAttempts, **kw: Any) -> Scheduler:
    cfg = kw.pop("settings", None) or settings()
    return Scheduler(cfg, store, attempts, "node-1", clock=lambda: NOW, **kw)  # type: ignore[arg-type]


async def held_in_flight(
    store: FakeStore, count: int = 1, now: list[float] | None = None, **kw: Any
) -> tuple[Scheduler, FakeAttempts]:
    """A started loop whose first ``count`` attempts are in flight until the test sets
    their gate; ``now``: a clock the test moves."""
    attempts = FakeAttempts()
    attempts.gate = asyncio.Event()
    clock = (lambda: now[0]) if now is not None else (lambda: NOW)
    cfg = kw.pop("settings", None) or settings()
    s = Scheduler(cfg, store, attempts, "node-1", clock=clock, **kw)  # type: ignore[arg-type]
    s.start()
    await until(lambda: attempts.in_flight == count)
    return s, attempts


def test_claims_attempts_and_records_each_message() -> None:
    async def main() -> None:
        store = FakeStore([message(1), message(2, job="j1"), message(3)])
        recorded: list[AttemptRecord] = []
        s = loop(store, FakeAttempts(), on_recorded=recorded.append)
        s.start()
        await until(lambda: len(store.records) == 3)
        await s.stop(1.0)
        assert store.claims[0] == ("node-1", NOW, 10, NOW + 60)  # lease: now + [delivery] lease
        assert {r["updates"][0].message_id for r in store.records} == {"m1", "m2", "m3"}
        assert all(r["owner"] == "node-1" and r["now"] == NOW for r in store.records)
        jobs = {r["updates"][0].message_id: r["jobs"] for r in store.records}
        assert jobs == {"m1": (), "m2": ("j1",), "m3": ()}
        assert len(recorded) == 3 and store.released == ["node-1"]

    asyncio.run(main())


def test_no_more_attempts_in_flight_than_concurrency() -> None:
    async def main() -> None:
        store = FakeStore([message(i) for i in range(7)])
        attempts = FakeAttempts()
        attempts.gate = asyncio.Event()
        s = loop(store, attempts, settings=settings(concurrency=3, claim_batch=3))
        s.start()
        await until(lambda: attempts.in_flight == 3)
        await asyncio.sleep(0.05)  # room for a wrong claim to happen
        assert len(attempts.started) == 3 and [c[2] for c in store.claims] == [3]
        attempts.gate.set()  # they finish; each finish wakes the loop to claim again
        await until(lambda: len(store.records) == 7)
        await s.stop(1.0)
        assert attempts.most == 3

    asyncio.run(main())


def test_an_attempt_that_dies_is_recorded_as_deferred_by_the_relay() -> None:
    def dies(msg: QueuedMessage) -> AttemptRecord:
        raise ConnectionResetError("delivery process gone")

    async def main() -> None:
        store = FakeStore([message(1)])
        s = loop(store, FakeAttempts(dies))
        s.start()
        await until(lambda: len(store.records) == 1)
        await s.stop(1.0)
        (u,) = store.records[0]["updates"]
        assert u.status is DeliveryStatus.DEFERRED and u.next_attempt_at == NOW + 60
        assert u.response.startswith("451 4.3.0") and "delivery process gone" in u.response

    asyncio.run(main())


def test_a_record_the_store_refuses_is_left_to_the_lease_and_the_loop_goes_on() -> None:
    async def main() -> None:
        store = FakeStore([message(1)])
        store.refuse.add("m1")
        recorded: list[AttemptRecord] = []
        # A lease too short to wait for the store within it: the result is left to it.
        cfg = settings(lease="1s")
        s = loop(store, FakeAttempts(), on_recorded=recorded.append, settings=cfg)
        s.start()
        await until(lambda: store.claims and not store.due)
        store.due.append(message(2))
        s.wake()
        await until(lambda: len(store.records) == 1)
        await s.stop(1.0)
        assert store.records[0]["updates"][0].message_id == "m2" and len(recorded) == 1

    asyncio.run(main())


def test_idle_delay_waits_for_the_next_due_time_and_reads_it_only_when_stale() -> None:
    async def main() -> None:
        now = [NOW]
        store = FakeStore(next_due=NOW + 2)
        s = Scheduler(settings(), store, FakeAttempts(), "n", clock=lambda: now[0])  # type: ignore[arg-type]
        assert await s._idle_delay() == pytest.approx(2.01)
        now[0] += DUE_RECHECK / 2
        assert await s._idle_delay() == pytest.approx(2.01 - DUE_RECHECK / 2)
        assert store.due_reads == 1  # still fresh: not read again
        s.wake(due=now[0] + 0.5)  # held mail due sooner, noted without a read
        assert await s._idle_delay() == pytest.approx(0.51) and store.due_reads == 1
        now[0] += DUE_RECHECK
        store.next_due = None
        assert await s._idle_delay() == IDLE_RECHECK and store.due_reads == 2
        store.next_due = now[0] + 3600
        now[0] += DUE_RECHECK
        assert await s._idle_delay() == IDLE_RECHECK  # never longer than the recheck

    asyncio.run(main())


def test_stop_cancels_attempts_past_the_grace_and_releases_the_leases() -> None:
    async def main() -> None:
        store = FakeStore([message(1)])
        s, attempts = await held_in_flight(store)  # never let go: the attempt hangs
        async with asyncio.timeout(2):
            await s.stop(0.05)
        assert attempts.in_flight == 0 and store.records == [] and store.released == ["node-1"]

    asyncio.run(main())


def test_a_claim_whose_answer_was_lost_is_released_once_the_store_answers() -> None:
    """The database went away after committing a claim: its deliveries are leased to this
    node and nothing attempts them. The next claim first releases every lease of the node
    but those of the attempts in flight, so that mail goes now, not at the lease's end."""

    async def main() -> None:
        store = FakeStore([message(1)])
        s, attempts = await held_in_flight(store)
        store.lose_next_claim = True
        store.due.append(message(2))
        s.wake()
        await until(lambda: len(store.claims) == 2)  # m2 leased, its answer lost
        assert attempts.started == ["m1"] and store.released == []
        s.wake()  # ends the pause after the failed claim
        await until(lambda: attempts.started == ["m1", "m2"])
        assert store.released == ["node-1"] and store.kept == [{"m1"}]  # m1's lease stays
        attempts.gate.set()
        await until(lambda: len(store.records) == 2)
        await s.stop(1.0)
        assert sorted(attempts.started) == ["m1", "m2"]  # neither attempted twice

    asyncio.run(main())


def test_a_result_whose_commit_answer_was_lost_is_not_recorded_twice() -> None:
    """It committed (its lease is gone): recorded again, its events and DSNs would be
    inserted twice."""

    async def main() -> None:
        store = FakeStore([message(1)])
        store.answer_lost.add("m1")
        recorded: list[AttemptRecord] = []
        s = loop(store, FakeAttempts(), on_recorded=recorded.append)
        s.start()
        await until(lambda: len(recorded) == 1)
        await s.stop(1.0)
        assert len(store.records) == 1

    asyncio.run(main())


def test_leases_of_attempts_in_flight_are_renewed() -> None:
    """An attempt may outlast [delivery] lease (a slow upstream, a rate limit's wait): its
    lease is moved on, or another claim would send the message again."""

    async def main() -> None:
        now = [NOW]
        store = FakeStore([message(1)])
        s, attempts = await held_in_flight(store, now=now)
        now[0] = NOW + 50
        await s.renew()
        assert store.renewals == [("node-1", ["m1"], NOW + 110)]
        now[0] = NOW + 100  # past the claim's lease, within the renewed one
        attempts.gate.set()
        await until(lambda: len(store.records) == 1)
        await s.stop(1.0)
        await s.renew()  # nothing in flight: nothing asked
        assert len(store.renewals) == 1

    asyncio.run(main())


def test_a_message_claimed_again_while_its_attempt_is_in_flight_is_not_sent_twice() -> None:
    """Renewals failed (the database was away) and the lease ran out; the next claim of
    this node took the message again: the attempt in flight stays the only one."""

    async def main() -> None:
        store = FakeStore([message(1)])
        s, attempts = await held_in_flight(store)
        store.due.append(message(1))  # due again: its lease expired
        s.wake()
        await until(lambda: not store.due)
        await asyncio.sleep(0.05)
        attempts.gate.set()
        await until(lambda: len(store.records) == 1)
        await s.stop(1.0)
        assert attempts.started == ["m1"] and len(store.records) == 1

    asyncio.run(main())


def test_a_result_whose_lease_another_claim_took_is_not_recorded(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The lease ended during the attempt and another node claimed the message: that
    node's attempt records its own result; recording this one too would double the
    events, webhooks and DSNs."""

    async def main() -> None:
        now = [NOW]
        store = FakeStore([message(1), message(2)])
        s, attempts = await held_in_flight(store, 2, now=now)
        now[0] = NOW + 61  # past the lease (no renewal came)
        store.taken.add("m1")  # another node claimed m1; m2's lease is still ours
        attempts.gate.set()
        await until(lambda: attempts.in_flight == 0)
        await until(lambda: len(store.records) == 1)
        await s.stop(1.0)
        assert store.records[0]["updates"][0].message_id == "m2"

    with caplog.at_level("WARNING"):
        asyncio.run(main())
    assert "the lease of m1 ended during its attempt" in caplog.text


def test_a_message_split_over_two_claims_is_attempted_in_both() -> None:
    """A claim takes deliveries, not messages: six recipients with a claim of four come in
    two claims, and the second part's attempt must not wait for the first's to end."""

    async def main() -> None:
        deliveries = [ClaimedDelivery("m1", i, f"r{i}@dest.test", 0, "queued") for i in range(6)]

        def part(idx: range) -> QueuedMessage:
            return QueuedMessage("m1", "app@example.com", b"x", NOW, [deliveries[i] for i in idx])

        store = FakeStore([part(range(4))])
        s, attempts = await held_in_flight(store)
        store.due.append(part(range(4, 6)))  # the next claim takes the rest
        s.wake()
        await until(lambda: attempts.in_flight == 2)
        assert attempts.started == ["m1", "m1"]
        attempts.gate.set()  # type: ignore[union-attr]
        await until(lambda: len(store.records) == 2)
        await s.stop(1.0)
        recorded = sorted(u.rcpt_idx for r in store.records for u in r["updates"])
        assert recorded == list(range(6))

    asyncio.run(main())
