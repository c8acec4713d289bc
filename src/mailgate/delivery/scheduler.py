"""The delivery loop (Postfix's qmgr): claims due deliveries with a lease, has the
delivery process (:mod:`mailgate.delivery.process`) attempt each message, and records
the outcome in one transaction per message. It knows no SMTP.

Woken at once by accept() after each commit, and by a timer for the next retry; it never
polls on the hot path. A lease moves ``next_attempt_at`` to its expiry, so work claimed by a
node that dies becomes due again by itself; a live node renews the leases of its attempts
in flight, so its work never does.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from collections.abc import Callable
from typing import Protocol

from mailgate.config import Settings
from mailgate.delivery.outcome import AttemptRecord, unfinished
from mailgate.exceptions import StoreUnavailable
from mailgate.logs import Repeats
from mailgate.models import QueuedMessage
from mailgate.store import Store
from mailgate.store.write_errors import CommitUnknown

log = logging.getLogger(__name__)

IDLE_RECHECK = 5.0  # look for work queued by other processes / expired leases this often
# After a wake-up, let more commits arrive before claiming: under a steady stream of mail one
# claim then takes several messages instead of one transaction and one read per message.
WAKE_GATHER = 0.01
DUE_RECHECK = 1.0  # s: how old the known next due time may get before it is read again
# After a failed claim (the database away), the next one in 0.5 s, doubling up to 5 s: a
# database back after a restart is used within a second or two, not 5 s later.
CLAIM_RETRY_MIN, CLAIM_RETRY_MAX = 0.5, 5.0
# A result that could not be recorded is tried again (0.2 s doubling to 5 s) within its lease.
RECORD_RETRY_MIN, RECORD_RETRY_MAX = 0.2, 5.0
# The leases of attempts in flight are renewed every third of [delivery] lease (at least
# every RENEW_MAX s): an attempt may outlast its lease (a slow upstream, a rate limit's or
# a connection's wait), and an expired lease is claimed again, here or by another node,
# and sent twice.
RENEW_FRACTION, RENEW_MIN, RENEW_MAX = 1 / 3, 0.1, 60.0


class Attempts(Protocol):
    """Makes delivery attempts: :class:`~mailgate.delivery.process.DeliveryProcess`."""

    async def attempt(self, msg: QueuedMessage) -> AttemptRecord: ...


class Scheduler:
    def __init__(
        self,
        settings: Settings,
        store: Store,
        deliverer: Attempts,
        owner: str,
        *,
        on_recorded: Callable[[AttemptRecord], None] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._settings = settings
        self._store = store
        self._deliverer = deliverer
        self._on_recorded = on_recorded  # metrics and the suppression cache, in the relay
        self.owner = owner
        self._clock = clock
        self._wake = asyncio.Event()
        self._inflight = 0
        self._tasks: set[asyncio.Task[None]] = set()
        self._attempting: Counter[str] = Counter()  # ids of the messages in flight
        self._rcpts: set[tuple[str, int]] = set()  # their deliveries (id, rcpt_idx)
        # When each in-flight message's lease ends (its claim's, moved by each renewal).
        self._leased_until: dict[str, float] = {}
        self._renewing: asyncio.Task[None] | None = None
        self._renew_failures = Repeats(log, logging.WARNING)
        # A claim failed: it may have committed with its answer lost (the database went away
        # after its COMMIT), leaving deliveries leased to us that nothing attempts.
        self._claim_lost = False
        self._stopping = False
        self._task: asyncio.Task[None] | None = None
        # The earliest next_attempt_at known (None: none), and when it was read from the store.
        self._next_due: float | None = None
        self._due_read_at: float | None = None

    def reconfigure(self, settings: Settings) -> None:
        """A reload: concurrency, claim batch, lease and [retry] for the next claim."""
        self._settings = settings

    def wake(self, due: float | None = None) -> None:
        """New work was committed; ``due``: when held (scheduled) mail among it is due."""
        if due is not None:
            self._note_due(due)
        self._wake.set()

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="mailgate-scheduler")
        self._renewing = asyncio.create_task(self._renew_loop(), name="mailgate-lease-renewal")

    async def stop(self, grace: float) -> None:
        """Stop claiming; let attempts in flight finish for ``grace`` s, then release leases."""
        self._stopping = True
        self._wake.set()
        if self._task is not None:
            await self._task
        if self._renewing is not None:
            self._renewing.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._renewing
        if self._tasks:
            _done, pending = await asyncio.wait(set(self._tasks), timeout=grace)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending)
        try:
            released = await self._store.release_leases(self.owner, self._clock())
        except StoreUnavailable as exc:
            log.error("could not release leases on shutdown (they expire by themselves): %s", exc)
        else:
            if released:
                log.info("released %d leased deliveries for another attempt", released)

    async def _run(self) -> None:
        claim_pause = CLAIM_RETRY_MIN
        while not self._stopping:
            cfg = self._settings.delivery
            self._wake.clear()
            capacity = cfg.concurrency - self._inflight
            want = min(cfg.claim_batch, capacity)
            # Claim in reasonable batches rather than one slot at a time.
            if want >= max(1, min(cfg.claim_batch, cfg.concurrency) // 4) or self._inflight == 0:
                try:
                    got = await self._claim_and_dispatch(want)
                except StoreUnavailable as exc:
                    self._claim_lost = True
                    log.error("claim failed, retrying in %gs: %s", claim_pause, exc)
                    await self._sleep(claim_pause)
                    claim_pause = min(claim_pause * 2, CLAIM_RETRY_MAX)
                    continue
                claim_pause = CLAIM_RETRY_MIN
                if got == want:
                    continue  # there may be more due right now
            await self._sleep(await self._idle_delay())

    async def _idle_delay(self) -> float:
        if self._inflight >= self._settings.delivery.concurrency:
            return IDLE_RECHECK  # a finishing attempt wakes us
        now = self._clock()
        stale = self._due_read_at is None or now - self._due_read_at >= DUE_RECHECK
        if stale or (self._next_due is not None and self._next_due <= now):
            # Read again only when the known value is old or has passed (the claim just
            # made took what was due): under load this read ran after every claim.
            try:
                self._next_due = await self._store.next_due_at()
            except StoreUnavailable:
                return 5.0
            self._due_read_at = now
        due = self._next_due
        if due is None:
            return IDLE_RECHECK
        return min(IDLE_RECHECK, max(0.0, due - now) + 0.01)

    def _note_due(self, when: float) -> None:
        """A retry this process scheduled: keep the known next due time right without a read."""
        if self._next_due is None or when < self._next_due:
            self._next_due = when

    async def _sleep(self, seconds: float) -> None:
        if self._stopping or seconds <= 0:
            return
        try:
            await asyncio.wait_for(self._wake.wait(), timeout=seconds)
        except TimeoutError:
            return
        if not self._stopping:
            await asyncio.sleep(WAKE_GATHER)

    async def _claim_and_dispatch(self, want: int) -> int:
        now = self._clock()
        if self._claim_lost:
            await self._release_lost_claims(now)
        until = now + self._settings.delivery.lease
        claimed = await self._store.claim(self.owner, now, want, until)
        for msg in claimed:
            self._leased_until[msg.id] = max(until, self._leased_until.get(msg.id, until))
            # A delivery whose attempt is in flight here came back because its lease ran
            # out (renewals failed: the database was away): that attempt records it, and
            # a second one would send it twice. The others (a message whose recipients
            # did not fit in one claim) are attempted.
            fresh = [d for d in msg.deliveries if (msg.id, d.rcpt_idx) not in self._rcpts]
            if not fresh:
                continue
            msg.deliveries = fresh
            self._rcpts.update((msg.id, d.rcpt_idx) for d in fresh)
            self._inflight += len(msg.deliveries)
            self._attempting[msg.id] += 1
            task = asyncio.create_task(self._attempt(msg), name=f"deliver-{msg.id}")
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        return sum(len(msg.deliveries) for msg in claimed)

    async def _record(self, msg: QueuedMessage, done: AttemptRecord) -> bool:
        """Record ``done``; while the store is unavailable (a database outage), try again
        until the lease ends rather than give up at once: given up, the attempt is made
        again when the lease expires, a duplicate of mail that already went out."""
        if self._clock() >= self._leased_until[msg.id] and not await self._still_ours(msg):
            log.warning(
                "the lease of %s ended during its attempt and another claim took it: this "
                "attempt's result is not recorded (that claim's attempt records its own)",
                msg.id,
            )
            return False
        pause = RECORD_RETRY_MIN
        while True:
            try:
                await self._store.record(
                    self.owner,
                    self._clock(),
                    done.updates,
                    dkim={msg.id: done.dkim} if done.dkim else None,
                    suppress=done.suppress,
                    dsns=done.dsns,
                    jobs=(msg.job_id,) if msg.job_id else (),
                )
                return True
            except StoreUnavailable as exc:
                if isinstance(exc, CommitUnknown) and await self._committed(msg):
                    return True  # recorded twice, its events and DSNs would be twice too
                until = self._leased_until[msg.id]
                if self._stopping or self._clock() + pause >= until - 1.0:
                    log.error(
                        "could not record results of %s (lease will expire, retry): %s",
                        msg.id,
                        exc,
                    )
                    return False
                log.warning("could not record results of %s yet, retrying: %s", msg.id, exc)
            await asyncio.sleep(pause)
            pause = min(pause * 2, RECORD_RETRY_MAX)

    async def _attempt(self, msg: QueuedMessage) -> None:
        try:
            try:
                done = await self._deliverer.attempt(msg)
            except Exception as exc:
                # The delivery process died mid-attempt (or a bug): whether the mail went
                # out is unknown; try again after the backoff rather than hold the lease.
                log.error("attempt of %s did not finish: %s", msg.id, exc)
                why = f"delivery interrupted: {exc}"
                done = unfinished(self._settings, msg, why, self._clock())
            if await self._record(msg, done):
                for u in done.updates:
                    if u.next_attempt_at is not None:
                        self._note_due(u.next_attempt_at)
                for x in done.suppress:
                    log.info("suppressed %s after a hard bounce (%s)", x.address, msg.id)
                if self._on_recorded is not None:
                    self._on_recorded(done)
        finally:
            self._inflight -= len(msg.deliveries)
            self._rcpts.difference_update((msg.id, d.rcpt_idx) for d in msg.deliveries)
            self._attempting[msg.id] -= 1
            if not self._attempting[msg.id]:
                del self._attempting[msg.id]
                del self._leased_until[msg.id]
            self._wake.set()

    async def _still_ours(self, msg: QueuedMessage) -> bool:
        """Whether ``msg``'s deliveries are still leased to this node although the lease's
        time has passed (no other claim came meanwhile); unknown (the store is away) counts
        as ours: recording then matches only rows still leased to us."""
        try:
            return await self._store.leased_to(self.owner, msg.id)
        except StoreUnavailable:
            return True

    async def _renew_loop(self) -> None:
        while True:
            lease = self._settings.delivery.lease
            await asyncio.sleep(max(RENEW_MIN, min(RENEW_MAX, lease * RENEW_FRACTION)))
            await self.renew()

    async def renew(self) -> None:
        """Extend the leases of the attempts in flight by a whole [delivery] lease."""
        ids = list(self._attempting)
        if not ids:
            return
        until = self._clock() + self._settings.delivery.lease
        try:
            await self._store.renew_leases(self.owner, ids, until)
        except StoreUnavailable as exc:
            self._renew_failures.log("could not renew the leases of attempts in flight: %s", exc)
            return
        self._renew_failures.ok()
        for msg_id in ids:
            if msg_id in self._leased_until:
                self._leased_until[msg_id] = max(self._leased_until[msg_id], until)

    async def _committed(self, msg: QueuedMessage) -> bool:
        """Whether a result whose COMMIT answer was lost did commit (its lease is gone);
        False when the store cannot say yet (it is tried again)."""
        try:
            return not await self._store.leased_to(self.owner, msg.id)
        except StoreUnavailable:
            return False

    async def _release_lost_claims(self, now: float) -> None:
        """Make due again what a failed claim may have leased to us: every lease of ours but
        those of attempts in flight. Left alone, that mail would wait for the lease's end
        (minutes) although the database is back."""
        released = await self._store.release_leases(self.owner, now, keep=set(self._attempting))
        self._claim_lost = False
        if released:
            log.info("released %d deliveries leased by a claim whose answer was lost", released)
