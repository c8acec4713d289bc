"""Key quotas: a hard count of accepted recipients per calendar period (UTC).

Pure decisions only (what a quota says, which period a moment is in, how a batch is cut);
the count itself lives in the store (``quota_usage``) so that every node shares it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime

_QUOTA = re.compile(r"^\s*(\d{1,12})\s*/\s*(d|day|month)\s*$", re.IGNORECASE)
_UNITS = {"d": "day", "day": "day", "month": "month"}
MAX_LIMIT = 2**31 - 1  # the usage column is a 32-bit integer on PostgreSQL


@dataclass(frozen=True, slots=True)
class Quota:
    limit: int  # recipients per period
    unit: str  # "day" or "month"

    def period(self, now: float) -> str:
        """The calendar period (UTC) ``now`` is in: "2026-12" or "2026-12-03"."""
        moment = datetime.fromtimestamp(now, UTC)
        return moment.strftime("%Y-%m" if self.unit == "month" else "%Y-%m-%d")

    def seconds_left(self, now: float) -> int:
        """Seconds until the next period starts (for Retry-After)."""
        moment = datetime.fromtimestamp(now, UTC)
        if self.unit == "month":
            year, month = divmod(moment.month, 12)
            start = datetime(moment.year + year, month + 1, 1, tzinfo=UTC)
        else:
            start = datetime(moment.year, moment.month, moment.day, tzinfo=UTC)
            start = datetime.fromtimestamp(start.timestamp() + 86400, UTC)
        return max(1, int(start.timestamp() - now + 0.999))


def parse_quota(value: str) -> Quota:
    """'10000/month' -> Quota(10000, "month"); '500/d' or '500/day' -> Quota(500, "day")."""
    m = _QUOTA.match(value)
    if not m or not 0 < int(m.group(1)) <= MAX_LIMIT:
        raise ValueError(
            f"invalid quota {value!r} (use e.g. 10000/month or 500/d, at most {MAX_LIMIT})"
        )
    return Quota(int(m.group(1)), _UNITS[m.group(2).lower()])


def fitting(counts: list[int], left: int) -> int:
    """How many of the messages (recipient ``counts``, in order) fit in ``left``.

    A batch takes what is left in order: from the first message that does not fit on,
    the rest is refused (a later, smaller message is not let past it).
    """
    taken = 0
    for i, count in enumerate(counts):
        if taken + count > left:
            return i
        taken += count
    return len(counts)
