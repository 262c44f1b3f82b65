"""The job state machine, kept in SQL (the source of truth); Celery only delivers messages.

This module is the only writer of `jobs` rows and of the state and progress columns of `runs`:
the API (create, dispatch, cancel), the reaper (re-queue) and the worker (claim, heartbeat,
progress, fence, finish) all go through it, for training and evaluation jobs alike.
tests/unit/test_jobs.py is its specification.

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

from sqlalchemy import bindparam, delete, func, select, update
from sqlalchemy.engine import Connection
from sqlmodel import Session

from studio import rollout_text
from studio.broker import TASK_NAMES, get_celery_app
from studio.db import retrying, session_scope
from studio.models import (
    ACTIVE_STATUSES,
    Evaluation,
    Job,
    JobKind,
    JobStatus,
    Rollout,
    Run,
    WorkerNode,
    utcnow,
)
from studio.settings import Settings, get_settings

log = logging.getLogger("remix.jobs")



def _upd(model):  # noqa: ANN001, ANN202
    """UPDATE without ORM session synchronisation: rows loaded in the session may hold naive (SQLite)
    datetimes that Python cannot compare with the aware bounds; we refresh explicitly instead."""
    return update(model).execution_options(synchronize_session=False)


def new_token() -> str:
    return str(uuid.uuid4())


# ------------------------------------------------------------------------------------ creation
@dataclass(frozen=True)
class Idempotency:
    """A request's Idempotency-Key header and the sha256 of its body."""

    key: str
    request_hash: str


class IdempotencyConflict(Exception):
    """The Idempotency-Key was used before for a different request."""


def job_for_idempotency_key(session: Session, idem: Idempotency, kind: JobKind) -> Job | None:
    """The job an earlier request with this key created (None if none did); IdempotencyConflict when
    that request had another body or created another kind of job."""
    job = session.execute(select(Job).where(Job.idempotency_key == idem.key)).scalar_one_or_none()
    if job is not None and (job.kind != kind.value or job.request_hash != idem.request_hash):
        raise IdempotencyConflict(f"Idempotency-Key '{idem.key}' was already used for a different request "
                                  f"({job.kind} job {job.id}); use a new key for a new request")
    return job


def create_run_with_job(session: Session, *, name: str | None, cfg_dict: dict, request: dict,
                        parent_run_id: int | None = None, settings: Settings | None = None,
                        idempotency: Idempotency | None = None) -> tuple[Run, Job]:
    """Insert a run and its training job (status pending). The caller commits, then dispatches.
    Without a name the run is called '<algorithm> <preset> #<id>'. The job goes to the config's
    `resources.queue` (e.g. 'gpu8' for whole-node workers), else to REMIX_GPU_QUEUE; every
    re-dispatch (re-queue, reaper) reads it back from the job row."""
    settings = settings or get_settings()
    run = Run(name=name or "pending", preset=cfg_dict.get("preset", ""), algorithm=cfg_dict.get("algorithm", ""),
              config=cfg_dict, request=request, status=JobStatus.PENDING.value, parent_run_id=parent_run_id,
              steps_total=int(cfg_dict.get("trainer", {}).get("steps", 0)))
    session.add(run)
    session.flush()
    run.output_dir = str(settings.runs_path / str(run.id))
    if not name:
        run.name = f"{run.algorithm} {run.preset} #{run.id}"
    queue = (cfg_dict.get("resources") or {}).get("queue") or settings.gpu_queue
    job = _new_job(session, JobKind.TRAIN, settings, idempotency, queue=queue, run_id=run.id,
                   progress_total=run.steps_total)
    return run, job


def create_eval_job(session: Session, *, params: dict, benchmarks: list[tuple[str, str, int]], run_id: int | None,
                    model: str, mode: str, temperature: float, cost_rollouts: int | None, grader: str,
                    settings: Settings | None = None, idempotency: Idempotency | None = None) -> Job:
    """Insert an evaluation job (status pending) and one pending `evaluations` row per benchmark,
    given as (spec, short name, k). The caller commits, then dispatches."""
    job = _new_job(session, JobKind.EVAL, settings or get_settings(), idempotency, params=params)
    for spec, name, k in benchmarks:
        session.add(Evaluation(run_id=run_id, job_id=job.id, checkpoint_step=params.get("step"), model=model,
                               benchmark=name, status=JobStatus.PENDING.value, k=k, temperature=temperature,
                               cost_rollouts=cost_rollouts, mode=mode, grader=grader, metrics={"spec": spec}))
    session.flush()
    return job


def _new_job(session: Session, kind: JobKind, settings: Settings, idempotency: Idempotency | None,
             queue: str | None = None, **fields: Any) -> Job:
    job = Job(kind=kind.value, status=JobStatus.PENDING.value, dispatch_token=new_token(),
              queue=queue or settings.gpu_queue,
              max_attempts=settings.max_attempts, queued_at=utcnow(),
              idempotency_key=idempotency.key if idempotency else None,
              request_hash=idempotency.request_hash if idempotency else None, **fields)
    session.add(job)
    session.flush()  # a concurrent request with the same Idempotency-Key fails here (IntegrityError)
    return job


def dispatch(job_id: int, settings: Settings | None = None, *, created: Job | None = None) -> bool:
    """Send the Celery message for a pending job and mark it queued. False if the send failed
    (the job stays pending and the reaper tries again after REMIX_DISPATCH_RETRY_S).
    `created`: the job as the caller has just committed it, which saves reading it back (should it
    have changed since, the worker's claim refuses the message, as it refuses any stale one)."""
    settings = settings or get_settings()
    if created is not None:
        token, kind, queue = created.dispatch_token, created.kind, created.queue
    else:
        with session_scope() as s:
            job = s.get(Job, job_id)
            if job is None or job.status != JobStatus.PENDING.value or not job.dispatch_token:
                return False
            token, kind, queue = job.dispatch_token, job.kind, job.queue
    try:
        app = get_celery_app(settings)
        app.send_task(TASK_NAMES[kind], args=[job_id, token], queue=queue, task_id=token)
    except Exception as exc:  # broker unreachable: leave it pending, the reaper retries
        log.warning("dispatch of job %s failed (%s); it stays pending", job_id, exc)
        return False

    def _mark() -> None:
        with session_scope() as s:
            conn, now = s.connection(), utcnow()  # Core: a submission's costliest part was the ORM's work here
            run_id = conn.execute(_MARK_JOB_QUEUED, {"job_id": job_id, "token": token, "now": now}).scalar()
            if run_id is not None:
                conn.execute(_MARK_RUN_QUEUED, {"run_id": run_id, "now": now})

    retrying(_mark)
    return True


_MARK_JOB_QUEUED = (update(Job).where(Job.id == bindparam("job_id"), Job.status == JobStatus.PENDING.value,
                                      Job.dispatch_token == bindparam("token"))
                    .values(status=JobStatus.QUEUED.value, celery_task_id=bindparam("token"), queued_at=bindparam("now"))
                    .returning(Job.run_id))
_MARK_RUN_QUEUED = (update(Run).where(Run.id == bindparam("run_id"), Run.status == JobStatus.PENDING.value)
                    .values(status=JobStatus.QUEUED.value, updated_at=bindparam("now")))


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
                # celery_task_id too: the message may be claimed before dispatch() marked it queued
                .values(status=JobStatus.RUNNING.value, attempt=Job.attempt + 1, phase=None, worker=worker, celery_task_id=token,
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


def fence(conn: Connection | Session, job_id: int, attempt: int, **values: Any) -> bool:
    """Inside the caller's transaction: refresh the heartbeat (plus `values`) only if attempt
    `attempt` still owns the running job. False means the job was taken from this worker: the
    caller rolls back and drops what it was about to write."""
    res = conn.execute(_upd(Job).where(Job.id == job_id, Job.attempt == attempt, Job.status == JobStatus.RUNNING.value)
                       .values(heartbeat_at=utcnow(), **values))
    return bool(res.rowcount)


def record_progress(conn: Connection | Session, *, run_id: int, job_id: int | None, step: int,
                    counters: dict[str, Any] | None = None) -> None:
    """Inside the caller's (fenced) transaction: the run reached `step`; `counters` are run columns
    (rollouts_generated, tokens_generated, elapsed_s)."""
    conn.execute(_upd(Run).where(Run.id == run_id).values(steps_done=step, updated_at=utcnow(), **(counters or {})))
    if job_id is not None:
        conn.execute(_upd(Job).where(Job.id == job_id).values(progress_step=step))


def record_checkpoint(conn: Connection | Session, job_id: int | None, step: int) -> None:
    """Inside the caller's transaction, with the checkpoint's row: the newest checkpoint step."""
    if job_id is not None:
        conn.execute(_upd(Job).where(Job.id == job_id).values(last_checkpoint_step=step))


def set_phase(job_id: int, attempt: int, phase: str | None) -> None:
    """What a running attempt is doing outside its steps (e.g. 'warm start: step 210/700, about
    200 s left'), shown on the run page; None when it is training. Fenced like every attempt write."""

    def _set() -> None:
        with session_scope() as s:
            s.execute(_upd(Job).where(Job.id == job_id, Job.attempt == attempt, Job.status == JobStatus.RUNNING.value)
                      .values(phase=phase[:255] if phase else None))

    retrying(_set)


def mark_resumed(job_id: int, step: int | None) -> None:
    """The attempt starts from the checkpoint at `step` (None: from scratch)."""

    def _mark() -> None:
        with session_scope() as s:
            s.execute(_upd(Job).where(Job.id == job_id).values(resumed_from_step=step))

    retrying(_mark)


def start_progress(job_id: int, total: int) -> None:
    """The attempt knows its amount of work (evaluation: samples to generate)."""

    def _start() -> None:
        with session_scope() as s:
            s.execute(_upd(Job).where(Job.id == job_id).values(progress_total=total, progress_step=0))

    retrying(_start)


def update_params(job_id: int, params: dict) -> None:
    """The worker completed the job's parameters (e.g. the size label of the loaded model)."""

    def _update() -> None:
        with session_scope() as s:
            s.execute(_upd(Job).where(Job.id == job_id).values(params=params))

    retrying(_update)


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


def request_cancel(session: Session, job: Job) -> None:
    """Cooperative cancel: a pending or queued job ends at once (with its run, or its unfinished
    benchmarks); a running one gets the flag, which its worker reads between steps.
    TransitionError if the job already ended. The caller commits."""
    if job.status not in ACTIVE_STATUSES:
        raise TransitionError(f"job {job.id} is {job.status}")
    now = utcnow()
    res = session.execute(_upd(Job).where(Job.id == job.id, Job.status.in_([JobStatus.PENDING.value,
                                                                           JobStatus.QUEUED.value]))
                          .values(status=JobStatus.CANCELLED.value, cancel_requested=True, finished_at=now))
    ended = bool(res.rowcount)
    if not ended:  # running (or it just started): the worker sees the flag between steps
        session.execute(_upd(Job).where(Job.id == job.id).values(cancel_requested=True))
    if job.run_id is not None:
        values: dict[str, Any] = {"cancel_requested": True, "updated_at": now}
        if ended:
            values.update(status=JobStatus.CANCELLED.value, finished_at=now)
        session.execute(_upd(Run).where(Run.id == job.run_id).values(**values))
    if ended and job.kind == JobKind.EVAL.value:
        session.execute(_upd(Evaluation).where(Evaluation.job_id == job.id,
                                               Evaluation.status != JobStatus.SUCCEEDED.value)
                        .values(status=JobStatus.CANCELLED.value, finished_at=now))
    session.flush()


def delete_run(session: Session, run: Run) -> None:
    """Delete a finished run with its jobs, metrics, rollouts, checkpoints (ON DELETE CASCADE);
    TransitionError while it is active. The caller commits and removes the artefacts."""
    if run.status in ACTIVE_STATUSES:
        raise TransitionError(f"run {run.id} is {run.status}")
    # SQLite's search index is not a foreign-key child: told explicitly, or a later rollout that
    # reuses a deleted id would match the deleted text's words
    rollout_text.forget_search(session.connection(), select(Rollout.id).where(Rollout.run_id == run.id))
    session.delete(run)


def latest_job(session: Session, run_id: int) -> Job | None:
    return session.execute(select(Job).where(Job.run_id == run_id).order_by(Job.id.desc()).limit(1)).scalar_one_or_none()


def waiting_reason(session: Session, job: Job, settings: Settings | None = None) -> str | None:
    """Why a pending/queued job has not started, in one line for the run page; None once it has.

    Read from SQL alone (no broker round trip): the workers that heartbeat for the job's queue, the
    jobs running there (with their phase, e.g. the toy warm start's ETA) and the jobs queued before it.
    """
    if job.status not in (JobStatus.PENDING.value, JobStatus.QUEUED.value):
        return None
    settings = settings or get_settings()
    fresh = utcnow() - timedelta(seconds=settings.heartbeat_timeout_s)
    conn = session.connection()  # Core rows: read on every run page of a waiting run
    serving = [w for w in conn.execute(select(WorkerNode).where(WorkerNode.status == "online",
                                                                WorkerNode.last_seen_at >= fresh))
               if job.queue in w.queues.split(",")]
    if not serving:
        return f"waiting for a worker: none is online for queue '{job.queue}'"
    ahead = conn.execute(select(func.count()).select_from(Job).where(
        Job.queue == job.queue, Job.status.in_((JobStatus.PENDING.value, JobStatus.QUEUED.value)),
        Job.id < job.id)).scalar_one()
    then = f"; {ahead} queued job{'s' if ahead != 1 else ''} ahead of it" if ahead else ""
    if any(w.current_job_id is None for w in serving):
        return f"queued{then}" if ahead else "queued: a free worker takes it next"
    busy = session.get(Job, min(w.current_job_id for w in serving))
    what = f"run #{busy.run_id}" if busy and busy.run_id is not None else f"job #{busy.id if busy else '?'}"
    doing = (busy.phase or (f"step {busy.progress_step} of {busy.progress_total}" if busy.progress_total
                            else "starting")) if busy else "starting"
    workers = "the worker is" if len(serving) == 1 else f"all {len(serving)} workers are"
    return f"waiting: {workers} busy, with {what} ({doing}){then}"


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
        # a lost worker runs nothing any more: its job (if any) was re-queued above
        s.execute(_upd(WorkerNode).where(WorkerNode.status == "online", WorkerNode.last_seen_at < stale)
                  .values(status="lost", current_job_id=None))
        # forget workers that have been gone for a day (each embedded start registers a new name)
        s.execute(delete(WorkerNode).where(WorkerNode.status != "online",
                                           WorkerNode.last_seen_at < now - timedelta(days=1))
                  .execution_options(synchronize_session=False))
    return counts
