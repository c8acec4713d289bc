"""SQLite's subject index filled in bulk: an accepted message's rowid goes to
``messages_subject_pending``, and the relay moves the pending subjects into the FTS5 table
(``messages_subject_fts``) about once a second, many in one statement
(store/subject_index.py).

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-06

The insert trigger of 0006 wrote every message's trigrams in the accept's own transaction.
FTS5 writes a new segment for each statement that inserts into it, so every group commit
of accepts wrote one and merged it later: 88,000 of the 400,000 CPU instructions that
queueing a message took in the writer (callgrind, 17 messages a transaction, one subject
for all). With varied subjects, queueing and indexing a message now take 371,000-387,000
instructions instead of 414,000-418,000 at 17 messages a transaction, 358,000 instead of
373,000 at 40. The search reads the pending rows beside the index's hits (store/ui.py),
so a message is found the moment it is queued, as before.

Online: SQLite only, where ``serve`` applies it at start (PostgreSQL's pg_trgm GIN index
keeps its own pending list: nothing changes there). The downgrade indexes what is
pending and puts 0006's trigger back.
"""

from __future__ import annotations

from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

online = True

_INDEX_PENDING = """
INSERT INTO messages_subject_fts (rowid, subject)
SELECT m.rowid, m.subject FROM messages_subject_pending p
JOIN messages m ON m.rowid = p.message_rowid
"""

SQLITE_UP = (
    "CREATE TABLE messages_subject_pending (message_rowid INTEGER PRIMARY KEY)",
    "DROP TRIGGER messages_subject_insert",
    """
    CREATE TRIGGER messages_subject_insert AFTER INSERT ON messages
    BEGIN
        INSERT OR IGNORE INTO messages_subject_pending (message_rowid) VALUES (NEW.rowid);
    END
    """,
    "DROP TRIGGER messages_subject_delete",
    """
    CREATE TRIGGER messages_subject_delete AFTER DELETE ON messages
    BEGIN
        DELETE FROM messages_subject_fts WHERE rowid = OLD.rowid;
        DELETE FROM messages_subject_pending WHERE message_rowid = OLD.rowid;
    END
    """,
)

SQLITE_DOWN = (
    _INDEX_PENDING,
    "DROP TRIGGER messages_subject_delete",
    """
    CREATE TRIGGER messages_subject_delete AFTER DELETE ON messages
    BEGIN
        DELETE FROM messages_subject_fts WHERE rowid = OLD.rowid;
    END
    """,
    "DROP TRIGGER messages_subject_insert",
    """
    CREATE TRIGGER messages_subject_insert AFTER INSERT ON messages
    BEGIN
        INSERT INTO messages_subject_fts (rowid, subject) VALUES (NEW.rowid, NEW.subject);
    END
    """,
    "DROP TABLE messages_subject_pending",
)


def upgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        for ddl in SQLITE_UP:
            op.execute(ddl)


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        for ddl in SQLITE_DOWN:
            op.execute(ddl)
