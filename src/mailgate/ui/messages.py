"""Messages: search with keyset pages, one message's recipients, attempts and timeline,
its content, and the operator's actions (the store's own queue actions)."""

from __future__ import annotations

import urllib.parse
from datetime import UTC, datetime
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from mailgate.headers import dkim_signers
from mailgate.models import DeliveryStatus
from mailgate.store import QueueFilter
from mailgate.store.ui import (
    SUBJECT_MIN,
    MessageQuery,
    message_raw,
    message_signature,
    search_messages,
)
from mailgate.ui.mail import view
from mailgate.ui.preview import download_part, download_source, html_preview
from mailgate.ui.web import Page, UiContext, UiError, done, render

PAGE_SIZE = 50
STATUSES = tuple(s.value for s in DeliveryStatus)
# Events that are an attempt's outcome: a provider's reply.
ATTEMPT_EVENTS = ("failover", "sent", "delivered", "deferred", "bounced", "failed")
ACTIONS = ("retry", "hold", "release", "delete", "bounce")


def _date(value: str, field: str, end: bool = False) -> float | None:
    """A YYYY-MM-DD (or datetime-local) value in UTC; ``end``: the end of that day."""
    if not value:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise UiError(400, f"{field}: give a date as YYYY-MM-DD.") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    stamp = parsed.timestamp()
    if end and len(value) == 10:
        stamp += 86400 - 0.000001
    return stamp


def _before(value: str) -> tuple[float, str] | None:
    if not value:
        return None
    at, _, ident = value.partition("_")
    try:
        return float(at), ident
    except ValueError:
        raise UiError(400, "That page link is not valid.") from None


def _query(params: Any) -> tuple[MessageQuery, dict[str, str]]:
    form = {
        k: params.get(k, "").strip()
        for k in ("to", "from", "subject", "status", "tag", "job", "since", "until")
    }
    if form["status"] and form["status"] not in STATUSES:
        raise UiError(400, f"status: one of {', '.join(STATUSES)}.")
    if form["subject"] and len(form["subject"]) < SUBJECT_MIN:
        # Shorter than a trigram: no index finds it, and a scan of every message is slow.
        raise UiError(400, f"subject: give at least {SUBJECT_MIN} characters.")
    q = MessageQuery(
        recipient=form["to"],
        sender=form["from"],
        subject=form["subject"],
        status=form["status"],
        tag=form["tag"],
        job=form["job"],
        since=_date(form["since"], "since"),
        until=_date(form["until"], "until", end=True),
        before=_before(params.get("before", "")),
    )
    return q, form


async def message_list(ui: UiContext, request: Request, page: Page) -> Response:
    q, form = _query(request.query_params)
    rows = await search_messages(ui.api.store, q, PAGE_SIZE + 1)
    more = len(rows) > PAGE_SIZE
    rows = rows[:PAGE_SIZE]
    next_link = ""
    if more:
        last = rows[-1]
        params = {k: v for k, v in form.items() if v}
        params["before"] = f"{last['created_at']!r}_{last['id']}"
        next_link = "/ui/messages?" + urllib.parse.urlencode(params)
    return render(
        ui,
        request,
        "messages.html",
        title="Messages",
        rows=rows,
        form=form,
        statuses=STATUSES,
        next_link=next_link,
        searched=any(form.values()),
        paged=q.before is not None,
    )


async def _message(ui: UiContext, message_id: str) -> dict[str, Any]:
    found = await ui.api.store.get_message(message_id)
    if found is None:
        raise UiError(404, f"No message {message_id}: it may have been removed by retention.")
    return found


async def _raw(ui: UiContext, message_id: str) -> bytes:
    raw = await message_raw(ui.api.store, message_id)
    if raw is None:
        raise UiError(404, f"No source for message {message_id}.")
    return raw


async def message_detail(ui: UiContext, request: Request, page: Page) -> Response:
    message_id = request.path_params["id"]
    msg = await _message(ui, message_id)
    timeline = await ui.api.store.events_of(message_id)
    attempts: dict[int, list[dict[str, Any]]] = {}
    for e in timeline:
        if e["type"] in ATTEMPT_EVENTS and e["rcpt_idx"] is not None:
            attempts.setdefault(int(e["rcpt_idx"]), []).append(e)
    raw = await message_raw(ui.api.store, message_id)
    mail = view(raw) if raw is not None else None
    kept = await message_signature(ui.api.store, message_id)
    return render(
        ui,
        request,
        "message.html",
        title=msg["subject"] or message_id,
        msg=msg,
        timeline=timeline,
        attempts=attempts,
        dkim=dkim_result(timeline, kept),
        mail=mail,
        base=f"/ui/messages/{message_id}",
        images=request.query_params.get("images") == "1",
    )


def dkim_result(timeline: list[dict[str, Any]], kept: bytes | None) -> str:
    """What the store knows of the message's DKIM signing: the signature kept for its
    retries, else what its last attempt recorded (attempt events carry it since the
    dashboard's second slice; older ones do not)."""
    if kept:
        return f"Signed with {dkim_signers(kept)} (the signature kept for its retries)."
    for e in reversed(timeline):
        if e["type"] in ATTEMPT_EVENTS and "dkim" in e["data"]:
            signer = e["data"]["dkim"]
            if signer:
                return f"Signed with {signer} at its last attempt."
            return "Sent unsigned at its last attempt: no [dkim] key for its From domain."
    if any(e["type"] in ATTEMPT_EVENTS for e in timeline):
        return "Not recorded for this message's attempts."
    return "Not attempted yet: it is signed at its first attempt if a [dkim] key applies."


async def message_html(ui: UiContext, request: Request, page: Page) -> Response:
    raw = await _raw(ui, request.path_params["id"])
    return html_preview(request, raw)


async def message_part(ui: UiContext, request: Request, page: Page) -> Response:
    raw = await _raw(ui, request.path_params["id"])
    return download_part(raw, int(request.path_params["index"]))


async def message_source(ui: UiContext, request: Request, page: Page) -> Response:
    message_id = request.path_params["id"]
    return download_source(await _raw(ui, message_id), message_id)


async def message_action(ui: UiContext, request: Request, page: Page) -> Response:
    """retry (pending: due now; failed or bounced: requeued), hold, release, delete, and
    bounce (waiting recipients end bounced, with a DSN to the sender: the store's
    operator bounce, as ``mailgate queue bounce`` and the admin API do it)."""
    message_id = request.path_params["id"]
    action = page.form.get("action", "")
    if action not in ACTIONS:
        raise UiError(400, f"action: one of {', '.join(ACTIONS)}.")
    await _message(ui, message_id)
    store, now = ui.api.store, ui.api.clock()
    selection = QueueFilter(message_ids=[message_id])
    dsns = 0
    if action == "bounce":
        from mailgate.delivery.operator_bounce import dsn_builder, reply_line

        reason = page.form.get("reason", "").strip()[:500]
        build = dsn_builder(ui.api.settings.server.hostname)
        bounced = await store.bounce(selection, now, reply_line(reason), build)
        changed, dsns = bounced.deliveries, len(bounced.dsns)
    else:
        changed, _ = await store.operate(action, selection, now)
    refused = 0
    if action == "retry":  # and the recipients that ended: the queue's requeue action
        again = await store.requeue_matching(selection, now)
        changed += len(again.requeued)
        refused = len(again.suppressed)
    if changed and action in ("retry", "release", "bounce"):
        ui.api.wake()  # due now (bounce: its DSN is)
    text = f"{action}: {changed} recipient(s) changed"
    if action == "bounce" and changed:
        text += f", {dsns} DSN(s) queued to the sender"
    if refused:
        text += f", {refused} not retried because suppressed"
    if not changed and not refused:
        text += " (none was in a state this action applies to)"
    return done(page, f"/ui/messages/{message_id}", text)
