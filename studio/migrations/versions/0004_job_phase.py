"""Jobs say what a running attempt is doing outside its steps (the toy's warm start and its ETA).

* jobs.phase (nullable text, at most 255 characters), shown on the run page.

Revision ID: 0004_job_phase
Revises: 0003_idempotency
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004_job_phase"
down_revision = "0003_idempotency"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("phase", sa.String(255), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("phase")
