"""Celery tasks: a training task (runs the engine with the SQL sink) and the evaluation task.

A task receives (job id, dispatch token) and first *claims* the job row (backend/jobs.py); a delivery
that cannot claim (duplicate, stale after a re-queue, cancelled meanwhile) returns at once and is
acknowledged. While it runs, a heartbeat thread refreshes the job row and reads the cancel flag; the
trainer polls `should_stop()` between steps, checkpoints and returns (cooperative cancel). A worker
shutdown (SIGTERM, Ctrl-C of `remix studio`) also stops the trainer at the next step and re-queues
the job, which later resumes from its checkpoint.

Resume: every attempt trains in its own folder, REMIX_RUNS_DIR/<run id>/attempt-NN. Before it
starts, the newest checkpoint recorded in SQL is hard-linked into that folder, so the trainer resumes
from exactly the checkpoint SQL knows about, and every step up to it is already in SQL (the sink
flushes before recording a checkpoint). Checkpoints written after it (just before a worker died) are
ignored, and a stalled worker of an older attempt can only write into its own folder.
"""

from __future__ import annotations

import logging
import os
import shutil
import socket
import threading
import traceback
from pathlib import Path
from typing import Any

from celery import signals
from celery.exceptions import Reject
from sqlalchemy import select, update

from backend import jobs
from backend.db import retrying, session_scope
from backend.models import Checkpoint, Job, JobStatus, Run, WorkerNode, utcnow
from backend.settings import get_settings

# The engine is imported when the worker boots (seconds of torch/transformers imports), not when
# a job starts: a claimed job must start heartbeating at once.
from remix_engine.config import RunConfig
from remix_engine.trainer import STATE_FILE, train
from worker.celery_app import get_celery_app
from worker.sink import SqlSink

log = logging.getLogger("remix.worker")

app = get_celery_app()

# Set when this worker process begins a warm shutdown: running jobs checkpoint and are re-queued.
SHUTTING_DOWN = threading.Event()


# ----------------------------------------------------------------------------------- job heartbeat
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


# ----------------------------------------------------------------------------------- resume prep
def _link_tree(src: Path, dst: Path) -> None:
    """Hard-link (copy across filesystems) a checkpoint folder; atomic via a temporary name."""
    tmp = dst.with_name(dst.name + ".linking")
    shutil.rmtree(tmp, ignore_errors=True)
    for path in sorted(src.rglob("*")):
        target = tmp / path.relative_to(src)
        if path.is_dir():
            target.mkdir(parents=True, exist_ok=True)
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(path, target)
        except OSError:
            shutil.copy2(path, target)
    tmp.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(dst, ignore_errors=True)
    tmp.rename(dst)


def prepare_attempt_dir(run_id: int, run_root: Path, attempt: int) -> tuple[Path, int | None]:
    """Each attempt trains in its own folder, <run root>/attempt-NN. The newest checkpoint recorded
    in SQL (whose rows are all in SQL) is linked into it, so the trainer resumes from exactly there;
    a stalled worker of an earlier attempt that wakes up can only write into its own folder.
    Returns (attempt folder, step resumed from or None)."""
    out_dir = run_root / f"attempt-{attempt:02d}"
    ckpt_root = out_dir / "checkpoints"
    with session_scope() as s:
        recorded = s.execute(select(Checkpoint.step, Checkpoint.path).where(Checkpoint.run_id == run_id)
                             .order_by(Checkpoint.step.desc())).all()
    resume: tuple[int, Path] | None = None
    for step, path in recorded:
        src = Path(path)
        if (src / STATE_FILE).is_file():
            resume = (step, src)
            break
    keep: Path | None = None
    if resume is not None:
        step, src = resume
        keep = ckpt_root / src.name
        if src.resolve() != keep.resolve():
            _link_tree(src, keep)
    if ckpt_root.is_dir():  # anything else here is not recorded in SQL (e.g. this attempt number ran before)
        for entry in ckpt_root.iterdir():
            if keep is None or entry.resolve() != keep.resolve():
                log.info("run %s: removing checkpoint %s (not the newest recorded in SQL)", run_id, entry)
                if entry.is_dir():
                    shutil.rmtree(entry, ignore_errors=True)
                else:
                    entry.unlink(missing_ok=True)
    out_dir.mkdir(parents=True, exist_ok=True)
    return out_dir, (resume[0] if resume else None)


def _set_current_job(hostname: str, job_id: int | None) -> None:
    try:
        with session_scope() as s:
            s.execute(update(WorkerNode).where(WorkerNode.hostname == hostname)
                      .values(current_job_id=job_id, last_seen_at=utcnow()))
    except Exception:
        log.debug("could not record the current job", exc_info=True)


def _short_error(exc: BaseException) -> str:
    tail = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__)[-3:])
    return f"{type(exc).__name__}: {exc}\n{tail}"[:4000]


# ----------------------------------------------------------------------------------- tasks
@app.task(bind=True, name="remix.train", acks_late=True, reject_on_worker_lost=True)
def train_task(self, job_id: int, token: str) -> dict[str, Any]:
    if SHUTTING_DOWN.is_set():
        # delivered during a warm shutdown: hand the message back for the next worker
        raise Reject("worker is shutting down", requeue=True)
    hostname = self.request.hostname or socket.gethostname()
    claim = jobs.claim(job_id, token, f"{hostname} pid={os.getpid()}")
    if claim is None:
        log.info("job %s: delivery %s not claimable (duplicate, stale or cancelled); skipping", job_id, token)
        return {"job_id": job_id, "skipped": True}
    heartbeat = JobHeartbeat(job_id, claim.attempt, get_settings().heartbeat_interval_s).start()
    _set_current_job(hostname, job_id)
    try:
        return run_training(claim, heartbeat, task_id=self.request.id, task=self)
    finally:
        heartbeat.stop()
        _set_current_job(hostname, None)


def run_training(claim: jobs.Claim, heartbeat: JobHeartbeat, *, task_id: str | None = None,
                 task=None) -> dict[str, Any]:  # noqa: ANN001
    settings = get_settings()
    job_id, attempt, run_id = claim.job_id, claim.attempt, claim.run_id
    with session_scope() as s:
        run = s.get(Run, run_id)
        cfg_dict, run_root = dict(run.config), Path(run.output_dir or settings.runs_path / str(run_id))
        steps_total = run.steps_total

    sink: SqlSink | None = None
    summary: dict[str, Any] | None = None
    error: str | None = None

    def progress(step: int, metrics: dict[str, float]) -> None:
        if task is None or not task_id:
            return
        meta = {"job_id": job_id, "run_id": run_id, "attempt": attempt, "step": step, "steps": steps_total}
        for key in ("critic/score/mean", "eval/heldout/pass@1", "cost/rollouts"):
            if key in metrics:
                meta[key] = metrics[key]
        task.update_state(task_id=task_id, state="PROGRESS", meta=meta)

    try:
        cfg = RunConfig.model_validate(cfg_dict)
        out_dir, resume_step = prepare_attempt_dir(run_id, run_root, attempt)

        def _mark_resume() -> None:
            with session_scope() as s:
                s.execute(update(Job).where(Job.id == job_id).values(resumed_from_step=resume_step))

        retrying(_mark_resume)
        log.info("job %s attempt %s: run %s %s", job_id, attempt, run_id,
                 f"resuming from step {resume_step}" if resume_step is not None else "starting")
        sink = SqlSink(run_id, job_id=job_id, attempt=attempt, should_stop=lambda: heartbeat.should_stop,
                       on_progress=progress, batch_rows=settings.sink_batch_rows)
        summary = train(cfg, out_dir, sink=sink, resume=True)
    except BaseException as exc:  # noqa: BLE001 (recorded in SQL; KeyboardInterrupt/SystemExit re-raised below)
        error = _short_error(exc)
        log.exception("job %s attempt %s failed", job_id, attempt)
        if not isinstance(exc, Exception):
            raise
    finally:
        if sink is not None:
            try:
                sink.close()
            except Exception:
                log.warning("closing the SQL sink failed", exc_info=True)
        heartbeat.stop()

    fenced = heartbeat.lost or (sink is not None and sink.fenced)
    if fenced:
        log.warning("job %s attempt %s lost ownership of its job; leaving it to the current owner", job_id, attempt)
        return {"job_id": job_id, "attempt": attempt, "status": "lost"}
    if error is not None:
        jobs.finish(job_id, attempt, JobStatus.FAILED.value, error=error)
        return {"job_id": job_id, "attempt": attempt, "status": JobStatus.FAILED.value, "error": error}
    assert summary is not None
    clean = _jsonable(summary)
    if summary.get("status") == "cancelled":
        if heartbeat.cancel_requested:
            jobs.finish(job_id, attempt, JobStatus.CANCELLED.value, summary=clean)
            return {"job_id": job_id, "attempt": attempt, "status": JobStatus.CANCELLED.value}
        if SHUTTING_DOWN.is_set():
            outcome = jobs.requeue(job_id, attempt, reason="worker shut down; resumes from its checkpoint", lost=False)
            return {"job_id": job_id, "attempt": attempt, "status": f"interrupted ({outcome})"}
        # the cancel flag was set after our last heartbeat read it
        jobs.finish(job_id, attempt, JobStatus.CANCELLED.value, summary=clean)
        return {"job_id": job_id, "attempt": attempt, "status": JobStatus.CANCELLED.value}
    jobs.finish(job_id, attempt, JobStatus.SUCCEEDED.value, summary=clean)
    return {"job_id": job_id, "attempt": attempt, "status": JobStatus.SUCCEEDED.value,
            "steps": summary.get("steps"), "cost/rollouts": summary.get("cost/rollouts")}


@app.task(bind=True, name="remix.evaluate", acks_late=True, reject_on_worker_lost=True)
def evaluate_task(self, job_id: int, token: str) -> dict[str, Any]:
    """Benchmark evaluation job (POST /api/v1/evaluations): backend.leaderboard.run_evaluation_job
    writes `evaluations`, `eval_samples` and the measured `leaderboard_entries`; heartbeat, cancel and
    shutdown re-queue work as for training (finished benchmarks are kept across attempts)."""
    if SHUTTING_DOWN.is_set():
        raise Reject("worker is shutting down", requeue=True)
    hostname = self.request.hostname or socket.gethostname()
    claim = jobs.claim(job_id, token, f"{hostname} pid={os.getpid()}")
    if claim is None:
        return {"job_id": job_id, "skipped": True}
    heartbeat = JobHeartbeat(job_id, claim.attempt, get_settings().heartbeat_interval_s).start()
    _set_current_job(hostname, job_id)
    try:
        from backend.leaderboard import run_evaluation_job

        return run_evaluation_job(job_id, claim.attempt, heartbeat=heartbeat, shutting_down=SHUTTING_DOWN.is_set)
    finally:
        heartbeat.stop()
        _set_current_job(hostname, None)


def _jsonable(value: Any) -> Any:
    """Summaries go into a JSON column: keep plain types, stringify the rest, drop NaN/inf."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, float):
        return value if value == value and value not in (float("inf"), float("-inf")) else None
    if value is None or isinstance(value, (str, int, bool)):
        return value
    return str(value)


# ----------------------------------------------------------------------------------- worker registry
class _WorkerPresence:
    """Announces this worker in the `workers` table and refreshes last_seen_at (for /health)."""

    def __init__(self) -> None:
        self.hostname: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self, hostname: str, queues: str) -> None:
        self.hostname = hostname
        now = utcnow()

        def _announce() -> None:
            with session_scope() as s:
                node = s.get(WorkerNode, hostname)
                if node is None:
                    node = WorkerNode(hostname=hostname)
                node.pid, node.queues, node.status = os.getpid(), queues[:255], "online"
                node.started_at, node.last_seen_at, node.current_job_id = now, now, None
                s.add(node)

        retrying(_announce)
        self._thread = threading.Thread(target=self._loop, name="worker-presence", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        interval = get_settings().heartbeat_interval_s
        while not self._stop.wait(interval):
            try:
                with session_scope() as s:
                    s.execute(update(WorkerNode).where(WorkerNode.hostname == self.hostname)
                              .values(last_seen_at=utcnow(), status="online"))
            except Exception:
                log.debug("worker presence update failed", exc_info=True)

    def stop(self) -> None:
        self._stop.set()
        if self.hostname is None:
            return
        try:
            with session_scope() as s:
                s.execute(update(WorkerNode).where(WorkerNode.hostname == self.hostname)
                          .values(status="offline", current_job_id=None, last_seen_at=utcnow()))
        except Exception:
            log.debug("could not mark the worker offline", exc_info=True)


_presence = _WorkerPresence()


@signals.worker_ready.connect
def _on_worker_ready(sender=None, **_kwargs) -> None:  # noqa: ANN001
    queues = ",".join(q.name for q in sender.app.amqp.queues.consume_from.values()) if sender is not None else ""
    _presence.start(sender.hostname if sender is not None else socket.gethostname(), queues)


@signals.worker_shutting_down.connect
def _on_worker_shutting_down(**_kwargs) -> None:
    SHUTTING_DOWN.set()


@signals.worker_shutdown.connect
def _on_worker_shutdown(**_kwargs) -> None:
    _presence.stop()
