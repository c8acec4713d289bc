"""Events out: webhook endpoints, subscriptions and deliveries (the outbox), bounce
categories and engagement data on events, relay-wide settings (the tracking key), one-click
unsubscribes per sending domain, and an index on messages.message_id_header (complaints
name their message by it).

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-03

Online: every change is additive, and the triggers that fill the outbox fire for the rows
a node of the previous revision writes too, so no webhook is lost while nodes upgrade one
by one.

The outbox is written by triggers, in the statement that inserts the event: whatever path
records an event (accept, an attempt's result, an operator action, a job action, a bounce,
a click), its webhook deliveries commit or roll back with it. A trigger only finds rows in
``webhook_subscriptions`` for the types some endpoint asked for, so with no endpoints an
event costs one lookup in an empty index.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

online = True

_BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")

_COLUMNS = "endpoint_id, event_id, job_event_id, status, attempts, next_attempt_at, created_at"

SQLITE_TRIGGERS = (
    f"""
    CREATE TRIGGER events_webhooks AFTER INSERT ON events
    BEGIN
        INSERT INTO webhook_deliveries ({_COLUMNS})
        SELECT s.endpoint_id, NEW.id, NULL, 'pending', 0, NEW.at, NEW.at
        FROM webhook_subscriptions s WHERE s.type = 'message.' || NEW.type;
    END
    """,
    f"""
    CREATE TRIGGER job_events_webhooks AFTER INSERT ON job_events
    BEGIN
        INSERT INTO webhook_deliveries ({_COLUMNS})
        SELECT s.endpoint_id, NULL, NEW.id, 'pending', 0, NEW.at, NEW.at
        FROM webhook_subscriptions s WHERE s.type = 'job.' || NEW.type;
    END
    """,
)

# Statement-level with transition tables: a bulk insert of events costs one join.
POSTGRES_TRIGGERS = (
    f"""
    CREATE FUNCTION mailgate_events_webhooks() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        INSERT INTO webhook_deliveries ({_COLUMNS})
        SELECT s.endpoint_id, n.id, NULL, 'pending', 0, n.at, n.at
        FROM new_rows n JOIN webhook_subscriptions s ON s.type = 'message.' || n.type;
        RETURN NULL;
    END $$
    """,
    """
    CREATE TRIGGER events_webhooks AFTER INSERT ON events
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT
    EXECUTE FUNCTION mailgate_events_webhooks()
    """,
    f"""
    CREATE FUNCTION mailgate_job_events_webhooks() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        INSERT INTO webhook_deliveries ({_COLUMNS})
        SELECT s.endpoint_id, NULL, n.id, 'pending', 0, n.at, n.at
        FROM new_rows n JOIN webhook_subscriptions s ON s.type = 'job.' || n.type;
        RETURN NULL;
    END $$
    """,
    """
    CREATE TRIGGER job_events_webhooks AFTER INSERT ON job_events
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT
    EXECUTE FUNCTION mailgate_job_events_webhooks()
    """,
)


def upgrade() -> None:
    with op.batch_alter_table("events") as batch:
        # A bounce's or deferral's category (KumoMTA's names), "" for other events.
        batch.add_column(sa.Column("category", sa.String(32), nullable=False, server_default=""))
        # JSON object for engagement events: user_agent, ip, url.
        batch.add_column(sa.Column("data", sa.Text, nullable=False, server_default=""))
    # Complaints (ARF) find their message by its Message-ID (hash: no B-tree size limit).
    op.create_index(
        "ix_messages_message_id_header",
        "messages",
        ["message_id_header"],
        postgresql_using="hash",
    )
    op.create_table(
        "settings",
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("value", sa.Text, nullable=False),
    )
    op.create_table(
        "unsubscribes",
        sa.Column("address", sa.String(320), primary_key=True),
        sa.Column("domain", sa.String(255), primary_key=True),
        sa.Column("message_id", sa.String(36), nullable=False),
        sa.Column("source", sa.String(16), nullable=False),
        sa.Column("created_at", sa.Double, nullable=False),
    )
    op.create_index("ix_unsubscribes_created", "unsubscribes", ["created_at"])
    op.create_table(
        "webhook_endpoints",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("url", sa.Text, nullable=False),
        sa.Column("events", sa.Text, nullable=False),
        sa.Column("secret", sa.Text, nullable=False),
        sa.Column("previous_secret", sa.Text, nullable=False, server_default=""),
        sa.Column("previous_until", sa.Double, nullable=True),
        sa.Column("description", sa.Text, nullable=False, server_default=""),
        sa.Column("source", sa.String(16), nullable=False),
        sa.Column("disabled_at", sa.Double, nullable=True),
        sa.Column("disabled_reason", sa.Text, nullable=False, server_default=""),
        sa.Column("created_at", sa.Double, nullable=False),
        sa.Column("updated_at", sa.Double, nullable=False),
    )
    op.create_table(
        "webhook_subscriptions",
        sa.Column("type", sa.String(32), primary_key=True),
        sa.Column("endpoint_id", sa.String(36), primary_key=True),
        sa.ForeignKeyConstraint(["endpoint_id"], ["webhook_endpoints.id"], ondelete="CASCADE"),
    )
    op.create_table(
        "webhook_deliveries",
        sa.Column("id", _BigId, primary_key=True, autoincrement=True),
        sa.Column("endpoint_id", sa.String(36), nullable=False),
        sa.Column("event_id", sa.BigInteger, nullable=True),
        sa.Column("job_event_id", sa.BigInteger, nullable=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("next_attempt_at", sa.Double, nullable=True),
        sa.Column("lease_owner", sa.Text, nullable=True),
        sa.Column("last_status", sa.Integer, nullable=True),
        sa.Column("last_error", sa.Text, nullable=False, server_default=""),
        sa.Column("created_at", sa.Double, nullable=False),
        sa.Column("updated_at", sa.Double, nullable=True),
        sa.ForeignKeyConstraint(["endpoint_id"], ["webhook_endpoints.id"], ondelete="CASCADE"),
    )
    op.create_index(
        "ix_webhook_deliveries_due",
        "webhook_deliveries",
        ["endpoint_id", "next_attempt_at"],
        sqlite_where=sa.text("next_attempt_at IS NOT NULL"),
        postgresql_where=sa.text("next_attempt_at IS NOT NULL"),
    )
    op.create_index(
        "ix_webhook_deliveries_endpoint",
        "webhook_deliveries",
        ["endpoint_id", "status", "id"],
    )
    op.create_index("ix_webhook_deliveries_created", "webhook_deliveries", ["created_at"])
    bind = op.get_bind()
    for ddl in SQLITE_TRIGGERS if bind.dialect.name == "sqlite" else POSTGRES_TRIGGERS:
        op.execute(ddl)


def downgrade() -> None:
    bind = op.get_bind()
    op.execute("DROP TRIGGER IF EXISTS job_events_webhooks" + _on(bind, "job_events"))
    op.execute("DROP TRIGGER IF EXISTS events_webhooks" + _on(bind, "events"))
    if bind.dialect.name != "sqlite":
        op.execute("DROP FUNCTION IF EXISTS mailgate_job_events_webhooks()")
        op.execute("DROP FUNCTION IF EXISTS mailgate_events_webhooks()")
    op.drop_table("webhook_deliveries")
    op.drop_table("webhook_subscriptions")
    op.drop_table("webhook_endpoints")
    op.drop_table("unsubscribes")
    op.drop_table("settings")
    op.drop_index("ix_messages_message_id_header", table_name="messages")
    with op.batch_alter_table("events") as batch:
        batch.drop_column("data")
        batch.drop_column("category")


def _on(bind: sa.Connection, table: str) -> str:
    return "" if bind.dialect.name == "sqlite" else f" ON {table}"
