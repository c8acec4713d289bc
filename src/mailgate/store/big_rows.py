"""Writing the rows of big messages: their bodies are copied as few times as possible.

A big message's row carries the body as the client sent it in ``raw`` and the trace
headers accept() adds (Received, and Message-ID or Date when missing) in ``head``, so the
relay never joins the two into a second copy of the body. On SQLite the row is inserted
with an empty blob of the final size and the head and body are written into it with
incremental blob I/O, so the writer does not join them either. (SQLite still builds the
whole record in memory once: ``raw`` is not the table's last column, so its zero blob is
expanded. A body table with the blob last would spare that copy too.) PostgreSQL gets the
two joined: its driver needs one value.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import Connection, func
from sqlalchemy.sql import Executable

BIG_MESSAGE = 1024 * 1024  # bytes: a body this big gets the treatment above
_BLOB_CHUNK = 1024 * 1024  # bytes written into the blob per call
_LOCATE = "SELECT rowid FROM messages WHERE id = ?"


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
            _insert_big(conn, statement, row)


def _insert_big(conn: Connection, statement: Executable, row: dict[str, Any]) -> None:
    # A new dict: the row is used again if the group transaction is retried job by job.
    params = {k: v for k, v in row.items() if k not in ("raw", "head")}
    head: bytes = row.get("head", b"")
    body = memoryview(row["raw"])
    if conn.dialect.name != "sqlite":
        conn.execute(statement, {**params, "raw": head + body})
        return
    size = len(head) + body.nbytes
    conn.execute(statement.values(raw=func.zeroblob(size)), params)  # type: ignore[attr-defined]
    dbapi = conn.connection.dbapi_connection
    assert dbapi is not None
    (rowid,) = dbapi.execute(_LOCATE, (row["id"],)).fetchall()[0]
    with dbapi.blobopen("messages", "raw", rowid) as blob:
        blob.write(head)
        for start in range(0, body.nbytes, _BLOB_CHUNK):
            blob.write(body[start : start + _BLOB_CHUNK])
