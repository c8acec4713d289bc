"""Webhooks out: the dispatcher that sends the outbox (store/webhooks.py) to endpoints.

One lane per enabled endpoint: it claims that endpoint's due deliveries (at most four times
``[webhooks] max_in_flight`` held at a time, so a backlog of any size stays in the
database, not in memory), posts them through the webhook process in batches of
``max_in_flight`` (one pipe frame each way per batch; the process keeps at most
``max_in_flight`` requests in flight per endpoint), and hands the outcomes to one recorder
that writes them in batches. A slow or dead endpoint fills only its own lane; mail never
waits for it.

Only a 2xx is a success. A failure is retried after 5 s, 5 min, 30 min, 2 h, 5 h, 10 h,
14 h, 20 h and 24 h (each jittered by up to 20 %, and never before a Retry-After), then
the delivery is "failed" (``mailgate webhooks replay`` sends it again). A 410 Gone
disables the endpoint. Delivery is at least once, with the outbox row's id as webhook-id.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Callable, Sequence
from typing import Any

from mailgate.config import Settings
from mailgate.events.webhook_models import WebhookAnswer, WebhookBatch, WebhookHello
from mailgate.events.webhook_process import WebhookProcess
from mailgate.events.webhook_signing import secret_key
from mailgate.events.webhook_types import subscription
from mailgate.exceptions import MailgateError
from mailgate.logs import fields
from mailgate.store import Store
from mailgate.store.webhook_outbox import Result
from mailgate.store.webhooks import Endpoint
from mailgate.workers import WorkerUnavailable

log = logging.getLogger(__name__)

SCHEDULE = (5.0, 300.0, 1800.0, 7200.0, 18000.0, 36000.0, 50400.0, 72000.0, 86400.0)
JITTER = 0.2
POLL = 1.0  # s between claims of an idle lane when nothing wakes it
REFRESH = 5.0  # s between reads of the endpoints (another node may have changed them)
FLUSH = 0.05  # s outcomes wait to be recorded together
GATHER = 0.05  # s a caught-up lane waits before its next claim
GONE = WebhookAnswer(None, "the event is no longer stored", None)
WINDOW = 4  # a lane holds up to this many times [webhooks] max_in_flight claimed


def msg_id(row_id: int) -> str:
    return f"msg_{row_id}"


def next_attempt(
    attempts: int, answer: WebhookAnswer, now: float, rand: Callable[[], float] = random.random
) -> float | None:
    """When to try again after the ``attempts``-th failed attempt (None: give up)."""
    if attempts > len(SCHEDULE):
        return None
    delay = SCHEDULE[attempts - 1] * (1 + JITTER * (2 * rand() - 1))
    if answer.retry_after is not None:
        delay = max(delay, min(answer.retry_after, SCHEDULE[-1]))
    return now + delay


def _hello(settings: Settings) -> WebhookHello:
    return WebhookHello(
        allow_private=settings.webhooks.allow_private,
        timeout=settings.webhooks.timeout,
        log_level=settings.server.log_level,
    )


def config_rows(settings: Settings) -> list[dict[str, Any]]:
    return [
        {
            "id": e.id,
            "url": e.url,
            "events": subscription(e.events),
            "secret": e.resolved_secret(),
            "description": e.description,
        }
        for e in settings.webhooks.endpoints
    ]


class _Lane:
    """One endpoint's deliveries: claimed in windows, each claim posted as one batch by the
    webhook process, which keeps the endpoint's requests in flight within its limit."""

    def __init__(self, dispatcher: WebhookDispatcher, endpoint: Endpoint) -> None:
        self.endpoint = endpoint
        self._d = dispatcher
        self._limit = dispatcher.settings.webhooks.max_in_flight
        self._held = 0  # claimed and not yet answered
        self._wake = asyncio.Event()
        self._sends: set[asyncio.Task[None]] = set()
        self.task = asyncio.create_task(self._run(), name=f"mailgate-webhooks-{endpoint.id}")

    def wake(self) -> None:
        self._wake.set()

    async def _run(self) -> None:
        d = self._d
        window = WINDOW * self._limit
        while True:
            free = window - self._held
            got = 0
            # Claims are writer transactions beside the accepts': one per slot freed would
            # be one per webhook, so a lane claims only once half its window is free.
            if free >= window // 2:
                now = d.clock()
                try:
                    rows = await d.store.webhooks.claim(
                        self.endpoint.id, d.owner, now, free, now + d.lease
                    )
                except MailgateError as exc:
                    log.warning("webhooks: claim for %s failed: %s", self.endpoint.id, exc)
                    rows = []
                got = len(rows)
                self._held += got
                # Batches of max_in_flight: each one's answer frees its part of the window,
                # so the endpoint's slots do not wait for the slowest of a whole claim.
                for start in range(0, got, self._limit):
                    task = asyncio.create_task(self._send(rows[start : start + self._limit]))
                    self._sends.add(task)
                    task.add_done_callback(self._sends.discard)
            if free >= window // 2 and got == free:
                continue  # more may be due: claim again once half the window is free
            if free >= window // 2:
                # Caught up: let the events of the next moment gather (at 500 messages/s a
                # wake per commit would otherwise claim them one or two at a time).
                await asyncio.sleep(GATHER)
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(POLL):
                    await self._wake.wait()

    async def _send(self, rows: list[dict[str, Any]]) -> None:
        d = self._d
        endpoint = self.endpoint
        try:
            live = []
            for row in rows:
                if row["type"] is None and row.get("job") is None:
                    # Its event (or job) was purged before it could be sent: nothing to say.
                    d.outcome(endpoint, row, GONE)
                else:
                    live.append(row)
            if not live:
                return
            batch = WebhookBatch(
                endpoint.id,
                endpoint.url,
                tuple(secret_key(s) for s in endpoint.secrets(d.clock())),
                self._limit,
                tuple((msg_id(row["id"]), row) for row in live),
            )
            try:
                answers: Sequence[WebhookAnswer] = await d.process.post(batch)
            except (WorkerUnavailable, RuntimeError) as exc:
                answers = [WebhookAnswer(None, f"webhook process: {exc}", None)] * len(live)
            for row, answer in zip(live, answers, strict=True):
                d.outcome(endpoint, row, answer)
        finally:
            self._held -= len(rows)
            self._wake.set()

    async def stop(self) -> None:
        self.task.cancel()
        for task in list(self._sends):
            task.cancel()
        await asyncio.gather(self.task, *self._sends, return_exceptions=True)


class WebhookDispatcher:
    def __init__(
        self,
        settings: Settings,
        store: Store,
        owner: str,
        *,
        clock: Callable[[], float] = time.time,
        on_outcome: Callable[[str, bool], None] | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.owner = owner
        self.clock = clock
        # A claimed delivery waits for at most two rounds of the lane's requests.
        self.lease = 4 * settings.webhooks.timeout + 60.0
        self._hello = _hello(settings)
        self.process = WebhookProcess(self._hello)
        self._on_outcome = on_outcome
        self._lanes: dict[str, _Lane] = {}
        self._results: list[Result] = []
        self._disable: list[tuple[str, str]] = []
        self._refresh = asyncio.Event()
        self._started = False
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        """Make the configured endpoints current, take back this node's earlier leases,
        and start the lanes."""
        await self._sync_config(self.settings)
        node = self.owner.split(":", 1)[0] + ":"
        released = await self.store.webhooks.release(node, self.clock())
        if released:
            log.info("webhooks: %d deliveries leased by an earlier run are due again", released)
        self._tasks = [
            asyncio.create_task(self._supervise(), name="mailgate-webhooks"),
            asyncio.create_task(self._record_loop(), name="mailgate-webhooks-record"),
        ]

    async def _sync_config(self, settings: Settings) -> None:
        node = self.owner.split(":", 1)[0]
        gone = await self.store.webhooks.sync_config(config_rows(settings), self.clock(), node)
        for url in gone:
            log.warning(
                "webhook endpoint %s is not in this node's [[webhooks.endpoints]]: disabled "
                "for every node, its pending webhooks kept; a node whose relay.toml has it "
                "enables it again, DELETE /v1/webhooks/ID removes it (nodes should share "
                "one list)",
                url,
            )

    async def reconfigure(self, settings: Settings) -> None:
        """A reload: the endpoints of relay.toml made current (lanes follow at once), and
        a new webhook process if its settings changed (the old one answers what it has)."""
        self.settings = settings
        self.lease = 4 * settings.webhooks.timeout + 60.0
        await self._sync_config(settings)
        hello = _hello(settings)
        if hello != self._hello:
            if self._started:
                await self.process.replace(hello)
            else:  # not started yet: it starts with the new settings
                self.process = WebhookProcess(hello)
            self._hello = hello
        self.endpoints_changed()

    def wake(self) -> None:
        """New events may be in the outbox."""
        for lane in self._lanes.values():
            lane.wake()

    def endpoints_changed(self) -> None:
        self._refresh.set()

    async def _supervise(self) -> None:
        while True:
            try:
                endpoints = await self.store.webhooks.endpoints()
            except MailgateError as exc:
                log.warning("webhooks: cannot read the endpoints: %s", exc)
                endpoints = None
            if endpoints is not None:
                await self._set_lanes({e.id: e for e in endpoints if e.disabled_at is None})
            self._refresh.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(REFRESH):
                    await self._refresh.wait()

    async def _set_lanes(self, active: dict[str, Endpoint]) -> None:
        for endpoint_id in list(self._lanes):
            if endpoint_id not in active:
                await self._lanes.pop(endpoint_id).stop()
        if active and not self._started:
            await self.process.start()
            self._started = True
        for endpoint_id, endpoint in active.items():
            lane = self._lanes.get(endpoint_id)
            if lane is None:
                self._lanes[endpoint_id] = _Lane(self, endpoint)
            else:
                lane.endpoint = endpoint  # a new URL or secret applies to the next send

    def outcome(self, endpoint: Endpoint, row: dict[str, Any], answer: WebhookAnswer) -> None:
        """Queue one attempt's outcome for the recorder."""
        now = self.clock()
        attempts = int(row["attempts"]) + 1
        ok = answer.status is not None and 200 <= answer.status < 300
        error = answer.error
        if ok:
            result = Result(row["id"], "succeeded", None, answer.status, "")
        elif answer is GONE:
            result = Result(row["id"], "failed", None, None, answer.error)
        elif answer.status == 410:
            result = Result(row["id"], "failed", None, 410, error or "HTTP 410")
            self._disable.append((endpoint.id, "the endpoint answered 410 Gone"))
            log.warning(
                "webhooks: %s answered 410 Gone: endpoint disabled",
                endpoint.url,
                extra=fields(event="webhook_disabled", endpoint=endpoint.id, reply="HTTP 410"),
            )
        else:
            when = next_attempt(attempts, answer, now)
            result = Result(row["id"], "pending" if when else "failed", when, answer.status, error)
            if when is None:
                log.warning(
                    "webhooks: %s to %s failed for good after %d attempts: %s",
                    msg_id(row["id"]),
                    endpoint.url,
                    attempts,
                    error,
                    extra=fields(
                        event="webhook_failed",
                        webhook_id=msg_id(row["id"]),
                        endpoint=endpoint.id,
                        attempt=attempts,
                        reply=error,
                    ),
                )
        if self._on_outcome is not None:
            self._on_outcome(result.status, ok)
        self._results.append(result)

    async def _record_loop(self) -> None:
        while True:
            await asyncio.sleep(FLUSH)
            await self._record()

    async def _record(self) -> None:
        if not self._results and not self._disable:
            return
        results, self._results = self._results, []
        disable, self._disable = self._disable, []
        try:
            await self.store.webhooks.record(self.owner, results, disable, self.clock())
        except MailgateError as exc:
            log.warning("webhooks: recording %d outcomes failed: %s", len(results), exc)
            self._results[:0] = results  # the leases still hold them; try again
            self._disable[:0] = disable
            return
        if disable:
            self._refresh.set()

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for lane in list(self._lanes.values()):
            await lane.stop()
        self._lanes.clear()
        with contextlib.suppress(MailgateError):
            await self._record()
        if self._started:
            await self.process.close()
