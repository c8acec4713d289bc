"""Alembic's environment: mailgate hands it a connection (mailgate.store.migrate).

Run through ``mailgate db upgrade`` or ``mailgate serve``, never the ``alembic`` command:
the connection is already in the write transaction the upgrade runs in.
"""

from __future__ import annotations

from alembic import context

connection = context.config.attributes["connection"]
context.configure(
    connection=connection,
    render_as_batch=connection.dialect.name == "sqlite",
    transaction_per_migration=False,
)
with context.begin_transaction():
    context.run_migrations()
