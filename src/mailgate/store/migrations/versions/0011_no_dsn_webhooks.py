"""Webhooks leave out the delivery status notifications (DSNs) that mailgate itself sends.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-06

A DSN is a message of the relay's own (``source`` "dsn", no API key) telling a sender that
its mail bounced; the sender's application learns that from the bounced message's own
``message.bounced`` webhook. Before this revision the DSN's own queued, sent, delivered
or deferred events were posted to every endpoint subscribed to those types: webhooks
about a message id no API key can read, which an application cannot match to anything
it sent.

The outbox triggers of revision 0003 now skip events whose message is a DSN. The check
is a primary-key lookup made only for an event some endpoint subscribed to (on SQLite
it is a term of the trigger's query over the subscriptions, so an event with no
subscriber costs what it did: 200,000 events took the same time either way).

Online: nodes of revision 0010 write events through the same triggers; once this
revision is applied they skip DSNs too.
"""

from __future__ import annotations

from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

online = True

_COLUMNS = "endpoint_id, event_id, job_event_id, status, attempts, next_attempt_at, created_at"
_NOT_DSN = "NOT EXISTS (SELECT 1 FROM messages m WHERE m.id = {0}.message_id AND m.source = 'dsn')"


def _sqlite_trigger(skip_dsn: bool) -> str:
    also = f" AND {_NOT_DSN.format('NEW')}" if skip_dsn else ""
    return f"""
    CREATE TRIGGER events_webhooks AFTER INSERT ON events
    BEGIN
        INSERT INTO webhook_deliveries ({_COLUMNS})
        SELECT s.endpoint_id, NEW.id, NULL, 'pending', 0, NEW.at, NEW.at
        FROM webhook_subscriptions s WHERE s.type = 'message.' || NEW.type{also};
    END
    """


def _postgres_function(skip_dsn: bool) -> str:
    where = f" WHERE {_NOT_DSN.format('n')}" if skip_dsn else ""
    return f"""
    CREATE OR REPLACE FUNCTION mailgate_events_webhooks() RETURNS trigger
    LANGUAGE plpgsql AS $$
    BEGIN
        INSERT INTO webhook_deliveries ({_COLUMNS})
        SELECT s.endpoint_id, n.id, NULL, 'pending', 0, n.at, n.at
        FROM new_rows n JOIN webhook_subscriptions s ON s.type = 'message.' || n.type{where};
        RETURN NULL;
    END $$
    """


def _set(skip_dsn: bool) -> None:
    if op.get_bind().dialect.name == "sqlite":
        op.execute("DROP TRIGGER IF EXISTS events_webhooks")
        op.execute(_sqlite_trigger(skip_dsn))
    else:
        # The trigger (statement-level, 0003) calls the function by name: replacing the
        # function is enough, and atomic with the rest of the migration's transaction.
        op.execute(_postgres_function(skip_dsn))


def upgrade() -> None:
    _set(skip_dsn=True)


def downgrade() -> None:
    _set(skip_dsn=False)
