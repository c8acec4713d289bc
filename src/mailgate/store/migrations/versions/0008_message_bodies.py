"""Big message bodies in a table of their own, ``message_bodies`` (message_id, raw), so
that the SQLite writer can write them in place with incremental blob I/O (store/big_rows.py
says why ``messages`` cannot take that).

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-16

Online: a new table, which nodes of revision 0007 do not read. Only the SQLite writer puts
bodies there (SQLite is one node, upgraded by serve itself); PostgreSQL keeps writing every
body to ``messages.raw``, which 0007 nodes read while a cluster upgrades one node at a time.
The bodies stored before stay in ``messages.raw``: readers take ``message_bodies.raw`` when
a message has a row there, ``messages.raw`` otherwise. The downgrade moves the bodies back
into ``messages.raw`` before it drops the table.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

online = True

_MOVE_BACK = """
UPDATE messages SET raw = (SELECT b.raw FROM message_bodies b WHERE b.message_id = messages.id)
WHERE id IN (SELECT message_id FROM message_bodies)
"""


def upgrade() -> None:
    op.create_table(
        "message_bodies",
        sa.Column("message_id", sa.String(36), primary_key=True),
        sa.Column("raw", sa.LargeBinary, nullable=False),
        sa.ForeignKeyConstraint(["message_id"], ["messages.id"], ondelete="CASCADE"),
    )


def downgrade() -> None:
    op.execute(_MOVE_BACK)
    op.drop_table("message_bodies")
