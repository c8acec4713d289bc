"""A circuit breaker per provider: stop sending to a provider that keeps failing.

Closed: deliveries go through. After ``failures`` consecutive failures it opens: the
provider is skipped (no per-message timeout wait) for ``cooldown``; then it is half-open
and lets one delivery probe it. Success closes it; failure opens it again.
"""

from __future__ import annotations

import time
from collections.abc import Callable


class CircuitBreaker:
    def __init__(
        self, failures: int, cooldown: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._threshold = failures
        self._cooldown = cooldown
        self._clock = clock
        self._failures = 0
        self._opened_at: float | None = None
        self._probing = False

    @property
    def state(self) -> str:
        if self._opened_at is None:
            return "closed"
        if self._clock() - self._opened_at >= self._cooldown:
            return "half-open"
        return "open"

    def blocks(self) -> bool:
        """Open (not yet due for a probe): deliveries already waiting should go elsewhere."""
        return self.state == "open"

    def allow(self) -> bool:
        """May a delivery use this provider now? (Takes the half-open probe slot.)"""
        state = self.state
        if state == "closed":
            return True
        if state == "half-open" and not self._probing:
            self._probing = True
            return True
        return False

    def record(self, ok: bool) -> None:
        if ok:
            self._failures = 0
            self._opened_at = None
            self._probing = False
            return
        self._failures += 1
        if self._probing or (self._opened_at is None and self._failures >= self._threshold):
            # Failures of attempts that started before it opened do not extend the cooldown.
            self._opened_at = self._clock()
            self._probing = False
