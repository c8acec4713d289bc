"""Retention ([retention] bodies, records): what the relay has finished with is removed
in small batches, so the database holds the retention window and no more.

Each batch is one short writer transaction (store/retention.py); accepts that arrive
meanwhile commit in the next one, so a purge adds at most one batch's time to an accept,
and the batch shrinks while batches take longer than TARGET_BATCH_SECONDS.
Between batches the task yields for BATCH_PAUSE, or three times the batch's duration if
longer: purging never takes more than a quarter of the writer's time. Below the free-space
reserve ([server] min_free_space) the bodies of mail already delivered (or bounced, failed,
cancelled) are emptied at once, whatever [retention] bodies says: Postfix deletes delivered
mail outright, and refusing new mail for days to keep old bodies would be the worse trade.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from mailgate.config import Settings
from mailgate.exceptions import MailgateError
from mailgate.logs import Repeats
from mailgate.space import FreeSpace
from mailgate.store import Store

log = logging.getLogger(__name__)

BATCH = 100  # messages (or rows) per purge transaction, at most
MIN_BATCH = 5
VACUUM_PAGES = 128  # pages (512 KB at 4 KiB) given back per incremental vacuum step, at most
# A transaction of the purge holds the accepts that arrive meanwhile: the batch is halved
# while one takes longer than this, and grows back (by a quarter) while they take less
# than half of it.
TARGET_BATCH_SECONDS = 0.005
BATCH_PAUSE = 0.005  # s at least between batches: accepts get the writer meanwhile
# ... and at least this many times the last batch's duration, so that purging takes at most
# a quarter of the writer's time however slow the batches are under load.
PAUSE_FACTOR = 3.0
INTERVAL = 60.0  # s between rounds when there is nothing to purge
LOW_INTERVAL = 1.0  # s between rounds below the free-space reserve


@dataclass
class Round:
    """What one round purged, and how long its batches took (seconds each)."""

    bodies: int = 0
    messages: int = 0
    webhook_deliveries: int = 0
    jobs: int = 0
    pages: int = 0
    batches: list[float] = field(default_factory=list)

    @property
    def total(self) -> int:
        return self.bodies + self.messages + self.webhook_deliveries + self.jobs + self.pages


class Retention:
    def __init__(
        self,
        settings: Settings,
        store: Store,
        *,
        space: FreeSpace | None = None,
        clock: Callable[[], float] = time.time,
        batch: int = BATCH,
        pause: float = BATCH_PAUSE,
    ) -> None:
        self._bodies = settings.retention.bodies
        self._records = settings.retention.records
        self._store = store
        self._space = space
        self._clock = clock
        self._batch = batch
        self._size = batch  # the batch now (see TARGET_BATCH_SECONDS)
        self._pause = pause
        self._failures = Repeats(log, logging.WARNING)  # a full disk fails every round

    async def run(self) -> None:
        """Purge round after round until cancelled."""
        while True:
            low = False
            try:
                done = await self.round()
                self._failures.ok()
                low = self._space is not None and self._space.low()
                if done.total:
                    log.info(
                        "retention: %d bodies emptied, %d messages, %d webhook deliveries and "
                        "%d jobs deleted, %d pages freed",
                        done.bodies,
                        done.messages,
                        done.webhook_deliveries,
                        done.jobs,
                        done.pages,
                    )
            except MailgateError as exc:
                self._failures.log("retention failed: %s", exc)
            await self._wait(low)

    async def _wait(self, low: bool) -> None:
        """Until the next round: INTERVAL, or LOW_INTERVAL once space runs low."""
        waited = 0.0
        while True:
            await asyncio.sleep(LOW_INTERVAL)
            waited += LOW_INTERVAL
            if low or waited >= INTERVAL or (self._space is not None and self._space.low()):
                return

    async def round(self) -> Round:
        """Purge everything past its window, one batch at a time; then give the freed
        pages back."""
        now = self._clock()
        retention = self._store.retention
        done = Round()
        bodies_before = now - self._bodies
        low = self._space is not None and self._space.low()
        if low:
            bodies_before = now  # below the reserve: every finished message's body goes
        records_before = now - self._records
        done.messages = await self._batches(
            done, lambda: retention.purge_messages(records_before, self._size)
        )
        done.bodies = await self._batches(
            done,
            lambda: retention.purge_bodies(bodies_before, now, self._size),
            checkpoint=low,
        )
        done.webhook_deliveries = await self._batches(
            done, lambda: retention.purge_webhook_deliveries(records_before, self._size)
        )
        done.jobs = await self._batches(
            done, lambda: retention.purge_jobs(records_before, self._size)
        )
        done.pages = await self._batches(
            done,
            lambda: retention.vacuum_step(max(1, VACUUM_PAGES * self._size // BATCH)),
            checkpoint=low,
        )
        if done.pages and not low:
            # The file shrinks when the WAL holding the vacuum is copied back: at once,
            # not at the next automatic checkpoint (on an idle relay, with the next mail).
            await retention.checkpoint()
        return done

    async def _batches(
        self, done: Round, step: Callable[[], Awaitable[int]], *, checkpoint: bool = False
    ) -> int:
        """``step`` until it does nothing; with ``checkpoint`` (below the reserve) the WAL
        is cut back after each batch, so that what a purge writes does not take the space
        it frees."""
        total = 0
        while True:
            start = time.perf_counter()
            n = await step()
            if n == 0:
                return total
            if checkpoint:
                await self._store.retention.checkpoint()
            took = time.perf_counter() - start
            done.batches.append(took)
            total += n
            self._adapt(took)
            await asyncio.sleep(max(self._pause, PAUSE_FACTOR * took) if self._pause else 0)

    def _adapt(self, took: float) -> None:
        """Halve the batch after a slow one, grow it back slowly after fast ones."""
        if took > TARGET_BATCH_SECONDS:
            self._size = max(MIN_BATCH, self._size // 2)
        elif took < TARGET_BATCH_SECONDS / 2:
            self._size = min(self._batch, self._size + max(1, self._size // 4))
