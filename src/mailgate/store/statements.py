"""The queue's SQL statements: the named writes jobs refer to (the writer, perhaps in its
own process, looks them up by name), SQLite's one-step forms of them, and the values
operator commands act with. Every statement of the queue tables lives here or in
transactions.py; store.py runs them.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import (
    String,
    and_,
    bindparam,
    case,
    func,
    insert,
    literal_column,
    select,
    text,
    update,
)
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.sql import ColumnElement, Executable

from mailgate.store.bodies import INLINE_BODY
from mailgate.store.bulk import BulkForm, BulkIn, BulkInsert, BulkUpdate
from mailgate.store.jobs import JOB_STATEMENTS
from mailgate.store.pg_bulk import PgInsert, PgUpdate
from mailgate.store.schema import deliveries, events, idempotency, messages, templates
from mailgate.store.suppressions import insert_ignoring_duplicates
from mailgate.store.tracking import TRACKING_STATEMENTS

d = deliveries

_INSERT_MESSAGE = insert(messages)
_INSERT_DELIVERY = insert(deliveries)
INSERT_EVENT = insert(events)
_INSERT_IDEMPOTENCY = insert(idempotency)
# Deliveries still to be attempted (held ones too: a release makes them due).
PENDING = ("scheduled", "queued", "deferred", "held")
# A signature is kept only for the retries: when none of the message's deliveries is
# pending any more (the common case, everything sent at once) it is not written at all.
_SIGNATURE_NEEDED = (
    select(d.c.rcpt_idx)
    # The statuses inline, not an expanding parameter: this runs with executemany.
    .where(
        d.c.message_id == messages.c.id,
        d.c.status.in_([literal_column(repr(status)) for status in PENDING]),
    )
    .exists()
)
_SET_DKIM = (
    update(messages)
    .where(messages.c.id == bindparam("k_id"), messages.c.dkim.is_(None), _SIGNATURE_NEEDED)
    .values(dkim=bindparam("k_dkim"))
)
_UPDATE_RESULT = (
    update(deliveries)
    .where(
        and_(
            d.c.message_id == bindparam("b_message_id"),
            d.c.rcpt_idx == bindparam("b_rcpt_idx"),
            d.c.lease_owner == bindparam("b_owner"),
        )
    )
    .values(
        status=bindparam("b_status"),
        attempts=bindparam("b_attempts"),
        next_attempt_at=bindparam("b_next_attempt_at"),
        lane=bindparam("b_lane"),
        provider=bindparam("b_provider"),
        last_response=bindparam("b_response"),
        provider_message_id=bindparam("b_upstream_id"),
        lease_owner=None,
        updated_at=bindparam("b_now"),
    )
)

# A message's status, derived from its deliveries (the most advanced/pending one wins).
_STATUS_ORDER = (
    *PENDING,
    *("delivered", "sent", "bounced", "failed"),
)


def _derived_status() -> Any:
    """The first status of _STATUS_ORDER that any delivery of the message has (one MIN over
    a rank, literals inline: a third faster than a count per status with bound literals)."""
    d2 = deliveries.alias("d2")
    order = [(i, literal_column(repr(status))) for i, status in enumerate(_STATUS_ORDER)]
    best = func.min(case(*[(d2.c.status == status, i) for i, status in order]))
    expr = case(*[(best == i, status) for i, status in order], else_=literal_column("'cancelled'"))
    return select(expr).where(d2.c.message_id == messages.c.id).scalar_subquery()


UPDATE_MESSAGE_STATUS = (
    update(messages).where(messages.c.id == bindparam("m_id")).values(status=_derived_status())
)

# PostgreSQL's claim: lease the due rows other nodes have not locked, and return them.
# The locked rows are found again by their ctid (a Tid Scan), not by the primary key (an
# IN over (message_id, rcpt_idx) hashes the keys and probes the primary key once per row):
# 200 rows at 1,000,000 queued took 3.2 instead of 3.8 ms (p50). The ctids cannot go
# stale, since the rows stay locked by this statement until it updates them; were one
# stale, its row would only be left for the next claim. Columns as in CLAIM_DUE_JSON.
CLAIM_SKIP_LOCKED = text(
    "UPDATE deliveries SET lease_owner = :c_owner, next_attempt_at = :c_until, lane = 1,"
    " updated_at = :c_now WHERE ctid = ANY(ARRAY("
    "SELECT ctid FROM deliveries WHERE lane = :c_lane AND next_attempt_at <= :c_now"
    " ORDER BY next_attempt_at LIMIT :c_limit FOR UPDATE SKIP LOCKED))"
    " RETURNING message_id, rcpt_idx, recipient, attempts, status, retried_at"
)
# PostgreSQL's lease renewal (transactions.renew_leases): never waits for a locked row.
RENEW_SKIP_LOCKED = text(
    "UPDATE deliveries SET next_attempt_at = :r_until WHERE ctid = ANY(ARRAY("
    "SELECT ctid FROM deliveries WHERE lease_owner = :r_owner AND message_id IN :r_ids"
    " AND next_attempt_at IS NOT NULL FOR UPDATE SKIP LOCKED))"
).bindparams(bindparam("r_ids", expanding=True))
# SQLite's claim (_claim_lane): the due deliveries as one JSON array of rows...
# The seventh value is the row's rowid, which LEASE_JSON finds the rows by (in the same
# transaction, so it cannot change in between): one b-tree search per row instead of two
# (the primary key's index, then the table), 200 rows at 1,000,000 queued in 0.65 ms
# instead of 1.08 (p50, both statements).
_DUE = (
    select(
        d.c.message_id,
        d.c.rcpt_idx,
        d.c.recipient,
        d.c.attempts,
        d.c.status,
        d.c.retried_at,
        literal_column("rowid").label("row_id"),
    )
    .where(d.c.lane == bindparam("c_lane"), d.c.next_attempt_at <= bindparam("c_now"))
    .order_by(d.c.next_attempt_at)
    .limit(bindparam("c_limit"))
    .subquery("due")
)
CLAIM_DUE_JSON = select(func.json_group_array(func.json_array(*_DUE.c)))
# ...then the lease on exactly those rows. A claimed delivery moves to the retry lane: if
# its lease runs out (its node died during the attempt) it is due again from the lease's
# end, and in the fresh lane it would wait behind all the fresh mail queued before then;
# the retry lane gets a share of every claim.
LEASE_JSON = text(
    "UPDATE deliveries SET lease_owner = :c_owner, next_attempt_at = :c_until, lane = 1,"
    " updated_at = :c_now WHERE rowid IN (SELECT value ->> 6 FROM json_each(:c_rows))"
)

# A big body stays out of the claim: the delivery process reads it (store/bodies.py).
_LOAD = select(
    messages.c.id,
    messages.c.sender,
    case((messages.c.size <= INLINE_BODY, messages.c.raw), else_=None),
    messages.c.created_at,
    messages.c.dkim,
    messages.c.job_id,
    messages.c.provider,
    messages.c.attempt_once,
    messages.c.tracking,
    messages.c.size,
)


def _id_in(dialect: str, name: str) -> ColumnElement[bool]:
    """``messages.id`` in the list bound as ``name``. PostgreSQL takes the list as one
    array: one statement text whatever its length, so asyncpg's prepared statement is
    reused (an expanding IN is a new text, and a new parse and plan, for each length): a
    claim's 200 messages load in 1.0 ms instead of 1.5 (p50)."""
    if dialect == "postgresql":
        return messages.c.id == func.any(bindparam(name, type_=ARRAY(String)))
    return messages.c.id.in_(bindparam(name, expanding=True))


LOAD_MESSAGES = {name: _LOAD.where(_id_in(name, "ids")) for name in ("sqlite", "postgresql")}

# The statements write jobs name (writer.py: ops travel by name, to a writer process too).
_WRITES: dict[str, Executable] = {
    "insert_message": _INSERT_MESSAGE,
    "insert_delivery": _INSERT_DELIVERY,
    "insert_event": INSERT_EVENT,
    "insert_idempotency": _INSERT_IDEMPOTENCY,
    "update_result": _UPDATE_RESULT,
    "update_message_status": UPDATE_MESSAGE_STATUS,
    "set_dkim": _SET_DKIM,
    "insert_template": insert(templates),
    **JOB_STATEMENTS,
    **TRACKING_STATEMENTS,
}


@functools.cache
def write_statements(dialect: str) -> dict[str, Executable]:
    """The registry of named write statements for ``dialect``."""
    return {**_WRITES, "insert_suppression": insert_ignoring_duplicates(dialect)}


def _bulk_forms(insert_form: Any, update_form: Any, dialect: str) -> dict[str, BulkForm]:
    """The one-step forms of the many-row write statements, built with an engine's
    insert and update forms (bulk.py for SQLite, pg_bulk.py for PostgreSQL)."""
    return {
        "insert_message": insert_form(messages),
        "insert_delivery": insert_form(deliveries),
        "insert_event": insert_form(events),
        "update_result": update_form(
            deliveries,
            match={
                "message_id": "b_message_id",
                "rcpt_idx": "b_rcpt_idx",
                "lease_owner": "b_owner",
            },
            assign={
                "status": "b_status",
                "attempts": "b_attempts",
                "next_attempt_at": "b_next_attempt_at",
                "lane": "b_lane",
                "provider": "b_provider",
                "last_response": "b_response",
                "provider_message_id": "b_upstream_id",
                "updated_at": "b_now",
            },
            set_constant={"lease_owner": "NULL"},
        ),
        "update_message_status": BulkIn(
            update(messages).where(_id_in(dialect, "m_ids")).values(status=_derived_status()),
            "m_ids",
            "m_id",
        ),
        "set_dkim": update_form(
            messages,
            match={"id": "k_id"},
            assign={"dkim": "k_dkim"},
            where_constant=[
                '"messages".dkim IS NULL',
                'EXISTS (SELECT 1 FROM deliveries WHERE deliveries.message_id = "messages".id'
                f" AND deliveries.status IN ({', '.join(repr(status) for status in PENDING)}))",
            ],
        ),
    }


# SQLite: the forms that write all rows of these statements in one step (see bulk.py).
SQLITE_BULK: dict[str, BulkForm] = _bulk_forms(BulkInsert, BulkUpdate, "sqlite")
# PostgreSQL: the same statements with one array per column (see pg_bulk.py).
PG_BULK: dict[str, BulkForm] = _bulk_forms(PgInsert, PgUpdate, "postgresql")


@dataclass(frozen=True, slots=True)
class QueueFilter:
    """Which deliveries an operator command acts on; empty fields do not restrict."""

    message_ids: Sequence[str] = ()
    recipient: str = ""  # an address, or a domain (every address at it)
    sender: str = ""  # the same, for the envelope sender
    provider: str = ""  # last tried through this provider, or pinned to it
    created_before: float | None = None  # messages accepted at or before (epoch seconds)


# Operator actions on deliveries that are not in flight (not leased): the statuses each
# applies to, and the event it records.
QUEUE_ACTIONS: dict[str, tuple[tuple[str, ...], str]] = {
    "retry": (("queued", "deferred"), "retry"),
    "hold": (("queued", "deferred"), "held"),
    "release": (("held",), "released"),
    "delete": (PENDING, "cancelled"),
}


@dataclass(frozen=True, slots=True)
class IdempotentAnswer:
    """The first answer to a request with an Idempotency-Key, stored with its commit."""

    key_id: str
    idem_key: str
    request_hash: str
    status_code: int
    body: str
