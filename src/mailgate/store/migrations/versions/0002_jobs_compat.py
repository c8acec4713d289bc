"""Jobs, provider choice, upstream message ids, default senders, template ids, key quotas.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-03

Offline: the tables and columns are additive, but a node still running the base revision
would claim the new mail and ignore what these columns ask (a pinned provider, a single
attempt without DSN, a paused job), and PostgreSQL builds ix_deliveries_job under a lock.
Stop every node and run ``mailgate db upgrade``; on SQLite, with its one node, ``mailgate
serve`` applies it by itself.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

online = False

_BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.drop_table("schema_version")  # Alembic's alembic_version replaces it
    op.create_table(
        "jobs",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("key_id", sa.String(32), nullable=False),
        sa.Column("source", sa.String(16), nullable=False),
        sa.Column("campaign_id", sa.Text, nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("total", sa.Integer, nullable=False),
        sa.Column("created_at", sa.Double, nullable=False),
        sa.Column("updated_at", sa.Double, nullable=False),
        sa.Column("started_at", sa.Double, nullable=True),
    )
    op.create_index("ix_jobs_key_created", "jobs", ["key_id", "created_at"])
    op.create_table(
        "job_events",
        sa.Column("id", _BigId, primary_key=True, autoincrement=True),
        sa.Column("job_id", sa.String(36), nullable=False),
        sa.Column("type", sa.String(16), nullable=False),
        sa.Column("at", sa.Double, nullable=False),
        sa.Column("detail", sa.Text, nullable=False),
        sa.ForeignKeyConstraint(["job_id"], ["jobs.id"], ondelete="CASCADE"),
    )
    op.create_index("ix_job_events_job", "job_events", ["job_id", "id"])
    with op.batch_alter_table("messages") as batch:
        batch.add_column(sa.Column("job_id", sa.String(36), nullable=True))
        batch.add_column(sa.Column("provider", sa.Text, nullable=False, server_default=""))
        batch.add_column(
            sa.Column("attempt_once", sa.SmallInteger, nullable=False, server_default="0")
        )
    with op.batch_alter_table("deliveries") as batch:
        batch.add_column(sa.Column("job_id", sa.String(36), nullable=True))
        batch.add_column(
            sa.Column("provider_message_id", sa.Text, nullable=False, server_default="")
        )
    op.create_index(
        "ix_deliveries_job",
        "deliveries",
        ["job_id", "status"],
        sqlite_where=sa.text("job_id IS NOT NULL"),
        postgresql_where=sa.text("job_id IS NOT NULL"),
    )
    with op.batch_alter_table("templates") as batch:
        batch.alter_column("id", existing_type=sa.String(36), type_=sa.String(64))
        batch.add_column(sa.Column("from_address", sa.Text, nullable=False, server_default=""))
    with op.batch_alter_table("api_keys") as batch:
        batch.add_column(sa.Column("default_from", sa.Text, nullable=False, server_default=""))
        batch.add_column(sa.Column("quota", sa.String(32), nullable=False, server_default=""))
    op.create_table(
        "quota_usage",
        sa.Column("key_id", sa.String(32), primary_key=True),
        sa.Column("period", sa.String(16), primary_key=True),
        sa.Column("used", sa.Integer, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("quota_usage")
    with op.batch_alter_table("api_keys") as batch:
        batch.drop_column("quota")
        batch.drop_column("default_from")
    with op.batch_alter_table("templates") as batch:
        batch.drop_column("from_address")
        batch.alter_column("id", existing_type=sa.String(64), type_=sa.String(36))
    op.drop_index("ix_deliveries_job", "deliveries")
    with op.batch_alter_table("deliveries") as batch:
        batch.drop_column("provider_message_id")
        batch.drop_column("job_id")
    with op.batch_alter_table("messages") as batch:
        batch.drop_column("attempt_once")
        batch.drop_column("provider")
        batch.drop_column("job_id")
    op.drop_table("job_events")
    op.drop_table("jobs")
    op.create_table(
        "schema_version",
        sa.Column("version", sa.Integer, primary_key=True),
        sa.Column("applied_at", sa.Double, nullable=False),
    )
