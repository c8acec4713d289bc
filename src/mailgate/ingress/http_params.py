"""What the API's route modules share: the route type, times as ISO 8601, query numbers."""

from __future__ import annotations

import math
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from mailgate.submission.prepare import invalid

Route = tuple[str, Callable[[Request], Awaitable[Response]], list[str]]


def iso(ts: float | None) -> str | None:
    """``ts`` as ISO 8601 in UTC with milliseconds (every answer's timestamps).

    The date and time text is made once per second (every send's answer has one), the
    digits after it exactly as datetime rounds them: to the microsecond, half to even.
    """
    if ts is None:
        return None
    if ts < 0:  # before 1970: nothing the relay stores, but still a valid answer
        return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
    frac, whole = math.modf(ts)
    second, us = int(whole), round(frac * 1_000_000)
    if us >= 1_000_000:
        second, us = second + 1, us - 1_000_000
    global _second
    cached = _second  # one read: another thread may move it on meanwhile
    if cached[0] != second:
        cached = _second = (second, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second)))
    return f"{cached[1]}.{us // 1000:03d}Z"


_second: tuple[int, str] = (-1, "")  # the last second iso() formatted, and its text


def parse_time(value: str | None, name: str) -> float | None:
    if value is None or value == "":
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise invalid("invalid_parameter", f"{name}: not an ISO 8601 date-time", name) from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.timestamp()


def int_param(request: Request, name: str, default: int, low: int, high: int) -> int:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return default
    if not raw.lstrip("-").isdigit() or not low <= int(raw) <= high:
        raise invalid("invalid_parameter", f"{name}: an integer from {low} to {high}", name)
    return int(raw)


def limit_param(request: Request, default: int, high: int) -> int:
    """A list's ``limit``: a positive integer, clamped to ``high`` (the seed says "max",
    so a larger page size is served at the maximum, not refused)."""
    raw = request.query_params.get("limit")
    if raw is None or raw == "":
        return default
    if not raw.isdigit() or int(raw) < 1:
        raise invalid("invalid_parameter", "limit: a positive integer", "limit")
    return min(int(raw), high)


def page_meta(count: int, limit: int, offset: int, has_more: bool) -> dict[str, Any]:
    """A listing's ``meta`` where no total is counted: the rows given, the page asked for,
    and whether another follows (``offset`` + ``limit`` reads it)."""
    return {"count": count, "limit": limit, "offset": offset, "has_more": has_more}
