"""What the admin API shows per provider: health seen by this node's delivery process.

The breakers, rate buckets and connection pools live in the delivery process (the
router's), so the relay asks that process (delivery.process.PROVIDER_STATUS) and the
answer is this node's: on PostgreSQL each node answers for itself, with its node id.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from mailgate.models import AttemptResult, Outcome

if TYPE_CHECKING:
    from mailgate.routing.router import Provider

WINDOW = 60  # seconds the attempt rate is measured over
_RECIPIENT_STAGES = frozenset({"rcpt", "dns"})  # the router's: a reply about the recipient


@dataclass(slots=True)
class Health:
    """Last success and last error of one provider, and attempts per second lately."""

    last_success_at: float | None = None
    last_error_at: float | None = None
    last_error: str = ""
    _buckets: list[int] = field(default_factory=lambda: [0] * WINDOW)
    _second: int = 0

    def record(self, results: Sequence[AttemptResult], now: float) -> None:
        if any(r.outcome is Outcome.SENT or r.stage in _RECIPIENT_STAGES for r in results):
            self.last_success_at = now
        else:
            failed = next((r for r in results if r.outcome is not Outcome.SENT), None)
            if failed is not None:
                self.last_error_at = now
                self.last_error = f"{failed.stage}: {failed.reply.line()}"
        self._roll(now)
        self._buckets[int(now) % WINDOW] += 1

    def _roll(self, now: float) -> None:
        """Zero the seconds that passed since the last attempt (at most the window)."""
        second = int(now)
        for s in range(max(self._second + 1, second - WINDOW + 1), second + 1):
            self._buckets[s % WINDOW] = 0
        self._second = max(self._second, second)

    def rate(self, now: float) -> float:
        """Attempts per second over the last WINDOW seconds."""
        self._roll(now)
        return sum(self._buckets) / WINDOW


class ProviderHealth:
    """The Health of each provider the router has tried, by name."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._by_name: dict[str, Health] = {}

    def record(self, provider: str, results: Sequence[AttemptResult]) -> None:
        self._by_name.setdefault(provider, Health()).record(results, self._clock())

    def last_error(self, providers: Sequence[str]) -> str:
        """The newest error among ``providers`` ("name: stage: reply"), or "": why their
        breakers opened, for the reply of an attempt that found them all open."""
        seen = [
            (h.last_error_at, name, h.last_error)
            for name in providers
            if (h := self._by_name.get(name)) is not None and h.last_error_at is not None
        ]
        if not seen:
            return ""
        _, name, error = max(seen)
        return f"{name}: {error}"

    def snapshot(self, providers: dict[str, Provider], node: str) -> list[dict[str, Any]]:
        """One object per configured provider (the admin API's shape)."""
        now = self._clock()
        out: list[dict[str, Any]] = []
        for name, p in providers.items():
            h = self._by_name.get(name) or Health()
            in_use = getattr(p.transport, "connections_in_use", None)
            out.append(
                {
                    "name": name,
                    "node": node,
                    "kind": p.settings.kind,
                    "priority": p.settings.priority,
                    "breaker": p.breaker.state if p.breaker is not None else None,
                    "connections_in_use": in_use() if callable(in_use) else None,
                    "max_connections": p.settings.max_connections,
                    "rate_limit": p.settings.rate or None,
                    "rate": round(h.rate(now), 3),
                    "last_success_at": h.last_success_at,
                    "last_error_at": h.last_error_at,
                    "last_error": h.last_error or None,
                }
            )
        return out
