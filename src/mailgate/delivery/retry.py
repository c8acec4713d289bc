"""Pure retry timing: exponential backoff between min and max, jittered."""

from __future__ import annotations

import random

from mailgate.config_sending import RetrySettings


def backoff(attempts: int, settings: RetrySettings, rng: random.Random | None = None) -> float:
    """Delay before the next attempt after ``attempts`` failed ones (attempts >= 1)."""
    base = settings.min_backoff * (2 ** max(0, min(attempts - 1, 30)))
    base = min(base, settings.max_backoff)
    spread = settings.jitter * base
    r = (rng or random).random()
    delay = base - spread / 2 + spread * r
    return max(settings.min_backoff * (1 - settings.jitter / 2), min(delay, settings.max_backoff))


def expired(created_at: float, now: float, settings: RetrySettings) -> bool:
    """Has the message been in the queue for longer than max_age?"""
    return now - created_at >= settings.max_age
