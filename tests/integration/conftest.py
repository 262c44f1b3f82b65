"""Fixtures for the studio integration tests (see studio_harness.py for the process helpers).

Backends:
  embedded  SQLite file + kombu filesystem broker in a temporary data directory
  postgres  a fresh PostgreSQL database (created and dropped here) + Redis broker, on a queue name
            of its own so that nothing else on the same Redis consumes these messages
  rabbitmq  a fresh PostgreSQL database + RabbitMQ broker, on a queue name of its own (deleted
            afterwards); Celery results then go to PostgreSQL (db+), a path no other backend takes

Which tests run on which backends: REMIX_TEST_BACKENDS=a,b runs every test on exactly those. Unset,
every test runs on embedded and postgres, and the tests marked `all_brokers` (the core job path of
test_studio_api.py: train → read back, cancel, worker SIGKILL → resume) on rabbitmq as well, so that
the third broker is covered without tripling the suite's runtime.

Service URLs: REMIX_TEST_POSTGRES_URL (admin connection used to create/drop the test database,
default postgresql://postgres@127.0.0.1:5432/postgres), REMIX_TEST_REDIS_URL (default
redis://127.0.0.1:6379/0) and REMIX_TEST_RABBITMQ_URL (default amqp://guest:guest@127.0.0.1:5672//).
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
RABBITMQ_URL = os.environ.get("REMIX_TEST_RABBITMQ_URL", "amqp://guest:guest@127.0.0.1:5672//")
_SELECTED = os.environ.get("REMIX_TEST_BACKENDS")
BACKENDS = [b.strip() for b in (_SELECTED or "embedded,postgres").split(",") if b.strip()]
# tests marked `all_brokers` also run on these unless REMIX_TEST_BACKENDS says otherwise
ALL_BROKERS = BACKENDS if _SELECTED else [*BACKENDS, "rabbitmq"]


def pytest_configure(config) -> None:  # noqa: ANN001
    config.addinivalue_line("markers", "all_brokers: also runs on the rabbitmq backend by default "
                                       "(see tests/integration/conftest.py)")


def pytest_generate_tests(metafunc) -> None:  # noqa: ANN001
    if "deployment" in metafunc.fixturenames:
        backends = ALL_BROKERS if metafunc.definition.get_closest_marker("all_brokers") else BACKENDS
        metafunc.parametrize("deployment", backends, indirect=True, scope="module")


def _pg_available(*, redis_too: bool = True) -> str | None:
    try:
        import psycopg

        with psycopg.connect(PG_ADMIN_URL, connect_timeout=3) as conn:
            conn.execute("select 1")
    except Exception as exc:  # noqa: BLE001
        return f"PostgreSQL at {PG_ADMIN_URL}: {exc}"
    if not redis_too:
        return None
    try:
        import redis

        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=3).ping()
    except Exception as exc:  # noqa: BLE001
        return f"Redis at {REDIS_URL}: {exc}"
    return None


def _rabbitmq_available() -> str | None:
    from kombu import Connection

    try:
        with Connection(RABBITMQ_URL, connect_timeout=3) as conn:
            conn.ensure_connection(max_retries=1)
    except Exception as exc:  # noqa: BLE001
        return f"RabbitMQ at {RABBITMQ_URL}: {exc}"
    return None


def _rabbitmq_delete_queue(queue: str) -> None:
    from kombu import Connection

    with Connection(RABBITMQ_URL, connect_timeout=3) as conn:
        conn.default_channel.queue_delete(queue)


def _pg_url(dbname: str) -> str:
    base, _, _ = PG_ADMIN_URL.rpartition("/")
    return f"{base}/{dbname}"


def _pg_admin(sql: str) -> None:
    import psycopg

    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(sql)


@pytest.fixture(scope="module")
def deployment(request, tmp_path_factory) -> Iterator[Deployment]:
    """An API process plus one worker on a backend (parametrized above), shared by a test module."""
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
    dbname = queue = None
    if backend in ("postgres", "rabbitmq"):
        rabbit = backend == "rabbitmq"
        problem = _pg_available(redis_too=not rabbit) or (_rabbitmq_available() if rabbit else None)
        if problem:
            pytest.fail(f"the {backend} backend needs running services: {problem} "
                        "(or set REMIX_TEST_BACKENDS=embedded)")
        dbname = f"remix_it_{uuid.uuid4().hex[:10]}"
        _pg_admin(f'CREATE DATABASE "{dbname}"')
        queue = f"it-{uuid.uuid4().hex[:10]}"
        env.update({"REMIX_DATABASE_URL": _pg_url(dbname), "REMIX_GPU_QUEUE": queue,
                    "REMIX_BROKER_URL": REDIS_URL if backend == "postgres" else RABBITMQ_URL})
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
        if backend == "rabbitmq":
            _rabbitmq_delete_queue(queue)
        if dbname:
            _pg_admin(f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE)')
