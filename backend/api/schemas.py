"""Request/response models of the REST API (documented in /openapi.json)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from studio import paths
from studio.models import Job, Run, as_utc
from studio.queries import COUNT_CAP, SEARCH_COUNT_CAP

ERROR_DETAIL = "the full error text (with the traceback); only for requests with a valid token"


def public_error(error: str | None, full: bool) -> str | None:
    """The error's first line; without a token also without absolute paths (the full text is
    `error_detail`, given only to token holders)."""
    if not error or not error.strip():
        return error
    line = error.strip().splitlines()[0]
    return line if full else paths.scrub(line)[:500]


def public_path(path: str | None, full: bool) -> str | None:
    return path if full or path is None else paths.display_path(path)


def public_value(value: Any, full: bool) -> Any:
    """Configs, requests and params: absolute paths in them shown relative to their root."""
    return value if full else paths.scrub(value)


class RunCreate(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{
        "name": "toy remix-grpo",
        "config": {"preset": "toy", "algorithm": "remix-grpo", "steps": 20, "seed": 0,
                   "overrides": {"remix.utd": 2, "rollout.group_size": 4}},
    }]})

    name: str | None = Field(None, max_length=200, description="display name (default: '<algorithm> <preset> #<id>')")
    config: dict[str, Any] = Field(
        default_factory=dict,
        description="Same schema as the CLI: preset, algorithm, steps, seed, overrides ({dotted key: value} "
                    "or ['key=value', ...]) and optionally nested sections such as {\"remix\": {\"utd\": 3}}. "
                    "Every setting and its meaning: GET /api/v1/config/fields (schema: RunConfig).")


class JobOut(BaseModel):
    id: int
    run_id: int | None
    kind: str
    status: str
    attempt: int
    lost_attempts: int
    max_attempts: int
    queue: str
    worker: str | None = Field(description="host and PID of the worker; only for requests with a valid token")
    cancel_requested: bool
    progress_step: int
    progress_total: int
    resumed_from_step: int | None
    last_checkpoint_step: int | None
    phase: str | None = Field(None, description="what a running attempt does outside its steps (the warm start, "
                                                "with its ETA); null while it trains")
    waiting: str | None = Field(None, description="why a pending/queued job has not started yet (no worker online "
                                                  "for its queue, or what the busy worker is doing and how many "
                                                  "jobs are ahead); null once it runs")
    error: str | None = Field(description="one line; without a token without absolute paths")
    error_detail: str | None = Field(None, description=ERROR_DETAIL)
    celery_task_id: str | None
    created_at: datetime
    queued_at: datetime | None
    started_at: datetime | None
    heartbeat_at: datetime | None
    finished_at: datetime | None

    @classmethod
    def of(cls, job: Job, full: bool, waiting: str | None = None) -> JobOut:
        """`full`: the request has a valid token (worker host and PID, full error)."""
        return cls(
            id=job.id, run_id=job.run_id, kind=job.kind, status=job.status, attempt=job.attempt,
            lost_attempts=job.lost_attempts, max_attempts=job.max_attempts, queue=job.queue,
            worker=job.worker if full else None, cancel_requested=job.cancel_requested,
            progress_step=job.progress_step, progress_total=job.progress_total,
            resumed_from_step=job.resumed_from_step, last_checkpoint_step=job.last_checkpoint_step,
            phase=public_error(job.phase, full),  # a warm-start line may name the cache folder
            waiting=public_error(waiting, full),  # it quotes the busy job's phase
            error=public_error(job.error, full), error_detail=job.error if full else None,
            celery_task_id=job.celery_task_id, created_at=as_utc(job.created_at), queued_at=as_utc(job.queued_at),
            started_at=as_utc(job.started_at), heartbeat_at=as_utc(job.heartbeat_at),
            finished_at=as_utc(job.finished_at))


class AlertLinks(BaseModel):
    metrics: str = Field(description="API: the series the rule watches, over the episode's steps")
    traces: str = Field(description="the trace page, filtered to the rollouts generated during the episode")


class AlertOut(BaseModel):
    rule: str
    title: str
    explanation: str = Field(description="what it means and what to try")
    status: str = Field(description="firing (still true at the last step seen) or resolved")
    first_step: int
    last_step: int
    value: float | None = Field(description="the episode's worst value of the rule's measure")
    threshold: float = Field(description="the run's setting alerts.<rule>")
    detail: str = Field(description="one line with the numbers behind it")
    metric: str = Field(description="the chart the alert marks")
    links: AlertLinks


class AlertCounts(BaseModel):
    firing: int = 0
    total: int = 0


class RunOut(BaseModel):
    id: int
    name: str
    preset: str
    algorithm: str
    status: str
    cancel_requested: bool
    parent_run_id: int | None
    steps_total: int
    steps_done: int
    rollouts_generated: int
    tokens_generated: int
    elapsed_s: float
    error: str | None = Field(description="one line; without a token without absolute paths")
    error_detail: str | None = Field(None, description=ERROR_DETAIL)
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    updated_at: datetime
    alerts: AlertCounts = Field(default_factory=AlertCounts, description="health alerts: still firing, and all")
    latest_metrics: dict[str, float | None] = Field(
        default_factory=dict, description="in lists: the latest value of each key asked for with ?metrics=")

    @classmethod
    def fields_of(cls, run: Run, full: bool) -> dict[str, Any]:
        return dict(
            id=run.id, name=run.name, preset=run.preset, algorithm=run.algorithm, status=run.status,
            cancel_requested=run.cancel_requested, parent_run_id=run.parent_run_id, steps_total=run.steps_total,
            steps_done=run.steps_done, rollouts_generated=run.rollouts_generated,
            tokens_generated=run.tokens_generated, elapsed_s=run.elapsed_s, error=public_error(run.error, full),
            error_detail=run.error if full else None,
            created_at=as_utc(run.created_at), started_at=as_utc(run.started_at),
            finished_at=as_utc(run.finished_at), updated_at=as_utc(run.updated_at))

    @classmethod
    def of(cls, run: Run, full: bool) -> RunOut:
        return cls(**cls.fields_of(run, full))


class CheckpointOut(BaseModel):
    step: int
    policy_version: int
    path: str = Field(description="absolute with a valid token, else relative to its root (runs/<id>/...)")
    policy_path: str | None
    exists: bool
    created_at: datetime


class RunDetail(RunOut):
    config: dict[str, Any]
    request: dict[str, Any]
    summary: dict[str, Any] | None
    output_dir: str | None = Field(description="absolute with a valid token, else relative to its root (runs/<id>)")
    job: JobOut | None
    latest_metrics: dict[str, float | None] = Field(default_factory=dict, description="last value of every metric key")
    checkpoints: list[CheckpointOut] = Field(default_factory=list)
    child_run_ids: list[int] = Field(default_factory=list, description="retries of this run")


class RunList(BaseModel):
    data: list[RunOut]
    count: int
    limit: int
    offset: int


class JobList(BaseModel):
    data: list[JobOut]
    count: int
    limit: int
    offset: int


class MetricSeries(BaseModel):
    key: str
    total: int = Field(description="points stored for this key (within the step range)")
    downsampled: bool
    x: list[float]
    y: list[float]
    step: list[int]


class MetricsOut(BaseModel):
    run_id: int
    x: str
    max_points: int = Field(description="points per series at most (lowered when many keys are asked for)")
    keys: list[str]
    keys_capped: bool = Field(False, description="the run has more keys than one request returns: ask by name")
    series: list[MetricSeries]


class RunSeries(BaseModel):
    run_id: int
    series: list[MetricSeries]


class MultiMetricsOut(BaseModel):
    x: str
    max_points: int
    keys: list[str]
    runs: list[RunSeries]
    missing_run_ids: list[int] = Field(default_factory=list, description="asked for but not found")


class RolloutUseOut(BaseModel):
    step: int
    age: int
    ratio_mean: float | None
    ratio_max: float | None
    clipfrac: float | None
    kl_to_behavior: float | None


class RolloutOut(BaseModel):
    id: int
    run_id: int
    uid: str
    step: int
    policy_version: int
    group_id: str
    prompt_id: str
    extracted: str | None
    reference: str | None
    reward: float | None
    correct: bool
    format_ok: bool
    reason: str | None
    length: int
    truncated: bool
    advantage: float | None
    use_count: int
    reuse_count: int
    max_age: int | None
    ratio_mean: float | None
    ratio_max: float | None
    clipfrac: float | None
    kl_to_behavior: float | None
    prompt: str | None = None
    response: str | None = None
    response_preview: str | None = None


class RolloutDetail(RolloutOut):
    uses: list[RolloutUseOut]


class TokenUseOut(BaseModel):
    step: int = Field(description="the consuming step")
    age: int
    logprobs: list[float | None] = Field(description="π_k's log-prob of each token: the consuming step's policy before "
                                                      "its update")
    ratios: list[float | None] = Field(description="exp(logprob − behaviour log-prob): the token's importance ratio "
                                                   "at this use")
    advantages: list[float | None]
    entropy: list[float | None] = Field(description="the policy's entropy at the token, mean over the update's epochs")
    clipped: list[int] = Field(description="in how many of the update's epochs the clip was active at the token")


class TokenLensOut(BaseModel):
    rollout_id: int
    run_id: int
    tokens: list[str] | None = Field(description="the response's tokens as text (null if its generating step's "
                                                 "record is missing)")
    behavior_logprobs: list[float | None] | None = Field(description="log-probs of the policy that generated it")
    uses: list[TokenUseOut]


class RolloutPage(BaseModel):
    data: list[RolloutOut]
    count: int | None = Field(description=f"rollouts matching the filters (all pages), at most {COUNT_CAP:,} "
                                          f"({SEARCH_COUNT_CAP:,} with a search; see total_capped); null on "
                                          "cursor pages")
    total_capped: bool = Field(False, description="more match than `count` says: it is a lower bound")
    limit: int
    next_cursor: str | None = Field(description="pass as ?cursor= to get the next page; null on the last page")


class GroupOut(BaseModel):
    run_id: int
    group_id: str
    step: int
    policy_version: int
    prompt_id: str
    prompt: str
    reference: str | None
    size: int
    correct: int
    reward_mean: float | None = Field(description="mean reward of the group (remix_engine/group_stats.py)")
    reward_std: float | None = Field(
        description="sample std of the group's rewards (divides by n − 1), the std the GRPO advantage divides by")
    zero_variance: bool = Field(description="all rewards equal: the group gives no GRPO gradient")
    advantage_kind: str | None = Field(
        None, description="the run's actor.advantage estimator: grpo, drgrpo, rloo or gae (critic)")
    advantage_eps: float | None = Field(None, description="epsilon added to the std in the GRPO denominator")
    advantage_formula: str = Field("", description="how each response's advantage follows from its reward, in words")
    rollouts: list[RolloutDetail]


class ReuseByStep(BaseModel):
    step: int
    uses: int
    fresh: int
    replayed: int
    reuse_ratio: float


class AgeBucket(BaseModel):
    age: int
    count: int
    ratio_mean: float | None
    ratio_max: float | None
    clipfrac: float | None
    kl_to_behavior: float | None


class AgeCount(BaseModel):
    age: int
    count: int


class StalenessCell(BaseModel):
    step: int
    age: int
    count: int


class ReuseCountBin(BaseModel):
    reuse_count: int
    rollouts: int


class OffPolicyOut(BaseModel):
    run_id: int
    reuse_by_step: list[ReuseByStep]
    staleness_histogram: list[AgeCount] = Field(description="uses per policy age (consuming step − generating version)")
    by_age: list[AgeBucket] = Field(description="importance ratio, clip fraction and KL per policy-age bucket")
    staleness_by_step: list[StalenessCell]
    rollout_reuse_histogram: list[ReuseCountBin] = Field(description="how many rollouts were replayed 0, 1, 2, ... times")
    totals: dict[str, float]


class BenchmarkOut(BaseModel):
    name: str = Field(description="the name to pass in an evaluation's `benchmarks`")
    label: str = Field(description="column label in the leaderboard")


class HealthOut(BaseModel):
    # ok | starting | degraded | error (docs/studio.md, "Health"); `reasons` says why it is not ok
    status: str
    reasons: list[str] = []
    database: dict[str, Any]
    broker: dict[str, Any]
    workers: dict[str, Any]
    version: str
