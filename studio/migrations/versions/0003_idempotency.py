"""Idempotent submission: jobs remember the Idempotency-Key of the request that created them.

* jobs.idempotency_key (unique; NULL for requests without the header) and jobs.request_hash (the
  sha256 of the request body), so a retried POST returns the first job instead of a duplicate.

Revision ID: 0003_idempotency
Revises: 0002_leaderboard_eval
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003_idempotency"
down_revision = "0002_leaderboard_eval"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("idempotency_key", sa.String(255), nullable=True))
        batch.add_column(sa.Column("request_hash", sa.String(64), nullable=True))
    op.create_index("uq_jobs_idempotency_key", "jobs", ["idempotency_key"], unique=True)


def downgrade() -> None:
    op.drop_index("uq_jobs_idempotency_key", table_name="jobs")
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("request_hash")
        batch.drop_column("idempotency_key")
