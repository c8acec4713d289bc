"""``deliveries.retried_at``: when an operator or a client last asked for a failed or
bounced delivery to be tried again (Store.requeue: the dashboard's "Retry now",
MessagePipe's retry).

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-06

``[retry] max_age`` counts from the message's acceptance, so a recipient that had failed
for its age failed again at once when retried, and its sender got a second DSN without
one more attempt toward the upstream. A retried delivery's age now counts from its
retry (delivery/outcome.py).

Online: a nullable column that nodes of revision 0011 neither read nor write; a retry
made by one of them keeps the old rule for that delivery.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None

online = True


def upgrade() -> None:
    with op.batch_alter_table("deliveries") as batch:
        batch.add_column(sa.Column("retried_at", sa.Double, nullable=True))


def downgrade() -> None:
    # In place (SQLite 3.35's DROP COLUMN): a batch's copy of the table, made from what
    # SQLite reflects, lost the expression index on lower(recipient).
    with op.batch_alter_table("deliveries", recreate="never") as batch:
        batch.drop_column("retried_at")
