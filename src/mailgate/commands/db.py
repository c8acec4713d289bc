"""``mailgate db``: the schema's revision, upgrading it, and what the database holds."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, TypeVar

import click

from mailgate.commands.common import config_option, run_or_exit, settings_or_exit, timestamp

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine

T = TypeVar("T")


@click.group()
def db() -> None:
    """The queue database: schema revision, upgrades and statistics."""


async def _engine_call(url: str, fn: Callable[[AsyncEngine], Awaitable[T]]) -> T:
    from mailgate.store.engine import create_engine

    engine = create_engine(url)
    try:
        return await fn(engine)
    finally:
        await engine.dispose()


@db.command("status")
@config_option
def db_status(config_path: str) -> None:
    """Print the database's schema revision and this mailgate's newest; exit 1 if they
    differ."""
    from mailgate.store import migrate

    settings = settings_or_exit(config_path)
    found = run_or_exit(_engine_call(settings.database_url, migrate.status))
    click.echo(f"database revision: {found.current or '(empty database)'}")
    click.echo(f"newest revision:   {found.head}")
    if not found.known:
        click.echo("state: the database is newer than this mailgate; run a newer mailgate")
        raise SystemExit(1)
    if found.pending:
        how = "mailgate db upgrade" if found.offline else "mailgate db upgrade, or mailgate serve"
        click.echo(f"state: {len(found.pending)} revision(s) pending ({', '.join(found.pending)})")
        click.echo(f"apply with: {how}")
        if found.offline:
            click.echo(f"stop every node first: {', '.join(found.offline)} cannot run online")
        raise SystemExit(1)
    click.echo("state: up to date")


@db.command("upgrade")
@config_option
def db_upgrade(config_path: str) -> None:
    """Apply every pending schema revision (stop all nodes first if one is offline)."""
    from mailgate.store import migrate

    settings = settings_or_exit(config_path)
    found = run_or_exit(_engine_call(settings.database_url, migrate.upgrade))
    if found.pending:
        was = found.current or "(empty database)"
        click.echo(f"upgraded the database from {was} to {found.head}")
    else:
        click.echo(f"the database is up to date ({found.head})")


@db.command("stats")
@config_option
@click.option("--json", "as_json", is_flag=True, help="One JSON object instead of a table.")
def db_stats(config_path: str, as_json: bool) -> None:
    """Print the database's size, its rows per table and each table's oldest row (what
    [retention] keeps). Counts every row, so it takes a while on a large queue."""
    import json
    from pathlib import Path

    from sqlalchemy.engine import make_url

    from mailgate.store.retention import DbStats, read_stats

    settings = settings_or_exit(config_path)
    found: DbStats = run_or_exit(_engine_call(settings.database_url, read_stats))
    url = make_url(settings.database_url)
    wal = 0
    if found.dialect == "sqlite" and url.database:
        wal_file = Path(url.database + "-wal")
        wal = wal_file.stat().st_size if wal_file.exists() else 0
    if as_json:
        doc = {
            "engine": found.dialect,
            "size": found.size,
            "free": found.free,
            "wal": wal,
            "tables": {t.name: {"rows": t.rows, "oldest": t.oldest} for t in found.tables},
        }
        click.echo(json.dumps(doc, indent=2))
        return
    click.echo(f"engine: {found.dialect}")
    click.echo(f"size:   {found.size} bytes" + (f" (+ {wal} bytes of WAL)" if wal else ""))
    if found.dialect == "sqlite":
        click.echo(f"free:   {found.free} bytes inside the file, reused before it grows")
    click.echo(f"{'table':<24} {'rows':>12}  oldest")
    for t in found.tables:
        click.echo(f"{t.name:<24} {t.rows:>12}  {timestamp(t.oldest)}")
