"""Jobs: a batch of messages read and controlled as one (pause, resume, stop).

A job's row holds what was asked of it (state active / paused / stopped) and when it
started; its progress is counted from its deliveries through ix_deliveries_job (index
range counts, never a scan of its messages). Pause, resume and stop (job_actions.py)
change every delivery of the job that is not in flight and record one job event;
deliveries in flight are caught when their result is recorded (the job_guard statements).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy import (
    Double,
    String,
    bindparam,
    case,
    exists,
    func,
    insert,
    literal,
    literal_column,
    or_,
    select,
    update,
)

from mailgate.store.job_actions import ACTIONS, CONVERT_CHUNK, PENDING, convert_chunk, set_state
from mailgate.store.schema import deliveries, events, job_events, jobs

if TYPE_CHECKING:
    from mailgate.store.store import Store

d = deliveries

_SENT = ("sent", "delivered")
_FAILED = ("bounced", "failed", "cancelled")


@dataclass(frozen=True, slots=True)
class NewJob:
    """A job to commit with its messages (Store.enqueue(..., job=))."""

    id: str
    key_id: str
    source: str
    campaign_id: str
    total: int  # recipients accepted
    created_at: float


@dataclass(frozen=True, slots=True)
class JobProgress:
    """A job as clients read it; counts are per recipient."""

    id: str
    key_id: str
    source: str
    campaign_id: str
    status: str  # queued, processing, paused, stopped, completed
    total: int
    sent: int  # sent or delivered
    failed: int  # bounced, failed or cancelled
    pending: int  # the rest
    percentage: float  # 100 * sent / total, one decimal
    created_at: float
    updated_at: float
    started_at: float | None


def job_ops(job: NewJob) -> list[tuple[str, list[dict[str, Any]]]]:
    """The writer ops that create ``job`` (they run before its messages' ops)."""
    row = {
        "id": job.id,
        "key_id": job.key_id,
        "source": job.source,
        "campaign_id": job.campaign_id,
        "state": "active",
        "total": job.total,
        "created_at": job.created_at,
        "updated_at": job.created_at,
        "started_at": None,
    }
    event = {"job_id": job.id, "type": "created", "at": job.created_at, "detail": ""}
    return [("insert_job", [row]), ("insert_job_event", [event])]


_JOB_STATE = select(jobs.c.state).where(jobs.c.id == bindparam("j_id")).scalar_subquery()
_GUARDED = (
    d.c.job_id == bindparam("j_id"),
    d.c.status == "deferred",
    d.c.lease_owner.is_(None),
    # Not an IN: these run with executemany (one row per job), which refuses expanding
    # parameters.
    or_(_JOB_STATE == "paused", _JOB_STATE == "stopped"),
)


def _inline(statuses: tuple[str, ...]) -> list[Any]:
    """Statuses written into the statement: a bound IN list is an "expanding" parameter,
    which executemany (several jobs' rows in one group commit) refuses."""
    return [literal_column(repr(s)) for s in statuses]


# Named statements (store.py registers them in _WRITES) for Store.record: one row per job
# that had an attempt recorded ({"j_id", "j_now"}).
JOB_STATEMENTS = {
    "insert_job": insert(jobs),
    "insert_job_event": insert(job_events),
    "job_attempted": update(jobs)
    .where(jobs.c.id == bindparam("j_id"))
    .values(
        started_at=func.coalesce(jobs.c.started_at, bindparam("j_now")),
        updated_at=bindparam("j_now"),
    ),
    # A delivery that came back deferred while its job is paused is held; stopped, cancelled.
    # Its event first, while the delivery is still "deferred" (same rows as the update).
    "job_guard_events": insert(events).from_select(
        ["message_id", "rcpt_idx", "recipient", "type", "at", "provider", "response", "detail"],
        select(
            d.c.message_id,
            d.c.rcpt_idx,
            d.c.recipient,
            case((_JOB_STATE == "stopped", "cancelled"), else_="held"),
            bindparam("j_now"),
            literal(""),
            literal(""),
            case((_JOB_STATE == "stopped", "job stopped"), else_="job paused"),
        ).where(*_GUARDED),
    ),
    "job_guard": update(d)
    .where(*_GUARDED)
    .values(
        status=case((_JOB_STATE == "stopped", "cancelled"), else_="held"),
        next_attempt_at=None,
        updated_at=bindparam("j_now"),
    ),
    # Once nothing of the job is left to go out: its "completed" event, once (webhooks);
    # not for a stopped job (the client that stopped it knows).
    "job_completed": insert(job_events).from_select(
        ["job_id", "type", "at", "detail"],
        select(
            bindparam("j_id", type_=String),
            literal("completed"),
            bindparam("j_now", type_=Double),
            literal(""),
        ).where(
            exists().where(jobs.c.id == bindparam("j_id"), jobs.c.state != "stopped"),
            ~exists().where(d.c.job_id == bindparam("j_id"), d.c.status.in_(_inline(PENDING))),
            ~exists().where(
                job_events.c.job_id == bindparam("j_id"), job_events.c.type == "completed"
            ),
        ),
    ),
}


def _count(statuses: tuple[str, ...]) -> Any:
    """Deliveries of the job in ``statuses``: index range counts on (job_id, status)."""
    return (
        select(func.count())
        .select_from(d)
        .where(d.c.job_id == jobs.c.id, d.c.status.in_(_inline(statuses)))
        .scalar_subquery()
    )


PROGRESS_COLUMNS = (
    jobs.c.id,
    jobs.c.key_id,
    jobs.c.source,
    jobs.c.campaign_id,
    jobs.c.state,
    jobs.c.total,
    jobs.c.created_at,
    jobs.c.updated_at,
    jobs.c.started_at,
    _count(_SENT).label("sent"),
    _count(_FAILED).label("failed"),
)


def progress_of(row: Any) -> JobProgress:
    job_id, key_id, source, campaign, state, total, created, updated, started, sent, failed = row
    sent, failed, total = int(sent), int(failed), int(total)
    pending = max(0, total - sent - failed)
    if state == "stopped":
        status = "stopped"
    elif pending == 0:
        status = "completed"
    elif state == "paused":
        status = "paused"
    elif started is not None:
        status = "processing"
    else:
        status = "queued"
    percentage = round(100.0 * sent / total, 1) if total else 0.0
    return JobProgress(
        id=job_id,
        key_id=key_id,
        source=source,
        campaign_id=campaign,
        status=status,
        total=total,
        sent=sent,
        failed=failed,
        pending=pending,
        percentage=percentage,
        created_at=created,
        updated_at=updated,
        started_at=started,
    )


# Messages whose derived status is refreshed per writer transaction after a job action.
REFRESH_CHUNK = 5000


def _ids(message_ids: list[str]) -> list[dict[str, Any]]:
    return [{"m_id": m} for m in message_ids]


class JobStore:
    def __init__(self, store: Store) -> None:
        self._store = store

    async def progress(self, job_id: str) -> JobProgress | None:
        """The job's status and per-recipient counts (None: no such job)."""
        rows = await self._store._read(select(*PROGRESS_COLUMNS).where(jobs.c.id == job_id))
        return progress_of(rows[0]) if rows else None

    async def list(
        self, key_id: str | None = None, limit: int = 50, offset: int = 0
    ) -> list[JobProgress]:
        """Newest first; ``key_id``: only that key's jobs."""
        q = (
            select(*PROGRESS_COLUMNS)
            .order_by(jobs.c.created_at.desc(), jobs.c.id.desc())
            .limit(limit)
            .offset(offset)
        )
        if key_id is not None:
            q = q.where(jobs.c.key_id == key_id)
        return [progress_of(r) for r in await self._store._read(q)]

    async def control(
        self,
        job_id: str,
        action: str,
        now: float,
        *,
        started: Callable[[], None] | None = None,
    ) -> str:
        """``action`` (pause, resume, stop; see ACTIONS) on the deliveries of the job not in
        flight; returns "ok", "missing" (no such job) or "not_active" (stopped or
        completed). Pause holds what has not gone out; resume makes it due again (scheduled
        mail at its time); stop cancels it without a DSN. ``started`` is called once the
        first deliveries have changed (a resume: wake the delivery loop)."""
        outcome, touched = await self.apply(job_id, action, now, started=started)
        await self.refresh_messages(touched)
        return outcome

    async def apply(
        self,
        job_id: str,
        action: str,
        now: float,
        *,
        started: Callable[[], None] | None = None,
    ) -> tuple[str, list[str]]:
        """The action, in effect once this returns (control's first step): its outcome
        and the messages whose deliveries it changed. The job's state commits first (a
        pause or stop holds from then on, on every node: claims park what they find),
        then its deliveries, CONVERT_CHUNK per transaction."""
        if action not in ACTIONS:
            raise ValueError(f"unknown job action {action!r}")
        outcome: str = await self._store.writer.run(set_state, job_id, action, now)
        if outcome not in ("ok", "unchanged"):
            return outcome, []
        touched: dict[str, None] = {}
        while True:
            changed: list[str] | None = await self._store.writer.run(
                convert_chunk, job_id, action, now, CONVERT_CHUNK
            )
            if changed is None:
                return "ok", list(touched)
            touched.update(dict.fromkeys(changed))
            if started is not None:
                started()
                started = None

    async def finish_interrupted(self, now: float) -> int:
        """Carry on the resumes a stopped or dead node left half done (jobs still
        "resuming"); how many. Run at start and now and then by every node."""
        rows = await self._store._read(select(jobs.c.id).where(jobs.c.state == "resuming"))
        for (job_id,) in rows:
            await self.control(job_id, "resume", now)
        return len(rows)

    async def refresh_messages(self, message_ids: list[str]) -> None:
        """Re-derive the messages' status, in transactions of their own: on SQLite
        rewriting 100,000 message rows (bodies inline) takes seconds, and an action must
        take effect (its deliveries changed and committed) well within one."""
        for start in range(0, len(message_ids), REFRESH_CHUNK):
            chunk = message_ids[start : start + REFRESH_CHUNK]
            await self._store.writer.write([("update_message_status", _ids(chunk))])

    async def status_counts(self, job_id: str) -> dict[str, int]:
        """The job's deliveries by status (one range of ix_deliveries_job)."""
        rows = await self._store._read(
            select(d.c.status, func.count()).where(d.c.job_id == job_id).group_by(d.c.status)
        )
        return {r[0]: int(r[1]) for r in rows}

    async def events(self, job_id: str) -> list[dict[str, Any]]:
        rows = await self._store._read(
            select(job_events.c.type, job_events.c.at, job_events.c.detail)
            .where(job_events.c.job_id == job_id)
            .order_by(job_events.c.id)
        )
        return [dict(r._mapping) for r in rows]
