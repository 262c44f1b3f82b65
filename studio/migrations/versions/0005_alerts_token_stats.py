"""Health alerts and the token lens (issue 18), both written by the sink:

* alerts: one row per alert episode of a run (remix_engine/alerts.py);
* rollout_token_stats: per-token statistics of one use of a sampled rollout (compressed JSON).

Revision ID: 0005_alerts_token_stats
Revises: 0004_job_phase
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")

revision = "0005_alerts_token_stats"
down_revision = "0004_job_phase"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "alerts",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("run_id", sa.Integer(), nullable=False),
        sa.Column("rule", sa.String(64), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("first_step", sa.Integer(), nullable=False),
        sa.Column("last_step", sa.Integer(), nullable=False),
        sa.Column("value", sa.Double(), nullable=True),
        sa.Column("threshold", sa.Double(), nullable=False),
        sa.Column("detail", sa.String(500), nullable=False),
        sa.Column("metric", sa.String(250), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_alerts"),
        sa.ForeignKeyConstraint(["run_id"], ["runs.id"], name="fk_alerts_run_id_runs", ondelete="CASCADE"),
        sa.UniqueConstraint("run_id", "rule", "first_step", name="uq_alerts_run_id_rule_first_step"),
    )
    op.create_index("ix_alerts_run_id", "alerts", ["run_id"])
    op.create_table(
        "rollout_token_stats",
        sa.Column("id", BIG_ID, nullable=False),
        sa.Column("run_id", sa.Integer(), nullable=False),
        sa.Column("rollout_uid", sa.String(64), nullable=False),
        sa.Column("step", sa.Integer(), nullable=False),
        sa.Column("age", sa.Integer(), nullable=False),
        sa.Column("payload", sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_rollout_token_stats"),
        sa.ForeignKeyConstraint(["run_id"], ["runs.id"], name="fk_rollout_token_stats_run_id_runs", ondelete="CASCADE"),
        sa.UniqueConstraint("run_id", "rollout_uid", "step", name="uq_rollout_token_stats_run_id_rollout_uid_step"),
    )


def downgrade() -> None:
    op.drop_table("rollout_token_stats")
    op.drop_index("ix_alerts_run_id", table_name="alerts")
    op.drop_table("alerts")
