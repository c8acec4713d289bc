"""Token buckets with an injected clock: the burst, the refill, the wait they report."""

from __future__ import annotations

import pytest

from mailgate.ratelimit import RateLimiter, TokenBucket


def test_a_bucket_allows_its_burst_then_says_how_long_to_wait() -> None:
    bucket = TokenBucket(rate=10.0, capacity=10.0, tokens=10.0, stamp=0.0)
    assert [bucket.take(0.0) for _ in range(10)] == [0.0] * 10
    assert bucket.take(0.0) == pytest.approx(0.1)  # one token comes back every 0.1 s
    assert bucket.take(0.1) == 0.0
    assert bucket.take(100.0, n=10) == 0.0  # refill stops at the capacity
    assert bucket.take(100.0) == pytest.approx(0.1)


def test_the_limiter_keeps_a_bucket_per_key_and_starts_again_on_a_new_rate() -> None:
    now = [0.0]
    limiter = RateLimiter(clock=lambda: now[0])
    assert limiter.check("k1", 2.0) == 0.0
    assert limiter.check("k1", 2.0) == 0.0
    assert limiter.check("k1", 2.0) == pytest.approx(0.5)
    assert limiter.check("k2", 2.0) == 0.0  # another key, its own bucket
    assert limiter.check("k1", 5.0) == 0.0  # the key's rate changed: a fresh bucket
    now[0] = 0.5
    assert limiter.check("k1", 5.0) == 0.0
    slow = RateLimiter(clock=lambda: 0.0)
    assert slow.check("k", 0.5) == 0.0  # a burst of at least one below 1/s
    assert slow.check("k", 0.5) == pytest.approx(2.0)
