"""Writing the rows of big messages: their bodies are copied as few times as possible.

A big message's row carries the body as the client sent it in ``raw`` and the trace
headers accept() adds (Received, and Message-ID or Date when missing) in ``head``, so the
relay never joins the two into a second copy of the body: the writer does, and lets the
body it received go before the row is bound. (SQLite's incremental blob I/O would spare
that join, but it refuses to write into a table with an expression index, and the
record SQLite builds for the row holds the whole body anyway: ``raw`` is not its last
column.) Each big row is inserted on its own, so SQLite holds one body at a time.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import Connection
from sqlalchemy.sql import Executable

BIG_MESSAGE = 1024 * 1024  # bytes: a body this big gets the treatment above


def has_big_row(rows: Sequence[dict[str, Any]]) -> bool:
    return any(row.get("size", 0) >= BIG_MESSAGE for row in rows)


def message_row_body(head: bytes, raw: bytes) -> dict[str, Any]:
    """The ``raw`` (and ``head``) of a message row: one value when small, apart when big."""
    if len(raw) < BIG_MESSAGE:
        return {"raw": head + raw}
    return {"raw": raw, "head": head}


def insert_messages(
    conn: Connection, statement: Executable, rows: Sequence[dict[str, Any]]
) -> None:
    """Insert message rows: the small ones in one executemany, each big one on its own."""
    small = [row for row in rows if row.get("size", 0) < BIG_MESSAGE]
    if small:
        conn.execute(statement, small)
    for row in rows:
        if row.get("size", 0) >= BIG_MESSAGE:
            if "head" in row:
                # In place: the body as received is released now, and a retry of the
                # transaction (job by job) finds the row already whole.
                row["raw"] = row.pop("head") + row["raw"]
            conn.execute(statement, row)
