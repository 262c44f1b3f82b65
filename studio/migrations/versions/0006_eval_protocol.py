"""Leaderboard rows carry their evaluation protocol and a 95% interval (issue 18).

* leaderboard_entries.protocol (JSON, nullable): the protocol stamp of a measured row
  (remix_engine/eval_protocol.py; the entry's combined protocol on the `average` row); NULL for
  published rows, whose protocol is the authors' and not stamped.
* leaderboard_entries.ci_low, ci_high (double, nullable): the 95% bootstrap interval of `score`
  (percent, like the score).

Evaluation results keep theirs in evaluations.metrics (JSON), so that table is unchanged.

Revision ID: 0006_eval_protocol
Revises: 0005_alerts_token_stats
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0006_eval_protocol"
down_revision = "0005_alerts_token_stats"
branch_labels = None
depends_on = None

JSON_T = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def upgrade() -> None:
    with op.batch_alter_table("leaderboard_entries") as batch:
        batch.add_column(sa.Column("protocol", JSON_T, nullable=True))
        batch.add_column(sa.Column("ci_low", sa.Double(), nullable=True))
        batch.add_column(sa.Column("ci_high", sa.Double(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("leaderboard_entries") as batch:
        batch.drop_column("ci_high")
        batch.drop_column("ci_low")
        batch.drop_column("protocol")
