"""Metric series in chunks: the metrics table (one row per run, key and step) becomes metric_chunks
(one blob per run, key and CHUNK_STEPS steps; studio/metric_chunks.py). Existing points are packed
into chunks; the downgrade unpacks them.

Revision ID: 0010_metric_chunks
Revises: 0009_drop_uses_age_index
Create Date: 2026-12-07
"""

from __future__ import annotations

import math
from itertools import groupby, islice

import sqlalchemy as sa
from alembic import op

from studio import metric_chunks as mc

revision = "0010_metric_chunks"
down_revision = "0009_drop_uses_age_index"
branch_labels = None
depends_on = None

BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
_BATCH = 500  # chunks per INSERT


def upgrade() -> None:
    conn = op.get_bind()
    op.create_table(
        "metric_chunks",
        sa.Column("run_id", sa.Integer(), nullable=False),
        sa.Column("key", sa.String(250), nullable=False),
        sa.Column("chunk", sa.Integer(), nullable=False),
        sa.Column("points", sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint("run_id", "key", "chunk", name="pk_metric_chunks"),
        sa.ForeignKeyConstraint(["run_id"], ["runs.id"], name="fk_metric_chunks_run_id_runs", ondelete="CASCADE"),
    )
    insert = sa.text("INSERT INTO metric_chunks (run_id, key, chunk, points) VALUES (:run_id, :key, :chunk, :points)")
    # streamed in (run, key, step) order: one chunk's rows are consecutive
    rows = conn.execute(sa.text("SELECT run_id, key, step, value, rollouts, elapsed_s, wall_time FROM metrics "
                                "ORDER BY run_id, key, step").execution_options(stream_results=True, yield_per=10_000))
    chunks = ({"run_id": run_id, "key": key, "chunk": chunk, "points": mc.pack(mc.points(r[2:] for r in points))}
              for (run_id, key, chunk), points in groupby(rows, key=lambda r: (r[0], r[1], mc.chunk_of(r[2]))))
    while batch := list(islice(chunks, _BATCH)):
        conn.execute(insert, batch)
    op.drop_table("metrics")


def downgrade() -> None:
    conn = op.get_bind()
    op.create_table(
        "metrics",
        sa.Column("id", BIG_ID, nullable=False),
        sa.Column("run_id", sa.Integer(), nullable=False),
        sa.Column("step", sa.Integer(), nullable=False),
        sa.Column("key", sa.String(250), nullable=False),
        sa.Column("value", sa.Double(), nullable=True),
        sa.Column("rollouts", sa.BigInteger(), nullable=True),
        sa.Column("elapsed_s", sa.Double(), nullable=True),
        sa.Column("wall_time", sa.Double(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_metrics"),
        sa.ForeignKeyConstraint(["run_id"], ["runs.id"], name="fk_metrics_run_id_runs", ondelete="CASCADE"),
        sa.UniqueConstraint("run_id", "key", "step", name="uq_metrics_run_id_key_step"),
    )
    op.create_index("ix_metrics_series", "metrics", ["run_id", "key", "step", "value", "rollouts", "elapsed_s"])
    insert = sa.text("INSERT INTO metrics (run_id, key, step, value, rollouts, elapsed_s, wall_time) "
                     "VALUES (:run_id, :key, :step, :value, :rollouts, :elapsed_s, :wall_time)")
    nan_none = lambda v: None if math.isnan(v) else v  # noqa: E731
    for run_id, key, blob in conn.execute(sa.text("SELECT run_id, key, points FROM metric_chunks")).all():
        pts = mc.unpack(blob)
        conn.execute(insert, [{"run_id": run_id, "key": key, "step": int(p[mc.STEP]), "value": nan_none(p[mc.VALUE]),
                               "rollouts": None if math.isnan(p[mc.ROLLOUTS]) else int(p[mc.ROLLOUTS]),
                               "elapsed_s": nan_none(p[mc.ELAPSED_S]), "wall_time": float(p[mc.WALL_TIME])}
                              for p in pts.T.tolist()])
    op.drop_table("metric_chunks")
