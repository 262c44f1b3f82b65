"""/api/v1/runs: submit, list, inspect, cancel, retry, delete; metric series."""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Literal, NamedTuple

from fastapi import APIRouter, Depends, HTTPException, Query, Request, Response, status
from sqlalchemy import Row, bindparam, case, func, select
from sqlalchemy.orm import aliased
from sqlmodel import Session

from backend.api.deps import (
    UNREADABLE_BODY,
    WRITE,
    WRITE_ERRORS,
    FullView,
    SessionDep,
    SessionReleasingRoute,
    errors,
    get_run_or_404,
    refused,
)
from backend.api.idempotency import RESPONSES as IDEMPOTENCY_RESPONSES
from backend.api.idempotency import IdempotencyKeyHeader, idempotency_of, submit_once
from backend.api.read_cache import cached_json
from backend.api.schemas import (
    AlertCounts,
    CheckpointOut,
    JobOut,
    MetricSeries,
    MetricsOut,
    MultiMetricsOut,
    RunCreate,
    RunDetail,
    RunList,
    RunOut,
    RunSeries,
    public_path,
    public_value,
)
from backend.auth import require_read
from remix_engine.config import ConfigError, RunConfig, build_config, config_to_dict
from studio import jobs, paths, queries
from studio.models import ACTIVE_STATUSES, Alert, Checkpoint, Job, JobKind, LatestMetric, Run, as_utc
from studio.settings import get_settings

router = APIRouter(prefix="/runs", tags=["runs"], dependencies=[Depends(require_read)],
                   route_class=SessionReleasingRoute)

# Response bounds of the metric endpoints: keys per request, series (runs × keys) per multi-run
# request, points per response.
MAX_KEYS = 64
MAX_SERIES = 200
MAX_POINTS = 100_000

_FIELD_PREFIX = re.compile(r"^([A-Za-z_][\w]*(?:\.[\w]+)*)\s*:\s*(.*)$", re.S)


# ----------------------------------------------------------------------------------- config
def _config_error(message: str) -> HTTPException:
    """422 in FastAPI's shape; each problem's `loc` ends with the config field it names."""
    details = []
    for part in [p.strip() for p in message.split("; ") if p.strip()] or [message]:
        m = _FIELD_PREFIX.match(part)
        loc: list[Any] = ["body", "config"]
        if m:
            loc += m.group(1).split(".")
        details.append({"type": "config_error", "loc": loc, "msg": part, "field": m.group(1) if m else None})
    return HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, detail=details)


def parse_run_config(raw: dict[str, Any]) -> RunConfig:
    """REST body `config` → RunConfig through the same `build_config` the CLI uses, then the
    studio's path policy (the CLI has no such limits)."""
    cfg = _build_run_config(raw)
    if refusals := paths.run_config_refusals(cfg):
        raise refused(refusals, ["body", "config"])
    return cfg


def _build_run_config(raw: dict[str, Any]) -> RunConfig:
    body = dict(raw)
    preset = body.pop("preset", "toy")
    algorithm = body.pop("algorithm", None)
    steps = body.pop("steps", None)
    seed = body.pop("seed", None)
    overrides = body.pop("overrides", None)
    if not isinstance(preset, str):
        raise _config_error("preset: must be a string such as 'toy'")
    if algorithm is not None and not isinstance(algorithm, str):
        raise _config_error("algorithm: must be a string such as 'remix-grpo'")
    for name, value in (("steps", steps), ("seed", seed)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
            raise _config_error(f"{name}: must be an integer (got {value!r})")
    if steps is not None and steps < 1:
        raise _config_error(f"steps: must be at least 1 (got {steps})")
    if overrides is not None and not isinstance(overrides, (dict, list)):
        raise _config_error("overrides: must be an object {\"dotted.key\": value} or a list of 'key=value' strings")
    if isinstance(overrides, list) and not all(isinstance(o, str) for o in overrides):
        raise _config_error("overrides: list items must be 'key=value' strings")
    try:
        return build_config(preset=preset, algorithm=algorithm, values=body or None, overrides=overrides,
                            steps=steps, seed=seed)
    except ConfigError as exc:
        raise _config_error(str(exc)) from None
    except (TypeError, ValueError) as exc:
        raise _config_error(f"config: {exc}") from None


# ----------------------------------------------------------------------------------- a run's state
# What a run page shows, read by one query (plus its checkpoints, if any, and the job's waiting
# reason); it is also the version of GET /runs/{id} in the read cache (backend/api/read_cache.py).
# Every write to a run row sets updated_at (studio/jobs.py; the sink's metric batches go through
# jobs.record_progress in the same transaction), and the run columns the pages show are compared
# too, so a hand-made UPDATE is seen as well. config and request are written only when the run is
# created, summary only with its final status.
_RUN_OUT_COLUMNS = (Run.id, Run.name, Run.preset, Run.algorithm, Run.status, Run.cancel_requested, Run.parent_run_id,
                    Run.steps_total, Run.steps_done, Run.rollouts_generated, Run.tokens_generated, Run.elapsed_s,
                    Run.error, Run.created_at, Run.started_at, Run.finished_at, Run.updated_at)
# JobOut's columns (not params, keys or tokens: never shown); heartbeat_at moves every few seconds
_JOB_OUT_COLUMNS = (Job.id, Job.run_id, Job.kind, Job.status, Job.attempt, Job.lost_attempts, Job.max_attempts,
                    Job.queue, Job.worker, Job.cancel_requested, Job.progress_step, Job.progress_total,
                    Job.resumed_from_step, Job.last_checkpoint_step, Job.phase, Job.error, Job.celery_task_id,
                    Job.created_at, Job.queued_at, Job.started_at, Job.heartbeat_at, Job.finished_at)


def _per_run(where, **columns) -> list:  # noqa: ANN001 - correlated scalar subqueries, labelled
    return [select(c).where(where).scalar_subquery().label(name) for name, c in columns.items()]


_ALERT_COUNTS = _per_run(Alert.run_id == Run.id, alerts_n=func.count(),
                         alerts_firing=func.sum(case((Alert.status == "firing", 1), else_=0)))
# the run's latest metrics: the sink upserts them with a newer wall time or step, a resume rebuilds them
_LATEST_STATE = _per_run(LatestMetric.run_id == Run.id, latest_n=func.count(),
                         latest_wall=func.max(LatestMetric.wall_time), latest_steps=func.sum(LatestMetric.step))
_child = aliased(Run)
_newest_job = aliased(Job)
_RUN_STATE = (
    select(*_RUN_OUT_COLUMNS, Run.output_dir, *_ALERT_COUNTS, *_LATEST_STATE,
           *_per_run(_child.parent_run_id == Run.id, children_n=func.count(), children_ids=func.sum(_child.id)),
           *_per_run(Checkpoint.run_id == Run.id, checkpoints_n=func.count()),
           *[c.label(f"job_{c.key}") for c in _JOB_OUT_COLUMNS])
    .outerjoin(Job, Job.id == select(func.max(_newest_job.id)).where(_newest_job.run_id == Run.id).scalar_subquery())
    .where(Run.id == bindparam("run_id"))
)
_CHECKPOINTS = (select(Checkpoint.step, Checkpoint.policy_version, Checkpoint.path, Checkpoint.policy_path,
                       Checkpoint.created_at).where(Checkpoint.run_id == bindparam("run_id")).order_by(Checkpoint.step))
_RUN_BODY = select(Run.config, Run.request, Run.summary).where(Run.id == bindparam("run_id"))
_LATEST = (select(LatestMetric.key, LatestMetric.value).where(LatestMetric.run_id == bindparam("run_id"))
           .order_by(LatestMetric.key))
_CHILDREN = select(_child.id).where(_child.parent_run_id == bindparam("run_id")).order_by(_child.id)
_METRICS_VERSION = select(Run.updated_at, *_LATEST_STATE).where(Run.id == bindparam("run_id"))
# GET /runs/metrics: the same version for each of its runs (missing ids simply have no row)
_RUNS_METRICS_VERSION = (select(Run.id, Run.updated_at, *_LATEST_STATE)
                         .where(Run.id.in_(bindparam("ids", expanding=True))).order_by(Run.id))


class RunState(NamedTuple):
    row: Row  # the run's columns, the counts behind its alerts, latest metrics, retries and checkpoints, job_*
    checkpoints: tuple  # (step, policy_version, path, policy_path, created_at, still on disk)
    waiting: str | None  # read fresh: it depends on workers, other jobs and the clock


def run_state(session: Session, run_id: int) -> RunState:
    """404 if there is no such run."""
    conn = session.connection()  # Core: the ORM's per-statement work cost more than these queries
    row = conn.execute(_RUN_STATE, {"run_id": run_id}).first()
    if row is None:
        raise HTTPException(404, detail=f"run {run_id} not found")
    checkpoints = () if not row.checkpoints_n else tuple(
        (*c, Path(c.path).exists()) for c in conn.execute(_CHECKPOINTS, {"run_id": run_id}))
    job = SimpleNamespace(id=row.job_id, status=row.job_status, queue=row.job_queue)
    waiting = jobs.waiting_reason(session, job) if job.id is not None else None  # type: ignore[arg-type]
    return RunState(row, checkpoints, waiting)


def run_detail(session: Session, state: RunState, full: bool) -> RunDetail:
    """`full`: the request has a valid token (absolute paths, worker, full error)."""
    run = state.row
    body = session.execute(_RUN_BODY, {"run_id": run.id}).first()
    if body is None:  # deleted since its state was read
        raise HTTPException(404, detail=f"run {run.id} not found")
    latest = dict(session.execute(_LATEST, {"run_id": run.id}).all()) if run.latest_n else {}
    children = list(session.execute(_CHILDREN, {"run_id": run.id}).scalars()) if run.children_n else []
    ckpts = [CheckpointOut(step=step, policy_version=version, path=public_path(path, full),
                           policy_path=public_path(policy_path, full), exists=exists, created_at=as_utc(created))
             for step, version, path, policy_path, created, exists in state.checkpoints]
    job = (SimpleNamespace(**{c.key: getattr(run, f"job_{c.key}") for c in _JOB_OUT_COLUMNS})
           if run.job_id is not None else None)
    return RunDetail(**RunOut.fields_of(run, full), alerts=_alerts(run), config=public_value(body.config or {}, full),
                     request=public_value(body.request or {}, full), summary=public_value(body.summary, full),
                     output_dir=public_path(run.output_dir, full),
                     job=JobOut.of(job, full, state.waiting) if job else None,  # type: ignore[arg-type]
                     latest_metrics=latest, checkpoints=ckpts, child_run_ids=children)


def _alerts(row: Row) -> AlertCounts:
    return AlertCounts(firing=int(row.alerts_firing or 0), total=int(row.alerts_n or 0))


def _metrics_version(session: Session, run_id: int) -> tuple:
    """GET /runs/{id}/metrics' version in the read cache (404 if there is no such run): metric rows
    are written with their latest_metrics rows and the run's updated_at, in one transaction
    (worker/sink.py)."""
    row = session.connection().execute(_METRICS_VERSION, {"run_id": run_id}).first()
    if row is None:
        raise HTTPException(404, detail=f"run {run_id} not found")
    return tuple(row)


def _submit(session: Session, *, name: str | None, cfg: RunConfig, request: dict, parent_run_id: int | None,
            idem: jobs.Idempotency | None = None, response: Response | None = None) -> RunDetail:
    def create() -> Job:
        _, job = jobs.create_run_with_job(session, name=name, cfg_dict=config_to_dict(cfg), request=request,
                                          parent_run_id=parent_run_id, idempotency=idem)
        session.commit()
        return job

    job, created = submit_once(session, idem, JobKind.TRAIN, create)
    if created:
        jobs.dispatch(job.id, created=job)
    elif response is not None:
        response.status_code = status.HTTP_200_OK
    return run_detail(session, run_state(session, job.run_id), full=True)


# ----------------------------------------------------------------------------------- routes
@router.post("", status_code=status.HTTP_201_CREATED, response_model=RunDetail, dependencies=WRITE,
             summary="Submit a training run",
             responses={**WRITE_ERRORS, **errors(UNREADABLE_BODY, 413, (422, "invalid config, or a path or field the studio's "
                                                            "policy refuses; `detail[].field` names it")),
                        **IDEMPOTENCY_RESPONSES})
def create_run(body: RunCreate, session: SessionDep, response: Response,
               idempotency_key: IdempotencyKeyHeader = None) -> RunDetail:
    cfg = parse_run_config(body.config)
    return _submit(session, name=body.name, cfg=cfg, request=body.config, parent_run_id=None,
                   idem=idempotency_of(idempotency_key, body), response=response)


@router.get("", response_model=RunList, summary="List runs (newest first), with their latest metrics")
def list_runs(request: Request, session: SessionDep, full: FullView,
              status_: str | None = Query(None, alias="status", description="comma-separated: queued,running,..."),
              algorithm: str | None = Query(None, description="comma-separated algorithms"),
              parent_run_id: int | None = None,
              metrics: str | None = Query(None, description=f"comma-separated metric keys (at most {MAX_KEYS}): "
                                                            "each run's latest value of them, in latest_metrics"),
              limit: int = Query(50, ge=1, le=500), offset: int = Query(0, ge=0)) -> Response:
    cond = []
    if status_:
        cond.append(Run.status.in_([s.strip() for s in status_.split(",") if s.strip()]))
    if algorithm:
        cond.append(Run.algorithm.in_([a.strip() for a in algorithm.split(",") if a.strip()]))
    if parent_run_id is not None:
        cond.append(Run.parent_run_id == parent_run_id)
    conn = session.connection()  # Core: the listed columns only, no Run objects, no config JSON per row
    count = conn.execute(select(func.count()).select_from(Run).where(*cond)).scalar_one()
    rows = conn.execute(select(*_RUN_OUT_COLUMNS, *_ALERT_COUNTS).where(*cond)
                        .order_by(Run.created_at.desc(), Run.id.desc()).limit(limit).offset(offset)).all()
    keys = _keys(metrics, MAX_KEYS)
    latest = queries.latest_metrics(session, [r.id for r in rows], keys) if keys else {}
    # The page's rows are its own version: a hit skips the response models and the JSON encoding.
    return cached_json(request, ("runs", status_, algorithm, parent_run_id, metrics, limit, offset, full),
                       (count, rows, latest),
                       lambda: RunList(data=[RunOut(**RunOut.fields_of(r, full), latest_metrics=latest.get(r.id, {}),
                                                    alerts=_alerts(r)) for r in rows],
                                       count=count, limit=limit, offset=offset))


@router.get("/metrics", response_model=MultiMetricsOut, responses=errors((422, "too many runs × keys")),
            summary="Metric series of several runs in one request (the compare page), downsampled like one run's")
def get_runs_metrics(request: Request, session: SessionDep,
                     runs: str = Query(..., description=f"comma-separated run ids (at most {MAX_SERIES})"),
                     keys: str = Query(..., description="comma-separated metric keys"),
                     x: Literal["step", "rollouts", "time"] = Query("step"),
                     max_points: int = Query(200, ge=10, le=2000, description="upper bound on points per series"),
                     step_min: int | None = None, step_max: int | None = None) -> Response:
    try:
        run_ids = list(dict.fromkeys(int(r) for r in runs.split(",") if r.strip()))
    except ValueError:
        raise HTTPException(422, detail="runs: comma-separated integers") from None
    wanted = _keys(keys, MAX_KEYS) or []
    if len(run_ids) * len(wanted) > MAX_SERIES:
        raise HTTPException(422, detail=f"runs × keys: at most {MAX_SERIES} series per request "
                                        f"(got {len(run_ids)} × {len(wanted)})")
    # the version first (see read_cache): finished runs compared again are a hit
    version = tuple(map(tuple, session.connection().execute(_RUNS_METRICS_VERSION, {"ids": run_ids}))) if run_ids else ()
    found = {row[0] for row in version}
    per_series = max(10, min(max_points, MAX_POINTS // max(1, len(run_ids) * len(wanted))))

    def build() -> MultiMetricsOut:
        series = queries.metric_series(session, [r for r in run_ids if r in found], wanted, x, per_series,
                                       step_min, step_max)
        return MultiMetricsOut(x=x, max_points=per_series, keys=wanted,
                               runs=[RunSeries(run_id=rid, series=[MetricSeries(**s) for s in ser])
                                     for rid, ser in series.items()],
                               missing_run_ids=[r for r in run_ids if r not in found])

    return cached_json(request, ("runs-metrics", tuple(run_ids), tuple(wanted), x, max_points, step_min, step_max),
                       version, build)


@router.get("/{run_id}", response_model=RunDetail, summary="One run with its job, latest metrics and checkpoints",
            responses=errors(404))
def get_run(run_id: int, request: Request, session: SessionDep, full: FullView) -> Response:
    state = run_state(session, run_id)  # the version; a write after it can only make the body newer
    return cached_json(request, ("run", run_id, full), state, lambda: run_detail(session, state, full))


@router.post("/{run_id}/cancel", status_code=status.HTTP_202_ACCEPTED, response_model=RunDetail,
             dependencies=WRITE, responses={**WRITE_ERRORS, **errors(404, (409, "the run has already finished"))},
             summary="Cancel: a queued run ends now; a running one checkpoints and stops after its current step")
def cancel_run(run_id: int, session: SessionDep) -> RunDetail:
    run = get_run_or_404(session, run_id)
    job = jobs.latest_job(session, run.id)
    try:
        if job is None:
            raise jobs.TransitionError("no job")
        jobs.request_cancel(session, job)
    except jobs.TransitionError:
        raise HTTPException(status.HTTP_409_CONFLICT, detail=f"run {run.id} is {run.status}; only pending, queued "
                                                             "or running runs can be cancelled") from None
    session.commit()
    return run_detail(session, run_state(session, run_id), full=True)


@router.post("/{run_id}/retry", status_code=status.HTTP_201_CREATED, response_model=RunDetail,
             dependencies=WRITE, summary="Start a new run with the same config (lineage kept)",
             responses={**WRITE_ERRORS, **errors(404, (409, "the run is still active, or its config is no longer "
                                                           "valid or allowed"))})
def retry_run(run_id: int, session: SessionDep) -> RunDetail:
    parent = get_run_or_404(session, run_id)
    if parent.status in ACTIVE_STATUSES:
        raise HTTPException(status.HTTP_409_CONFLICT, detail=f"run {run_id} is still {parent.status}; cancel it first")
    try:
        cfg = RunConfig.model_validate(parent.config)
    except Exception as exc:  # the stored config no longer validates (schema changed)
        raise HTTPException(status.HTTP_409_CONFLICT, detail=f"run {run_id}'s config is no longer valid: {exc}") from None
    if refusals := paths.run_config_refusals(cfg):  # the policy tightened since the run was submitted
        raise HTTPException(status.HTTP_409_CONFLICT, detail=f"run {run_id}'s config is refused by the studio's "
                                                             "policy: " + "; ".join(r.message for r in refusals))
    base = re.sub(r" \(retry of #\d+\)$", "", parent.name)
    return _submit(session, name=f"{base} (retry of #{parent.id})"[:200], cfg=cfg, request=parent.request or {},
                   parent_run_id=parent.id)


@router.delete("/{run_id}", status_code=status.HTTP_204_NO_CONTENT, dependencies=WRITE,
               responses={**WRITE_ERRORS, **errors(404, (409, "the run is active; cancel it first"))},
               summary="Delete a finished run, its rows and its artefacts")
def delete_run(run_id: int, session: SessionDep) -> Response:
    run = get_run_or_404(session, run_id)
    out_dir = Path(run.output_dir) if run.output_dir else None
    try:
        jobs.delete_run(session, run)
    except jobs.TransitionError:
        raise HTTPException(status.HTTP_409_CONFLICT, detail=f"run {run_id} is {run.status}; cancel it before deleting") from None
    session.commit()
    runs_root = get_settings().runs_path
    if out_dir is not None and out_dir.resolve().is_relative_to(runs_root) and out_dir.resolve() != runs_root:
        shutil.rmtree(out_dir, ignore_errors=True)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


# ----------------------------------------------------------------------------------- metrics
@router.get("/{run_id}/metrics/keys", response_model=list[str], summary="Metric keys recorded for a run",
            responses=errors(404))
def metric_keys(run_id: int, session: SessionDep) -> list[str]:
    get_run_or_404(session, run_id)
    return list(session.execute(select(LatestMetric.key).where(LatestMetric.run_id == run_id)
                                .order_by(LatestMetric.key)).scalars())


@router.get("/{run_id}/metrics", response_model=MetricsOut,
            summary="Metric series, downsampled (min and max of every bucket are kept)",
            responses=errors(404))
def get_metrics(run_id: int, request: Request, session: SessionDep,
                keys: str | None = Query(None, description=f"comma-separated metric keys (default: the first "
                                                           f"{MAX_KEYS} in name order; keys_capped says so)"),
                x: Literal["step", "rollouts", "time"] = Query(
                    "step", description="x axis: training step, rollouts generated so far, or training seconds"),
                max_points: int = Query(1000, ge=10, le=20000, description="upper bound on points per series"),
                step_min: int | None = None, step_max: int | None = None) -> Response:
    version = _metrics_version(session, run_id)  # first (404 if there is no such run)
    return cached_json(request, ("metrics", run_id, keys, x, max_points, step_min, step_max), version,
                       lambda: _metrics(session, run_id, keys, x, max_points, step_min, step_max))


def _metrics(session: Session, run_id: int, keys: str | None, x: str, max_points: int, step_min: int | None,
             step_max: int | None) -> MetricsOut:
    wanted = _keys(keys, MAX_KEYS + 1)
    if wanted is None:
        wanted = list(session.execute(select(LatestMetric.key).where(LatestMetric.run_id == run_id)
                                      .order_by(LatestMetric.key).limit(MAX_KEYS + 1)).scalars())
    capped = len(wanted) > MAX_KEYS
    wanted = wanted[:MAX_KEYS]
    # points in all stay under MAX_POINTS: a wide request gets fewer points per series
    per_series = max(10, min(max_points, MAX_POINTS // max(1, len(wanted))))
    series = queries.metric_series(session, [run_id], wanted, x, per_series, step_min, step_max)[run_id]
    return MetricsOut(run_id=run_id, x=x, max_points=per_series, keys=wanted, keys_capped=capped,
                      series=[MetricSeries(**s) for s in series])


def _keys(raw: str | None, cap: int) -> list[str] | None:
    """Comma-separated keys, deduplicated, at most `cap` (None: none given)."""
    if raw is None:
        return None
    return list(dict.fromkeys(k.strip() for k in raw.split(",") if k.strip()))[:cap]
