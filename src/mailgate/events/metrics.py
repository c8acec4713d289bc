"""``/metrics`` in the Prometheus text format (prometheus_client).

Queue gauges (deliveries per status, age of the oldest pending message) are read from the
store at scrape time, so every node of a cluster reports the same queue; counters count
this process's accepts and delivery results since it started.

``mailgate_event_loop_lag_seconds`` is how late the event loop runs a timer: every SMTP
reply and API answer waits that long on top of its own work, so it is the figure that shows
whether anything (delivery, signing, garbage collection) stalls the listeners.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from mailgate.inflight import InflightBudget
from mailgate.models import DeliveryStatus
from mailgate.store import Store

LAG_INTERVAL = 0.02  # s between event loop lag samples
LAG_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.accepted = Counter(
            "mailgate_messages_accepted",
            "Messages committed to the queue by this process",
            ["source"],
            registry=self.registry,
        )
        self.results = Counter(
            "mailgate_delivery_results",
            "Delivery attempt results recorded by this process",
            ["status", "provider"],
            registry=self.registry,
        )
        self.deliveries = Gauge(
            "mailgate_deliveries",
            "Deliveries (one per recipient) in the queue by status",
            ["status"],
            registry=self.registry,
        )
        self.oldest = Gauge(
            "mailgate_queue_oldest_pending_seconds",
            "Age of the oldest message with a delivery still pending (0 if none)",
            registry=self.registry,
        )
        self.webhooks = Counter(
            "mailgate_webhook_attempts",
            "Webhook attempts made by this process, by outcome (pending: to be retried)",
            ["result"],
            registry=self.registry,
        )
        self.webhook_backlog = Gauge(
            "mailgate_webhook_backlog",
            "Webhook deliveries not yet sent or given up, all endpoints",
            registry=self.registry,
        )
        self.free_space = Gauge(
            "mailgate_free_space_bytes",
            "Free bytes on the queue's file system (the SQLite file's, else data_dir)",
            registry=self.registry,
        )
        self.ballast = Gauge(
            "mailgate_reserve_ballast_bytes",
            "Bytes the reserve's ballast file holds (0: released on a full disk, or none)",
            registry=self.registry,
        )
        self.storage_refusals = Counter(
            "mailgate_insufficient_storage_refusals",
            "Messages or requests refused below [server] min_free_space, or on a full disk",
            ["source"],
            registry=self.registry,
        )
        self.loop_lag = Histogram(
            "mailgate_event_loop_lag_seconds",
            f"How late the event loop ran a timer (sampled every {LAG_INTERVAL * 1000:g} ms)",
            buckets=LAG_BUCKETS,
            registry=self.registry,
        )

    def watch_inflight(self, budget: InflightBudget) -> None:
        """Export the in-flight budget (read at scrape time: nothing to do per message)."""
        self.registry.register(_InflightCollector(budget))

    async def watch_event_loop(self) -> None:
        """Sample the event loop lag until cancelled."""
        loop = asyncio.get_running_loop()
        while True:
            start = loop.time()
            await asyncio.sleep(LAG_INTERVAL)
            self.loop_lag.observe(max(0.0, loop.time() - start - LAG_INTERVAL))

    async def render(self, store: Store) -> bytes:
        counts = await store.status_counts()
        for status in DeliveryStatus:
            self.deliveries.labels(status.value).set(counts.get(status.value, 0))
        oldest = await store.oldest_pending_created_at()
        self.oldest.set(max(0.0, time.time() - oldest) if oldest is not None else 0.0)
        self.webhook_backlog.set(await store.webhooks.backlog())
        return generate_latest(self.registry)


class _InflightCollector(Collector):
    """``mailgate_inflight_bytes``, its cap and peak, and the refusals per ingress."""

    def __init__(self, budget: InflightBudget) -> None:
        self._budget = budget

    def collect(self) -> Iterator[Metric]:
        b = self._budget
        yield GaugeMetricFamily(
            "mailgate_inflight_bytes",
            "Message bytes held in memory by SMTP sessions and HTTP requests",
            b.used,
        )
        yield GaugeMetricFamily("mailgate_inflight_bytes_max", "[server] max_inflight_bytes", b.cap)
        yield GaugeMetricFamily(
            "mailgate_inflight_bytes_peak", "Highest mailgate_inflight_bytes since start", b.peak
        )
        refused = CounterMetricFamily(
            "mailgate_inflight_refusals",
            "Messages refused (452 4.3.1, HTTP 503) because max_inflight_bytes was reached",
            labels=["ingress"],
        )
        for ingress in ("smtp", "http"):
            refused.add_metric([ingress], b.refusals[ingress])
        yield refused

    def describe(self) -> Iterator[Metric]:
        return iter(())
