"""Engine and session helpers shared by the API, the worker and the CLI.

SQLite (the embedded default) gets WAL mode, a busy timeout and foreign keys on every connection,
so the API can read while the worker writes and cascading deletes work like on PostgreSQL.
"""

from __future__ import annotations

import functools
import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

from sqlalchemy import Select, event
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import DBAPIError, DisconnectionError, OperationalError
from sqlmodel import Session, create_engine

from studio.settings import Settings, get_settings

T = TypeVar("T")

_engines: dict[str, Engine] = {}
_lock = threading.Lock()
# The last (settings, engine) handed out: the API asks on every request, and working out the URL
# resolves the data folder on disk each time. Only for settings whose URL cannot change with the
# working directory; dispose_engines() forgets it.
_last: tuple[Settings, Engine] | None = None


# PostgreSQL connections kept per process: enough for every thread of an API process that can hold
# one (backend/app.py's 8 read threads, deps.py's 4 write threads, the reaper, the health probe)
# with room to spare. A smaller pool opened and closed overflow connections all the time: under
# 300 concurrent clients ~38 new server processes a second, about a third of the machine.
POOL_SIZE = 20


def make_engine(url: str, *, busy_timeout_ms: int = 30000, pool_size: int = POOL_SIZE) -> Engine:
    """A new engine for `url` (SQLAlchemy form). Prefer `get_engine()` for the shared one."""
    if url.startswith("sqlite"):
        path = url.split("///", 1)[1] if "///" in url else ""
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            # Runs, rollouts and token hashes are the owner's: 0600 (SQLite gives -wal/-shm the same mode).
            os.close(os.open(path, os.O_CREAT | os.O_RDWR, 0o600))
            os.chmod(path, 0o600)
        # A connection per API thread (backend/app.py's API_THREADS and deps.py's write threads) and some
        # for the reaper and the health probe: SQLite connections are cheap, and a request never waits for another's.
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": busy_timeout_ms / 1000},
                               pool_size=40, max_overflow=10)

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn, _record):  # noqa: ANN001
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute(f"PRAGMA busy_timeout={int(busy_timeout_ms)}")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.close()

        @event.listens_for(engine, "checkin")
        def _no_deadline(dbapi_conn, _record):  # noqa: ANN001 - see limit_statements
            dbapi_conn.set_progress_handler(None, 0)

        return engine
    engine = create_engine(url, pool_size=pool_size, max_overflow=10)
    _ping_connections_idle_for(engine, PING_AFTER_IDLE_S)
    return engine


# A PostgreSQL connection is pinged before use only when it has sat in the pool for this long: a
# ping is a round trip, and a hot read is only three or four of them. A connection the database
# dropped (a restart) within this window fails its first request instead, and that failure
# invalidates the pool (SQLAlchemy's disconnect handling), so each process loses one request.
PING_AFTER_IDLE_S = 1.0


def _ping_connections_idle_for(engine: Engine, idle_s: float) -> None:
    """pool_pre_ping, skipped for connections back in the pool less than `idle_s` ago."""

    @event.listens_for(engine, "connect")
    @event.listens_for(engine, "checkin")
    def _note_time(_dbapi_conn, record) -> None:  # noqa: ANN001
        record.info["idle_since"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _ping_if_idle(dbapi_conn, record, _proxy) -> None:  # noqa: ANN001
        if time.monotonic() - record.info.get("idle_since", 0.0) < idle_s:
            return
        try:
            engine.dialect.do_ping(dbapi_conn)
        except engine.dialect.loaded_dbapi.Error as exc:
            # the pool discards this connection and checks out another (up to three times)
            raise DisconnectionError(f"ping failed: {exc}") from exc


@functools.cache
def autocommit_engine(engine: Engine) -> Engine:
    """`engine` whose connections run each statement in its own transaction (PostgreSQL): the API's
    GET sessions, which only read, then send no BEGIN and no ROLLBACK. At READ COMMITTED every
    statement saw its own snapshot already, so nothing a read returns changes. SQLite's driver
    does not open a transaction for a SELECT in the first place: `engine` itself."""
    return engine if engine.dialect.name == "sqlite" else engine.execution_options(isolation_level="AUTOCOMMIT")


def get_engine(settings: Settings | None = None) -> Engine:
    global _last  # noqa: PLW0603
    settings = settings or get_settings()
    last = _last
    if last is not None and last[0] is settings:
        return last[1]
    url = settings.sqlalchemy_url
    with _lock:
        engine = _engines.get(url)
        if engine is None:
            engine = _engines[url] = make_engine(url, busy_timeout_ms=settings.sqlite_busy_timeout_ms)
        if settings.database_url or settings.data_dir.expanduser().is_absolute():
            _last = (settings, engine)
        return engine


def dispose_engines() -> None:
    global _last  # noqa: PLW0603
    with _lock:
        _last = None
        for engine in _engines.values():
            engine.dispose()
        _engines.clear()
        autocommit_engine.cache_clear()


@event.listens_for(Session, "after_begin")
def limit_statements(session: Session, _transaction, connection) -> None:  # noqa: ANN001
    """Sessions made with info={"timeout_s": t} (the API's) give up on a query after t seconds:
    PostgreSQL cancels the statement (statement_timeout, for this transaction), SQLite interrupts
    it from a progress handler once the transaction is t seconds old. Either raises
    OperationalError; a runaway search can no longer keep the database busy after the client left."""
    timeout_s = session.info.get("timeout_s")
    if connection.dialect.name == "postgresql":
        _api_session_settings(connection, int(timeout_s * 1000) if timeout_s else 0)
    elif timeout_s and connection.dialect.name == "sqlite":
        deadline = time.monotonic() + timeout_s
        connection.connection.driver_connection.set_progress_handler(lambda: time.monotonic() > deadline, 10_000)


def _api_session_settings(connection: Connection, ms: int) -> None:
    """PostgreSQL's statement_timeout for this transaction (and, with the session-level SET, custom
    plans: below), set for the connection's session and remembered on it: the API's sessions all
    want the same value, so after a connection's first request this costs no round trip. (0: the
    server's default, what a fresh connection has.)"""
    if connection.info.get("statement_timeout_ms", 0) == ms:
        return
    # psycopg 3 drives every PostgreSQL URL (settings.normalise_database_url)
    from psycopg.pq import TransactionStatus

    raw = connection.connection.driver_connection
    if raw.info.transaction_status != TransactionStatus.IDLE:
        connection.exec_driver_sql(f"SET LOCAL statement_timeout = {ms}")  # a statement has begun one
        return
    # outside any transaction: a SET inside one would end with it (every GET's session rolls back).
    # With it, the API's connections plan every statement for its actual parameters: a run's rows
    # are one range of shared tables, and the generic plan PostgreSQL switches to once psycopg has
    # prepared a statement (its fifth run) cannot see which range -- a trace search at 1M rollouts
    # went from ~20 ms to 90-250 ms. (Not for the worker's sink: re-planning its pipelined upserts
    # cut its ingest from ~2,300 to 1,230-1,550 rollouts/s.)
    autocommit, raw.autocommit = raw.autocommit, True
    try:
        raw.execute(f"SET statement_timeout = {ms}; SET plan_cache_mode = force_custom_plan")
    finally:
        raw.autocommit = autocommit
    connection.info["statement_timeout_ms"] = ms


def is_timeout(exc: BaseException) -> bool:
    text = str(exc).lower()
    return isinstance(exc, OperationalError) and ("statement timeout" in text or "interrupted" in text)


def fetch_binary(session: Session, stmt: Select) -> list[tuple]:
    """The rows of `stmt`; on PostgreSQL in the binary wire format, so that bytea columns arrive as
    bytes rather than as hex text that the server encodes and the driver decodes (the compare
    page's 1,100 metric chunks of 4 kB: 16 ms against 37–44 ms). Same connection and transaction."""
    conn = session.connection()
    if conn.dialect.name != "postgresql":
        return [tuple(row) for row in conn.execute(stmt)]
    import psycopg

    compiled = stmt.compile(dialect=conn.dialect, compile_kwargs={"render_postcompile": True})
    sql, params = str(compiled), compiled.params
    try:
        with conn.connection.driver_connection.cursor(binary=True) as cursor:
            return cursor.execute(sql, params).fetchall()
    except psycopg.Error as exc:  # raised as SQLAlchemy would (the API answers a timeout with 503)
        raise DBAPIError.instance(sql, params, exc, psycopg.Error, dialect=conn.dialect) from exc


def refresh_statistics(engine: Engine) -> None:
    """SQLite: sampled planner statistics (ANALYZE reading ~1,000 rows per index: 2.2 s at 1M
    rollouts, measured once on the 2-core VM beside another job), so that SQLite weighs the
    rollouts' indexes by their real selectivity. PostgreSQL's autovacuum keeps its own."""
    if engine.dialect.name != "sqlite":
        return
    with engine.connect() as conn:
        conn.exec_driver_sql("PRAGMA analysis_limit=1000")
        conn.exec_driver_sql("ANALYZE")
        conn.commit()


@contextmanager
def session_scope(engine: Engine | None = None) -> Iterator[Session]:
    """A session that commits on success and rolls back on error."""
    with Session(engine or get_engine(), expire_on_commit=False) as session:
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise


def is_transient(exc: BaseException) -> bool:
    """Lock contention (SQLite) or a dropped connection: worth retrying."""
    if not isinstance(exc, OperationalError):
        return False
    text = str(exc).lower()
    return any(s in text for s in ("database is locked", "database table is locked", "busy",
                                   "server closed the connection", "connection", "deadlock detected"))


def retrying(fn: Callable[[], T], *, attempts: int = 5, delay_s: float = 0.2) -> T:
    """Run `fn` (one whole transaction) again on transient database errors."""
    for i in range(attempts):
        try:
            return fn()
        except OperationalError as exc:
            if i == attempts - 1 or not is_transient(exc):
                raise
            time.sleep(delay_s * (2**i))
    raise AssertionError("unreachable")


def retry_transient(fn: Callable[..., T]) -> Callable[..., T]:
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        return retrying(lambda: fn(*args, **kwargs))

    return wrapper
