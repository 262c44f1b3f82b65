"""The one skeleton every job task runs in (training and evaluation alike).

A task receives (job id, dispatch token) and first *claims* the job row (studio/jobs.py); a delivery
that cannot claim (duplicate, stale after a re-queue, cancelled meanwhile) returns at once and is
acknowledged. While the body runs, a heartbeat thread refreshes the job row and reads the cancel
flag; the body polls `should_stop` between steps and returns early (cooperative cancel). A worker
shutdown (SIGTERM, Ctrl-C of `remix studio`) also stops the body, and the job is re-queued to
resume elsewhere. The skeleton, not the body, records how the attempt ended.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from celery.exceptions import Reject
from sqlalchemy import update

from studio import jobs
from studio.db import session_scope
from studio.models import JobStatus, WorkerNode, utcnow
from studio.paths import PolicyError
from studio.settings import get_settings

log = logging.getLogger("remix.worker")

# Set when this worker process begins a warm shutdown: running jobs checkpoint and are re-queued.
SHUTTING_DOWN = threading.Event()
INTERRUPTED = "interrupted"  # an outcome, not a job status: the job goes back to the queue
# An outcome too: the attempt crashed in a way a resume can fix (a training process died); the job
# is re-queued, counted as a lost attempt when it made no progress (`Outcome.lost`), so a job that
# keeps failing without progress fails after REMIX_MAX_ATTEMPTS.
RETRY = "retry"


class JobHeartbeat:
    """Refreshes jobs.heartbeat_at every REMIX_HEARTBEAT_INTERVAL_S and watches for cancel/loss."""

    def __init__(self, job_id: int, attempt: int, interval_s: float):
        self.job_id, self.attempt, self.interval_s = job_id, attempt, interval_s
        self.cancel_requested = False
        self.lost = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=f"heartbeat-job{job_id}", daemon=True)

    def start(self) -> JobHeartbeat:
        self.beat()
        self._thread.start()
        return self

    def beat(self) -> None:
        try:
            ours, cancel = jobs.heartbeat(self.job_id, self.attempt)
        except Exception:  # a DB hiccup must not kill the job; the next beat retries
            log.warning("heartbeat for job %s failed", self.job_id, exc_info=True)
            return
        if not ours:
            self.lost = True
        if cancel:
            self.cancel_requested = True

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.beat()
            if self.lost:
                return

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)

    @property
    def should_stop(self) -> bool:
        return self.cancel_requested or self.lost or SHUTTING_DOWN.is_set()


@dataclass
class Outcome:
    """How a job body ended: a terminal JobStatus value, "interrupted" (re-queue), "retry" (re-queue
    with `error` as the reason; `lost`: count it against max_attempts) or "lost" (the job is no
    longer ours: leave it alone). `result` is added to the Celery task's return value."""

    status: str
    error: str | None = None
    summary: dict | None = None
    result: dict[str, Any] = field(default_factory=dict)
    lost: bool = True


@dataclass
class JobContext:
    claim: jobs.Claim
    heartbeat: JobHeartbeat
    report_progress: Callable[[dict[str, Any]], None] = lambda meta: None

    def stopped_status(self) -> str:
        """The body stopped early: a cancel wins over a shutdown (which re-queues the job)."""
        if self.heartbeat.cancel_requested or not SHUTTING_DOWN.is_set():
            return JobStatus.CANCELLED.value  # (a cancel flag set after our last heartbeat read it, too)
        return INTERRUPTED


def run_job(task, job_id: int, token: str, body: Callable[[JobContext], Outcome]) -> dict[str, Any]:  # noqa: ANN001
    """Claim, heartbeat, run `body`, record the outcome. `task` is the bound Celery task."""
    if SHUTTING_DOWN.is_set():
        # delivered during a warm shutdown: hand the message back for the next worker
        raise Reject("worker is shutting down", requeue=True)
    hostname = task.request.hostname or socket.gethostname()
    claim = jobs.claim(job_id, token, f"{hostname} pid={os.getpid()}")
    if claim is None:
        log.info("job %s: delivery %s not claimable (duplicate, stale or cancelled); skipping", job_id, token)
        return {"job_id": job_id, "skipped": True}
    heartbeat = JobHeartbeat(job_id, claim.attempt, get_settings().heartbeat_interval_s).start()
    task_id = task.request.id

    def report_progress(meta: dict[str, Any]) -> None:
        if task_id:
            task.update_state(task_id=task_id, state="PROGRESS", meta=meta)

    _set_current_job(hostname, job_id)
    try:
        return settle(claim, heartbeat, body(JobContext(claim, heartbeat, report_progress)))
    finally:
        heartbeat.stop()
        _set_current_job(hostname, None)


def settle(claim: jobs.Claim, heartbeat: JobHeartbeat, outcome: Outcome) -> dict[str, Any]:
    job_id, attempt = claim.job_id, claim.attempt
    done = {"job_id": job_id, "attempt": attempt}
    if outcome.status == "lost" or heartbeat.lost:
        log.warning("job %s attempt %s lost ownership of its job; leaving it to the current owner", job_id, attempt)
        return {**done, "status": "lost"}
    if outcome.status == INTERRUPTED:
        result = jobs.requeue(job_id, attempt, reason="worker shut down; resumes where it stopped", lost=False)
        return {**done, "status": f"interrupted ({result})"}
    if outcome.status == RETRY:
        result = jobs.requeue(job_id, attempt, reason=outcome.error or "attempt failed", lost=outcome.lost)
        return {**done, "status": f"retry ({result})", "error": outcome.error}
    jobs.finish(job_id, attempt, outcome.status, error=outcome.error, summary=outcome.summary)
    out = {**done, "status": outcome.status, **outcome.result}
    if outcome.error is not None:
        out["error"] = outcome.error
    return out


def _set_current_job(hostname: str, job_id: int | None) -> None:
    try:
        with session_scope() as s:
            s.execute(update(WorkerNode).where(WorkerNode.hostname == hostname)
                      .values(current_job_id=job_id, last_seen_at=utcnow()))
    except Exception:
        log.debug("could not record the current job", exc_info=True)


def short_error(exc: BaseException) -> str:
    if isinstance(exc, PolicyError):  # a refusal, not a crash: its message says it all
        return str(exc)
    tail = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__)[-3:])
    return f"{type(exc).__name__}: {exc}\n{tail}"[:4000]


