"""The delivery loop (Postfix's qmgr): claims due deliveries with a lease and hands each
message's recipients to a transport in one transaction. It knows no SMTP.

Woken at once by accept() after each commit, and by a timer for the next retry; it never
polls on the hot path. A lease moves ``next_attempt_at`` to its expiry, so work claimed by a
node that dies becomes due again by itself.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from mailgate.config import Settings
from mailgate.delivery.bounce import FailedRecipient, build_dsn, should_send_dsn, verp_address
from mailgate.delivery.classify import connection_reply, is_hard_bounce
from mailgate.delivery.dkim import DkimSigner
from mailgate.delivery.retry import backoff, expired
from mailgate.events.metrics import Metrics
from mailgate.exceptions import StoreUnavailable
from mailgate.headers import scan
from mailgate.ids import new_id
from mailgate.models import (
    AttemptResult,
    ClaimedDelivery,
    DeliveryStatus,
    Outcome,
    QueuedMessage,
)
from mailgate.routing.router import Router
from mailgate.store import DeliveryUpdate, NewMessage, Store, Suppression
from mailgate.suppression import SuppressionList

log = logging.getLogger(__name__)

IDLE_RECHECK = 5.0  # look for work queued by other processes / expired leases this often
# After a wake-up, let more commits arrive before claiming: under a steady stream of mail one
# claim then takes several messages instead of one transaction and one read per message.
WAKE_GATHER = 0.01
DUE_RECHECK = 1.0  # s: how old the known next due time may get before it is read again


class Scheduler:
    def __init__(
        self,
        settings: Settings,
        store: Store,
        router: Router,
        owner: str,
        *,
        signer: DkimSigner | None = None,
        suppressions: SuppressionList | None = None,
        metrics: Metrics | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._settings = settings
        self._store = store
        self._router = router
        self._signer = signer
        self._suppressions = suppressions
        self._metrics = metrics
        self.owner = owner
        self._clock = clock
        self._wake = asyncio.Event()
        self._inflight = 0
        self._tasks: set[asyncio.Task[None]] = set()
        self._stopping = False
        self._task: asyncio.Task[None] | None = None
        # The earliest next_attempt_at known (None: none), and when it was read from the store.
        self._next_due: float | None = None
        self._due_read_at: float | None = None

    def wake(self, due: float | None = None) -> None:
        """New work was committed; ``due``: when held (scheduled) mail among it is due."""
        if due is not None:
            self._note_due(due)
        self._wake.set()

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="mailgate-scheduler")

    async def stop(self, grace: float) -> None:
        """Stop claiming; let attempts in flight finish for ``grace`` s, then release leases."""
        self._stopping = True
        self._wake.set()
        if self._task is not None:
            await self._task
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
        cfg = self._settings.delivery
        while not self._stopping:
            self._wake.clear()
            capacity = cfg.concurrency - self._inflight
            want = min(cfg.claim_batch, capacity)
            # Claim in reasonable batches rather than one slot at a time.
            if want >= max(1, min(cfg.claim_batch, cfg.concurrency) // 4) or self._inflight == 0:
                try:
                    got = await self._claim_and_dispatch(want)
                except StoreUnavailable as exc:
                    log.error("claim failed, retrying in 5s: %s", exc)
                    await self._sleep(5.0)
                    continue
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
        claimed = await self._store.claim(
            self.owner, now, want, now + self._settings.delivery.lease
        )
        if not claimed:
            return 0
        by_message: dict[str, list[ClaimedDelivery]] = {}
        for c in claimed:
            by_message.setdefault(c.message_id, []).append(c)
        messages = await self._store.load_messages(by_message)
        for message_id, dels in by_message.items():
            msg = messages.get(message_id)
            if msg is None:
                log.warning("message %s vanished while leased; skipping", message_id)
                continue
            msg.deliveries = dels
            self._inflight += len(dels)
            task = asyncio.create_task(self._attempt(msg), name=f"deliver-{message_id}")
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        return len(claimed)

    async def _signed(self, msg: QueuedMessage) -> tuple[bytes, bytes | None]:
        """The bytes to send: signed on the first attempt, the same signature after."""
        if msg.dkim is not None:
            return msg.dkim + msg.raw, None
        if self._signer is None:
            return msg.raw, None
        try:
            header = await self._signer.sign_async(msg.raw, msg.sender)
        except Exception:  # an unsignable message still goes out, unsigned and logged
            log.exception("DKIM signing failed for %s; sending unsigned", msg.id)
            return msg.raw, None
        return header + msg.raw, (header or None)

    async def _attempt(self, msg: QueuedMessage) -> None:
        try:
            data, new_signature = await self._signed(msg)
            # One transaction per route and return path: with VERP each recipient has its own.
            groups: dict[tuple[int | None, str], list[ClaimedDelivery]] = {}
            for d in msg.deliveries:
                key = (self._router.route_for(d.recipient, msg.sender), self._return_path(msg, d))
                groups.setdefault(key, []).append(d)
            routed = await asyncio.gather(
                *(
                    self._deliver(route, sender, msg, dels, data)
                    for (route, sender), dels in groups.items()
                )
            )
            now = self._clock()
            pairs = [
                (d, result, failed)
                for dels, (results, history) in zip(groups.values(), routed, strict=True)
                for d, result, failed in zip(dels, results, history, strict=True)
            ]
            updates = [self._update(msg, d, r, failed, now) for d, r, failed in pairs]
            suppress = [
                Suppression(d.recipient.lower(), "hard_bounce", r.reply.line(), msg.id, now)
                for d, r, _ in pairs
                if r.outcome is Outcome.PERMANENT and is_hard_bounce(r.reply)
            ]
            dsn = self._dsn(msg, pairs, updates, now)
            try:
                await self._store.record(
                    self.owner,
                    now,
                    updates,
                    dkim={msg.id: new_signature} if new_signature else None,
                    suppress=suppress,
                    dsns=[dsn] if dsn is not None else [],
                )
            except StoreUnavailable as exc:
                log.error(
                    "could not record results of %s (lease will expire, retry): %s", msg.id, exc
                )
            else:
                for u in updates:
                    if u.next_attempt_at is not None:
                        self._note_due(u.next_attempt_at)
                    if self._metrics is not None:
                        self._metrics.results.labels(u.status.value, u.provider).inc()
                if suppress and self._suppressions is not None:
                    self._suppressions.added([x.address for x in suppress])
                    for x in suppress:
                        log.info("suppressed %s after a hard bounce (%s)", x.address, msg.id)
        finally:
            self._inflight -= len(msg.deliveries)
            self._wake.set()

    def _dsn(
        self,
        msg: QueuedMessage,
        pairs: list[tuple[ClaimedDelivery, AttemptResult, list[AttemptResult]]],
        updates: list[DeliveryUpdate],
        now: float,
    ) -> NewMessage | None:
        """A delivery status notification for the recipients that bounced or failed now.

        Goes to the envelope sender with the null sender, through the same queue; never
        for the null sender or for a DSN or auto-reply (no loops).
        """
        failures = [
            FailedRecipient(
                recipient=d.recipient,
                status=r.reply.enhanced
                or ("5.0.0" if u.status is DeliveryStatus.BOUNCED else "4.4.7"),
                diagnostic=r.reply.line(),
                remote_mta=r.provider,
                last_attempt=now,
            )
            for (d, r, _), u in zip(pairs, updates, strict=True)
            if u.status in (DeliveryStatus.BOUNCED, DeliveryStatus.FAILED)
        ]
        if not failures or not should_send_dsn(msg.sender, msg.raw):
            return None
        hostname = self._settings.server.hostname
        try:
            raw = build_dsn(
                original=msg.raw,
                queue_id=msg.id,
                envelope_sender=msg.sender,
                hostname=hostname,
                failures=failures,
                now=now,
                arrival_date=msg.created_at,
            )
        except ValueError:
            log.exception("could not build a DSN for %s", msg.id)
            return None
        dsn_id = new_id()
        log.info(
            "%s: DSN %s to <%s> for %d recipient(s)", msg.id, dsn_id, msg.sender, len(failures)
        )
        return NewMessage(
            id=dsn_id,
            created_at=now,
            sender="",
            recipients=(msg.sender,),
            raw=raw,
            subject="Undelivered Mail Returned to Sender",
            message_id_header=scan(raw).message_id,
            source="dsn",
            credential=f"dsn:{msg.id}",
        )

    def _return_path(self, msg: QueuedMessage, d: ClaimedDelivery) -> str:
        """The MAIL FROM upstream: the sender, or a VERP address that names the delivery."""
        if not self._settings.bounces.verp or msg.sender in ("", "<>"):
            return msg.sender
        return verp_address(
            self._settings.bounces.local, self._settings.bounce_domain, msg.id, d.rcpt_idx
        )

    async def _deliver(
        self,
        route: int | None,
        sender: str,
        msg: QueuedMessage,
        dels: list[ClaimedDelivery],
        data: bytes,
    ) -> tuple[list[AttemptResult], list[list[AttemptResult]]]:
        rcpts = [d.recipient for d in dels]
        try:
            routed = await self._router.deliver(route, sender, rcpts, data)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a bug in a transport must not lose the delivery
            log.exception("delivery of %s failed unexpectedly", msg.id)
            reply = connection_reply("internal", f"internal error: {type(exc).__name__}")
            return [AttemptResult(Outcome.TEMPORARY, reply, "", "local") for _ in rcpts], [
                [] for _ in rcpts
            ]
        return routed.results, routed.history

    def _update(
        self,
        msg: QueuedMessage,
        d: ClaimedDelivery,
        r: AttemptResult,
        failed: list[AttemptResult],
        now: float,
    ) -> DeliveryUpdate:
        attempts = d.attempts + 1
        nxt: float | None = None
        if r.outcome is Outcome.SENT:
            direct = self._router.is_direct(r.provider)
            status = DeliveryStatus.DELIVERED if direct else DeliveryStatus.SENT
        elif r.outcome is Outcome.PERMANENT:
            status = DeliveryStatus.BOUNCED
        elif expired(msg.created_at, now, self._settings.retry):
            status = DeliveryStatus.FAILED
        else:
            status = DeliveryStatus.DEFERRED
            nxt = now + backoff(attempts, self._settings.retry)
        log.info(
            "%s to=<%s> status=%s attempts=%d provider=%s reply=%s%s",
            msg.id,
            d.recipient,
            status.value,
            attempts,
            r.provider or "-",
            r.reply,
            "".join(f" (failed over from {f.provider}: {f.reply})" for f in failed),
        )
        return DeliveryUpdate(
            message_id=msg.id,
            rcpt_idx=d.rcpt_idx,
            recipient=d.recipient,
            status=status,
            attempts=attempts,
            next_attempt_at=nxt,
            provider=r.provider,
            response=r.reply.line(),
            event=status.value,
            failovers=tuple((f.provider, f.reply.line()) for f in failed),
        )
