"""Celery tasks: one per job kind, registered under the names the API sends (studio.broker.TASK_NAMES),
both run in the same skeleton (worker/job.py); plus this worker's presence in the `workers` table.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from typing import Any

from celery import signals
from sqlalchemy import update

from studio.broker import TASK_NAMES, get_celery_app
from studio.db import retrying, session_scope
from studio.models import JobKind, WorkerNode, utcnow
from studio.settings import get_settings

# The engine is imported when the worker boots (seconds of torch/transformers imports), not when
# a job starts: a claimed job must start heartbeating at once.
from worker.evaluation import run_evaluation
from worker.job import SHUTTING_DOWN, run_job
from worker.training import run_training

log = logging.getLogger("remix.worker")

app = get_celery_app()


@app.task(bind=True, name=TASK_NAMES[JobKind.TRAIN.value], acks_late=True, reject_on_worker_lost=True)
def train_task(self, job_id: int, token: str) -> dict[str, Any]:
    """A training run (POST /api/v1/runs): the engine's trainer with the SQL sink."""
    return run_job(self, job_id, token, run_training)


@app.task(bind=True, name=TASK_NAMES[JobKind.EVAL.value], acks_late=True, reject_on_worker_lost=True)
def evaluate_task(self, job_id: int, token: str) -> dict[str, Any]:
    """A benchmark evaluation (POST /api/v1/evaluations); finished benchmarks are kept across attempts."""
    return run_job(self, job_id, token, run_evaluation)


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
