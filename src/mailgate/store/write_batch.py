"""What one group-commit transaction runs, and how it runs on a synchronous connection.

A job travels as data (statements of the registry by name with their rows, or a
module-level function with its arguments) so that the same transaction can run in the
relay's process, a writer thread or the SQLite writer process (writer.py says why).
"""

from __future__ import annotations

import pickle
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection
from sqlalchemy.sql import Executable

from mailgate.pickling import by_fields
from mailgate.store.big_rows import BIG_MESSAGE, has_big_row, insert_messages
from mailgate.store.bulk import BulkForm

# A statement of the registry by name, and its rows.
Op = tuple[str, list[dict[str, Any]]]
# A function job: ``fn(conn, *args)`` inside the group transaction on a synchronous
# connection. Module-level (and its arguments picklable) so a writer process can run it.
TxnFn = Callable[..., Any]
Statements = Mapping[str, Executable]
_Groups = dict[tuple[str, ...], dict[str, list[dict[str, Any]]]]


@by_fields
@dataclass(slots=True)  # a record: not frozen, see models.py
class Work:
    """What one job does in the transaction: ``ops``, or ``fn(conn, *args)``. ``new_mail``:
    it accepts mail, so a full disk refuses it (452) rather than spend the reserve's ballast
    on it (sqlite_writer.py); every other job is part of draining the queue."""

    ops: Sequence[Op] = ()
    fn: TxnFn | None = None
    args: tuple[Any, ...] = ()
    new_mail: bool = False


def execute_batch(
    conn: Connection,
    works: Sequence[Work],
    statements: Statements,
    bulk: Mapping[str, BulkForm] | None = None,
) -> list[Any]:
    """Run the jobs of one transaction on ``conn``; return each job's result.

    Jobs with the same statements (e.g. all accepts) are merged into one executemany per
    statement; each job's own statements stay in its order (messages before their
    deliveries and events; a statement listed twice in one job runs at its first
    position). Function jobs are barriers: they see everything queued before them.
    A statement with a form in ``bulk`` runs its rows through that form (see bulk.py).
    """
    results: list[Any] = []
    groups: _Groups = {}
    for work in works:
        if work.fn is None:
            shape = tuple(name for name, _ in work.ops)
            merged = groups.setdefault(shape, {})
            for name, params in work.ops:
                merged.setdefault(name, []).extend(params)
            results.append(None)
        else:
            _flush(conn, groups, statements, bulk)
            results.append(work.fn(conn, *work.args))
    _flush(conn, groups, statements, bulk)
    return results


def _flush(
    conn: Connection,
    groups: _Groups,
    statements: Statements,
    bulk: Mapping[str, BulkForm] | None,
) -> None:
    for merged in groups.values():
        for name, params in merged.items():
            form = bulk.get(name) if bulk and len(params) > 1 else None
            if name == "insert_message" and has_big_row(params):
                # One statement binding every row would copy every big body into SQLite
                # at once (400 MB for twenty 20 MB messages); see big_rows.py.
                insert_messages(conn, statements[name], params)
            elif form is not None:
                form(conn, params)
            elif params:
                conn.execute(statements[name], params)
    groups.clear()


def wrote_big_message(works: Sequence[Work]) -> bool:
    return any(
        has_big_row(rows) for work in works for name, rows in work.ops if name == "insert_message"
    )


def bodies_beside(works: list[Work]) -> list[Work]:
    """``works`` with big bodies wrapped to travel beside the pickle to the writer process
    (worker_frames.frame), not copied into it; the process gets them back as bytes."""
    if not wrote_big_message(works):
        return works
    out = []
    for work in works:
        ops = [
            (
                name,
                [
                    {**row, "raw": pickle.PickleBuffer(row["raw"])}
                    if name == "insert_message" and row.get("size", 0) >= BIG_MESSAGE
                    else row
                    for row in rows
                ],
            )
            for name, rows in work.ops
        ]
        out.append(Work(ops, work.fn, work.args, work.new_mail))
    return out
