"""``/metrics`` in the Prometheus text format (prometheus_client).

Queue gauges (deliveries per status, age of the oldest pending message) are read from the
store at scrape time, so every node of a cluster reports the same queue; counters count
this process's accepts and delivery results since it started.
"""

from __future__ import annotations

import time

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest

from mailgate.models import DeliveryStatus
from mailgate.store import Store


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

    async def render(self, store: Store) -> bytes:
        counts = await store.status_counts()
        for status in DeliveryStatus:
            self.deliveries.labels(status.value).set(counts.get(status.value, 0))
        oldest = await store.oldest_pending_created_at()
        self.oldest.set(max(0.0, time.time() - oldest) if oldest is not None else 0.0)
        return generate_latest(self.registry)
