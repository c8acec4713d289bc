"""Story: a queue made by an older mailgate is upgraded in place and its mail goes out;
a database from a newer mailgate is refused, naming both revisions."""

from __future__ import annotations

import asyncio
import smtplib
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from click.testing import CliRunner
from sqlalchemy import Connection, insert, inspect, select, text

from mailgate.cli import main
from mailgate.credentials import hash_key
from mailgate.models import NewMessage
from mailgate.store import Store, migrate
from mailgate.store.bodies import BodyReader
from mailgate.store.engine import create_engine
from mailgate.store.schema import (
    SQLITE_SUBJECT_FTS,
    SQLITE_SUBJECT_PENDING,
    messages,
    metadata,
)

KEY = "mg_0123456789ab_" + "k" * 40


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request, tmp_path: Path) -> str:  # type: ignore[no-untyped-def]
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'data' / 'mailgate.db'}"
    return str(request.getfixturevalue("pg_url"))


def _async_url(url: str) -> str:
    if url.startswith("sqlite:"):
        return url.replace("sqlite:", "sqlite+aiosqlite:", 1)
    return "postgresql+asyncpg://" + url.split("://", 1)[1]


def _on_connection(url: str, fn: Any) -> Any:
    """Run ``fn(sync_connection)`` in one committed transaction."""

    async def go() -> Any:
        engine = create_engine(_async_url(url))
        try:
            async with engine.begin() as conn:
                return await conn.run_sync(fn)
        finally:
            await engine.dispose()

    return asyncio.run(go())


async def _upgrade(url: str) -> migrate.SchemaStatus:
    """What ``mailgate db upgrade`` does."""
    engine = create_engine(_async_url(url))
    try:
        return await migrate.upgrade(engine)
    finally:
        await engine.dispose()


def _base_database(url: str, *, legacy: bool) -> None:
    """A database at the base revision; ``legacy``: as mailgate made it before Alembic."""

    def build(conn: Connection) -> None:
        command.upgrade(migrate.alembic_config(conn), migrate.BASE)
        if legacy:
            conn.execute(text("DROP TABLE alembic_version"))

    _on_connection(url, build)


def _fill_base(url: str, now: float) -> None:
    """Mail as the base schema holds it: a queued message with two deliveries and their
    events, a deferred one, a key, a template and a suppression."""

    def fill(conn: Connection) -> None:
        raw = b"From: app@example.com\r\nTo: a@dest.test\r\nSubject: old\r\n\r\nold body\r\n"
        for mid, status, rcpts in (
            ("old-queued", "queued", ["a@dest.test", "b@dest.test"]),
            ("old-deferred", "deferred", ["c@dest.test"]),
        ):
            conn.execute(
                text(
                    "INSERT INTO messages (id, created_at, sender, subject, message_id_header,"
                    " source, credential, client_address, size, raw, key_id, status,"
                    " display_to, tags, metadata, tracking, scheduled_at, dkim) VALUES"
                    " (:id, :at, 'app@example.com', 'old', '<old@x>', 'smtp', 'key:app',"
                    " '127.0.0.1', :size, :raw, '0123456789ab', :status, '[]', '[]', '{}',"
                    " '{}', NULL, NULL)"
                ),
                {"id": mid, "at": now - 60, "size": len(raw), "raw": raw, "status": status},
            )
            for idx, rcpt in enumerate(rcpts):
                conn.execute(
                    text(
                        "INSERT INTO deliveries (message_id, rcpt_idx, recipient, status, lane,"
                        " attempts, next_attempt_at, lease_owner, provider, last_response,"
                        " updated_at) VALUES (:m, :i, :r, :s, :lane, :att, :due, NULL, '',"
                        " '', :at)"
                    ),
                    {
                        "m": mid,
                        "i": idx,
                        "r": rcpt,
                        "s": status,
                        "lane": 1 if status == "deferred" else 0,
                        "att": 1 if status == "deferred" else 0,
                        "due": now - 1,
                        "at": now - 60,
                    },
                )
                conn.execute(
                    text(
                        "INSERT INTO events (message_id, rcpt_idx, recipient, type, at,"
                        " provider, response, detail) VALUES (:m, :i, :r, 'queued', :at, '',"
                        " '', '')"
                    ),
                    {"m": mid, "i": idx, "r": rcpt, "at": now - 60},
                )
        conn.execute(
            text(
                "INSERT INTO api_keys (id, name, key_hash, scope, domains, created_at,"
                " revoked_at, rate) VALUES ('0123456789ab', 'app', :h, 'send', '', :at, NULL,"
                " '')"
            ),
            {"h": hash_key(KEY), "at": now - 3600},
        )
        conn.execute(
            text(
                "INSERT INTO templates (id, name, subject, html, text, active, created_at,"
                " updated_at) VALUES ('tpl-old', 'old', 'Hi {{ name }}', '', 'Hello', 1, :at,"
                " :at)"
            ),
            {"at": now - 3600},
        )
        conn.execute(
            text(
                "INSERT INTO suppressions (address, reason, detail, message_id, created_at)"
                " VALUES ('gone@dest.test', 'manual', '', '', :at)"
            ),
            {"at": now - 3600},
        )

    _on_connection(url, fill)


@pytest.mark.parametrize("legacy", [False, True], ids=["alembic-base", "pre-alembic"])
def test_base_database_is_upgraded_and_its_mail_delivered(
    relay_factory, db_url: str, tmp_path: Path, legacy: bool
) -> None:  # type: ignore[no-untyped-def]
    _base_database(db_url, legacy=legacy)
    _fill_base(db_url, time.time())

    if db_url.startswith("postgresql"):
        # Revision 0002 is offline: on PostgreSQL serve refuses, naming what to run.
        with pytest.raises(migrate.SchemaMismatch, match="mailgate db upgrade") as refused:
            asyncio.run(Store.open(_async_url(db_url)))
        assert migrate.BASE in str(refused.value) and "0002" in str(refused.value)
        upgraded = asyncio.run(_upgrade(db_url))
        assert upgraded.current == migrate.BASE and upgraded.pending
    relay = relay_factory(database={"url": db_url})
    found = relay.call(migrate.status(relay.store.engine))
    assert found.up_to_date and found.current == migrate.head()

    for mid, rcpts in (("old-queued", 2), ("old-deferred", 1)):
        statuses = relay.wait_status(
            mid, lambda s, n=rcpts: len(s) == n and set(s.values()) == {"sent"}
        )
        assert len(statuses) == rcpts
    captured = list((tmp_path / "maildir" / "new").iterdir())
    assert len(captured) == 3
    assert all(b"old body" in p.read_bytes() for p in captured)

    # The old key, template and suppression work after the upgrade.
    assert relay.call(relay.store.templates.get("tpl-old")) is not None
    assert relay.call(relay.store.suppressions.get("gone@dest.test")) is not None
    with smtplib.SMTP("127.0.0.1", relay.port()) as client:
        client.login("apikey", KEY)
        refused = client.sendmail("app@example.com", ["new@dest.test"], b"Subject: new\r\n\r\nx")
    assert refused == {}


_SQLITE_ONLY = (SQLITE_SUBJECT_FTS, SQLITE_SUBJECT_PENDING)


def _not_fts(name: str | None, type_: str, parent: Any) -> bool:
    """SQLite's FTS5 table (and its shadow tables) and the subjects waiting for it, which
    no Table in schema.py describes."""
    return not (type_ == "table" and (name or "").startswith(_SQLITE_ONLY))


def test_schema_of_the_migrations_is_the_schema_the_code_uses(db_url: str) -> None:
    def compare(conn: Connection) -> tuple[list[Any], set[str]]:
        command.upgrade(migrate.alembic_config(conn), "head")

        def on_this_engine(obj: Any, name: Any, type_: str, reflected: bool, to: Any) -> bool:
            # An Index(...).ddl_if(dialect=...) of another engine (Alembic ignores ddl_if).
            only = getattr(obj, "_ddl_if", None)
            return only is None or only.dialect in (None, conn.dialect.name)

        context = MigrationContext.configure(
            conn, opts={"include_name": _not_fts, "include_object": on_this_engine}
        )
        if conn.dialect.name == "sqlite":
            extra = {r[0] for r in conn.execute(text("SELECT name FROM sqlite_master"))}
        else:
            extra = {
                r[0]
                for r in conn.execute(text("SELECT tgname FROM pg_trigger WHERE NOT tgisinternal"))
            }
        return list(compare_metadata(context, metadata)), extra

    diffs, extra = _on_connection(db_url, compare)
    assert diffs == []
    # What schema.py cannot hold: the search's triggers (and on SQLite its FTS5 table).
    assert "messages_tags_insert" in extra
    if db_url.startswith("sqlite"):
        assert {*_SQLITE_ONLY, "messages_subject_insert", "messages_subject_delete"} <= extra


def test_a_newer_database_is_refused_naming_both_revisions(db_url: str, tmp_path: Path) -> None:
    def newer(conn: Connection) -> None:
        command.upgrade(migrate.alembic_config(conn), "head")
        conn.execute(text("UPDATE alembic_version SET version_num = '9999'"))

    _on_connection(db_url, newer)

    async def open_it() -> None:
        store = await Store.open(_async_url(db_url))
        await store.close()

    with pytest.raises(migrate.SchemaMismatch) as refused:
        asyncio.run(open_it())
    assert "9999" in str(refused.value) and migrate.head() in str(refused.value)

    config = tmp_path / "relay.toml"
    config.write_text(
        f'[server]\nhostname = "relay.test"\ndata_dir = "{tmp_path / "data"}"\n'
        f'[database]\nurl = "{db_url}"\n'
        '[smtp]\nlisten = ["127.0.0.1:0"]\n[http]\nlisten = []\n'
        f'[[providers]]\nname = "c"\nkind = "maildir"\npath = "{tmp_path / "m"}"\n'
    )
    served = subprocess.run(
        [sys.executable, "-m", "mailgate.cli", "serve", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert served.returncode != 0
    assert "9999" in served.stderr and migrate.head() in served.stderr
    assert "Traceback" not in served.stderr


def test_db_status_and_upgrade_commands(db_url: str, tmp_path: Path) -> None:
    _base_database(db_url, legacy=False)
    config = tmp_path / "relay.toml"
    config.write_text(
        f'[server]\nhostname = "relay.test"\ndata_dir = "{tmp_path / "data"}"\n'
        f'[database]\nurl = "{db_url}"\n'
        f'[[providers]]\nname = "c"\nkind = "maildir"\npath = "{tmp_path / "m"}"\n'
    )
    runner = CliRunner()
    behind = runner.invoke(main, ["db", "status", "--config", str(config)])
    assert behind.exit_code == 1, behind.output
    assert f"database revision: {migrate.BASE}" in behind.output
    assert f"newest revision:   {migrate.head()}" in behind.output
    assert "pending" in behind.output
    # Other commands leave an older schema alone (a serve of that release may run beside
    # them) and say what to do.
    listed = runner.invoke(main, ["queue", "list", "--config", str(config)])
    assert listed.exit_code == 1, listed.output
    assert f"at revision {migrate.BASE}, this mailgate's is {migrate.head()}" in listed.output
    assert "mailgate db upgrade" in listed.output
    still = runner.invoke(main, ["db", "status", "--config", str(config)])
    assert f"database revision: {migrate.BASE}" in still.output

    upgraded = runner.invoke(main, ["db", "upgrade", "--config", str(config)])
    assert upgraded.exit_code == 0, upgraded.output
    assert f"from {migrate.BASE} to {migrate.head()}" in upgraded.output

    current = runner.invoke(main, ["db", "status", "--config", str(config)])
    assert current.exit_code == 0, current.output
    assert "up to date" in current.output
    again = runner.invoke(main, ["db", "upgrade", "--config", str(config)])
    assert again.exit_code == 0 and "up to date" in again.output
    assert runner.invoke(main, ["queue", "list", "--config", str(config)]).exit_code == 0


def test_revision_0008_reads_bodies_stored_before_and_moves_them_back_on_downgrade(
    db_url: str,
) -> None:
    """A big body a 0007 node stored in messages.raw is read from there after the upgrade;
    one stored after it (in message_bodies on SQLite) goes back into messages.raw when
    0008 is downgraded."""
    old = b"Subject: old\r\n\r\n" + b"o" * (2 * 1024 * 1024)
    new = b"Subject: new\r\n\r\n" + bytes(range(256)) * 8192
    head = b"Received: from x by relay.test; Tue, 14 Nov 2023 00:00:00 +0000\r\n"

    def at_0007(conn: Connection) -> None:
        command.upgrade(migrate.alembic_config(conn), "0007")
        row = {"id": "old-big", "created_at": 1.0, "sender": "a@x.test", "source": "smtp"}
        conn.execute(insert(messages).values(**row, size=len(old), raw=old))

    _on_connection(db_url, at_0007)

    async def upgraded() -> None:
        store = await Store.open(_async_url(db_url))  # applies 0008: online
        reader = BodyReader(db_url)
        try:
            await store.enqueue(
                [NewMessage("new-big", 2.0, "a@x.test", ["b@y.test"], new, head=head)]
            )
            assert await reader.read("old-big") == old
            assert await reader.read("new-big") == head + new
        finally:
            await reader.close()
            await store.close()

    asyncio.run(upgraded())

    def downgrade(conn: Connection) -> dict[str, bytes]:
        command.downgrade(migrate.alembic_config(conn), "0007")
        assert "message_bodies" not in inspect(conn).get_table_names()
        return {r[0]: bytes(r[1]) for r in conn.execute(select(messages.c.id, messages.c.raw))}

    assert _on_connection(db_url, downgrade) == {"old-big": old, "new-big": head + new}


def test_revision_0012_downgrade_keeps_the_deliveries_indexes(db_url: str) -> None:
    """Its column dropped in place: a batch copy of ``deliveries`` on SQLite lost the
    expression index on lower(recipient) (the dashboard's recipient search)."""

    def indexes(conn: Any) -> set[str]:
        if conn.dialect.name == "sqlite":
            sql = "SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'deliveries'"
        else:
            sql = "SELECT indexname FROM pg_indexes WHERE tablename = 'deliveries'"
        return {str(r[0]) for r in conn.execute(text(sql))}

    def down(conn: Any) -> set[str]:
        command.upgrade(migrate.alembic_config(conn), "head")
        before = indexes(conn)
        command.downgrade(migrate.alembic_config(conn), "0011")
        assert indexes(conn) == before
        return before

    assert "ix_deliveries_recipient" in _on_connection(db_url, down)
