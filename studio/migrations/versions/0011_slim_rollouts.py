"""Slimmer rollout rows (issue 17's storage target):

* rollouts.preview goes: the trace list decompresses the head of each text blob instead
  (studio/rollout_text.py response_preview). The copy cost ~250 bytes per rollout.
* One index (run, step, id, correct, format_ok, truncated) replaces (run, step, id),
  (run, correct, step, id) and (run, truncated, step, id): a filtered trace page walks the run in
  (step, id) order and checks the flags in the index. The per-flag indexes had one insertion point
  per flag value, and the pages left of the last one split half-full.

PostgreSQL keeps a dropped column's bytes in existing rows until they are rewritten (VACUUM FULL);
SQLite (≥ 3.35, March 2021) rewrites the rows in place. The downgrade recomputes the previews from the blobs.

Revision ID: 0011_slim_rollouts
Revises: 0010_metric_chunks
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from studio import rollout_text

revision = "0011_slim_rollouts"
down_revision = "0010_metric_chunks"
branch_labels = None
depends_on = None

_FLAG_INDEXES = {"ix_rollouts_run_step_id": ["run_id", "step", "id"],
                 "ix_rollouts_run_correct_step": ["run_id", "correct", "step", "id"],
                 "ix_rollouts_run_truncated_step": ["run_id", "truncated", "step", "id"]}
_BATCH = 2000


def upgrade() -> None:
    # No batch mode (see 0007): SQLite drops a column and swaps indexes in place.
    op.create_index("ix_rollouts_run_step_flags", "rollouts",
                    ["run_id", "step", "id", "correct", "format_ok", "truncated"])
    for name in _FLAG_INDEXES:
        op.drop_index(name, table_name="rollouts")
    op.execute("ALTER TABLE rollouts DROP COLUMN preview")


def downgrade() -> None:
    conn = op.get_bind()
    op.add_column("rollouts", sa.Column("preview", sa.Text(), nullable=False, server_default=""))
    after = -1
    while rows := conn.execute(sa.text("SELECT rollout_id, body FROM rollout_texts WHERE rollout_id > :after "
                                       "ORDER BY rollout_id LIMIT :n"), {"after": after, "n": _BATCH}).all():
        conn.execute(sa.text("UPDATE rollouts SET preview = :pv WHERE id = :rid"),
                     [{"rid": rid, "pv": rollout_text.response_preview(body)} for rid, body in rows])
        after = rows[-1][0]
    for name, columns in _FLAG_INDEXES.items():
        op.create_index(name, "rollouts", columns)
    op.drop_index("ix_rollouts_run_step_flags", table_name="rollouts")
