"""Jobs: each batch's progress as a bar, and pause, resume and stop through the job
store's own control (the operation the /v1/jobs API runs), not a copy of it. A job's own
page: its progress, its deliveries by status, its events and its newest messages (the
message search by job)."""

from __future__ import annotations

import urllib.parse

from starlette.requests import Request
from starlette.responses import Response

from mailgate.store.jobs import ACTIONS
from mailgate.store.ui import MessageQuery, search_messages
from mailgate.ui.web import Page, UiContext, UiError, done, render

SHOWN = 100
MESSAGES_SHOWN = 20
# What each action does, as the page explains it next to its button.
DONE = {
    "pause": "paused: what has not gone out is held until you resume it",
    "resume": "resumed: its held mail is due again",
    "stop": "stopped: what had not gone out is cancelled, without a DSN",
}


async def job_list(ui: UiContext, request: Request, page: Page) -> Response:
    jobs = await ui.api.store.jobs.list(None, SHOWN)
    return render(
        ui,
        request,
        "jobs.html",
        title="Jobs",
        jobs=jobs,
        shown=SHOWN,
    )


async def job_detail(ui: UiContext, request: Request, page: Page) -> Response:
    job_id = request.path_params["id"]
    store = ui.api.store
    job = await store.jobs.progress(job_id)
    if job is None:
        raise UiError(404, f"No job {job_id}: it may have been removed by retention.")
    rows = await search_messages(store, MessageQuery(job=job_id), MESSAGES_SHOWN + 1)
    return render(
        ui,
        request,
        "job.html",
        title=f"Job {job.campaign_id or job.id}",
        job=job,
        counts=sorted((await store.jobs.status_counts(job_id)).items()),
        events=await store.jobs.events(job_id),
        rows=rows[:MESSAGES_SHOWN],
        more=len(rows) > MESSAGES_SHOWN,
    )


async def job_action(ui: UiContext, request: Request, page: Page) -> Response:
    job_id = request.path_params["id"]
    action = page.form.get("action", "")
    if action not in ACTIONS:
        raise UiError(400, f"action: one of {', '.join(ACTIONS)}.")
    # A resume wakes the delivery loop once its first deliveries are due (as the API does).
    started = ui.api.wake if action == "resume" else None
    outcome = await ui.api.store.jobs.control(job_id, action, ui.api.clock(), started=started)
    if outcome == "missing":
        raise UiError(404, f"No job {job_id}: it may have been removed by retention.")
    if outcome == "not_active":
        text = f"Job {job_id} is stopped or completed: there is nothing left to {action}."
    else:
        text = f"Job {job_id} {DONE[action]}."
    back = (
        f"/ui/jobs/{urllib.parse.quote(job_id, safe='')}" if page.form.get("back") else "/ui/jobs"
    )
    return done(page, back, text)
