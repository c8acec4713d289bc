"""Jobs: a batch of messages read and controlled as one (pause, resume, stop).

A job's row holds what was asked of it (state active / paused / stopped) and when it
started; its progress is counted from its deliveries through ix_deliveries_job (index
range counts, never a scan of its messages). Pause, resume and stop change every
delivery of the job that is not in flight in one set-based transaction and record one
job event; deliveries in flight are caught when their result is recorded (record_guard).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy import (
    Connection,
    Double,
    String,
    bindparam,
    case,
    column,
    exists,
    func,
    insert,
    literal,
    literal_column,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.dialects.postgresql import ARRAY

from mailgate.store.rows import event_row
from mailgate.store.schema import deliveries, events, job_events, jobs

if TYPE_CHECKING:
    from mailgate.store.store import Store

d = deliveries

# What an operator or client may do to a job, and the state it leaves the job in. A resume
# is "resuming" until every held delivery is due again (a node that dies half-way leaves
# it so, and finish_interrupted completes it); then "active".
ACTIONS: dict[str, str] = {"pause": "paused", "resume": "resuming", "stop": "stopped"}
# States in which the action has nothing left to ask of the job's state.
_ALREADY = {"pause": ("paused",), "resume": ("active", "resuming"), "stop": ("stopped",)}
# Events of the deliveries an action changes (the queue actions' names for the same).
_DELIVERY_EVENT = {"pause": "held", "resume": "released", "stop": "cancelled"}
_HALTED = ("paused", "stopped")  # states in which nothing of the job goes out
_EVENT = {"pause": "paused", "resume": "resumed", "stop": "stopped"}
_SENT = ("sent", "delivered")
_FAILED = ("bounced", "failed", "cancelled")
_WAITING = ("scheduled", "queued", "deferred")  # not yet attempted, or due again
_PENDING = (*_WAITING, "held")


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
            ~exists().where(d.c.job_id == bindparam("j_id"), d.c.status.in_(_PENDING)),
            ~exists().where(
                job_events.c.job_id == bindparam("j_id"), job_events.c.type == "completed"
            ),
        ),
    ),
}


def _count(statuses: tuple[str, ...]) -> Any:
    """Deliveries of the job in ``statuses``: index range counts on (job_id, status)."""
    inline = [literal_column(repr(s)) for s in statuses]
    return (
        select(func.count())
        .select_from(d)
        .where(d.c.job_id == jobs.c.id, d.c.status.in_(inline))
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
# Deliveries an action changes per writer transaction: 100,000 in one took 0.6 s on SQLite
# (every accept waited for it) and 1.8 s on PostgreSQL before the first could go out.
CONVERT_CHUNK = 5000
_ATTEMPTABLE = ("queued", "deferred")
_FROM = {"pause": _ATTEMPTABLE, "resume": ("held",), "stop": _PENDING}


def _set_state(conn: Connection, job_id: str, action: str, now: float) -> str:
    """The job's new state and its event: "ok", "unchanged" (already so), "missing" or
    "not_active" (stopped or completed). A pause or stop is in effect from this commit:
    the claim parks what it would otherwise hand out (park_claimed)."""
    row = conn.execute(select(jobs.c.state).where(jobs.c.id == job_id)).first()
    if row is None:
        return "missing"
    state = row[0]
    if state == "stopped":
        return "unchanged" if action == "stop" else "not_active"
    if state in _ALREADY[action]:
        return "unchanged"  # nothing to change, no new event (a resume carries on)
    pending = conn.execute(
        select(func.count()).select_from(d).where(d.c.job_id == job_id, d.c.status.in_(_PENDING))
    ).scalar_one()
    if not pending:
        return "not_active"  # completed
    conn.execute(
        update(jobs).where(jobs.c.id == job_id).values(state=ACTIONS[action], updated_at=now)
    )
    conn.execute(
        insert(job_events),
        [{"job_id": job_id, "type": _EVENT[action], "at": now, "detail": ""}],
    )
    return "ok"


def _convert(
    conn: Connection, job_id: str, action: str, now: float, limit: int
) -> list[str] | None:
    """Up to ``limit`` of the job's deliveries not in flight (on SQLite: those of up to
    ``limit`` messages), as the action wants them (none once a later action changed the
    state), each with its event; the message of each delivery changed, or None when none
    was left to change (a resume's such chunk makes the job "active").

    Two steps, the chunk's keys then an update by them, with every condition in the
    UPDATE itself: PostgreSQL re-checks those, not a subquery's, for a row another node
    locked meanwhile (to claim it). One UPDATE with an IN (SELECT ... LIMIT) subquery took
    30 s a chunk on PostgreSQL while its statistics did not know the new job.
    """
    state = conn.execute(select(jobs.c.state).where(jobs.c.id == job_id)).scalar()
    if state != ACTIONS[action]:
        return None
    wanted = (d.c.job_id == job_id, d.c.lease_owner.is_(None), d.c.status.in_(_FROM[action]))
    sqlite = conn.dialect.name == "sqlite"
    if not sqlite:
        # From the sixth run of a prepared statement PostgreSQL may switch to a generic
        # plan, made without the job id: it scanned the table (5 s a chunk, not 0.25).
        conn.execute(text("SET LOCAL plan_cache_mode = force_custom_plan"))
    # SQLite: the chunk's message ids as one JSON value (one bound parameter, bulk.py).
    # PostgreSQL: its rows' ctids, a TID scan whatever the statistics say (by message id,
    # a plan made before they knew the new job scanned the table per chunk: 75 s for
    # 100,000 deliveries).
    key = d.c.message_id if sqlite else literal_column("ctid::text")
    found = list(conn.execute(select(key).where(*wanted).limit(limit)).scalars())
    if not found:
        if action == "resume":
            conn.execute(
                update(jobs)
                .where(jobs.c.id == job_id, jobs.c.state == "resuming")
                .values(state="active", updated_at=now)
            )
        return None
    if action == "pause":
        # Scheduled mail keeps its time: if it comes due while paused, the claim parks it.
        values: dict[str, Any] = {"status": "held", "next_attempt_at": None}
    elif action == "resume":
        values = {"status": case((d.c.attempts > 0, "deferred"), else_="queued")}
        values["next_attempt_at"] = now
    else:
        values = {"status": "cancelled", "next_attempt_at": None}
    if sqlite:
        among = d.c.message_id.in_(_JSON_IDS)
        params: dict[str, Any] = {"ids": json.dumps(found)}
    else:
        among = _PG_TIDS
        params = {"tids": found}
    stmt = (
        update(d)
        .where(among, *wanted)
        .values(**values, updated_at=now)
        .returning(d.c.message_id, d.c.rcpt_idx, d.c.recipient)
    )
    rows = conn.execute(stmt, params).all()
    _delivery_events(conn, rows, _DELIVERY_EVENT[action], f"job {action}", now)
    return [r[0] for r in rows]


_JSON_IDS = text("SELECT value FROM json_each(:ids)").columns(column("value"))
_PG_TIDS = text("deliveries.ctid = ANY(CAST(:tids AS tid[]))").bindparams(
    bindparam("tids", type_=ARRAY(String))
)


def _delivery_events(
    conn: Connection, rows: Sequence[Any], type_: str, detail: str, now: float
) -> None:
    """One event per delivery a job action changed: (message_id, rcpt_idx, recipient)."""
    if rows:
        conn.execute(
            insert(events), [event_row(m, i, r, type_, now, detail=detail) for m, i, r in rows]
        )


def park_claimed(
    conn: Connection, owner: str, until: float, job_of: dict[str, str], now: float
) -> set[str]:
    """Of the deliveries this claim just leased (to ``owner`` until ``until``; ``job_of``:
    their messages' jobs), those of paused or stopped jobs are held (paused) or cancelled
    (stopped) rather than attempted; returns those jobs. Deliveries the same node claimed
    earlier and is attempting now have another lease expiry and are left alone."""
    halted = dict(
        conn.execute(
            select(jobs.c.id, jobs.c.state).where(
                jobs.c.id.in_(set(job_of.values())), jobs.c.state.in_(_HALTED)
            )
        ).all()
    )
    for state, status in (("paused", "held"), ("stopped", "cancelled")):
        ids = [m for m, j in job_of.items() if halted.get(j) == state]
        if not ids:
            continue
        rows = conn.execute(
            update(d)
            .where(
                d.c.message_id.in_(ids),
                d.c.lease_owner == owner,
                d.c.next_attempt_at == until,
                d.c.status.in_(_WAITING),
            )
            .values(status=status, next_attempt_at=None, lease_owner=None, updated_at=now)
            .returning(d.c.message_id, d.c.rcpt_idx, d.c.recipient)
        ).all()
        _delivery_events(conn, rows, status, f"job {state}", now)
    return set(halted)


def hold_released(conn: Connection, lease: Any, now: float) -> list[str]:
    """Deliveries of paused or stopped jobs among those whose lease ``lease`` matches:
    held (paused) or cancelled (stopped) instead of made due. Returns their messages."""
    state = select(jobs.c.state).where(jobs.c.id == d.c.job_id).scalar_subquery()
    halted = select(jobs.c.id).where(jobs.c.state.in_(_HALTED))
    messages: set[str] = set()
    for wanted, status in (("paused", "held"), ("stopped", "cancelled")):
        rows = conn.execute(
            update(d)
            .where(lease, d.c.job_id.in_(halted), d.c.status.in_(_WAITING), state == wanted)
            .values(status=status, next_attempt_at=None, lease_owner=None, updated_at=now)
            .returning(d.c.message_id, d.c.rcpt_idx, d.c.recipient)
        ).all()
        _delivery_events(conn, rows, status, f"job {wanted}", now)
        messages.update(r[0] for r in rows)
    return sorted(messages)


def _ids(message_ids: list[str]) -> list[dict[str, Any]]:
    return [{"m_id": m} for m in message_ids]


class JobStore:
    def __init__(self, store: Store) -> None:
        self._store = store

    async def progress(self, job_id: str) -> JobProgress | None:
        """The job's status and per-recipient counts (None: no such job)."""
        rows = await self._store._read(select(*PROGRESS_COLUMNS).where(jobs.c.id == job_id))
        return progress_of(rows[0]) if rows else None

    async def list(self, key_id: str | None = None, limit: int = 50) -> list[JobProgress]:
        """Newest first; ``key_id``: only that key's jobs."""
        q = (
            select(*PROGRESS_COLUMNS)
            .order_by(jobs.c.created_at.desc(), jobs.c.id.desc())
            .limit(limit)
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
        outcome: str = await self._store.writer.run(_set_state, job_id, action, now)
        if outcome not in ("ok", "unchanged"):
            return outcome, []
        touched: dict[str, None] = {}
        while True:
            changed: list[str] | None = await self._store.writer.run(
                _convert, job_id, action, now, CONVERT_CHUNK
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

    async def events(self, job_id: str) -> list[dict[str, Any]]:
        rows = await self._store._read(
            select(job_events.c.type, job_events.c.at, job_events.c.detail)
            .where(job_events.c.job_id == job_id)
            .order_by(job_events.c.id)
        )
        return [dict(r._mapping) for r in rows]
