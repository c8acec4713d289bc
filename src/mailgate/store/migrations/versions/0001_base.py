"""The base schema: the queue as it was before migrations (SCHEMA_VERSION 1).

Revision ID: 0001
Revises:
Create Date: 2026-12-03

A database made by mailgate before Alembic has this schema and a ``schema_version`` table;
mailgate.store.migrate stamps such a database with this revision instead of running it.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

online = True

_BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "schema_version",
        sa.Column("version", sa.Integer, primary_key=True),
        sa.Column("applied_at", sa.Double, nullable=False),
    )
    op.create_table(
        "messages",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("created_at", sa.Double, nullable=False),
        sa.Column("sender", sa.Text, nullable=False),
        sa.Column("subject", sa.Text, nullable=False),
        sa.Column("message_id_header", sa.Text, nullable=False),
        sa.Column("source", sa.String(16), nullable=False),
        sa.Column("credential", sa.Text, nullable=False),
        sa.Column("client_address", sa.Text, nullable=False),
        sa.Column("size", sa.Integer, nullable=False),
        sa.Column("raw", sa.LargeBinary, nullable=False),
        sa.Column("key_id", sa.String(32), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("display_to", sa.Text, nullable=False),
        sa.Column("tags", sa.Text, nullable=False),
        sa.Column("metadata", sa.Text, nullable=False),
        sa.Column("tracking", sa.Text, nullable=False),
        sa.Column("scheduled_at", sa.Double, nullable=True),
        sa.Column("dkim", sa.LargeBinary, nullable=True),
    )
    op.create_index("ix_messages_created_at", "messages", ["created_at"])
    op.create_index("ix_messages_key_created", "messages", ["key_id", "created_at"])
    op.create_index("ix_messages_status", "messages", ["status"])
    op.create_table(
        "deliveries",
        sa.Column("message_id", sa.String(36), primary_key=True),
        sa.Column("rcpt_idx", sa.Integer, primary_key=True),
        sa.Column("recipient", sa.Text, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("lane", sa.SmallInteger, nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("next_attempt_at", sa.Double, nullable=True),
        sa.Column("lease_owner", sa.Text, nullable=True),
        sa.Column("provider", sa.Text, nullable=False),
        sa.Column("last_response", sa.Text, nullable=False),
        sa.Column("updated_at", sa.Double, nullable=False),
        sa.ForeignKeyConstraint(["message_id"], ["messages.id"], ondelete="CASCADE"),
    )
    op.create_index("ix_deliveries_due", "deliveries", ["lane", "next_attempt_at"])
    op.create_index("ix_deliveries_lease_owner", "deliveries", ["lease_owner"])
    op.create_index("ix_deliveries_status", "deliveries", ["status"])
    op.create_table(
        "events",
        sa.Column("id", _BigId, primary_key=True, autoincrement=True),
        sa.Column("message_id", sa.String(36), nullable=False),
        sa.Column("rcpt_idx", sa.Integer, nullable=True),
        sa.Column("recipient", sa.Text, nullable=False),
        sa.Column("type", sa.String(16), nullable=False),
        sa.Column("at", sa.Double, nullable=False),
        sa.Column("provider", sa.Text, nullable=False),
        sa.Column("response", sa.Text, nullable=False),
        sa.Column("detail", sa.Text, nullable=False),
        sa.ForeignKeyConstraint(["message_id"], ["messages.id"], ondelete="CASCADE"),
    )
    op.create_index("ix_events_message", "events", ["message_id", "id"])
    op.create_index("ix_events_at", "events", ["at"])
    op.create_table(
        "api_keys",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("name", sa.String(128), nullable=False, unique=True),
        sa.Column("key_hash", sa.String(64), nullable=False),
        sa.Column("scope", sa.String(16), nullable=False),
        sa.Column("domains", sa.Text, nullable=False),
        sa.Column("created_at", sa.Double, nullable=False),
        sa.Column("revoked_at", sa.Double, nullable=True),
        sa.Column("rate", sa.String(32), nullable=False),
    )
    op.create_table(
        "templates",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("subject", sa.Text, nullable=False),
        sa.Column("html", sa.Text, nullable=False),
        sa.Column("text", sa.Text, nullable=False),
        sa.Column("active", sa.SmallInteger, nullable=False),
        sa.Column("created_at", sa.Double, nullable=False),
        sa.Column("updated_at", sa.Double, nullable=False),
    )
    op.create_table(
        "idempotency",
        sa.Column("key_id", sa.String(32), primary_key=True),
        sa.Column("idem_key", sa.String(255), primary_key=True),
        sa.Column("request_hash", sa.String(64), nullable=False),
        sa.Column("status_code", sa.Integer, nullable=False),
        sa.Column("body", sa.Text, nullable=False),
        sa.Column("created_at", sa.Double, nullable=False),
    )
    op.create_index("ix_idempotency_created", "idempotency", ["created_at"])
    op.create_table(
        "suppressions",
        sa.Column("address", sa.String(320), primary_key=True),
        sa.Column("reason", sa.String(32), nullable=False),
        sa.Column("detail", sa.Text, nullable=False),
        sa.Column("message_id", sa.String(36), nullable=False),
        sa.Column("created_at", sa.Double, nullable=False),
    )
    op.create_index("ix_suppressions_created", "suppressions", ["created_at"])
    op.bulk_insert(
        sa.table("schema_version", sa.column("version"), sa.column("applied_at")),
        [{"version": 1, "applied_at": 0.0}],
    )


def downgrade() -> None:
    for table in (
        "suppressions",
        "idempotency",
        "templates",
        "api_keys",
        "events",
        "deliveries",
        "messages",
        "schema_version",
    ):
        op.drop_table(table)
