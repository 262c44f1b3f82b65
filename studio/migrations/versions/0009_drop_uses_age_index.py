"""Drop rollout_uses' (run_id, age) index: no query reads it since the off-policy view comes from
offpolicy_steps (0007), and every use the sink writes paid for it (PostgreSQL: 392 -> 381 bytes of
uses per rollout; no ingest change outside the noise).

Revision ID: 0009_drop_uses_age_index
Revises: 0008_runs_created_index
Create Date: 2026-12-07
"""

from __future__ import annotations

from alembic import op

revision = "0009_drop_uses_age_index"
down_revision = "0008_runs_created_index"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.drop_index("ix_rollout_uses_run_age", table_name="rollout_uses")


def downgrade() -> None:
    op.create_index("ix_rollout_uses_run_age", "rollout_uses", ["run_id", "age"])
