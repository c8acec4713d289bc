"""Taking a key's quota in the transaction that queues the messages it pays for.

The count and the messages commit together, so a crash cannot leave mail queued but not
counted (or counted but not queued), and a node cannot take what another just took: the
conditional update waits for the other transaction's row lock (PostgreSQL) or runs alone
(SQLite has one writer).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import Connection, select, update
from sqlalchemy.dialects import postgresql, sqlite

from mailgate.exceptions import MailgateError
from mailgate.store.schema import quota_usage
from mailgate.store.statements import SQLITE_BULK, write_statements
from mailgate.store.write_batch import Op, Work, execute_batch


@dataclass(frozen=True, slots=True)
class QuotaTake:
    """Take ``count`` of ``limit`` for the key in ``period``, or nothing."""

    key_id: str
    period: str
    limit: int
    count: int


class QuotaRace(MailgateError):
    """The take no longer fits: other requests (or nodes) used the quota meanwhile.

    Nothing was written. ``used`` is the count the transaction found, for the retry.
    """

    def __init__(self, used: int) -> None:
        super().__init__(f"quota changed meanwhile (now {used} used)")
        self.used = used


def take_and_enqueue(conn: Connection, take: QuotaTake, ops: Sequence[Op]) -> int | None:
    """Writer job: add ``take.count`` to the usage if it stays within the limit and run
    ``ops`` (an enqueue's); None if done, else the usage found (nothing is written).

    Returns instead of raising, so the other jobs of the group commit are not rolled back.
    """
    dialect = conn.dialect.name
    ins = (postgresql.insert if dialect == "postgresql" else sqlite.insert)(quota_usage)
    conn.execute(
        ins.values(key_id=take.key_id, period=take.period, used=0).on_conflict_do_nothing()
    )
    key = (quota_usage.c.key_id == take.key_id, quota_usage.c.period == take.period)
    taken = conn.execute(
        update(quota_usage)
        .where(*key, quota_usage.c.used + take.count <= take.limit)
        .values(used=quota_usage.c.used + take.count)
    )
    if taken.rowcount != 1:
        return int(conn.execute(select(quota_usage.c.used).where(*key)).scalar_one())
    bulk = SQLITE_BULK if dialect == "sqlite" else None
    execute_batch(conn, [Work(ops=ops)], write_statements(dialect), bulk)
    return None
