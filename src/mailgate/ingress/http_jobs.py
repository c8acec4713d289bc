"""``/v1/jobs``: every batch is a job; read its progress, pause, resume or stop it."""

from __future__ import annotations

import logging
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from mailgate.ingress.http import ApiContext, json_response
from mailgate.ingress.http_params import Route, int_param, iso, limit_param, page_meta
from mailgate.models import Credential
from mailgate.store import JobProgress
from mailgate.submission.prepare import ApiError

log = logging.getLogger(__name__)


def job_body(job: JobProgress) -> dict[str, Any]:
    """A job as the native API shows it."""
    return {
        "id": job.id,
        "status": job.status,
        "progress": {
            "total": job.total,
            "sent": job.sent,
            "failed": job.failed,
            "pending": job.pending,
            "percentage": job.percentage,
        },
        "campaign_id": job.campaign_id or None,
        "created_at": iso(job.created_at),
        "started_at": iso(job.started_at),
        "updated_at": iso(job.updated_at),
    }


def _sees_all(cred: Credential) -> bool:
    return cred.scope in ("read", "admin")


async def visible_job(ctx: ApiContext, cred: Credential, job_id: str) -> JobProgress:
    """The job, if this key may see it (its own, or any with a read or admin key)."""
    job = await ctx.store.jobs.progress(job_id)
    if job is None or not (_sees_all(cred) or (job.key_id and job.key_id == cred.id)):
        raise ApiError(404, "not_found", "no such job")
    return job


async def control_job(
    ctx: ApiContext, cred: Credential, job: JobProgress, action: str
) -> JobProgress:
    """Pause, resume or stop ``job``; the job afterwards (404 / 409 as ApiError)."""
    # A resume wakes the delivery loop as soon as its first deliveries are due again.
    started = ctx.wake if action == "resume" else None
    outcome = await ctx.store.jobs.control(job.id, action, ctx.clock(), started=started)
    if outcome == "missing":  # deleted meanwhile
        raise ApiError(404, "not_found", "no such job")
    if outcome == "not_active":
        raise ApiError(
            409,
            "job_not_active",
            f"the job is {job.status}: only a job that is not stopped or completed can {action}",
        )
    log.info("job %s: %s by key=%s", job.id, action, cred.name)
    return await ctx.store.jobs.progress(job.id) or job


def routes(ctx: ApiContext) -> list[Route]:
    store = ctx.store

    async def list_jobs(request: Request) -> Response:
        cred = await ctx.credential(request)
        limit = limit_param(request, 50, 100)
        offset = int_param(request, "offset", 0, 0, 10**9)
        rows = await store.jobs.list(None if _sees_all(cred) else cred.id, limit + 1, offset)
        data = [job_body(j) for j in rows[:limit]]
        meta = page_meta(len(data), limit, offset, len(rows) > limit)
        return json_response({"data": data, "meta": meta})

    async def get_job(request: Request) -> Response:
        cred = await ctx.credential(request)
        job = await visible_job(ctx, cred, request.path_params["job_id"])
        return json_response({"data": job_body(job)})

    def control(action: str) -> Any:
        async def handler(request: Request) -> Response:
            cred = await ctx.credential(request, need="send")
            job = await visible_job(ctx, cred, request.path_params["job_id"])
            return json_response({"data": job_body(await control_job(ctx, cred, job, action))})

        return handler

    return [
        ("/v1/jobs", list_jobs, ["GET"]),
        ("/v1/jobs/{job_id}", get_job, ["GET"]),
        ("/v1/jobs/{job_id}/pause", control("pause"), ["POST"]),
        ("/v1/jobs/{job_id}/resume", control("resume"), ["POST"]),
        ("/v1/jobs/{job_id}/stop", control("stop"), ["POST"]),
    ]
