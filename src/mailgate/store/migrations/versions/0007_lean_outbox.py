"""A leaner webhook outbox: of its three indexes, the two that every event and every
outcome wrote for reads that are rare give way to one that events only append to and one
that only failures enter.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-16

Every event an endpoint subscribes to inserts a ``webhook_deliveries`` row in the
transaction that records the event (the accept's, for message.queued), and its outcome
updates it in another writer transaction, both beside the accepts that wait for the
writer. ``ix_webhook_deliveries_endpoint`` (endpoint, status, id) moved every entry from
the "pending" range to the "succeeded" one at its outcome, and
``ix_webhook_deliveries_created`` (created_at) was one more B-tree per insert, for
retention and replay only. Instead: ``ix_webhook_deliveries_listing`` (endpoint, id),
which events append to and outcomes leave alone, and ``ix_webhook_deliveries_failed``
(endpoint, id) for failed deliveries only. Retention and replay find the id range of a
time through the primary key (ids follow created_at; store/webhook_outbox.py). On SQLite
(scripts/bench/webhook_writer.py, 50 outcomes a transaction) a commit of outcomes wrote
42 KB to the WAL before and 12 KB after; an accept of 5 messages, 2.2 KB less.

Online: nodes of revision 0006 read these rows by endpoint and status (the new indexes
serve that), and purge and replay by created_at, which now walks the table: slower
during the upgrade, still right. On PostgreSQL each CREATE INDEX holds writes to
webhook_deliveries (and so accepts with an endpoint subscribed) while it builds, about a
second per million rows; on SQLite ``serve`` applies it at start.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

online = True

_FAILED = sa.text("status = 'failed'")


def upgrade() -> None:
    op.create_index("ix_webhook_deliveries_listing", "webhook_deliveries", ["endpoint_id", "id"])
    op.create_index(
        "ix_webhook_deliveries_failed",
        "webhook_deliveries",
        ["endpoint_id", "id"],
        sqlite_where=_FAILED,
        postgresql_where=_FAILED,
    )
    op.drop_index("ix_webhook_deliveries_endpoint", table_name="webhook_deliveries")
    op.drop_index("ix_webhook_deliveries_created", table_name="webhook_deliveries")


def downgrade() -> None:
    op.create_index("ix_webhook_deliveries_created", "webhook_deliveries", ["created_at"])
    op.create_index(
        "ix_webhook_deliveries_endpoint", "webhook_deliveries", ["endpoint_id", "status", "id"]
    )
    op.drop_index("ix_webhook_deliveries_failed", table_name="webhook_deliveries")
    op.drop_index("ix_webhook_deliveries_listing", table_name="webhook_deliveries")
