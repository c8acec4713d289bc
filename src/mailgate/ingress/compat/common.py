"""What the compatibility dialects share: their error shapes, lenient request bodies, and
the one way into the native validation and accept path.

A dialect never validates a message itself: it builds the native ``SendRequest`` and hands
it to ``prepare_send`` and ``accept_many`` like ``/v1/messages`` does, so an address, a
template or a sender domain is refused by the same code whichever API the client speaks.
Only the shape of the answer differs.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import replace
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response

from mailgate.exceptions import InsufficientStorage, PolicyRefused, StoreUnavailable
from mailgate.ingress.http import (
    BEFORE_THE_BODY,
    STORAGE_RETRY_AFTER,
    ApiContext,
    client_left,
    drop_unread,
    field_path,
    json_response,
    parse_model,
)
from mailgate.models import Accepted, Credential
from mailgate.store import TemplateRecord
from mailgate.submission.prepare import ApiError, Prepared, prepare_send
from mailgate.submission.request import SendRequest

log = logging.getLogger(__name__)

M = TypeVar("M", bound=BaseModel)

Handler = Callable[[Request], Awaitable[Response]]
Route = tuple[str, Handler, list[str]]
# Renders an error in a dialect's own shape: (status, code, message) -> body.
ErrorShape = Callable[[int, str, str], dict[str, Any]]


class Lenient(BaseModel):
    """A dialect's request model: its clients send fields we do not know; ignore them."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True)


MAX_DEPTH = 64  # nesting of a request body; no client's request needs more


def without_nulls(value: Any, depth: int = 0) -> Any:
    """JSON ``null`` means "absent" to these clients: drop such keys, at every depth."""
    if depth > MAX_DEPTH:
        raise ApiError(400, "invalid_json", f"the body is nested more than {MAX_DEPTH} deep")
    if isinstance(value, dict):
        return {k: without_nulls(v, depth + 1) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [without_nulls(v, depth + 1) for v in value]
    return value


def parse(model: type[M], obj: Any) -> M:
    """Validate a dialect's body; a problem is a 400 naming the field."""
    if not isinstance(obj, dict):
        raise ApiError(400, "invalid_request", "the body must be a JSON object")
    try:
        return model.model_validate(obj)
    except ValidationError as exc:
        err = exc.errors()[0]
        field = field_path(err["loc"])
        message = f"{field}: required" if err["type"] == "missing" else f"{field}: {err['msg']}"
        raise ApiError(400, "invalid_request", message, field) from None


async def body_of(ctx: ApiContext, request: Request) -> dict[str, Any]:
    """The request's JSON object, nulls dropped (400 / 413 in the dialect's shape)."""
    obj = await ctx.read_json(request)
    if not isinstance(obj, dict):
        raise ApiError(400, "invalid_request", "the body must be a JSON object")
    cleaned: dict[str, Any] = without_nulls(obj)
    return cleaned


def guarded(shape: ErrorShape, handler: Handler) -> Handler:
    """Every refusal in the dialect's error shape: 4xx as the dialect uses them, 503 when
    the queue cannot commit; an unexpected error is logged and answered in the same shape."""

    async def wrapped(request: Request) -> Response:
        try:
            return await handler(request)
        except ApiError as exc:
            if exc.status in BEFORE_THE_BODY:
                await drop_unread(request)
            status = 400 if exc.status == 422 else exc.status
            return json_response(shape(status, exc.code, exc.message), status, exc.headers)
        except ClientDisconnect:
            return client_left(request)
        except InsufficientStorage as exc:
            log.warning("refused %s %s: %s", request.method, request.url.path, exc)
            body = shape(exc.http_status, exc.error_code, exc.public_message)
            return json_response(body, exc.http_status, {"Retry-After": STORAGE_RETRY_AFTER})
        except StoreUnavailable as exc:
            log.error("store unavailable during %s %s: %s", request.method, request.url.path, exc)
            body = shape(503, "service_unavailable", "queue unavailable, retry")
            return json_response(body, 503, {"Retry-After": "5"})
        except Exception:
            log.exception("unhandled error in %s %s", request.method, request.url.path)
            return json_response(shape(500, "internal_error", "internal error"), 500)

    return wrapped


async def template_or_none(ctx: ApiContext, template_id: str | None) -> TemplateRecord | None:
    """The active template of that id, or None when it does not exist (the dialect's 404)."""
    if not template_id:
        return None
    record = await ctx.store.templates.get(template_id)
    return record if record is not None and record.active else None


def native_request(fields: dict[str, Any]) -> SendRequest:
    """A native SendRequest from a dialect's translation (a bad value: 400 naming it)."""
    return parse_model(SendRequest, {k: v for k, v in fields.items() if v is not None})


def prepare(
    ctx: ApiContext,
    request: Request,
    cred: Credential,
    req: SendRequest,
    template: TemplateRecord | None,
    variables: dict[str, Any] | None,
    *,
    now: float,
) -> Prepared:
    """A dialect's message validated and built. Empty ``variables`` are none: the seed's
    own clients send ``variables: {}`` with every message, which made a plain body a
    template ("Use {{ name }}" refused as undefined, "{#" as a comment left open)."""
    return prepare_send(
        req,
        settings=ctx.settings,
        credential=cred,
        client_address=request.client.host if request.client else "",
        template=template,
        template_data=variables or None,
        now=now,
    )


async def accept_job(
    ctx: ApiContext,
    cred: Credential,
    prepared: Sequence[Prepared],
    *,
    source: str,
    campaign_id: str = "",
    check: Callable[[list[Accepted | PolicyRefused]], None] | None = None,
    bulk: bool = True,
) -> tuple[str | None, list[Accepted | PolicyRefused]]:
    """Commit ``prepared`` as one job; its id (None when nothing was accepted) and the
    result of each, in order. ``check`` sees the results before the commit and may refuse
    the whole request by raising; ``bulk`` as mailgate.jobs.accept_job."""
    from mailgate.jobs import accept_job as run_job

    def answer(_job_id: str | None, results: list[Accepted | PolicyRefused]) -> None:
        if check is not None:
            check(results)

    subs = [replace(p.submission, source=source) for p in prepared]
    return await run_job(
        ctx.acceptor,
        subs,
        key_id=cred.id,
        source=source,
        campaign_id=campaign_id,
        answer=answer,
        bulk=bulk,
    )


def delivery_log_id(message_id: str, rcpt_idx: int) -> str:
    """MessagePipe's ``deliveryLogId`` and the like: one recipient's delivery, for good."""
    return f"{message_id}.{rcpt_idx}"


def parse_delivery_log_id(value: str) -> tuple[str, int] | None:
    message_id, dot, idx = value.rpartition(".")
    if not dot or not idx.isdigit() or len(idx) > 6 or not message_id or len(message_id) > 36:
        return None
    return message_id, int(idx)
