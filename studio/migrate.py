"""Run the Alembic migrations shipped inside the package (`studio/migrations`).

`remix studio` and `remix worker` both call `upgrade_database()` on start. Concurrent starts are
serialised: a PostgreSQL advisory lock, or a file lock next to the SQLite database.
"""

from __future__ import annotations

import fcntl
import functools
from contextlib import contextmanager
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import text
from sqlalchemy.engine import Connection, Engine

from studio.db import get_engine
from studio.rollout_text import TERMS_INDEX, is_search_table
from studio.settings import PACKAGE_DIR, Settings, get_settings

_PG_LOCK_KEY = 0x52454D4958  # "REMIX"


def alembic_config(url: str | None = None) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(PACKAGE_DIR / "migrations"))
    if url:
        cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def include_object(obj, name, type_, reflected, compare_to) -> bool:  # noqa: ANN001
    """Autogenerate ignores what one dialect has and the other not (migration 0007): SQLite's FTS5
    table with its shadow tables, and PostgreSQL's GIN index on the search terms (which
    tests/integration/test_migrations.py checks by name)."""
    return not ((type_ == "table" and is_search_table(name)) or (type_ == "index" and name == TERMS_INDEX))


@functools.cache  # the migrations ship with the code: fixed for the process; /health asks on every call
def head_revision() -> str | None:
    return ScriptDirectory.from_config(alembic_config()).get_current_head()


def current_revision(conn: Connection) -> str | None:
    return MigrationContext.configure(conn).get_current_revision()


@contextmanager
def _sqlite_file_lock(settings: Settings):
    db_path = settings.sqlalchemy_url.split("///", 1)[1]
    lock_path = Path(db_path + ".migrate.lock") if db_path and db_path != ":memory:" else None
    if lock_path is None:
        yield
        return
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "w") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def upgrade_database(settings: Settings | None = None, engine: Engine | None = None, revision: str = "head") -> str | None:
    """Bring the database to `revision`; returns the revision it is at afterwards."""
    settings = settings or get_settings()
    engine = engine or get_engine(settings)
    cfg = alembic_config(settings.sqlalchemy_url)
    if engine.dialect.name == "postgresql":
        with engine.connect() as conn:
            conn.execute(text("SELECT pg_advisory_lock(:k)"), {"k": _PG_LOCK_KEY})
            conn.commit()
            try:
                if current_revision(conn) != head_revision() or revision != "head":
                    cfg.attributes["connection"] = conn
                    command.upgrade(cfg, revision)
                    conn.commit()
                return current_revision(conn)
            finally:
                conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": _PG_LOCK_KEY})
                conn.commit()
    with _sqlite_file_lock(settings) if engine.dialect.name == "sqlite" else _nullcontext():
        with engine.connect() as conn:
            if current_revision(conn) != head_revision() or revision != "head":
                cfg.attributes["connection"] = conn
                command.upgrade(cfg, revision)
                conn.commit()
            return current_revision(conn)


@contextmanager
def _nullcontext():
    yield


def database_revision(engine: Engine | None = None) -> str | None:
    with (engine or get_engine()).connect() as conn:
        return current_revision(conn)
