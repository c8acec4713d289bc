"""The process-wide budget of message bytes held in memory (``[server] max_inflight_bytes``).

Each SMTP transaction and HTTP request holds a :class:`Reservation`: sized from SIZE= at
MAIL when the client declares it, else grown as DATA (or the request body) arrives. Over
the budget the client gets a temporary refusal (452 4.3.1, HTTP 503) instead of the relay
growing until the kernel's OOM killer ends it: the client keeps the message and retries,
as it would with Postfix when its queue file system fills. A reservation ends when the
message is committed or refused.

One event loop owns the budget, so plain integers suffice (no locks).
"""

from __future__ import annotations

import os
from collections import Counter

from mailgate.memory import TRIMMER
from mailgate.units import parse_size

# Reservations grow by at least this much, so a DATA of many short lines asks seldom.
GROW_STEP = 256 * 1024
DEFAULT_CEILING = parse_size("1GB")


def default_cap() -> int:
    """A quarter of the machine's memory, at most 1 GB."""
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError):
        return DEFAULT_CEILING
    return min(DEFAULT_CEILING, total // 4)


class InflightBudget:
    """Bytes reserved across all sessions and requests, against ``cap``."""

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self.used = 0
        self.peak = 0
        self.refusals: Counter[str] = Counter()  # per ingress: "smtp", "http"

    def reservation(self, ingress: str) -> Reservation:
        return Reservation(self, ingress)

    def _take(self, extra: int) -> bool:
        if self.used + extra > self.cap:
            return False
        self.used += extra
        self.peak = max(self.peak, self.used)
        return True


class Reservation:
    """What one transaction or request holds of the budget; :meth:`release` when done."""

    __slots__ = ("_budget", "amount", "ingress")

    def __init__(self, budget: InflightBudget, ingress: str) -> None:
        self._budget = budget
        self.ingress = ingress
        self.amount = 0

    def ensure(self, size: int) -> bool:
        """Hold at least ``size`` bytes; False (counted as a refusal) if they do not fit.

        A refusal lets go of what was held, at once: the caller drops the message (the
        rest of it is read and dropped, unheld). Held until the message's end, it starved
        the others: three big messages growing together past the budget, none declaring
        its SIZE, were all refused where two fitted.
        """
        if size <= self.amount:
            return True
        extra = max(size - self.amount, GROW_STEP)
        if not self._budget._take(extra):
            # Without the step: the last bytes of a message may still fit exactly.
            extra = size - self.amount
            if not self._budget._take(extra):
                self._budget.refusals[self.ingress] += 1
                self.release()
                return False
        self.amount += extra
        return True

    def release(self) -> None:
        self._budget.used -= self.amount
        TRIMMER.note(self.amount)  # a big message's buffers are gone: trim once it is quiet
        self.amount = 0
