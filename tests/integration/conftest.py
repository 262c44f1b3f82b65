"""Fixtures for the studio integration tests (see studio_harness.py for the process helpers).

Backends (select with REMIX_TEST_BACKENDS, default "embedded,postgres"):
  embedded  SQLite file + kombu filesystem broker in a temporary data directory
  postgres  a fresh PostgreSQL database (created and dropped here) + Redis broker, on a queue name
            of its own so that nothing else on the same Redis consumes these messages

Service URLs: REMIX_TEST_POSTGRES_URL (admin connection used to create/drop the test database,
default postgresql://postgres@127.0.0.1:5432/postgres) and REMIX_TEST_REDIS_URL (default
redis://127.0.0.1:6379/0).
"""

from __future__ import annotations

import os
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from studio_harness import READ_TOKEN, WRITE_TOKEN, Deployment  # noqa: E402

PG_ADMIN_URL = os.environ.get("REMIX_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
REDIS_URL = os.environ.get("REMIX_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
BACKENDS = [b.strip() for b in os.environ.get("REMIX_TEST_BACKENDS", "embedded,postgres").split(",") if b.strip()]


def _pg_available() -> str | None:
    try:
        import psycopg

        with psycopg.connect(PG_ADMIN_URL, connect_timeout=3) as conn:
            conn.execute("select 1")
    except Exception as exc:  # noqa: BLE001
        return f"PostgreSQL at {PG_ADMIN_URL}: {exc}"
    try:
        import redis

        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=3).ping()
    except Exception as exc:  # noqa: BLE001
        return f"Redis at {REDIS_URL}: {exc}"
    return None


def _pg_url(dbname: str) -> str:
    base, _, _ = PG_ADMIN_URL.rpartition("/")
    return f"{base}/{dbname}"


def _pg_admin(sql: str) -> None:
    import psycopg

    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(sql)


@pytest.fixture(scope="module", params=BACKENDS)
def deployment(request, tmp_path_factory) -> Iterator[Deployment]:
    """An API process plus one worker on the selected backend, shared by a test module."""
    backend = request.param
    root = tmp_path_factory.mktemp(f"studio-{backend}")
    env = {
        "REMIX_DATA_DIR": str(root / "data"),
        "REMIX_API_TOKENS": WRITE_TOKEN,
        "REMIX_READONLY_TOKENS": READ_TOKEN,
        # fast failure detection for the tests (defaults are 5 s / 60 s)
        "REMIX_HEARTBEAT_INTERVAL_S": "0.5",
        "REMIX_HEARTBEAT_TIMEOUT_S": "8",
        "REMIX_REAPER_INTERVAL_S": "0.5",
        "REMIX_DISPATCH_RETRY_S": "10",
    }
    dbname = None
    if backend == "postgres":
        problem = _pg_available()
        if problem:
            pytest.fail(f"the postgres backend needs running services: {problem} "
                        "(or set REMIX_TEST_BACKENDS=embedded)")
        dbname = f"remix_it_{uuid.uuid4().hex[:10]}"
        _pg_admin(f'CREATE DATABASE "{dbname}"')
        env.update({"REMIX_DATABASE_URL": _pg_url(dbname), "REMIX_BROKER_URL": REDIS_URL,
                    "REMIX_GPU_QUEUE": f"it-{uuid.uuid4().hex[:10]}"})
    elif backend != "embedded":
        raise ValueError(f"unknown backend {backend!r} in REMIX_TEST_BACKENDS")
    log_dir = root / "logs"
    log_dir.mkdir()
    dep = Deployment(backend, env, log_dir)
    try:
        dep.start_api()
        dep.start_worker()
        yield dep
    finally:
        dep.stop()
        if dbname:
            _pg_admin(f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE)')
