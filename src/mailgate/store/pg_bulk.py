"""One-statement forms of the writer's many-row statements, for PostgreSQL.

An ``executemany`` through SQLAlchemy builds and processes one parameter set per row in
the relay's process (on PostgreSQL the writer runs there, on the event loop's thread), and
the server executes the statement once per row. Here all the rows travel as one array per
column and the server expands them with ``unnest``: one parameter set, one execution.
Profiled under bench-pg's pg-1 load, SQLAlchemy's per-row parameter work was about 7 % of
the relay's samples, on the same core as the SMTP listener.

Each form is ``(conn, rows) -> None`` and does what ``conn.execute(stmt, rows)`` would do
for the statement it stands for (bulk.py's forms for SQLite, with the same names).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from sqlalchemy import Connection, Table
from sqlalchemy.dialects import postgresql

from mailgate.store.bulk import Rows

_PG = postgresql.dialect()  # type: ignore[no-untyped-call]


def _array_type(table: Table, column: str) -> str:
    return f"{table.c[column].type.compile(dialect=_PG)}[]"


class PgInsert:
    """``INSERT INTO t (...) SELECT * FROM unnest($1::type[], ...)``: rows keep their order."""

    def __init__(self, table: Table) -> None:
        self._table = table
        self._sql: dict[tuple[str, ...], str] = {}

    def __call__(self, conn: Connection, rows: Rows) -> None:
        cols = tuple(rows[0])
        sql = self._sql.get(cols)
        if sql is None:
            arrays = ", ".join(
                f"${i}::{_array_type(self._table, c)}" for i, c in enumerate(cols, 1)
            )
            names = ", ".join(f'"{c}"' for c in cols)
            sql = f'INSERT INTO "{self._table.name}" ({names}) SELECT * FROM unnest({arrays})'
            self._sql[cols] = sql
        conn.exec_driver_sql(sql, tuple([row[c] for row in rows] for c in cols))


class PgUpdate:
    """``UPDATE t SET ... FROM unnest(...) AS v(...) WHERE t.key = v.key ...``.

    ``match`` and ``assign`` map columns of ``table`` to the row keys that hold their
    values; ``set_constant`` (column to SQL) and ``where_constant`` (whole conditions, the
    table named by its name) add SQL that is the same for every row.
    """

    def __init__(
        self,
        table: Table,
        *,
        match: Mapping[str, str],
        assign: Mapping[str, str],
        set_constant: Mapping[str, str] | None = None,
        where_constant: Sequence[str] = (),
    ) -> None:
        columns = {**match, **assign}
        self._keys = list(columns.values())
        arrays = ", ".join(f"${i}::{_array_type(table, c)}" for i, c in enumerate(columns, 1))
        name = f'"{table.name}"'
        sets = [f'"{c}" = v."{k}"' for c, k in assign.items()]
        sets += [f'"{c}" = {sql}' for c, sql in (set_constant or {}).items()]
        where = [f'{name}."{c}" = v."{k}"' for c, k in match.items()]
        where += where_constant
        self._sql = (
            f"UPDATE {name} SET {', '.join(sets)} FROM unnest({arrays})"
            f" AS v({', '.join(f'{k}' for k in self._keys)}) WHERE {' AND '.join(where)}"
        )

    def __call__(self, conn: Connection, rows: Rows) -> None:
        conn.exec_driver_sql(self._sql, tuple([row[k] for row in rows] for k in self._keys))
