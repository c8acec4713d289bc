"""Compatibility routes: clients of MailSage, MailStack and MessagePipe work unchanged.

Each dialect is a thin translator to the native validation, accept path and read models,
with its own paths and error shapes; ``[compat] enabled`` lists the dialects served.
"""

from __future__ import annotations

from mailgate.ingress.compat.common import Route
from mailgate.ingress.http import ApiContext


def routes(ctx: ApiContext) -> list[Route]:
    from mailgate.ingress.compat import mailsage, mailstack, messagepipe

    dialects = {"mailsage": mailsage, "mailstack": mailstack, "messagepipe": messagepipe}
    out: list[Route] = []
    for name in ctx.settings.compat.enabled:
        out.extend(dialects[name].routes(ctx))
    return out
