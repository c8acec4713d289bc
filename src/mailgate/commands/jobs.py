"""``mailgate jobs``: every batch is a job; list, show, pause, resume or stop one."""

from __future__ import annotations

import json
import sys
import time
from dataclasses import asdict

import click

from mailgate.commands.common import (
    config_option,
    run_or_exit,
    settings_or_exit,
    timestamp,
    with_store,
)
from mailgate.store import JobProgress, Store


@click.group()
def jobs() -> None:
    """Batches sent as jobs: progress, pause, resume, stop."""


def _line(job: JobProgress) -> str:
    return (
        f"{job.id:<36}  {timestamp(job.created_at):<20}  {job.status:<10}  "
        f"{job.total:>7}  {job.sent:>7}  {job.failed:>7}  {job.pending:>7}  "
        f"{job.percentage:>5.1f}%  {job.campaign_id}"
    )


@jobs.command("list")
@config_option
@click.option("--limit", default=50, show_default=True, type=click.IntRange(1, 10000))
@click.option("--key", "key_id", default=None, help="Only the jobs of this API key id.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON lines.")
def jobs_list(config_path: str, limit: int, key_id: str | None, as_json: bool) -> None:
    """List jobs, newest first, with their progress."""
    settings = settings_or_exit(config_path)
    rows = run_or_exit(with_store(settings, lambda st: st.jobs.list(key_id, limit)))
    if as_json:
        for job in rows:
            click.echo(json.dumps(asdict(job)))
        return
    click.echo(
        f"{'ID':<36}  {'CREATED':<20}  {'STATUS':<10}  {'TOTAL':>7}  {'SENT':>7}  "
        f"{'FAILED':>7}  {'PENDING':>7}  {'DONE':>6}  CAMPAIGN"
    )
    for job in rows:
        click.echo(_line(job))


def _show(job: JobProgress) -> None:
    click.echo(f"id:        {job.id}")
    click.echo(f"status:    {job.status}")
    click.echo(f"campaign:  {job.campaign_id or '-'}")
    click.echo(f"source:    {job.source} (key {job.key_id or '-'})")
    click.echo(f"created:   {timestamp(job.created_at)}")
    click.echo(f"started:   {timestamp(job.started_at)}")
    click.echo(f"updated:   {timestamp(job.updated_at)}")
    click.echo(
        f"progress:  {job.sent}/{job.total} sent ({job.percentage:.1f}%), "
        f"{job.failed} failed, {job.pending} pending"
    )


@jobs.command("show")
@config_option
@click.argument("job_id")
def jobs_show(config_path: str, job_id: str) -> None:
    """Show one job's status, progress and events."""
    settings = settings_or_exit(config_path)

    async def fetch(st: Store) -> tuple[JobProgress | None, list[dict[str, object]]]:
        return await st.jobs.progress(job_id), await st.jobs.events(job_id)

    job, events = run_or_exit(with_store(settings, fetch))
    if job is None:
        click.echo(f"error: no job {job_id}", err=True)
        sys.exit(1)
    _show(job)
    click.echo("events:")
    for e in events:
        click.echo(f"  {timestamp(e['at'])} {e['type']}")  # type: ignore[arg-type]


_HELP = {
    "pause": "Hold every delivery of the job not yet attempted (and any that comes back "
    "deferred) until resume.",
    "resume": "Release a paused job's held deliveries: due now (scheduled ones at their time). "
    "A running relay sees it within 5 seconds (at once through the HTTP API).",
    "stop": "Cancel every delivery of the job not yet sent (no bounce is sent).",
}


def _control(action: str) -> None:
    @jobs.command(action, help=_HELP[action])
    @config_option
    @click.argument("job_id")
    def command(config_path: str, job_id: str) -> None:
        settings = settings_or_exit(config_path)

        async def act(st: Store) -> tuple[str, JobProgress | None]:
            outcome = await st.jobs.control(job_id, action, time.time())
            return outcome, await st.jobs.progress(job_id)

        outcome, job = run_or_exit(with_store(settings, act))
        if outcome == "missing" or job is None:
            click.echo(f"error: no job {job_id}", err=True)
            sys.exit(1)
        if outcome == "not_active":
            click.echo(f"error: job {job_id} is {job.status}; it cannot {action}", err=True)
            sys.exit(1)
        click.echo(f"{action}: job {job.id} is {job.status}")
        _show(job)


for _action in _HELP:
    _control(_action)
