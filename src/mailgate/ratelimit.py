"""Token buckets: per API key for the HTTP API (and per provider for delivery later)."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(slots=True)
class TokenBucket:
    rate: float  # tokens per second
    capacity: float
    tokens: float
    stamp: float

    def take(self, now: float, n: float = 1.0) -> float:
        """Take n tokens; return 0 if granted, else the seconds until they would be."""
        self.tokens = min(self.capacity, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens >= n:
            self.tokens -= n
            return 0.0
        return (n - self.tokens) / self.rate


class RateLimiter:
    """One bucket per key; a burst of up to one second's worth (at least 1)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._buckets: dict[str, TokenBucket] = {}

    def check(self, key: str, rate: float, n: float = 1.0) -> float:
        now = self._clock()
        bucket = self._buckets.get(key)
        capacity = max(1.0, rate)
        if bucket is None or bucket.rate != rate:
            bucket = TokenBucket(rate, capacity, capacity, now)
            self._buckets[key] = bucket
        return bucket.take(now, n)
