"""Compatibility routes: clients of MailSage, MailStack and MessagePipe work unchanged.

Each dialect is a thin translator to the native validation, accept path and read models,
with its own paths and error shapes; ``[compat] enabled`` lists the dialects served.
"""

from __future__ import annotations

from typing import Any

from mailgate.ingress.compat.common import ErrorShape, Route
from mailgate.ingress.http import ApiContext


def _enabled(ctx: ApiContext) -> list[Any]:
    from mailgate.ingress.compat import mailsage, mailstack, messagepipe

    dialects = {"mailsage": mailsage, "mailstack": mailstack, "messagepipe": messagepipe}
    return [dialects[name] for name in ctx.settings.compat.enabled]


def routes(ctx: ApiContext) -> list[Route]:
    return [route for dialect in _enabled(ctx) for route in dialect.routes(ctx)]


def error_shapes(ctx: ApiContext) -> list[tuple[str, ErrorShape]]:
    """Each served dialect's path prefix and error shape: a path under it that matches no
    route (404), or a route with another method (405), is answered in that shape too."""
    return [(dialect.PREFIX, dialect.error_shape) for dialect in _enabled(ctx)]
