"""``POST /v1/messages/send`` and ``/v1/messages/batch``: MailingAPI's sends.

Both validate and build with submission.prepare.prepare_send and commit through the one
accept path; a batch is a job (mailgate.jobs) committed in one transaction.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from starlette.requests import Request
from starlette.responses import Response

from mailgate.exceptions import PolicyRefused
from mailgate.ingress.http import ApiContext, json_response, parse_model
from mailgate.ingress.http_idempotency import IdempotentAnswerFactory, idempotent
from mailgate.ingress.http_models import BatchMessage, BatchRequest
from mailgate.ingress.http_params import Route, iso
from mailgate.jobs import accept_job
from mailgate.logs import fields, recipient_domain
from mailgate.models import Accepted, Credential
from mailgate.store import IdempotentAnswer, TemplateRecord
from mailgate.submission.prepare import (
    HEADER_CONTROL,
    ApiError,
    Prepared,
    invalid,
    prepare_send,
)
from mailgate.submission.request import SendRequest
from mailgate.text import storable

log = logging.getLogger(__name__)

MAX_BATCH = 1000

# One request of a batch: the parsed message, or why it is refused, and its variables.
_Item = tuple[SendRequest | None, ApiError | None, dict[str, Any] | None]
T = TypeVar("T")

# Items a batch prepares before it lets the event loop run other work.
PREPARE_SLICE = 50


def routes(ctx: ApiContext) -> list[Route]:
    return [
        ("/v1/messages/send", functools.partial(send, ctx), ["POST"]),
        ("/v1/messages/batch", functools.partial(batch, ctx), ["POST"]),
    ]


async def prepare_each(
    items: Sequence[T], field: str | None, fn: Callable[[T], Prepared]
) -> list[Prepared | ApiError]:
    """Each item of a batch prepared alone (native and dialect batches); with ``field``, a
    refusal names its item (``field[i]: ...``).

    On the event loop, PREPARE_SLICE items at a time: the loop serves SMTP sessions and
    other requests between slices (a few milliseconds each). In a thread a batch of 1,000 took
    twice as long (MailSage's in bench-http: 530-590 ms against 260-300 ms p50; the
    native one: 352-377 ms against 271 ms for MailSage's in the same runs): the thread and
    the busy loop hand the GIL to each other every few milliseconds.
    """
    out: list[Prepared | ApiError] = []
    for index, item in enumerate(items):
        if index and not index % PREPARE_SLICE:
            await asyncio.sleep(0)
        try:
            out.append(fn(item))
        except ApiError as exc:
            if field is not None:
                exc.message = f"{field}[{index}]: {exc.message}"
            out.append(exc)
    return out


async def active_template(
    ctx: ApiContext, template_id: str | None, field: str
) -> TemplateRecord | None:
    """The template a request names (None if it names none); 422 if missing or inactive."""
    if template_id is None:
        return None
    record = await ctx.store.templates.get(template_id)
    if record is None or not record.active:
        raise invalid("invalid_template", f"{field}: template not found or inactive", field)
    return record


async def prepare_native(
    ctx: ApiContext, request: Request, cred: Credential, req: SendRequest
) -> Prepared:
    """A native send request validated and built, as send (and analyze) see it."""
    return prepare_send(
        req,
        settings=ctx.settings,
        credential=cred,
        client_address=request.client.host if request.client else "",
        template=await active_template(ctx, req.template_id, "template_id"),
        template_data=req.template_data,
        now=ctx.clock(),
    )


def _sent_body(prep: Prepared, acc: Accepted) -> dict[str, Any]:
    data = {
        "id": acc.id,
        "message_id": acc.message_id,
        "from": prep.sender,
        "to": prep.to_repr,
        "subject": prep.subject,
        "status": "scheduled" if acc.scheduled else "queued",
        "tags": prep.tags,
        "metadata": prep.metadata,
        "created_at": iso(acc.created_at),
    }
    if acc.scheduled and prep.submission.scheduled_at is not None:
        data["scheduled_at"] = iso(prep.submission.scheduled_at)
    if acc.suppressed:
        data["suppressed"] = list(acc.suppressed)  # left out: on the suppression list
    return data


# ------------------------------------------------------------------------------- send


async def send(ctx: ApiContext, request: Request) -> Response:
    cred = await ctx.credential(request, need="send")
    body = [await ctx.read_json(request)]  # the JSON, until the message is built from it
    built: list[Prepared] = []

    async def run(factory: IdempotentAnswerFactory | None) -> Response:
        if not built:
            # Built once (idempotent() runs this again when a concurrent request took the
            # Idempotency-Key), and the JSON and the parsed request go before the commit:
            # a big attachment's text is not held beside the message while it is written.
            req = parse_model(SendRequest, body.pop())
            built.append(await prepare_native(ctx, request, cred, req))
            del req
        prep = built[0]

        def answer(results: list[Accepted | PolicyRefused]) -> IdempotentAnswer | None:
            if factory is None or not isinstance(results[0], Accepted):
                return None
            return factory(202, {"data": _sent_body(prep, results[0])})

        (result,) = await ctx.acceptor.accept_many([prep.submission], answer=answer)
        if isinstance(result, PolicyRefused):
            raise ApiError.refused(result)
        log.info(
            "queued %s via HTTP key=%s rcpts=%d",
            result.id,
            cred.name,
            len(result.recipients),
            extra=fields(
                event="queued",
                message_id=result.id,
                source="http",
                recipient_domains=sorted({recipient_domain(r) for r in result.recipients}),
                recipients=len(result.recipients),
                key=cred.name,
            ),
        )
        return json_response({"data": _sent_body(prep, result)}, 202)

    return await idempotent(ctx, request, cred, body[0], run)


# ------------------------------------------------------------------------------ batch


async def batch(ctx: ApiContext, request: Request) -> Response:
    cred = await ctx.credential(request, need="send")
    obj = await ctx.read_json(request)

    async def run(factory: IdempotentAnswerFactory | None) -> Response:
        base, items, given_to = _batch_items(obj)
        templates = await _templates_of(ctx, items)
        client = request.client.host if request.client else ""
        now = ctx.clock()

        def prepare(item: _Item) -> Prepared:
            return _prepare_item(ctx, cred, client, now, item, templates)

        prepared = await prepare_each(items, None, prepare)
        body: dict[str, Any] = {}

        def answer(
            job_id: str | None, results: list[Accepted | PolicyRefused]
        ) -> IdempotentAnswer | None:
            body.update(_batch_answer(prepared, results, given_to))
            body["data"]["job_id"] = job_id
            return factory(202, body) if factory is not None else None

        # Every batch is a job (mailgate.jobs): created with its messages, or none.
        job_id, _ = await accept_job(
            ctx.acceptor,
            [p.submission for p in prepared if isinstance(p, Prepared)],
            key_id=cred.id,
            source="http",
            campaign_id=base.campaign_id or "",
            answer=answer,
        )
        log.info(
            "batch via HTTP key=%s job=%s total=%d queued=%d",
            cred.name,
            job_id,
            body["data"]["total"],
            body["data"]["queued"],
        )
        return json_response(body, 202)

    return await idempotent(ctx, request, cred, obj, run)


# Fields of a batch request that are the batch's, not its messages'.
_BATCH_ONLY = frozenset({"messages", "recipient_variables", "campaign_id"})


def _batch_items(obj: Any) -> tuple[BatchRequest, list[_Item], list[Any]]:
    """The batch's shared fields and its messages, each parsed or refused on its own:
    either ``recipient_variables`` (one message per recipient) or ``messages``; and each
    message's ``to`` as the request gave it (a recipient_variables key, or an item's own
    or the batch's), which the answer names for a message refused before it was built: a
    client matches those by address, since a JSON object's order is not kept."""
    if not isinstance(obj, dict):
        raise invalid("invalid_request", "the body must be a JSON object", None)
    items = obj.get("messages")
    base = parse_model(BatchRequest, {k: v for k, v in obj.items() if k != "messages"})
    # storable() keeps line breaks (text may have them); a name is one line.
    if base.campaign_id and (
        base.campaign_id != storable(base.campaign_id) or HEADER_CONTROL.search(base.campaign_id)
    ):
        raise invalid("invalid_parameter", "campaign_id: control characters", "campaign_id")
    if (items is None) == (base.recipient_variables is None):
        raise invalid(
            "invalid_request",
            "give either recipient_variables or messages (not both)",
            "messages",
        )
    out: list[_Item] = []
    if base.recipient_variables is not None:
        entries = list(base.recipient_variables.items())
        if len(entries) > MAX_BATCH:
            raise invalid(
                "too_many_messages", f"at most {MAX_BATCH} recipients", "recipient_variables"
            )
        given_to = [address for address, _ in entries]
        if not entries:
            return base, out, given_to
        shared = base.model_dump(
            by_alias=True, exclude_none=True, exclude={"recipient_variables", "campaign_id"}
        )
        # Only "to" differs between the messages, and a JSON object's key is always a
        # valid "to": the shared fields are validated once, not once per recipient.
        try:
            first = parse_model(SendRequest, {**shared, "to": entries[0][0]})
        except ApiError as exc:
            return base, [(None, exc, None) for _ in entries], given_to
        for address, variables in entries:
            out.append((first.model_copy(update={"to": address}), None, variables))
        return base, out, given_to
    if not isinstance(items, list):
        raise invalid("invalid_request", "messages: must be a list", "messages")
    if len(items) > MAX_BATCH:
        raise invalid("too_many_messages", f"at most {MAX_BATCH} messages", "messages")
    # The batch's own fields are each message's defaults, as with recipient_variables:
    # accepted and then ignored, a schedule (or provider, tags...) asked for was lost.
    shared = {k: v for k, v in obj.items() if k not in _BATCH_ONLY}
    given_to: list[Any] = []
    for i, item in enumerate(items):
        given = {**shared, **item} if isinstance(item, dict) else item
        given_to.append(given.get("to") if isinstance(given, dict) else None)
        try:
            req = parse_model(BatchMessage, given, prefix=f"messages[{i}].")
            out.append((req, None, req.template_data))
        except ApiError as exc:
            out.append((None, exc, None))
    return base, out, given_to


async def _templates_of(
    ctx: ApiContext, items: list[_Item]
) -> dict[str, TemplateRecord | ApiError | None]:
    """The templates the messages name, looked up once per batch (I/O); a missing one
    fails only the messages that use it."""
    templates: dict[str, TemplateRecord | ApiError | None] = {}
    for req, _error, _variables in items:
        if req is not None and req.template_id and req.template_id not in templates:
            try:
                templates[req.template_id] = await active_template(
                    ctx, req.template_id, "template_id"
                )
            except ApiError as exc:
                templates[req.template_id] = exc
    return templates


def _prepare_item(
    ctx: ApiContext,
    cred: Credential,
    client: str,
    now: float,
    item: _Item,
    templates: dict[str, TemplateRecord | ApiError | None],
) -> Prepared:
    """One message of a batch validated and built; ApiError if it, or its template, is
    refused."""
    req, error, variables = item
    # Either refusal may be shared by many items: raised afresh, no traceback piles up.
    if req is None:
        assert error is not None
        raise error.with_traceback(None)
    template = templates.get(req.template_id) if req.template_id else None
    if isinstance(template, ApiError):
        raise template.with_traceback(None)
    return prepare_send(
        req,
        settings=ctx.settings,
        credential=cred,
        client_address=client,
        template=template,
        template_data=variables,
        now=now,
    )


def _batch_answer(
    prepared: list[Prepared | ApiError],
    results: list[Accepted | PolicyRefused],
    given_to: list[Any],
) -> dict[str, Any]:
    """The batch's answer: each message queued (its id) or rejected (the error), in order."""
    it = iter(results)
    out: list[dict[str, Any]] = []
    for index, p in enumerate(prepared):
        if isinstance(p, ApiError):
            rejected: dict[str, Any] = {"index": index, "status": "rejected"}
            given = given_to[index]
            if isinstance(given, str) or (
                isinstance(given, list) and all(isinstance(x, str) for x in given)
            ):
                rejected["to"] = given
            out.append({**rejected, "error": p.body()["error"]})
            continue
        r = next(it)
        if isinstance(r, PolicyRefused):
            err = ApiError.refused(r)
            out.append(
                {
                    "index": index,
                    "status": "rejected",
                    "to": p.to_repr,
                    "error": err.body()["error"],
                }
            )
        else:
            status = "scheduled" if r.scheduled else "queued"
            out.append({"index": index, "status": status, "id": r.id, "to": p.to_repr})
    queued = sum(1 for o in out if o["status"] != "rejected")
    return {
        "data": {"total": len(out), "queued": queued, "errors": len(out) - queued, "messages": out}
    }
