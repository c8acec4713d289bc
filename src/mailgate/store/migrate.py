"""Schema migrations (Alembic) for SQLite and PostgreSQL: status, upgrade, and the check
``mailgate serve`` makes before it opens the queue.

The revisions live in ``store/migrations/versions``; each says whether it is ``online``
(nodes of the previous revision keep working beside it). ``serve`` applies pending
online revisions by itself; on PostgreSQL it refuses to start below an offline one (the
operator stops every node and runs ``mailgate db upgrade``), while on SQLite, which has
one node, it applies those too. It refuses a database whose revision it does not know
(made by a newer mailgate), naming both revisions.

A database made before migrations existed (a ``schema_version`` table, no
``alembic_version``) has the base revision's schema: it is stamped, not rebuilt.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, inspect, text

from mailgate.exceptions import MailgateError
from mailgate.store.engine import write_connection

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine

BASE = "0001"
_LOCATION = str(Path(__file__).with_name("migrations"))
# Several nodes may start at once: one upgrades, the others wait for its commit.
_PG_LOCK = 0x6D61696C  # "mail"


class SchemaMismatch(MailgateError):
    """The database's revision is one this mailgate cannot (or may not) run against."""


@dataclass(frozen=True, slots=True)
class SchemaStatus:
    current: str | None  # None: an empty database
    head: str
    pending: tuple[str, ...]  # revisions to apply, oldest first
    known: bool  # False: the database is at a revision this mailgate does not have
    offline: tuple[str, ...] = ()  # pending revisions that need every node stopped

    @property
    def up_to_date(self) -> bool:
        return self.known and not self.pending


def alembic_config(conn: Connection | None = None) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", _LOCATION)
    if conn is not None:
        cfg.attributes["connection"] = conn
    return cfg


def _script() -> ScriptDirectory:
    return ScriptDirectory.from_config(alembic_config())


def head() -> str:
    return str(_script().get_current_head())


def _current(conn: Connection) -> str | None:
    revision = MigrationContext.configure(conn).get_current_revision()
    if revision is None and inspect(conn).has_table("schema_version"):
        return BASE  # made before migrations: the base schema
    return revision


def _status(conn: Connection) -> SchemaStatus:
    script = _script()
    top = str(script.get_current_head())
    current = _current(conn)
    known = current is None or current in {r.revision for r in script.walk_revisions()}
    if not known:
        return SchemaStatus(current, top, (), False)
    pending = [r for r in script.iterate_revisions(top, current)]
    pending.reverse()
    offline = tuple(r.revision for r in pending if not getattr(r.module, "online", False))
    return SchemaStatus(current, top, tuple(r.revision for r in pending), True, offline)


def _upgrade(conn: Connection, allow_offline: bool, only_new: bool = False) -> SchemaStatus:
    from alembic import command

    if conn.dialect.name == "postgresql":
        conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _PG_LOCK})
    status = _status(conn)
    if not status.known:
        raise SchemaMismatch(
            f"the database schema is at revision {status.current}, which this mailgate does "
            f"not know (its newest is {status.head}): it was upgraded by a newer mailgate; "
            "run that version"
        )
    if only_new and status.pending and status.current is not None:
        # A command beside a running serve (of the release before an upgrade) would have
        # changed the schema under it; serve or `db upgrade` apply it.
        raise SchemaMismatch(
            f"the database schema is at revision {status.current}, this mailgate's is "
            f"{status.head}: run mailgate db upgrade, or restart mailgate serve, which "
            "applies it"
        )
    # An empty database has no node of an older revision to run beside: build it whole.
    if status.offline and not allow_offline and status.current is not None:
        raise SchemaMismatch(
            f"the database schema is at revision {status.current} and revision "
            f"{status.offline[0]} (of {status.head}) must be applied with every node stopped:"
            " run mailgate db upgrade"
        )
    if status.pending:
        cfg = alembic_config(conn)
        if (
            status.current == BASE
            and MigrationContext.configure(conn).get_current_revision() is None
        ):
            command.stamp(cfg, BASE)
        command.upgrade(cfg, "head")
    return status


async def upgrade(
    engine: AsyncEngine, *, allow_offline: bool = True, only_new: bool = False
) -> SchemaStatus:
    """Apply the pending revisions in one transaction; the status found before.

    ``allow_offline=False`` (serve) refuses when a pending revision is not online-safe;
    ``only_new`` (the CLI's commands) builds an empty database but upgrades none.
    """
    conn = await write_connection(engine)
    try:
        async with conn.begin():
            result: SchemaStatus = await conn.run_sync(_upgrade, allow_offline, only_new)
            return result
    finally:
        await conn.close()


async def status(engine: AsyncEngine) -> SchemaStatus:
    async with engine.connect() as conn:
        result: SchemaStatus = await conn.run_sync(_status)
        return result
