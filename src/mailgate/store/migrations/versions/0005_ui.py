"""The dashboard's second slice: when each API key was last used, the dashboard sessions
ended by a logout, and the indexes its message search needs at 1,000,000 messages.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-12

Online: a nullable column, a new table and indexes, none of which nodes of revision 0004
read. On PostgreSQL each CREATE INDEX holds writes to its table while it builds (about a
second per million deliveries here); on SQLite ``serve`` applies it at start.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

online = True


def upgrade() -> None:
    with op.batch_alter_table("api_keys") as batch:
        # Set at most once a minute per key and process (store/keys.py), off the send path.
        batch.add_column(sa.Column("last_used_at", sa.Double, nullable=True))
    op.create_table(
        "ui_sessions_ended",
        sa.Column("nonce", sa.String(64), primary_key=True),
        sa.Column("expires_at", sa.Double, nullable=False),
    )
    # The dashboard's recipient search (case-insensitive, exact address).
    op.create_index("ix_deliveries_recipient", "deliveries", [sa.text("lower(recipient)")])
    # The dashboard's status search pages newest first: (status, created_at), not status.
    op.drop_index("ix_messages_status", table_name="messages")
    op.create_index("ix_messages_status", "messages", ["status", "created_at"])
    # The dashboard's sender search, newest first (exact address, case-insensitive).
    op.create_index(
        "ix_messages_sender", "messages", [sa.text("lower(sender)"), sa.text("created_at")]
    )
    # The dashboard's job search, newest first: only messages that came in a job.
    op.create_index(
        "ix_messages_job",
        "messages",
        ["job_id", "created_at"],
        sqlite_where=sa.text("job_id IS NOT NULL"),
        postgresql_where=sa.text("job_id IS NOT NULL"),
    )


def downgrade() -> None:
    op.drop_index("ix_messages_job", table_name="messages")
    op.drop_index("ix_messages_sender", table_name="messages")
    op.drop_index("ix_messages_status", table_name="messages")
    op.create_index("ix_messages_status", "messages", ["status"])
    op.drop_index("ix_deliveries_recipient", table_name="deliveries")
    op.drop_table("ui_sessions_ended")
    with op.batch_alter_table("api_keys") as batch:
        batch.drop_column("last_used_at")
