"""Leaderboard and evaluation columns; seed the published ReMix README tables.

* leaderboard_entries: entry_key (one table line), dataset, size, mode, cost_text, cost_lower_bound,
  checkpoint_step, temperature, k, grader, mathverify; unique (entry_key, benchmark, mode).
* evaluations: mode, grader, mathverify.  eval_samples: mathverify (math-verify's verdict).
* Data: the published rows shipped in remix_engine/leaderboard_data (dataset remix-readme-v3),
  inserted once here; users' later deletions or imports are not undone by restarts.

Revision ID: 0002_leaderboard_eval
Revises: 0001_initial
Create Date: 2026-11-26
"""

from __future__ import annotations

from datetime import datetime, timezone

import sqlalchemy as sa
from alembic import op

revision = "0002_leaderboard_eval"
down_revision = "0001_initial"
branch_labels = None
depends_on = None


def _lb_columns() -> list[sa.Column]:
    """Fresh Column objects per call (a Column can belong to one table only)."""
    return [
        sa.Column("entry_key", sa.String(255), nullable=True),
        sa.Column("dataset", sa.String(100), nullable=True),
        sa.Column("size", sa.String(32), nullable=True),
        sa.Column("mode", sa.String(16), nullable=False, server_default="greedy"),
        sa.Column("cost_text", sa.String(32), nullable=True),
        sa.Column("cost_lower_bound", sa.Boolean(), nullable=False, server_default=sa.false()),
        sa.Column("checkpoint_step", sa.Integer(), nullable=True),
        sa.Column("temperature", sa.Double(), nullable=True),
        sa.Column("k", sa.Integer(), nullable=True),
        sa.Column("grader", sa.String(32), nullable=True),
        sa.Column("mathverify", sa.Double(), nullable=True),
    ]


def upgrade() -> None:
    for column in _lb_columns():
        op.add_column("leaderboard_entries", column)
    op.create_index("uq_leaderboard_entries_entry", "leaderboard_entries", ["entry_key", "benchmark", "mode"],
                    unique=True)
    op.create_index("ix_leaderboard_entries_mode_size", "leaderboard_entries", ["mode", "size"])
    op.add_column("evaluations", sa.Column("mode", sa.String(16), nullable=False, server_default="greedy"))
    op.add_column("evaluations", sa.Column("grader", sa.String(32), nullable=True))
    op.add_column("evaluations", sa.Column("mathverify", sa.Double(), nullable=True))
    op.add_column("eval_samples", sa.Column("mathverify", sa.Boolean(), nullable=True))
    _seed_published()


def _seed_published() -> None:
    # Parsed by the application's parser, inserted with this revision's own column list, so later
    # schema changes cannot break this step.
    from studio.leaderboard import shipped_entries

    keys = ("entry_key", "source", "dataset", "size", "model", "method", "benchmark", "mode", "metric", "score",
            "cost_rollouts", "cost_text", "cost_lower_bound", "reference", "notes")
    table = sa.table("leaderboard_entries", *[sa.column(k) for k in keys], sa.column("created_at"))
    now = datetime.now(timezone.utc)
    rows = [{**{k: e.get(k) for k in keys}, "created_at": now} for e in shipped_entries()]
    op.bulk_insert(table, rows)


def downgrade() -> None:
    op.execute("DELETE FROM leaderboard_entries WHERE source = 'published' AND dataset = 'remix-readme-v3'")
    with op.batch_alter_table("eval_samples") as batch:
        batch.drop_column("mathverify")
    with op.batch_alter_table("evaluations") as batch:
        for name in ("mathverify", "grader", "mode"):
            batch.drop_column(name)
    op.drop_index("ix_leaderboard_entries_mode_size", table_name="leaderboard_entries")
    op.drop_index("uq_leaderboard_entries_entry", table_name="leaderboard_entries")
    with op.batch_alter_table("leaderboard_entries") as batch:
        for column in reversed(_lb_columns()):
            batch.drop_column(column.name)
