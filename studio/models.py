"""The studio's SQL schema, defined once and shared by the API (backend/) and the worker (worker/).

SQL is the source of truth: a job row exists before its Celery message is sent, the worker claims it
with a conditional UPDATE, heartbeats into it and reads its cancel flag; every rollout, metric and
checkpoint of a run lands here. Big texts (prompt/response) live in `rollout_texts`, apart from the
numeric columns that the dashboard filters and aggregates on.

Tables come from Alembic migrations (studio/migrations), never from `create_all` in production; a
unit test checks that the migrations and these models agree.
"""

from __future__ import annotations

import json
import math
import zlib
from datetime import datetime, timezone
from enum import Enum
from typing import Any, ClassVar

from sqlalchemy import JSON, BigInteger, DateTime, Double, Index, Integer, LargeBinary, Text, UniqueConstraint
from sqlalchemy.dialects.postgresql import JSONB, TSVECTOR
from sqlmodel import Field, SQLModel

from studio.rollout_text import TERMS_INDEX

# Named constraints keep Alembic's SQLite batch mode and later migrations deterministic.
SQLModel.metadata.naming_convention = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

# 64-bit ids on PostgreSQL; SQLite only auto-increments an "INTEGER PRIMARY KEY".
BigId = BigInteger().with_variant(Integer(), "sqlite")
JsonType = JSON().with_variant(JSONB(), "postgresql")
# a rollout's search terms: a tsvector on PostgreSQL; SQLite leaves it NULL and indexes them in
# FTS5 instead (studio/rollout_text.py)
TermsType = Text().with_variant(TSVECTOR(), "postgresql")


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def as_utc(value: datetime | None) -> datetime | None:
    """SQLite hands back naive datetimes (stored as UTC): make every datetime aware."""
    if value is None:
        return None
    return value if value.tzinfo is not None else value.replace(tzinfo=timezone.utc)


def _ts(**kwargs: Any) -> Any:
    return Field(default=None, sa_type=DateTime(timezone=True), **kwargs)


class JobStatus(str, Enum):
    PENDING = "pending"  # row written, message not (yet) known to be sent
    QUEUED = "queued"  # message sent; waiting for a worker
    RUNNING = "running"  # claimed by a worker that heartbeats
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


ACTIVE_STATUSES = (JobStatus.PENDING.value, JobStatus.QUEUED.value, JobStatus.RUNNING.value)
TERMINAL_STATUSES = (JobStatus.SUCCEEDED.value, JobStatus.FAILED.value, JobStatus.CANCELLED.value)


class JobKind(str, Enum):
    TRAIN = "train"
    EVAL = "eval"


# ------------------------------------------------------------------------------------- runs & jobs
class Run(SQLModel, table=True):
    __tablename__ = "runs"
    __table_args__ = (
        Index("ix_runs_status_created", "status", "created_at"),
        Index("ix_runs_algorithm_created", "algorithm", "created_at"),
        Index("ix_runs_created", "created_at", "id"),  # the run list, newest first
    )

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(max_length=200)
    preset: str = Field(max_length=64)
    algorithm: str = Field(max_length=32)
    # The complete, validated RunConfig (config_to_dict) and the body the user submitted.
    config: dict = Field(default_factory=dict, sa_type=JsonType)
    request: dict = Field(default_factory=dict, sa_type=JsonType)
    status: str = Field(default=JobStatus.PENDING.value, max_length=16)
    cancel_requested: bool = Field(default=False)
    # Retry lineage: a retried run points at the run it repeats.
    parent_run_id: int | None = Field(default=None, foreign_key="runs.id", ondelete="SET NULL", index=True)
    steps_total: int = Field(default=0)
    steps_done: int = Field(default=0)
    # Cost counters (the trainer's cumulative cost/rollouts, cost/tokens) and training wall time.
    rollouts_generated: int = Field(default=0, sa_type=BigInteger)
    tokens_generated: int = Field(default=0, sa_type=BigInteger)
    elapsed_s: float = Field(default=0.0, sa_type=Double)
    output_dir: str | None = Field(default=None, sa_type=Text)
    summary: dict | None = Field(default=None, sa_type=JsonType)
    error: str | None = Field(default=None, sa_type=Text)
    created_at: datetime = Field(default_factory=utcnow, sa_type=DateTime(timezone=True))
    started_at: datetime | None = _ts()
    finished_at: datetime | None = _ts()
    updated_at: datetime = Field(default_factory=utcnow, sa_type=DateTime(timezone=True))


class Job(SQLModel, table=True):
    __tablename__ = "jobs"
    __table_args__ = (
        Index("ix_jobs_status_heartbeat", "status", "heartbeat_at"),
        Index("ix_jobs_created", "created_at"),
        Index("uq_jobs_idempotency_key", "idempotency_key", unique=True),
    )

    id: int | None = Field(default=None, primary_key=True)
    run_id: int | None = Field(default=None, foreign_key="runs.id", ondelete="CASCADE", index=True)
    kind: str = Field(default=JobKind.TRAIN.value, max_length=16)
    status: str = Field(default=JobStatus.PENDING.value, max_length=16)
    # Number of times a worker started this job (1 on the first claim).
    attempt: int = Field(default=0)
    # Attempts that ended with a lost worker (stale heartbeat); at max_attempts the job fails.
    # Graceful interruptions (worker shutdown) do not count.
    lost_attempts: int = Field(default=0)
    max_attempts: int = Field(default=3)
    # The token of the one Celery message that may claim the job; a re-queue issues a new token,
    # so stale deliveries (Redis visibility timeout, AMQP redelivery) are discarded at claim time.
    dispatch_token: str | None = Field(default=None, max_length=36)
    celery_task_id: str | None = Field(default=None, max_length=64)
    queue: str = Field(default="gpu", max_length=64)
    worker: str | None = Field(default=None, max_length=255)
    cancel_requested: bool = Field(default=False)
    progress_step: int = Field(default=0)
    progress_total: int = Field(default=0)
    resumed_from_step: int | None = Field(default=None)
    last_checkpoint_step: int | None = Field(default=None)
    # What a running attempt does outside its training steps (the warm start, with its ETA).
    phase: str | None = Field(default=None, max_length=255)
    error: str | None = Field(default=None, sa_type=Text)
    params: dict = Field(default_factory=dict, sa_type=JsonType)
    # The Idempotency-Key of the POST that created the job and the sha256 of its body: a retry
    # with the same key gets this job back instead of a duplicate (NULL without the header).
    idempotency_key: str | None = Field(default=None, max_length=255)
    request_hash: str | None = Field(default=None, max_length=64)
    created_at: datetime = Field(default_factory=utcnow, sa_type=DateTime(timezone=True))
    queued_at: datetime | None = _ts()
    started_at: datetime | None = _ts()
    heartbeat_at: datetime | None = _ts()
    finished_at: datetime | None = _ts()


class WorkerNode(SQLModel, table=True):
    """Workers announce themselves here (SQL heartbeat), so /health works on any broker."""

    __tablename__ = "workers"

    hostname: str = Field(primary_key=True, max_length=255)
    pid: int = Field(default=0)
    queues: str = Field(default="", max_length=255)
    status: str = Field(default="online", max_length=16)
    current_job_id: int | None = Field(default=None)
    started_at: datetime = Field(default_factory=utcnow, sa_type=DateTime(timezone=True))
    last_seen_at: datetime = Field(default_factory=utcnow, sa_type=DateTime(timezone=True))


# ------------------------------------------------------------------------------------------ metrics
class MetricChunk(SQLModel, table=True):
    """The points of CHUNK_STEPS consecutive steps of one (run, key) as one blob (studio/metric_chunks.py):
    a series is read as a few blobs instead of one row per point. Re-emitted steps replace their
    points in the chunk."""

    __tablename__ = "metric_chunks"

    run_id: int = Field(foreign_key="runs.id", ondelete="CASCADE", primary_key=True)
    key: str = Field(max_length=250, primary_key=True)
    chunk: int = Field(primary_key=True)  # step // CHUNK_STEPS
    points: bytes = Field(sa_type=LargeBinary)


class LatestMetric(SQLModel, table=True):
    """Last value per (run, key): run lists and summaries never scan the history."""

    __tablename__ = "latest_metrics"

    run_id: int = Field(foreign_key="runs.id", ondelete="CASCADE", primary_key=True)
    key: str = Field(max_length=250, primary_key=True)
    step: int
    value: float | None = Field(default=None, sa_type=Double)
    wall_time: float = Field(sa_type=Double)


class Alert(SQLModel, table=True):
    """A health-alert episode (remix_engine/alerts.py), upserted on (run, rule, first step) as it goes on."""

    __tablename__ = "alerts"
    __table_args__ = (UniqueConstraint("run_id", "rule", "first_step"),)

    id: int | None = Field(default=None, primary_key=True)
    run_id: int = Field(foreign_key="runs.id", ondelete="CASCADE", index=True)
    rule: str = Field(max_length=64)
    status: str = Field(max_length=16)  # firing | resolved
    first_step: int
    last_step: int
    value: float | None = Field(default=None, sa_type=Double)
    threshold: float = Field(sa_type=Double)
    detail: str = Field(max_length=500)
    metric: str = Field(max_length=250)


class Checkpoint(SQLModel, table=True):
    """Policy versions with a checkpoint on disk (under REMIX_RUNS_DIR/<run id>/checkpoints/)."""

    __tablename__ = "checkpoints"
    __table_args__ = (UniqueConstraint("run_id", "step"),)

    id: int | None = Field(default=None, primary_key=True)
    run_id: int = Field(foreign_key="runs.id", ondelete="CASCADE", index=True)
    step: int
    policy_version: int
    path: str = Field(sa_type=Text)
    policy_path: str | None = Field(default=None, sa_type=Text)
    info: dict = Field(default_factory=dict, sa_type=JsonType)
    created_at: datetime = Field(default_factory=utcnow, sa_type=DateTime(timezone=True))


# ----------------------------------------------------------------------------------------- rollouts
class Rollout(SQLModel, table=True):
    """One generated response. Text lives in RolloutText; reuse/importance stats are kept up to date
    from RolloutUse (reuse_count = uses with age > 0, i.e. replays; use_count = all uses)."""

    __tablename__ = "rollouts"
    __table_args__ = (
        UniqueConstraint("run_id", "uid"),
        # the trace page in (step, id) order; its flag filters are checked in the index, before any
        # row is read. One index appended at its right end stays packed: an index per flag (0007)
        # had one insertion point per flag value, and the pages left of the last one split half-full.
        Index("ix_rollouts_run_step_flags", "run_id", "step", "id", "correct", "format_ok", "truncated"),
        Index("ix_rollouts_run_group", "run_id", "group_id"),
        Index("ix_rollouts_run_reuse", "run_id", "reuse_count"),
        # a policy version's rollouts sit in a few steps anywhere in the run: seek them
        Index("ix_rollouts_run_version_step", "run_id", "policy_version", "step", "id"),
        # a search walks the run in id order (studio/queries.py rollout_page); SQLite: its id range
        Index("ix_rollouts_run_id", "run_id", "id"),
    )

    id: int | None = Field(default=None, sa_type=BigId, primary_key=True)
    run_id: int = Field(foreign_key="runs.id", ondelete="CASCADE")
    uid: str = Field(max_length=64)
    step: int  # the step that generated it
    policy_version: int
    group_id: str = Field(max_length=64)
    prompt_id: str = Field(max_length=128)
    extracted: str | None = Field(default=None, sa_type=Text)
    reference: str | None = Field(default=None, sa_type=Text)
    reward: float | None = Field(default=None, sa_type=Double)
    correct: bool = Field(default=False)
    format_ok: bool = Field(default=False)
    reason: str | None = Field(default=None, sa_type=Text)
    length: int = Field(default=0)
    truncated: bool = Field(default=False)
    advantage: float | None = Field(default=None, sa_type=Double)
    use_count: int = Field(default=0)
    reuse_count: int = Field(default=0)
    max_age: int | None = Field(default=None)
    ratio_mean: float | None = Field(default=None, sa_type=Double)  # mean over its uses
    ratio_max: float | None = Field(default=None, sa_type=Double)  # max over its uses
    clipfrac: float | None = Field(default=None, sa_type=Double)  # mean over its uses
    kl_to_behavior: float | None = Field(default=None, sa_type=Double)  # mean over its uses
    wall_time: float = Field(sa_type=Double)


class RolloutText(SQLModel, table=True):
    """Prompt and response as one zlib blob, and the search terms (studio/rollout_text.py)."""

    __tablename__ = "rollout_texts"
    __table_args__ = (Index(TERMS_INDEX, "terms", postgresql_using="gin").ddl_if(dialect="postgresql"),)

    rollout_id: int = Field(sa_type=BigId, foreign_key="rollouts.id", ondelete="CASCADE", primary_key=True)
    body: bytes = Field(sa_type=LargeBinary)
    terms: str | None = Field(default=None, sa_type=TermsType)


class RolloutUse(SQLModel, table=True):
    """A training step consuming a rollout (age 0 = fresh, > 0 = replayed)."""

    __tablename__ = "rollout_uses"
    __table_args__ = (
        UniqueConstraint("run_id", "rollout_uid", "step"),
        Index("ix_rollout_uses_run_step", "run_id", "step"),
    )

    id: int | None = Field(default=None, sa_type=BigId, primary_key=True)
    run_id: int = Field(foreign_key="runs.id", ondelete="CASCADE")
    rollout_id: int | None = Field(default=None, sa_type=BigInteger, foreign_key="rollouts.id", ondelete="CASCADE",
                                   index=True)
    rollout_uid: str = Field(max_length=64)
    step: int  # the consuming step
    age: int
    ratio_mean: float | None = Field(default=None, sa_type=Double)
    ratio_max: float | None = Field(default=None, sa_type=Double)
    clipfrac: float | None = Field(default=None, sa_type=Double)
    kl_to_behavior: float | None = Field(default=None, sa_type=Double)


class RolloutTokenStats(SQLModel, table=True):
    """The token lens of one use of a sampled rollout (trainer.token_stats_every): a zlib-compressed
    JSON object of per-token lists (remix_engine.events.TokenStatsRecord, values to 4 decimals)."""

    __tablename__ = "rollout_token_stats"
    __table_args__ = (UniqueConstraint("run_id", "rollout_uid", "step"),)

    id: int | None = Field(default=None, sa_type=BigId, primary_key=True)
    run_id: int = Field(foreign_key="runs.id", ondelete="CASCADE")
    rollout_uid: str = Field(max_length=64)
    step: int  # the consuming step
    age: int
    payload: bytes = Field(sa_type=LargeBinary)

    LISTS: ClassVar[tuple[str, ...]] = ("logprobs", "advantages", "entropy", "clipped", "tokens", "behavior_logprobs")

    @classmethod
    def pack(cls, record: Any) -> bytes:
        """A TokenStatsRecord's lists as compressed JSON; 4 decimals are plenty for a colour scale."""
        data = {}
        for name in cls.LISTS:
            values = getattr(record, name)
            if values is not None:
                data[name] = [(round(v, 4) if math.isfinite(v) else None) if isinstance(v, float) else v
                              for v in values]
        return zlib.compress(json.dumps(data, separators=(",", ":"), allow_nan=False).encode(), 6)

    @staticmethod
    def unpack(payload: bytes) -> dict[str, list]:
        return json.loads(zlib.decompress(payload))


class OffPolicyStep(SQLModel, table=True):
    """Uses of one consuming step and policy age, aggregated by the sink as it writes the uses, so
    the off-policy view sums ~3 rows per step instead of every use. Sums and counts of the non-NULL
    values let any step range recombine into exact means."""

    __tablename__ = "offpolicy_steps"

    run_id: int = Field(foreign_key="runs.id", ondelete="CASCADE", primary_key=True)
    step: int = Field(primary_key=True)
    age: int = Field(primary_key=True)
    uses: int = Field(default=0)
    ratio_mean_sum: float | None = Field(default=None, sa_type=Double)
    ratio_mean_n: int = Field(default=0)
    ratio_max: float | None = Field(default=None, sa_type=Double)
    clipfrac_sum: float | None = Field(default=None, sa_type=Double)
    clipfrac_n: int = Field(default=0)
    kl_sum: float | None = Field(default=None, sa_type=Double)
    kl_n: int = Field(default=0)


# -------------------------------------------------------------------------------------- evaluations
class Evaluation(SQLModel, table=True):
    """One benchmark evaluated for one model/checkpoint (filled by the evaluation task)."""

    __tablename__ = "evaluations"
    __table_args__ = (Index("ix_evaluations_benchmark", "benchmark", "created_at"),)

    id: int | None = Field(default=None, primary_key=True)
    run_id: int | None = Field(default=None, foreign_key="runs.id", ondelete="CASCADE", index=True)
    job_id: int | None = Field(default=None, foreign_key="jobs.id", ondelete="SET NULL", index=True)
    checkpoint_step: int | None = Field(default=None)
    model: str = Field(default="", sa_type=Text)
    benchmark: str = Field(max_length=128)
    status: str = Field(default=JobStatus.PENDING.value, max_length=16)
    n_samples: int = Field(default=0)
    k: int = Field(default=1)
    temperature: float = Field(default=0.0, sa_type=Double)
    pass_at_1: float | None = Field(default=None, sa_type=Double)
    avg_at_k: float | None = Field(default=None, sa_type=Double)
    metrics: dict = Field(default_factory=dict, sa_type=JsonType)
    cost_rollouts: int | None = Field(default=None, sa_type=BigInteger)
    created_at: datetime = Field(default_factory=utcnow, sa_type=DateTime(timezone=True))
    finished_at: datetime | None = _ts()
    # 0002: decoding mode ("greedy" | "sample"), grader tag, math-verify second opinion (fraction).
    mode: str = Field(default="greedy", max_length=16)
    grader: str | None = Field(default=None, max_length=32)
    mathverify: float | None = Field(default=None, sa_type=Double)


class EvalSample(SQLModel, table=True):
    __tablename__ = "eval_samples"
    __table_args__ = (UniqueConstraint("evaluation_id", "sample_id", "sample_index"),)

    id: int | None = Field(default=None, sa_type=BigId, primary_key=True)
    evaluation_id: int = Field(foreign_key="evaluations.id", ondelete="CASCADE")
    sample_id: str = Field(max_length=128)  # the problem id
    sample_index: int = Field(default=0)  # which of the k samples
    prompt: str = Field(default="", sa_type=Text)
    response: str = Field(default="", sa_type=Text)
    extracted: str | None = Field(default=None, sa_type=Text)
    reference: str | None = Field(default=None, sa_type=Text)
    correct: bool = Field(default=False)
    format_ok: bool = Field(default=False)
    reason: str | None = Field(default=None, sa_type=Text)
    length: int = Field(default=0)
    truncated: bool = Field(default=False)
    mathverify: bool | None = Field(default=None)  # 0002: math-verify's verdict (second opinion)


class LeaderboardEntry(SQLModel, table=True):
    """Own results (linked to an evaluation) and imported published rows, side by side."""

    __tablename__ = "leaderboard_entries"
    __table_args__ = (Index("ix_leaderboard_benchmark_score", "benchmark", "score"),
                      Index("uq_leaderboard_entries_entry", "entry_key", "benchmark", "mode", unique=True),
                      Index("ix_leaderboard_entries_mode_size", "mode", "size"))

    id: int | None = Field(default=None, primary_key=True)
    source: str = Field(default="own", max_length=16)  # own | published
    model: str = Field(max_length=200)
    method: str = Field(default="", max_length=100)
    benchmark: str = Field(max_length=128)
    metric: str = Field(default="pass@1", max_length=32)
    score: float = Field(sa_type=Double)
    run_id: int | None = Field(default=None, foreign_key="runs.id", ondelete="SET NULL", index=True)
    evaluation_id: int | None = Field(default=None, foreign_key="evaluations.id", ondelete="SET NULL")
    cost_rollouts: int | None = Field(default=None, sa_type=BigInteger)
    reference: str | None = Field(default=None, sa_type=Text)  # citation of a published row
    notes: str | None = Field(default=None, sa_type=Text)
    created_at: datetime = Field(default_factory=utcnow, sa_type=DateTime(timezone=True))
    # 0002 (studio/leaderboard.py): one table line = one entry_key ("published:<dataset>:<size>:<model>"
    # or "eval:<job id>"); mode "greedy" | "t0.1" ...; published cost text ("0.079M", ">3.584M").
    entry_key: str | None = Field(default=None, max_length=255)
    dataset: str | None = Field(default=None, max_length=100)
    size: str | None = Field(default=None, max_length=32)
    mode: str = Field(default="greedy", max_length=16)
    cost_text: str | None = Field(default=None, max_length=32)
    cost_lower_bound: bool = Field(default=False)
    checkpoint_step: int | None = Field(default=None)
    temperature: float | None = Field(default=None, sa_type=Double)
    k: int | None = Field(default=None)
    grader: str | None = Field(default=None, max_length=32)
    mathverify: float | None = Field(default=None, sa_type=Double)
    # 0006: the protocol stamp of a measured row (remix_engine/eval_protocol.py; NULL when published)
    # and the 95% bootstrap interval of `score` (percent).
    protocol: dict | None = Field(default=None, sa_type=JsonType)
    ci_low: float | None = Field(default=None, sa_type=Double)
    ci_high: float | None = Field(default=None, sa_type=Double)
