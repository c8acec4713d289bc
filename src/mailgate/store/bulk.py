"""One-step forms of the writer's many-row statements, for SQLite.

pysqlite gives the GIL up around every ``sqlite3_step``: once per row of an
``executemany`` and once per row a statement returns. Each time it must take the GIL back
from the event loop, and while the loop is busy that waits up to the switch interval, so a
commit of many rows crawled exactly when the relay was busiest, and accepts waited for it.
A statement that writes all its rows in one step gives the GIL up once: a group commit of
20 accepts and 20 results next to a busy thread took 53/105 ms (p50/p99) as executemany
and 18/28 ms in these forms (SQLite 3.40, 0.5 ms switch interval).

Each form is ``(conn, rows) -> None`` and does what ``conn.execute(stmt, rows)`` would do
for the statement it stands for. PostgreSQL keeps executemany (asyncpg pipelines it).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

from sqlalchemy import Connection, Executable, Table

Rows = list[dict[str, Any]]
BulkForm = Callable[[Connection, Rows], None]

# Rows per statement: far below SQLite's 32766 variables for the widest table (18
# columns), and short enough that a statement's text stays cheap to prepare.
CHUNK = 200


def _chunks(rows: Rows) -> Iterator[Rows]:
    for start in range(0, len(rows), CHUNK):
        yield rows[start : start + CHUNK]


def _placeholders(width: int, count: int) -> str:
    one = "(" + ",".join("?" * width) + ")"
    return ",".join([one] * count)


class BulkInsert:
    """``INSERT INTO t (...) VALUES (...), (...), ...``: rows keep their order."""

    def __init__(self, table: Table) -> None:
        self._table = table

    def __call__(self, conn: Connection, rows: Rows) -> None:
        quote = conn.dialect.identifier_preparer.quote
        cols = list(rows[0])
        head = f"INSERT INTO {quote(self._table.name)} ({', '.join(map(quote, cols))}) VALUES "
        for chunk in _chunks(rows):
            params = tuple(row[c] for row in chunk for c in cols)
            conn.exec_driver_sql(head + _placeholders(len(cols), len(chunk)), params)


class BulkUpdate:
    """``UPDATE t SET ... FROM (VALUES ...) AS v WHERE t.key = v.key ...``.

    ``match`` and ``assign`` map columns of ``table`` to the row keys that hold their
    values; ``set_constant`` (column to SQL) and ``where_constant`` (whole conditions) add
    SQL that is the same for every row (``lease_owner = NULL``, ``"t".dkim IS NULL``).
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
        self._table = table
        self._keys = [*match.values(), *assign.values()]
        # SQLite names the columns of a VALUES subquery column1, column2, ...
        col = {key: f"v.column{i}" for i, key in enumerate(self._keys, 1)}
        name = f'"{table.name}"'
        sets = [f'"{c}" = {col[k]}' for c, k in assign.items()]
        sets += [f'"{c}" = {sql}' for c, sql in (set_constant or {}).items()]
        where = [f'{name}."{c}" = {col[k]}' for c, k in match.items()]
        where += where_constant
        self._head = f"UPDATE {name} SET {', '.join(sets)} FROM (VALUES "
        self._tail = f") AS v WHERE {' AND '.join(where)}"

    def __call__(self, conn: Connection, rows: Rows) -> None:
        keys = self._keys
        for chunk in _chunks(rows):
            params = tuple(row[k] for row in chunk for k in keys)
            sql = self._head + _placeholders(len(keys), len(chunk)) + self._tail
            conn.exec_driver_sql(sql, params)


class BulkIn:
    """A statement with one list parameter (an expanding ``IN``, or PostgreSQL's
    ``= ANY`` of an array), run once for all rows' values."""

    def __init__(self, stmt: Executable, param: str, key: str) -> None:
        self._stmt = stmt
        self._param = param
        self._key = key

    def __call__(self, conn: Connection, rows: Rows) -> None:
        for chunk in _chunks(rows):
            conn.execute(self._stmt, {self._param: [row[self._key] for row in chunk]})
