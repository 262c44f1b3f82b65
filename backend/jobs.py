"""The job state machine, kept in SQL (the source of truth); Celery only delivers messages.

    pending ──dispatch──▶ queued ──claim──▶ running ──▶ succeeded | failed | cancelled
       ▲                                       │
       └────── reaper: heartbeat stale ────────┘   (attempt < max_attempts; resumes from checkpoint)

* A job row is written (status pending, a fresh `dispatch_token`) and committed before its message
  is sent; the message carries (job id, token). After a successful send the row becomes queued.
* A worker claims with one conditional UPDATE (matching token, status pending/queued): exactly one
  delivery of one dispatch can start the job. Re-deliveries (acks_late, Redis visibility timeout,
  AMQP requeue) and messages made stale by a re-queue fail the claim and are acknowledged as no-ops.
* The running worker heartbeats `heartbeat_at`; its UPDATEs are fenced by (id, attempt, running),
  so a worker that lost its job (re-queued elsewhere, cancelled) notices and stops.
* The reaper re-dispatches jobs whose heartbeat went stale (counted in `lost_attempts`; at
  `max_attempts` the job fails) and jobs whose dispatch never went out.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, func, select, update
from sqlmodel import Session

from backend.db import get_engine, retrying, session_scope
from backend.models import ACTIVE_STATUSES, Job, JobKind, JobStatus, Run, WorkerNode, utcnow
from backend.settings import Settings, get_settings

log = logging.getLogger("remix.jobs")

TASK_NAMES = {JobKind.TRAIN.value: "remix.train", JobKind.EVAL.value: "remix.evaluate"}


def _upd(model):  # noqa: ANN001, ANN202
    """UPDATE without ORM session synchronisation: rows loaded in the session may hold naive (SQLite)
    datetimes that Python cannot compare with the aware bounds; we refresh explicitly instead."""
    return update(model).execution_options(synchronize_session=False)


def new_token() -> str:
    return str(uuid.uuid4())


# ------------------------------------------------------------------------------------ creation
def create_run_with_job(session: Session, *, name: str, cfg_dict: dict, request: dict,
                        parent_run_id: int | None = None, settings: Settings | None = None) -> tuple[Run, Job]:
    """Insert a run and its training job (status pending). The caller commits, then dispatches."""
    settings = settings or get_settings()
    run = Run(name=name, preset=cfg_dict.get("preset", ""), algorithm=cfg_dict.get("algorithm", ""),
              config=cfg_dict, request=request, status=JobStatus.PENDING.value, parent_run_id=parent_run_id,
              steps_total=int(cfg_dict.get("trainer", {}).get("steps", 0)))
    session.add(run)
    session.flush()
    run.output_dir = str(settings.runs_path / str(run.id))
    job = Job(run_id=run.id, kind=JobKind.TRAIN.value, status=JobStatus.PENDING.value, dispatch_token=new_token(),
              queue=settings.gpu_queue, max_attempts=settings.max_attempts, progress_total=run.steps_total,
              queued_at=utcnow())
    session.add(job)
    session.flush()
    return run, job


def dispatch(job_id: int, settings: Settings | None = None) -> bool:
    """Send the Celery message for a pending job and mark it queued. False if the send failed
    (the job stays pending and the reaper tries again after REMIX_DISPATCH_RETRY_S)."""
    settings = settings or get_settings()
    with session_scope() as s:
        job = s.get(Job, job_id)
        if job is None or job.status != JobStatus.PENDING.value or not job.dispatch_token:
            return False
        token, kind, queue = job.dispatch_token, job.kind, job.queue
    try:
        from worker.celery_app import get_celery_app

        app = get_celery_app(settings)
        app.send_task(TASK_NAMES[kind], args=[job_id, token], queue=queue, task_id=token)
    except Exception as exc:  # broker unreachable: leave it pending, the reaper retries
        log.warning("dispatch of job %s failed (%s); it stays pending", job_id, exc)
        return False

    def _mark() -> None:
        with session_scope() as s:
            res = s.execute(_upd(Job).where(Job.id == job_id, Job.status == JobStatus.PENDING.value,
                                              Job.dispatch_token == token)
                            .values(status=JobStatus.QUEUED.value, celery_task_id=token, queued_at=utcnow()))
            if res.rowcount:
                s.execute(_upd(Run).where(Run.id == s.get(Job, job_id).run_id,
                                            Run.status == JobStatus.PENDING.value)
                          .values(status=JobStatus.QUEUED.value, updated_at=utcnow()))

    retrying(_mark)
    return True


# ------------------------------------------------------------------------------------ worker side
@dataclass
class Claim:
    job_id: int
    run_id: int | None
    attempt: int
    kind: str
    params: dict[str, Any]


def claim(job_id: int, token: str, worker: str) -> Claim | None:
    """Atomically move a pending/queued job to running for this delivery; None = do not run it."""

    def _claim() -> Claim | None:
        now = utcnow()
        with session_scope() as s:
            res = s.execute(
                _upd(Job)
                .where(Job.id == job_id, Job.dispatch_token == token, Job.cancel_requested.is_(False),
                       Job.status.in_([JobStatus.PENDING.value, JobStatus.QUEUED.value]))
                .values(status=JobStatus.RUNNING.value, attempt=Job.attempt + 1, worker=worker,
                        started_at=func.coalesce(Job.started_at, now), heartbeat_at=now, error=None)
            )
            job = s.get(Job, job_id)
            if job is None:
                return None
            s.refresh(job)
            if not res.rowcount:
                if job.cancel_requested and job.status in (JobStatus.PENDING.value, JobStatus.QUEUED.value):
                    _finish_in_session(s, job, JobStatus.CANCELLED.value, error=None)
                return None
            if job.run_id is not None:
                s.execute(_upd(Run).where(Run.id == job.run_id)
                          .values(status=JobStatus.RUNNING.value, started_at=func.coalesce(Run.started_at, now),
                                  updated_at=now))
            return Claim(job.id, job.run_id, job.attempt, job.kind, dict(job.params or {}))

    return retrying(_claim)


def heartbeat(job_id: int, attempt: int) -> tuple[bool, bool]:
    """Refresh the heartbeat. Returns (still ours, cancel requested)."""

    def _beat() -> tuple[bool, bool]:
        with session_scope() as s:
            res = s.execute(_upd(Job).where(Job.id == job_id, Job.attempt == attempt,
                                              Job.status == JobStatus.RUNNING.value)
                            .values(heartbeat_at=utcnow()))
            if not res.rowcount:
                return False, False
            cancel = s.execute(select(Job.cancel_requested).where(Job.id == job_id)).scalar_one()
            return True, bool(cancel)

    return retrying(_beat)


def _finish_in_session(s: Session, job: Job, status: str, *, error: str | None,
                       summary: dict | None = None) -> None:
    now = utcnow()
    job.status = status
    job.finished_at = now
    job.error = error
    s.add(job)
    if job.run_id is not None:
        values: dict[str, Any] = {"status": status, "finished_at": now, "updated_at": now, "error": error}
        if summary is not None:
            values["summary"] = summary
        s.execute(_upd(Run).where(Run.id == job.run_id).values(**values))


def finish(job_id: int, attempt: int, status: str, *, error: str | None = None, summary: dict | None = None) -> bool:
    """Record the end of an attempt (fenced: False if the job is no longer ours)."""

    def _finish() -> bool:
        with session_scope() as s:
            res = s.execute(_upd(Job).where(Job.id == job_id, Job.attempt == attempt,
                                              Job.status == JobStatus.RUNNING.value)
                            .values(status=status, finished_at=utcnow(), error=error))
            if not res.rowcount:
                return False
            job = s.get(Job, job_id)
            s.refresh(job)
            _finish_in_session(s, job, status, error=error, summary=summary)
            return True

    return retrying(_finish)


def requeue(job_id: int, attempt: int | None = None, *, reason: str, lost: bool = True,
            stale_before: datetime | None = None, settings: Settings | None = None) -> str:
    """Put a running job back to pending with a new dispatch token and send it again.

    `lost=True` (the reaper: the worker stopped heartbeating) counts against max_attempts;
    `lost=False` (a worker shutting down gracefully after checkpointing) does not.
    Returns 'requeued', 'failed' (lost too often), 'cancelled' (cancel was requested) or
    'skipped' (the job changed meanwhile: someone else handled it)."""
    settings = settings or get_settings()

    def _requeue() -> str:
        with session_scope() as s:
            job = s.get(Job, job_id)
            if job is None or job.status != JobStatus.RUNNING.value:
                return "skipped"
            if attempt is not None and job.attempt != attempt:
                return "skipped"
            cond = [Job.id == job_id, Job.status == JobStatus.RUNNING.value, Job.attempt == job.attempt]
            if stale_before is not None:
                cond.append(Job.heartbeat_at < stale_before)
            if job.cancel_requested:
                res = s.execute(_upd(Job).where(*cond).values(status=JobStatus.CANCELLED.value, finished_at=utcnow()))
                if res.rowcount:
                    s.refresh(job)
                    _finish_in_session(s, job, JobStatus.CANCELLED.value, error=None)
                    return "cancelled"
                return "skipped"
            lost_attempts = job.lost_attempts + (1 if lost else 0)
            if lost_attempts >= job.max_attempts:
                msg = f"{reason}; gave up after {lost_attempts} lost attempts (REMIX_MAX_ATTEMPTS={job.max_attempts})"
                res = s.execute(_upd(Job).where(*cond).values(status=JobStatus.FAILED.value, finished_at=utcnow(),
                                                                lost_attempts=lost_attempts, error=msg))
                if res.rowcount:
                    s.refresh(job)
                    _finish_in_session(s, job, JobStatus.FAILED.value, error=msg)
                    return "failed"
                return "skipped"
            res = s.execute(_upd(Job).where(*cond).values(
                status=JobStatus.PENDING.value, dispatch_token=new_token(), worker=None, queued_at=utcnow(),
                lost_attempts=lost_attempts, error=f"re-queued after attempt {job.attempt}: {reason}"))
            if not res.rowcount:
                return "skipped"
            if job.run_id is not None:
                s.execute(_upd(Run).where(Run.id == job.run_id)
                          .values(status=JobStatus.PENDING.value, updated_at=utcnow()))
            return "requeued"

    outcome = retrying(_requeue)
    if outcome == "requeued":
        log.warning("job %s re-queued (%s)", job_id, reason)
        dispatch(job_id, settings)
    return outcome


# ------------------------------------------------------------------------------------ API side
class TransitionError(Exception):
    """The requested change does not fit the job's state (→ HTTP 409)."""


def request_cancel(session: Session, run: Run) -> Run:
    """Cooperative cancel: queued jobs end at once; running ones stop after the current step."""
    job = latest_job(session, run.id)
    if job is None or job.status not in ACTIVE_STATUSES:
        raise TransitionError(f"run {run.id} is {run.status}; only pending, queued or running runs can be cancelled")
    now = utcnow()
    res = session.execute(_upd(Job).where(Job.id == job.id, Job.status.in_([JobStatus.PENDING.value,
                                                                           JobStatus.QUEUED.value]))
                          .values(status=JobStatus.CANCELLED.value, cancel_requested=True, finished_at=now))
    if res.rowcount:
        session.execute(_upd(Run).where(Run.id == run.id).values(status=JobStatus.CANCELLED.value,
                                                                  cancel_requested=True, finished_at=now,
                                                                  updated_at=now))
    else:  # running (or it just started): the worker sees the flag between steps
        session.execute(_upd(Job).where(Job.id == job.id).values(cancel_requested=True))
        session.execute(_upd(Run).where(Run.id == run.id).values(cancel_requested=True, updated_at=now))
    session.flush()
    session.refresh(run)
    return run


def latest_job(session: Session, run_id: int) -> Job | None:
    return session.execute(select(Job).where(Job.run_id == run_id).order_by(Job.id.desc()).limit(1)).scalar_one_or_none()


# ------------------------------------------------------------------------------------ reaper
def reap(settings: Settings | None = None) -> dict[str, int]:
    """One pass: re-queue jobs whose worker stopped heartbeating, re-send undelivered dispatches,
    and mark silent workers offline. Safe to run from several processes at once."""
    settings = settings or get_settings()
    now = utcnow()
    stale = now - timedelta(seconds=settings.heartbeat_timeout_s)
    undelivered = now - timedelta(seconds=settings.dispatch_retry_s)
    counts = {"requeued": 0, "failed": 0, "cancelled": 0, "redispatched": 0}
    with session_scope() as s:
        lost = s.execute(select(Job.id, Job.attempt).where(Job.status == JobStatus.RUNNING.value,
                                                            Job.heartbeat_at < stale)).all()
        pending = s.execute(select(Job.id).where(Job.status == JobStatus.PENDING.value,
                                                 func.coalesce(Job.queued_at, Job.created_at) < undelivered)).all()
    for job_id, attempt in lost:
        outcome = requeue(job_id, attempt, reason=f"no heartbeat for {settings.heartbeat_timeout_s:g}s (worker lost)",
                          stale_before=stale, settings=settings)
        if outcome in counts:
            counts[outcome] += 1
    for (job_id,) in pending:
        def _refresh_token(jid: int = job_id) -> bool:
            with session_scope() as s:
                res = s.execute(_upd(Job).where(Job.id == jid, Job.status == JobStatus.PENDING.value,
                                                  func.coalesce(Job.queued_at, Job.created_at) < undelivered)
                                .values(dispatch_token=new_token(), queued_at=utcnow()))
                return bool(res.rowcount)

        if retrying(_refresh_token) and dispatch(job_id, settings):
            counts["redispatched"] += 1
    with session_scope() as s:
        s.execute(_upd(WorkerNode).where(WorkerNode.status == "online", WorkerNode.last_seen_at < stale)
                  .values(status="lost"))
        # forget workers that have been gone for a day (each embedded start registers a new name)
        s.execute(delete(WorkerNode).where(WorkerNode.status != "online",
                                           WorkerNode.last_seen_at < now - timedelta(days=1))
                  .execution_options(synchronize_session=False))
    return counts


def engine_ok() -> bool:
    with get_engine().connect() as conn:
        conn.execute(select(1))
    return True
