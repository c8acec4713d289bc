"""What the API's route modules share: the route type, times as ISO 8601, query numbers."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

from starlette.requests import Request
from starlette.responses import Response

from mailgate.submission.prepare import invalid

Route = tuple[str, Callable[[Request], Awaitable[Response]], list[str]]


def iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


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
