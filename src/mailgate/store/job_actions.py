"""Pause, resume and stop of a job as writer transactions, and the holds the claim and
the lease release apply to deliveries of a paused or stopped job.

An action commits the job's state first (set_state: from then on claims park what they
find, on every node), then changes its deliveries not in flight CONVERT_CHUNK at a time
(convert_chunk), each with its event.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from sqlalchemy import (
    Connection,
    String,
    bindparam,
    case,
    column,
    func,
    insert,
    literal_column,
    select,
    text,
    update,
)
from sqlalchemy.dialects.postgresql import ARRAY

from mailgate.store.rows import event_row
from mailgate.store.schema import deliveries, events, job_events, jobs

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
WAITING = ("scheduled", "queued", "deferred")  # not yet attempted, or due again
PENDING = (*WAITING, "held")

# Deliveries an action changes per writer transaction: 100,000 in one took 0.6 s on SQLite
# (every accept waited for it) and 1.8 s on PostgreSQL before the first could go out.
CONVERT_CHUNK = 5000
_ATTEMPTABLE = ("queued", "deferred")
_FROM = {"pause": _ATTEMPTABLE, "resume": ("held",), "stop": PENDING}


def set_state(conn: Connection, job_id: str, action: str, now: float) -> str:
    """The job's new state and its event: "ok", "unchanged" (already so), "missing" or
    "not_active" (stopped or completed). A pause or stop is in effect from this commit:
    the claim parks what it would otherwise hand out (park_claimed)."""
    row = conn.execute(select(jobs.c.state).where(jobs.c.id == job_id)).first()
    if row is None:
        return "missing"
    state = row[0]
    if state == "stopped":
        return "unchanged" if action == "stop" else "not_active"
    pending = conn.execute(
        select(func.count()).select_from(d).where(d.c.job_id == job_id, d.c.status.in_(PENDING))
    ).scalar_one()
    if not pending:
        return "not_active"  # completed: a resume too (its state stays "active")
    if state in _ALREADY[action]:
        return "unchanged"  # nothing to change, no new event (a resume carries on)
    conn.execute(
        update(jobs).where(jobs.c.id == job_id).values(state=ACTIONS[action], updated_at=now)
    )
    conn.execute(
        insert(job_events),
        [{"job_id": job_id, "type": _EVENT[action], "at": now, "detail": ""}],
    )
    return "ok"


def convert_chunk(
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
                d.c.status.in_(WAITING),
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
            .where(lease, d.c.job_id.in_(halted), d.c.status.in_(WAITING), state == wanted)
            .values(status=status, next_attempt_at=None, lease_owner=None, updated_at=now)
            .returning(d.c.message_id, d.c.rcpt_idx, d.c.recipient)
        ).all()
        _delivery_events(conn, rows, status, f"job {wanted}", now)
        messages.update(r[0] for r in rows)
    return sorted(messages)
