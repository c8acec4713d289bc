"""Writing the rows of big messages: their bodies are copied as few times as possible.

A big message's row carries the body as the client sent it in ``raw`` and the trace
headers accept() adds (Received, and Message-ID or Date when missing) in ``head``, so the
relay never joins the two into a second copy of the body.

- SQLite: the message's row gets ``raw = b""`` and the body goes to ``message_bodies``
  (schema.py says why not ``messages``): a row with a zero blob of the final size, the
  head and the body then written into it in place with incremental blob I/O, a chunk at a
  time. Neither the writer nor SQLite holds a second copy (before: the joined row, the
  bound value and SQLite's record, three copies of the body at once in the writer).
- PostgreSQL: head and body joined in ``messages.raw`` (its driver needs one value), in
  place so the body as received is released first.

Each big row is inserted on its own, so one body at a time is being written. Readers of
whole bodies select :data:`STORED_RAW` from :data:`WITH_BODIES`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import Connection, bindparam, func, insert
from sqlalchemy.sql import Executable

from mailgate.store.schema import message_bodies, messages

BIG_MESSAGE = 1024 * 1024  # bytes: a body this big gets the treatment above
_BLOB_CHUNK = 1024 * 1024  # bytes written into the blob per call
# A message's body wherever it is: in message_bodies if it has a row there.
WITH_BODIES = messages.outerjoin(message_bodies, message_bodies.c.message_id == messages.c.id)
STORED_RAW = func.coalesce(message_bodies.c.raw, messages.c.raw)
_INSERT_BODY = insert(message_bodies).values(
    message_id=bindparam("m_id"), raw=func.zeroblob(bindparam("n"))
)


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
        if row.get("size", 0) < BIG_MESSAGE:
            continue
        if conn.dialect.name == "sqlite":
            _insert_sqlite(conn, statement, row)
            continue
        if "head" in row:
            # In place: the body as received is released now, and a retry of the
            # transaction (job by job) finds the row already whole.
            row["raw"] = row.pop("head") + row["raw"]
        conn.execute(statement, row)


def _insert_sqlite(conn: Connection, statement: Executable, row: dict[str, Any]) -> None:
    # A new dict: the row is used again if the group transaction is retried job by job.
    params = {k: v for k, v in row.items() if k != "head"}
    params["raw"] = b""
    conn.execute(statement, params)
    head: bytes = row.get("head", b"")
    body = memoryview(row["raw"])
    made = conn.execute(_INSERT_BODY, {"m_id": row["id"], "n": len(head) + body.nbytes})
    dbapi = conn.connection.dbapi_connection
    assert dbapi is not None
    with dbapi.blobopen("message_bodies", "raw", made.lastrowid) as blob:
        blob.write(head)
        for start in range(0, body.nbytes, _BLOB_CHUNK):
            blob.write(body[start : start + _BLOB_CHUNK])
