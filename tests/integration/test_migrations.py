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
from sqlalchemy import inspect
from sqlmodel import SQLModel

import studio.models  # noqa: F401
from studio.db import make_engine
from studio.migrate import alembic_config, current_revision, head_revision, include_object, upgrade_database
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


def test_migrations_match_models_and_downgrade(settings: Settings) -> None:
    engine = make_engine(settings.sqlalchemy_url)
    try:
        assert upgrade_database(settings, engine) == head_revision()
        assert _diff(engine) == [], "models.py and the migrations disagree: add a migration"
        # idempotent: a second start (or a worker starting at the same time) changes nothing
        assert upgrade_database(settings, engine) == head_revision()
        tables = set(inspect(engine).get_table_names())
        assert {"runs", "jobs", "metrics", "latest_metrics", "checkpoints", "rollouts", "rollout_texts",
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
