"""``Idempotency-Key`` on sends and batches: a repeated key gets the stored answer."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from mailgate.exceptions import DuplicateEntry
from mailgate.ingress.http import ApiContext, request_hash
from mailgate.models import Credential
from mailgate.store import IdempotentAnswer
from mailgate.submission.prepare import ApiError, invalid

IDEMPOTENCY_WINDOW = 24 * 3600.0
IdempotentAnswerFactory = Callable[[int, dict[str, Any]], IdempotentAnswer]


async def idempotent(
    ctx: ApiContext,
    request: Request,
    cred: Credential,
    obj: Any,
    run: Callable[[IdempotentAnswerFactory | None], Awaitable[Response]],
) -> Response:
    """Serve a stored answer for a repeated Idempotency-Key, or run and store it.

    ``obj`` (the request's JSON) is only hashed, not kept while ``run`` runs: send drops
    its own reference once it has built the message (a big attachment's text)."""
    idem_key = request.headers.get("idempotency-key")
    digest = request_hash(request.url.path, obj) if idem_key and len(idem_key) <= 255 else ""
    del obj
    if not idem_key:
        return await run(None)
    if len(idem_key) > 255:
        raise invalid("invalid_idempotency_key", "Idempotency-Key: at most 255 characters", None)
    for _ in range(2):
        stored = await ctx.store.idempotent_answer(
            cred.id, idem_key, ctx.clock() - IDEMPOTENCY_WINDOW
        )
        if stored is not None:
            if stored.request_hash != digest:
                raise ApiError(
                    409,
                    "idempotency_conflict",
                    "this Idempotency-Key was used with a different request",
                )
            return Response(
                stored.body,
                status_code=stored.status_code,
                media_type="application/json",
                headers={"Idempotent-Replayed": "true"},
            )

        def factory(status: int, body: dict[str, Any]) -> IdempotentAnswer:
            return IdempotentAnswer(cred.id, idem_key, digest, status, json.dumps(body))

        try:
            return await run(factory)
        except DuplicateEntry:
            # Taken by a concurrent request (read it back), or by an expired one (purge).
            if (
                await ctx.store.idempotent_answer(
                    cred.id, idem_key, ctx.clock() - IDEMPOTENCY_WINDOW
                )
                is None
            ):
                await ctx.store.purge_idempotency(ctx.clock() - IDEMPOTENCY_WINDOW)
    raise ApiError(409, "idempotency_conflict", "this Idempotency-Key is in use; retry")
