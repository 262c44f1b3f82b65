"""The data layer at 1M rollouts (issue 17).

* rollout_texts: prompt and response become one zlib blob (`body`) plus the search terms (`terms`:
  a GIN-indexed tsvector on PostgreSQL; on SQLite the contentless FTS5 table `rollout_search`).
* rollouts.preview: the response's first 240 characters, for the trace list.
* rollouts: indexes (run, policy_version | correct | truncated, step, id) for the trace filters,
  (run, id) for searches.
* offpolicy_steps: uses per (run, consuming step, policy age), kept by the sink.
* metrics: the covering index (run, key, step, value, rollouts, elapsed_s) replaces (run, step).

Existing texts are moved into the new layout in batches (studio/rollout_text.py).

Revision ID: 0007_data_scale
Revises: 0006_eval_protocol
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

from studio import rollout_text

revision = "0007_data_scale"
down_revision = "0006_eval_protocol"
branch_labels = None
depends_on = None

BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
TERMS = sa.Text().with_variant(postgresql.TSVECTOR(), "postgresql")
_BATCH = 2000


def _new_texts_table() -> None:
    op.create_table(
        "rollout_texts",
        sa.Column("rollout_id", BIG_ID, nullable=False),
        sa.Column("body", sa.LargeBinary(), nullable=False),
        sa.Column("terms", TERMS, nullable=True),
        sa.PrimaryKeyConstraint("rollout_id", name="pk_rollout_texts"),
        sa.ForeignKeyConstraint(["rollout_id"], ["rollouts.id"], name="fk_rollout_texts_rollout_id_rollouts",
                                ondelete="CASCADE"),
    )


def _old_texts_table(name: str) -> None:
    op.create_table(
        name,
        sa.Column("rollout_id", BIG_ID, nullable=False),
        sa.Column("prompt", sa.Text(), nullable=False),
        sa.Column("response", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("rollout_id", name=f"pk_{name}"),
        sa.ForeignKeyConstraint(["rollout_id"], ["rollouts.id"], name=f"fk_{name}_rollout_id_rollouts",
                                ondelete="CASCADE"),
    )


def _batches(conn: sa.Connection, query: str):  # noqa: ANN202
    """Rows of `query` (ordered by rollout id, `:after` bound) in batches, keyset-paginated."""
    after = -1
    while rows := conn.execute(sa.text(query), {"after": after, "n": _BATCH}).all():
        yield rows
        after = rows[-1][0]


def upgrade() -> None:
    conn = op.get_bind()
    pg = conn.dialect.name == "postgresql"
    # No batch mode on rollouts: on SQLite it copies the table and drops the old one, and with
    # foreign keys on that drop cascades into rollout_texts and rollout_uses. SQLite adds a column
    # (with a default, kept) and indexes in place.
    op.add_column("rollouts", sa.Column("preview", sa.Text(), nullable=False, server_default=""))
    op.drop_index("ix_rollouts_run_version", table_name="rollouts")
    op.create_index("ix_rollouts_run_version_step", "rollouts", ["run_id", "policy_version", "step", "id"])
    op.create_index("ix_rollouts_run_correct_step", "rollouts", ["run_id", "correct", "step", "id"])
    op.create_index("ix_rollouts_run_truncated_step", "rollouts", ["run_id", "truncated", "step", "id"])
    op.create_index("ix_rollouts_run_id", "rollouts", ["run_id", "id"])

    op.rename_table("rollout_texts", "rollout_texts_0004")
    if pg:  # the table keeps its constraint names through the rename; free them for the new one
        op.execute("ALTER TABLE rollout_texts_0004 RENAME CONSTRAINT pk_rollout_texts TO pk_rollout_texts_0004")
        op.execute("ALTER TABLE rollout_texts_0004 RENAME CONSTRAINT fk_rollout_texts_rollout_id_rollouts "
                   "TO fk_rollout_texts_0004_rollout_id_rollouts")
    _new_texts_table()
    rollout_text.create_search_table(conn)
    insert = sa.text("INSERT INTO rollout_texts (rollout_id, body, terms) VALUES (:rid, :body, "
                     + ("CAST(:terms AS tsvector))" if pg else "NULL)"))
    for rows in _batches(conn, "SELECT t.rollout_id, t.prompt, t.response, r.extracted FROM rollout_texts_0004 t "
                               "JOIN rollouts r ON r.id = t.rollout_id WHERE t.rollout_id > :after "
                               "ORDER BY t.rollout_id LIMIT :n"):
        docs = {rid: rollout_text.document(p, r, ex) for rid, p, r, ex in rows}
        conn.execute(insert, [{"rid": rid, "body": rollout_text.pack(p, r),
                               "terms": rollout_text.tsvector_literal(rollout_text.terms(docs[rid])) if pg else None}
                              for rid, p, r, _ in rows])
        rollout_text.index_search(conn, docs.items())
        conn.execute(sa.text("UPDATE rollouts SET preview = :pv WHERE id = :rid"),
                     [{"rid": rid, "pv": rollout_text.preview(r)} for rid, _, r, _ in rows])
    op.drop_table("rollout_texts_0004")
    if pg:
        op.create_index("ix_rollout_texts_terms", "rollout_texts", ["terms"], postgresql_using="gin")

    op.drop_index("ix_metrics_run_step", table_name="metrics")
    op.create_index("ix_metrics_series", "metrics", ["run_id", "key", "step", "value", "rollouts", "elapsed_s"])

    op.create_table(
        "offpolicy_steps",
        sa.Column("run_id", sa.Integer(), nullable=False),
        sa.Column("step", sa.Integer(), nullable=False),
        sa.Column("age", sa.Integer(), nullable=False),
        sa.Column("uses", sa.Integer(), nullable=False),
        sa.Column("ratio_mean_sum", sa.Double(), nullable=True),
        sa.Column("ratio_mean_n", sa.Integer(), nullable=False),
        sa.Column("ratio_max", sa.Double(), nullable=True),
        sa.Column("clipfrac_sum", sa.Double(), nullable=True),
        sa.Column("clipfrac_n", sa.Integer(), nullable=False),
        sa.Column("kl_sum", sa.Double(), nullable=True),
        sa.Column("kl_n", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("run_id", "step", "age", name="pk_offpolicy_steps"),
        sa.ForeignKeyConstraint(["run_id"], ["runs.id"], name="fk_offpolicy_steps_run_id_runs", ondelete="CASCADE"),
    )
    op.execute("INSERT INTO offpolicy_steps (run_id, step, age, uses, ratio_mean_sum, ratio_mean_n, ratio_max, "
               "clipfrac_sum, clipfrac_n, kl_sum, kl_n) "
               "SELECT run_id, step, age, count(*), sum(ratio_mean), count(ratio_mean), max(ratio_max), "
               "sum(clipfrac), count(clipfrac), sum(kl_to_behavior), count(kl_to_behavior) "
               "FROM rollout_uses GROUP BY run_id, step, age")


def downgrade() -> None:
    conn = op.get_bind()
    op.drop_table("offpolicy_steps")
    op.drop_index("ix_metrics_series", table_name="metrics")
    op.create_index("ix_metrics_run_step", "metrics", ["run_id", "step"])
    _old_texts_table("rollout_texts_0004")
    insert = sa.text("INSERT INTO rollout_texts_0004 (rollout_id, prompt, response) VALUES (:rid, :p, :r)")
    for rows in _batches(conn, "SELECT rollout_id, body FROM rollout_texts WHERE rollout_id > :after "
                               "ORDER BY rollout_id LIMIT :n"):
        conn.execute(insert, [dict(zip(("p", "r"), rollout_text.unpack(body), strict=True), rid=rid) for rid, body in rows])
    op.drop_table("rollout_texts")
    if conn.dialect.name == "sqlite":
        op.execute(f"DROP TABLE IF EXISTS {rollout_text.SEARCH_TABLE}")
    op.rename_table("rollout_texts_0004", "rollout_texts")
    if conn.dialect.name == "postgresql":
        op.execute("ALTER TABLE rollout_texts RENAME CONSTRAINT pk_rollout_texts_0004 TO pk_rollout_texts")
        op.execute("ALTER TABLE rollout_texts RENAME CONSTRAINT fk_rollout_texts_0004_rollout_id_rollouts "
                   "TO fk_rollout_texts_rollout_id_rollouts")
    for name in ("ix_rollouts_run_id", "ix_rollouts_run_truncated_step", "ix_rollouts_run_correct_step", "ix_rollouts_run_version_step"):
        op.drop_index(name, table_name="rollouts")
    op.create_index("ix_rollouts_run_version", "rollouts", ["run_id", "policy_version"])
    op.execute("ALTER TABLE rollouts DROP COLUMN preview")  # in place on SQLite ≥ 3.35 too (see upgrade)
