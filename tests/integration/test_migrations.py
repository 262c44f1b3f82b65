"""The Alembic migrations shipped in studio/migrations build exactly the schema of studio/models.py,
on SQLite (batch mode) and on PostgreSQL, and downgrade cleanly."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect, select, text
from sqlmodel import Session, SQLModel

import studio.models  # noqa: F401
from studio import queries, rollout_text
from studio.db import make_engine
from studio.migrate import alembic_config, current_revision, head_revision, include_object, upgrade_database
from studio.models import Rollout
from studio.rollout_text import SEARCH_TABLE, TERMS_INDEX
from studio.settings import Settings

pytestmark = pytest.mark.integration

PG_ADMIN_URL = os.environ.get("REMIX_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
BACKENDS = [b.strip() for b in os.environ.get("REMIX_TEST_BACKENDS", "embedded,postgres").split(",") if b.strip()]


@pytest.fixture(params=BACKENDS)
def settings(request, tmp_path: Path):
    if request.param == "embedded":
        yield Settings(data_dir=tmp_path / "data")
        return
    import psycopg

    name = f"remix_mig_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    base, _, _ = PG_ADMIN_URL.rpartition("/")
    try:
        yield Settings(data_dir=tmp_path / "data", database_url=f"{base}/{name}")
    finally:
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _diff(engine) -> list:  # noqa: ANN001
    with engine.connect() as conn:
        ctx = MigrationContext.configure(conn, opts={"compare_type": True, "include_object": include_object})
        return compare_metadata(ctx, SQLModel.metadata)


def _old_run(conn) -> int:  # noqa: ANN001
    """A finished run, inserted with the columns every revision since 0001 has; its id."""
    conn.execute(text("INSERT INTO runs (name, preset, algorithm, config, request, status, cancel_requested, "
                      "steps_total, steps_done, rollouts_generated, tokens_generated, elapsed_s, created_at, "
                      "updated_at) VALUES ('old', 'toy', 'remix-grpo', '{}', '{}', 'succeeded', false, 2, 2, "
                      "2, 0, 0, CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)"))
    return conn.execute(text("SELECT max(id) FROM runs")).scalar_one()


def test_migrations_match_models_and_downgrade(settings: Settings) -> None:
    engine = make_engine(settings.sqlalchemy_url)
    try:
        assert upgrade_database(settings, engine) == head_revision()
        assert _diff(engine) == [], "models.py and the migrations disagree: add a migration"
        # idempotent: a second start (or a worker starting at the same time) changes nothing
        assert upgrade_database(settings, engine) == head_revision()
        tables = set(inspect(engine).get_table_names())
        assert {"runs", "jobs", "metric_chunks", "latest_metrics", "checkpoints", "rollouts", "rollout_texts",
                "rollout_uses", "evaluations", "eval_samples", "leaderboard_entries", "workers",
                "offpolicy_steps"} <= tables
        # the search index each dialect has beside the models (include_object leaves them out of _diff)
        if engine.dialect.name == "sqlite":
            assert SEARCH_TABLE in tables
        else:
            assert TERMS_INDEX in {i["name"] for i in inspect(engine).get_indexes("rollout_texts")}
        cfg = alembic_config(settings.sqlalchemy_url)
        with engine.connect() as conn:
            cfg.attributes["connection"] = conn
            command.downgrade(cfg, "base")
            conn.commit()
            assert current_revision(conn) is None
        assert set(inspect(engine).get_table_names()) <= {"alembic_version"}
        assert upgrade_database(settings, engine) == head_revision()
    finally:
        engine.dispose()


def test_upgrade_from_0004_moves_texts_into_the_new_layout_and_back(settings: Settings) -> None:
    """0007 (after 0005, 0006) on a database with rollouts: texts become blobs with previews and search terms, uses
    are aggregated into offpolicy_steps; the downgrade brings the texts back."""
    engine = make_engine(settings.sqlalchemy_url)
    long = "Wait, let me check that again. " * 20
    try:
        assert upgrade_database(settings, engine, revision="0004_job_phase") == "0004_job_phase"
        with engine.begin() as conn:
            run_id = _old_run(conn)
            for i, (prompt, response) in enumerate([("Compute 2+2.", long), ("Name a prime.", "Seven is prime.")]):
                conn.execute(text("INSERT INTO rollouts (run_id, uid, step, policy_version, group_id, prompt_id, "
                                  "extracted, correct, format_ok, length, truncated, use_count, reuse_count, wall_time) "
                                  "VALUES (:run, :uid, :step, :step, 'g', 'p', 'x', true, true, 5, false, 1, 0, 0)"),
                             {"run": run_id, "uid": f"u{i}", "step": i + 1})
                rid = conn.execute(text("SELECT max(id) FROM rollouts")).scalar_one()
                conn.execute(text("INSERT INTO rollout_texts (rollout_id, prompt, response) VALUES (:r, :p, :t)"),
                             {"r": rid, "p": prompt, "t": response})
                conn.execute(text("INSERT INTO rollout_uses (run_id, rollout_id, rollout_uid, step, age, ratio_mean, "
                                  "clipfrac) VALUES (:run, :r, :uid, :step, 0, 1.5, 0.25)"),
                             {"run": run_id, "r": rid, "uid": f"u{i}", "step": i + 1})
        assert upgrade_database(settings, engine) == head_revision()
        assert _diff(engine) == []
        with Session(engine) as s:
            ids = {r.uid: r.id for r in s.execute(select(Rollout).where(Rollout.run_id == run_id)).scalars()}
            assert queries.rollout_texts(s, list(ids.values())) == {
                ids["u0"]: ("Compute 2+2.", long), ids["u1"]: ("Name a prime.", "Seven is prime.")}
            assert queries.rollout_previews(s, list(ids.values())) == {
                ids["u0"]: long[:240] + "…", ids["u1"]: "Seven is prime."}
            cond = [Rollout.run_id == run_id]
            assert [r.uid for r in queries.rollout_page(s, run_id, cond, "prime", None, "asc", 50)[0]] == ["u1"]
            assert [r.uid for r in queries.rollout_page(s, run_id, cond, "check", None, "asc", 50)[0]] == ["u0"]
            off = queries.offpolicy(s, run_id)
            assert [(b["step"], b["uses"]) for b in off["reuse_by_step"]] == [(1, 1), (2, 1)]
            assert off["by_age"][0]["ratio_mean"] == 1.5 and off["by_age"][0]["clipfrac"] == 0.25
        cfg = alembic_config(settings.sqlalchemy_url)
        with engine.connect() as conn:
            cfg.attributes["connection"] = conn
            command.downgrade(cfg, "0004_job_phase")
            conn.commit()
            back = conn.execute(text("SELECT prompt, response FROM rollout_texts ORDER BY rollout_id")).all()
        assert [tuple(r) for r in back] == [("Compute 2+2.", long), ("Name a prime.", "Seven is prime.")]
    finally:
        engine.dispose()


def test_upgrade_from_0009_packs_metric_rows_into_chunks_and_back(settings: Settings) -> None:
    """0010 on a database with metric rows: each (run, key)'s points, NULLs included, come back from
    the chunks (one per 100 steps) exactly; the downgrade brings the rows back."""
    engine = make_engine(settings.sqlalchemy_url)
    rows = [(key, step, None if step == 7 else step / 3, step * 8 if step % 2 else None, step * 0.1, 1e9 + step)
            for key in ("loss", "cost/rollouts") for step in (*range(0, 250, 7), 1000)]
    try:
        assert upgrade_database(settings, engine, revision="0009_drop_uses_age_index") == "0009_drop_uses_age_index"
        with engine.begin() as conn:
            run_id = _old_run(conn)
            conn.execute(text("INSERT INTO metrics (run_id, key, step, value, rollouts, elapsed_s, wall_time) "
                              "VALUES (:run, :key, :step, :value, :rollouts, :elapsed, :wall)"),
                         [dict(zip(("key", "step", "value", "rollouts", "elapsed", "wall"), r, strict=True), run=run_id)
                          for r in rows])
        assert upgrade_database(settings, engine) == head_revision()
        assert _diff(engine) == []
        with Session(engine) as s:
            chunks = s.execute(text("SELECT key, chunk FROM metric_chunks ORDER BY key, chunk")).all()
            series = queries.metric_series(s, [run_id], ["loss"], "rollouts", 1000)[run_id][0]
            assert queries.cost_at_step(s, run_id, 1000) == 333  # cost/rollouts' value, 1000 / 3
        assert [tuple(c) for c in chunks] == [(k, c) for k in ("cost/rollouts", "loss") for c in (0, 1, 2, 10)]
        kept = [r for r in rows if r[0] == "loss" and r[2] is not None and r[3] is not None]
        assert series["step"] == [r[1] for r in kept] and series["y"] == [r[2] for r in kept]
        assert series["x"] == [r[3] for r in kept]
        cfg = alembic_config(settings.sqlalchemy_url)
        with engine.connect() as conn:
            cfg.attributes["connection"] = conn
            command.downgrade(cfg, "0009_drop_uses_age_index")
            conn.commit()
            back = conn.execute(text("SELECT key, step, value, rollouts, elapsed_s, wall_time FROM metrics "
                                     "ORDER BY key DESC, step")).all()
        assert [tuple(r) for r in back] == rows
    finally:
        engine.dispose()


def test_upgrade_from_0010_drops_the_stored_previews_and_the_downgrade_recomputes_them(settings: Settings) -> None:
    """0011 on a database with rollouts: the previews now come from the blobs, the trace filters
    still select their rows; the downgrade writes the previews and the per-flag indexes back."""
    engine = make_engine(settings.sqlalchemy_url)
    long = "Wait, ∑ again. " * 30
    texts = {"u0": long, "u1": "Seven is prime.", "u2": ""}
    try:
        assert upgrade_database(settings, engine, revision="0010_metric_chunks") == "0010_metric_chunks"
        with engine.begin() as conn:
            run_id = _old_run(conn)
            for i, (uid, response) in enumerate(texts.items()):
                conn.execute(text("INSERT INTO rollouts (run_id, uid, step, policy_version, group_id, prompt_id, "
                                  "correct, format_ok, length, truncated, use_count, reuse_count, wall_time, preview) "
                                  "VALUES (:run, :uid, :step, :step, 'g', 'p', :ok, true, 5, false, 1, 0, 0, 'old')"),
                             {"run": run_id, "uid": uid, "step": i + 1, "ok": i % 2 == 1})
                rid = conn.execute(text("SELECT max(id) FROM rollouts")).scalar_one()
                conn.execute(text("INSERT INTO rollout_texts (rollout_id, body) VALUES (:r, :b)"),
                             {"r": rid, "b": rollout_text.pack("Compute.", response)})
        assert upgrade_database(settings, engine) == head_revision()
        assert _diff(engine) == []
        assert "preview" not in {c["name"] for c in inspect(engine).get_columns("rollouts")}
        with Session(engine) as s:
            ids = {r.uid: r.id for r in s.execute(select(Rollout).where(Rollout.run_id == run_id)).scalars()}
            assert queries.rollout_previews(s, list(ids.values())) == {
                ids[uid]: rollout_text.preview(response) for uid, response in texts.items()}
            page = queries.rollout_page(s, run_id, [Rollout.run_id == run_id, Rollout.correct == True],  # noqa: E712
                                        None, None, "asc", 50)
            assert [r.uid for r in page[0]] == ["u1"] and page[1] == 1
        cfg = alembic_config(settings.sqlalchemy_url)
        with engine.connect() as conn:
            cfg.attributes["connection"] = conn
            command.downgrade(cfg, "0010_metric_chunks")
            conn.commit()
            back = {uid: pv for uid, pv in conn.execute(text("SELECT uid, preview FROM rollouts"))}
        assert back == {uid: rollout_text.preview(response) for uid, response in texts.items()}
        indexes = {i["name"] for i in inspect(engine).get_indexes("rollouts")}
        assert {"ix_rollouts_run_step_id", "ix_rollouts_run_correct_step", "ix_rollouts_run_truncated_step"} <= indexes
        assert "ix_rollouts_run_step_flags" not in indexes
    finally:
        engine.dispose()
