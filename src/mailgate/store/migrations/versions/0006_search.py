"""The dashboard's sessions as they are made (``ui_sessions``), and its subject and tag
search on an index: a ``message_tags`` table (one row
per tag of a message) on both engines, and for the subject an FTS5 table with the trigram
tokenizer on SQLite and a pg_trgm GIN index on PostgreSQL (both find a substring of at
least 3 characters without reading the messages).

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-14

Online: new tables, indexes and triggers (a 0005 node makes sessions without a row: they
are not listed, and end as before). The triggers fill both in the statement that
inserts a message, so the mail a node of revision 0005 accepts while nodes upgrade one by
one is indexed too; deleting a message (retention) deletes its rows (a foreign key with ON
DELETE CASCADE for tags, a trigger for the FTS5 rows). The existing messages are indexed
here, in the upgrade's transaction: on SQLite about a minute per million messages (``serve``
applies it at start), on PostgreSQL the GIN index holds writes to messages while it builds.

SQLite: the FTS5 rows are keyed by the messages' rowid. A revision that rebuilds
``messages`` (a batch "move and copy") renumbers it: such a revision must rebuild
``messages_subject_fts`` too (``INSERT INTO messages_subject_fts(messages_subject_fts)
VALUES('delete-all')`` and the backfill below). The search checks every hit against
``messages.subject`` anyway, so a stale row can hide a message, never show a wrong one.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

online = True

# A tag longer than the API allows (submission.prepare.MAX_TAG_LENGTH) is not indexed.
_TAG_MAX = 200

SQLITE_UP = (
    "CREATE VIRTUAL TABLE messages_subject_fts USING fts5(subject, tokenize='trigram')",
    """
    CREATE TRIGGER messages_subject_insert AFTER INSERT ON messages
    BEGIN
        INSERT INTO messages_subject_fts (rowid, subject) VALUES (NEW.rowid, NEW.subject);
    END
    """,
    """
    CREATE TRIGGER messages_subject_update AFTER UPDATE OF subject ON messages
    BEGIN
        UPDATE messages_subject_fts SET subject = NEW.subject WHERE rowid = NEW.rowid;
    END
    """,
    """
    CREATE TRIGGER messages_subject_delete AFTER DELETE ON messages
    BEGIN
        DELETE FROM messages_subject_fts WHERE rowid = OLD.rowid;
    END
    """,
    f"""
    CREATE TRIGGER messages_tags_insert AFTER INSERT ON messages
    WHEN NEW.tags <> '[]' AND json_valid(NEW.tags) AND json_type(NEW.tags) = 'array'
    BEGIN
        INSERT OR IGNORE INTO message_tags (message_id, tag, created_at)
        SELECT NEW.id, j.value, NEW.created_at FROM json_each(NEW.tags) j
        WHERE j.type = 'text' AND length(j.value) <= {_TAG_MAX};
    END
    """,
    "INSERT INTO messages_subject_fts (rowid, subject) SELECT rowid, subject FROM messages",
    f"""
    INSERT OR IGNORE INTO message_tags (message_id, tag, created_at)
    SELECT m.id, j.value, m.created_at FROM messages m, json_each(m.tags) j
    WHERE m.tags <> '[]' AND json_valid(m.tags) AND json_type(m.tags) = 'array'
    AND j.type = 'text'
    AND length(j.value) <= {_TAG_MAX}
    """,
)

SQLITE_DOWN = (
    "DROP TRIGGER IF EXISTS messages_tags_insert",
    "DROP TRIGGER IF EXISTS messages_subject_delete",
    "DROP TRIGGER IF EXISTS messages_subject_update",
    "DROP TRIGGER IF EXISTS messages_subject_insert",
    "DROP TABLE IF EXISTS messages_subject_fts",
)

# Row-level, with a WHEN that PostgreSQL evaluates without calling the function: mail
# without tags (all SMTP mail) costs nothing more.
POSTGRES_UP = (
    "CREATE EXTENSION IF NOT EXISTS pg_trgm",
    "CREATE INDEX ix_messages_subject_trgm ON messages USING gin (subject gin_trgm_ops)",
    f"""
    CREATE FUNCTION mailgate_message_tags() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        INSERT INTO message_tags (message_id, tag, created_at)
        SELECT DISTINCT NEW.id, t, NEW.created_at FROM jsonb_array_elements_text(
            CASE WHEN jsonb_typeof(NEW.tags::jsonb) = 'array' THEN NEW.tags::jsonb
            ELSE '[]' END
        ) t
        WHERE length(t) <= {_TAG_MAX};
        RETURN NULL;
    END $$
    """,
    """
    CREATE TRIGGER messages_tags_insert AFTER INSERT ON messages
    FOR EACH ROW WHEN (NEW.tags <> '[]') EXECUTE FUNCTION mailgate_message_tags()
    """,
    f"""
    INSERT INTO message_tags (message_id, tag, created_at)
    SELECT DISTINCT m.id, t, m.created_at FROM messages m, jsonb_array_elements_text(
        CASE WHEN jsonb_typeof(m.tags::jsonb) = 'array' THEN m.tags::jsonb ELSE '[]' END
    ) t
    WHERE m.tags <> '[]' AND length(t) <= {_TAG_MAX}
    """,
)

POSTGRES_DOWN = (
    "DROP TRIGGER IF EXISTS messages_tags_insert ON messages",
    "DROP FUNCTION IF EXISTS mailgate_message_tags()",
    "DROP INDEX IF EXISTS ix_messages_subject_trgm",
)


def upgrade() -> None:
    op.create_table(
        "message_tags",
        sa.Column("message_id", sa.String(36), primary_key=True),
        sa.Column("tag", sa.Text, primary_key=True),
        sa.Column("created_at", sa.Double, nullable=False),
        sa.ForeignKeyConstraint(["message_id"], ["messages.id"], ondelete="CASCADE"),
        sqlite_with_rowid=False,
    )
    # A tag's messages, newest first: the search walks it and stops at a page.
    op.create_index("ix_message_tags_tag", "message_tags", ["tag", "created_at", "message_id"])
    op.create_table(
        "ui_sessions",
        sa.Column("nonce", sa.String(64), primary_key=True),
        sa.Column("key_id", sa.String(32), nullable=False),
        sa.Column("created_at", sa.Double, nullable=False),
        sa.Column("expires_at", sa.Double, nullable=False),
        sa.Column("client", sa.Text, nullable=False),
        sa.Column("user_agent", sa.Text, nullable=False),
    )
    op.create_index("ix_ui_sessions_key", "ui_sessions", ["key_id", "expires_at"])
    bind = op.get_bind()
    for ddl in SQLITE_UP if bind.dialect.name == "sqlite" else POSTGRES_UP:
        op.execute(ddl)


def downgrade() -> None:
    bind = op.get_bind()
    for ddl in SQLITE_DOWN if bind.dialect.name == "sqlite" else POSTGRES_DOWN:
        op.execute(ddl)
    op.drop_index("ix_ui_sessions_key", table_name="ui_sessions")
    op.drop_table("ui_sessions")
    op.drop_index("ix_message_tags_tag", table_name="message_tags")
    op.drop_table("message_tags")
