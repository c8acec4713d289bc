"""Retention: a mark on messages whose body was purged, the index the body purge walks,
and on SQLite incremental auto-vacuum, so that pages freed by retention go back to the
file system in small steps.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-10

Online on PostgreSQL: a nullable column and an index, which nodes of revision 0003 do not
read. On SQLite (one node, applied by serve itself) a database made before this revision
has ``auto_vacuum=NONE``, which only a VACUUM can change: it rewrites the whole file once,
needing as much free space as the database takes, and holds the queue for its duration
(about a second per 100 MB here). A database created by this mailgate gets the setting
before its first table (store/engine.py) and skips it.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

online = True

_INCREMENTAL = 2  # PRAGMA auto_vacuum's value for INCREMENTAL


def upgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name == "sqlite":
        _sqlite_incremental_vacuum(bind)
    with op.batch_alter_table("messages") as batch:
        # When the body was emptied by [retention] bodies (NULL: the body is there).
        batch.add_column(sa.Column("purged_at", sa.Double, nullable=True))
    op.create_index(
        "ix_messages_unpurged",
        "messages",
        ["created_at"],
        sqlite_where=sa.text("purged_at IS NULL"),
        postgresql_where=sa.text("purged_at IS NULL"),
    )


def _sqlite_incremental_vacuum(bind: sa.Connection) -> None:
    """auto_vacuum=INCREMENTAL on an existing file: VACUUM, which SQLite runs only outside
    a transaction. What earlier revisions did is committed first (with their revision
    stamp), so a crash during the VACUUM leaves the database at revision 0003, whole."""
    if bind.exec_driver_sql("PRAGMA auto_vacuum").scalar() == _INCREMENTAL:
        return
    bind.exec_driver_sql("COMMIT")
    bind.exec_driver_sql("PRAGMA auto_vacuum=INCREMENTAL")
    bind.exec_driver_sql("VACUUM")
    bind.exec_driver_sql("BEGIN IMMEDIATE")


def downgrade() -> None:
    op.drop_index("ix_messages_unpurged", table_name="messages")
    with op.batch_alter_table("messages") as batch:
        batch.drop_column("purged_at")
