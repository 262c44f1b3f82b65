"""Studio settings: one pydantic-settings object read from the environment (prefix REMIX_) and `.env`.

The embedded default needs nothing set: a SQLite file and kombu's filesystem broker live in the data
directory. The scale-out setup only changes URLs:

    REMIX_DATABASE_URL=postgresql://user@db-host/remix
    REMIX_BROKER_URL=redis://redis-host:6379/0        (or amqp://guest:guest@rabbit-host//)
"""

from __future__ import annotations

import functools
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

PACKAGE_DIR = Path(__file__).resolve().parent
PROJECT_DIR = PACKAGE_DIR.parent


def _split_tokens(raw: str) -> list[str]:
    return [t.strip() for t in raw.split(",") if t.strip()]


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="REMIX_", env_file=".env", env_file_encoding="utf-8",
                                      extra="ignore")

    # Where the embedded default keeps its SQLite file, broker folders, API token and run artefacts.
    data_dir: Path = Path(".remix")
    # SQLAlchemy-style URL; default sqlite:///<data_dir>/studio.db. postgresql:// is mapped to psycopg 3.
    database_url: str | None = None
    # Celery broker; default kombu's server-less "filesystem://" with folders under <data_dir>/broker.
    broker_url: str | None = None
    # Celery result backend (task progress via update_state). Default: the Redis broker itself, or a
    # SQLAlchemy backend next to the database for the other brokers.
    result_backend: str | None = None
    # Checkpoints and other run artefacts go to <runs_dir>/<run id>/.
    runs_dir: Path | None = None

    # Comma-separated bearer tokens allowed to write; read-only tokens may only read.
    api_tokens: str = ""
    readonly_tokens: str = ""
    # Reads are open by default (local studio); set true to require a token for GET endpoints too.
    auth_reads: bool = False

    # Folders whose files studio jobs may read (data, benchmarks, models), os.pathsep-separated;
    # empty = the benchmark folders, ../shared/data and the data dir. The runs dir is always one.
    # studio/paths.py applies it, in the API and again in the worker.
    data_roots: str = ""
    # Admin switches: let API submissions set model.trust_remote_code=true (runs hub code on the
    # worker) and warm_start.cache_dir (makes the worker write where the submitter says).
    allow_remote_code: bool = False
    allow_cache_dirs: bool = False

    # Celery queue for training/evaluation tasks (one worker process per accelerator).
    gpu_queue: str = "gpu"
    # A running job whose heartbeat is older than this is considered lost and is re-queued.
    heartbeat_interval_s: float = Field(5.0, gt=0)
    heartbeat_timeout_s: float = Field(60.0, gt=0)
    # How often the reaper (in the API process) looks for lost jobs and undelivered dispatches.
    reaper_interval_s: float = Field(5.0, gt=0)
    # /health says `starting` (not `degraded`) for this long after the API started while no worker
    # has come online yet (the studio's own worker imports torch first: tens of seconds).
    worker_start_grace_s: float = Field(180.0, ge=0)
    # A job still PENDING this long after creation had its dispatch fail: send it again.
    dispatch_retry_s: float = Field(30.0, gt=0)
    # A job lost this many times is marked failed instead of being re-queued again.
    max_attempts: int = Field(3, ge=1)
    # Redis/SQS: seconds before an unacknowledged message is delivered again; keep it above the
    # longest job (acks_late), the SQL claim discards stale deliveries anyway.
    visibility_timeout_s: int = Field(7 * 24 * 3600, ge=60)
    # Run the reaper inside the API process (turn off when several API replicas share one DB and
    # you want just one of them to do it; running it in several is still safe).
    reaper_enabled: bool = True

    # API requests give up on a database query after this many seconds (503; 0: no limit).
    query_timeout_s: float = Field(10.0, ge=0)
    # SQLite only: milliseconds a writer waits for the lock before failing.
    sqlite_busy_timeout_ms: int = Field(30000, ge=0)
    # Rows per SQL transaction in the worker's sink (batched off the training hot path).
    sink_batch_rows: int = Field(5000, ge=1)

    # The dashboard (built separately) is served from here when the folders exist.
    frontend_dir: Path = PROJECT_DIR / "frontend"
    # Comma-separated CORS origins for a dashboard served elsewhere (empty: same origin only).
    cors_origins: str = ""

    # ---------------------------------------------------------------- derived values
    @property
    def data_path(self) -> Path:
        return self.data_dir.expanduser().resolve()

    @property
    def runs_path(self) -> Path:
        return (self.runs_dir.expanduser() if self.runs_dir else self.data_path / "runs").resolve()

    @property
    def sqlalchemy_url(self) -> str:
        url = self.database_url or f"sqlite:///{self.data_path / 'studio.db'}"
        return normalise_database_url(url)

    @property
    def is_sqlite(self) -> bool:
        return self.sqlalchemy_url.startswith("sqlite")

    @property
    def celery_broker_url(self) -> str:
        return self.broker_url or "filesystem://"

    @property
    def broker_is_filesystem(self) -> bool:
        return self.celery_broker_url.startswith("filesystem:")

    @property
    def broker_folder(self) -> Path:
        return self.data_path / "broker"

    @property
    def celery_result_backend(self) -> str:
        if self.result_backend:
            return self.result_backend
        broker = self.celery_broker_url
        if broker.startswith(("redis://", "rediss://")):
            return broker
        if self.is_sqlite:
            # A file of its own: Celery's result writes never contend with the studio's tables.
            return f"db+sqlite:///{self.data_path / 'celery-results.db'}"
        return "db+" + self.sqlalchemy_url

    @property
    def write_tokens(self) -> list[str]:
        return _split_tokens(self.api_tokens)

    @property
    def read_tokens(self) -> list[str]:
        return _split_tokens(self.readonly_tokens)

    @property
    def cors_origin_list(self) -> list[str]:
        return _split_tokens(self.cors_origins)


def normalise_database_url(url: str) -> str:
    """postgresql:// and postgres:// → postgresql+psycopg:// (psycopg 3); others unchanged."""
    for prefix in ("postgres://", "postgresql://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix):]
    return url


def redact_url(url: str) -> str:
    """Hide the password in a URL for logs and the health endpoint."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparseable url>"
    if parts.password:
        netloc = parts.netloc.replace(":" + parts.password + "@", ":***@")
        return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))
    return url


@functools.lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()


def reset_settings_cache() -> None:
    get_settings.cache_clear()
