"""An index on ``jobs.state``: the jobs being resumed, paused or stopped are found without
reading every job.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-06

Every batch request is a job, so the table holds one row per batch within the retention
window: millions for an application that sends a batch a second. Every node looks for
jobs left "resuming" at start and once a minute (Jobs.finish_interrupted), and a node's
start releases its leases except those of paused or stopped jobs (job_actions.
hold_released); both read every job before. A job's row is written once per batch and its
state rarely changes, so the index costs an entry per batch.

Online: nodes of revision 0009 do not need the index and are not hindered by it. On
PostgreSQL the CREATE INDEX holds writes to jobs (new batches) while it builds, about a
second per million jobs; on SQLite ``serve`` applies it at start.
"""

from __future__ import annotations

from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

online = True


def upgrade() -> None:
    op.create_index("ix_jobs_state", "jobs", ["state"])


def downgrade() -> None:
    op.drop_index("ix_jobs_state", table_name="jobs")
