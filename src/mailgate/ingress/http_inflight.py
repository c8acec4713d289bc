"""HTTP request bodies in the in-flight budget ([server] max_inflight_bytes).

A request holds its body's bytes from the read (``ApiContext.read_json``) until its
answer is sent: the JSON, the MIME built from it and the committed row all live that
long. :class:`ReleaseInflight` ends the reservation however the request ends.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send

from mailgate.inflight import InflightBudget, Reservation
from mailgate.submission.prepare import ApiError

SCOPE_KEY = "mailgate.inflight"
RETRY_AFTER = 5  # s: about how long a burst of big messages takes to commit


class InflightFull(ApiError):
    """The 503 of a body that does not fit in the budget."""


def hold(budget: InflightBudget | None, request: Request, size: int) -> None:
    """Grow the request's reservation to ``size`` bytes, or raise the 503."""
    if budget is None:
        return
    held: Reservation | None = request.scope.get(SCOPE_KEY)
    if held is None:
        held = request.scope[SCOPE_KEY] = budget.reservation("http")
    if not held.ensure(size):
        raise InflightFull(
            503,
            "service_unavailable",
            "too many message bytes in flight; retry later",
            headers={"Retry-After": str(RETRY_AFTER)},
        )


# Bytes of a refused body read and dropped before the answer, at most: closing the
# connection with a client's bytes unread makes the kernel reset it, and a client still
# sending then gets the reset instead of the 413 or 503 (most HTTP libraries read the
# answer only once the body is sent). A bigger body is cut off.
DRAIN_MAX = 64 * 1024 * 1024


async def refuse_unread(request: Request, stream: AsyncIterator[bytes], declared: int) -> None:
    """Before a 413 for a Content-Length over the limit: drop the body as it comes (up to
    DRAIN_MAX), unless the client waits for 100 Continue before sending it."""
    if request.headers.get("expect", "").lower() == "100-continue" or declared > DRAIN_MAX:
        return
    await discard(stream, declared)


async def discard(stream: AsyncIterator[bytes], limit: int) -> None:
    """Read the rest of a refused body without keeping it (up to ``limit`` bytes), so the
    client reads the 413 or 503 instead of a connection reset while it is still sending."""
    seen = 0
    async for chunk in stream:
        seen += len(chunk)
        if seen > limit:
            return


class ReleaseInflight:
    """ASGI middleware: the request's reservation ends with the request."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await self.app(scope, receive, send)
        finally:
            held = scope.get(SCOPE_KEY)
            if held is not None:
                held.release()
