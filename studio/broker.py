"""The Celery application: configuration only (no torch import), shared by the worker and the API.

The API sends tasks *by name* (`TASK_NAMES`, studio/jobs.py `dispatch`); the worker registers the
functions under those names (worker/tasks.py). Neither imports the other.

Long GPU jobs: late acks + reject on worker lost + prefetch 1, so a worker holds exactly the one
message it runs; tasks go to the `gpu` queue (REMIX_GPU_QUEUE). Celery is delivery only: the SQL
job row decides whether a delivered message may run (studio/jobs.py).
"""

from __future__ import annotations

import threading
from urllib.parse import urlsplit

from celery import Celery

from studio.models import JobKind
from studio.settings import Settings, get_settings

# Celery task name per job kind (studio.models.JobKind values).
TASK_NAMES = {JobKind.TRAIN.value: "remix.train", JobKind.EVAL.value: "remix.evaluate"}

_apps: dict[tuple[str, str, str], Celery] = {}
_lock = threading.Lock()


def broker_transport_options(settings: Settings) -> dict:
    if settings.broker_is_filesystem:
        folder = settings.broker_folder
        queue_dir = folder / "queue"
        for sub in (queue_dir, folder / "processed", folder / "control"):
            sub.mkdir(parents=True, exist_ok=True)
        return {
            # One folder serves both directions: producers write into it, consumers read from it.
            "data_folder_in": str(queue_dir),
            "data_folder_out": str(queue_dir),
            "processed_folder": str(folder / "processed"),
            "store_processed": False,
            "control_folder": str(folder / "control"),
        }
    # Redis / SQS: an unacknowledged (running) message is re-delivered after this many seconds.
    return {"visibility_timeout": settings.visibility_timeout_s}


def celery_broker_url(settings: Settings) -> str:
    """The broker URL handed to Celery. The filesystem transport ignores the host, but kombu logs
    "No hostname was supplied. Reverting to default 'localhost'" for the host-less `filesystem://`
    on every connection (worker start, each /health probe): give it that host itself."""
    url = settings.celery_broker_url
    if settings.broker_is_filesystem and urlsplit(url).hostname is None:
        return "filesystem://localhost//"
    return url


def make_celery_app(settings: Settings) -> Celery:
    app = Celery("remix")
    filesystem = settings.broker_is_filesystem
    app.conf.update(
        broker_url=celery_broker_url(settings),
        result_backend=settings.celery_result_backend,
        broker_transport_options=broker_transport_options(settings),
        result_backend_transport_options={"visibility_timeout": settings.visibility_timeout_s},
        broker_connection_retry_on_startup=True,
        # Fail a send quickly when the broker is down: the job stays pending and the reaper resends.
        task_publish_retry_policy={"max_retries": 2, "interval_start": 0.2, "interval_step": 0.5, "interval_max": 1},
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_track_started=True,
        result_extended=True,
        result_expires=7 * 24 * 3600,
        task_default_queue=settings.gpu_queue,
        task_routes={"remix.*": {"queue": settings.gpu_queue}},
        # A broker blip must not kill a training job that may have run for hours: a re-delivery
        # of its message after the reconnect cannot start a second copy (the SQL claim refuses it).
        worker_cancel_long_running_tasks_on_connection_loss=False,
        worker_hijack_root_logger=False,
        # The filesystem transport's fanout/pidbox is lightly maintained (races with several
        # processes): the studio does not need remote control, SQL tracks workers and cancels.
        worker_enable_remote_control=not filesystem,
        worker_send_task_events=False,
        timezone="UTC",
    )
    if settings.celery_broker_url.startswith(("amqp", "pyamqp")):
        # A solo-pool worker is busy inside the job and cannot answer AMQP heartbeats; RabbitMQ
        # would drop the connection mid-job. (Also raise RabbitMQ's consumer_timeout above the
        # longest job, see docs/studio.md.)
        app.conf.broker_heartbeat = 0
    return app


def get_celery_app(settings: Settings | None = None) -> Celery:
    """One app per (broker, backend, queue): the API and tests may look at several settings."""
    settings = settings or get_settings()
    key = (settings.celery_broker_url, settings.celery_result_backend, settings.gpu_queue)
    with _lock:
        app = _apps.get(key)
        if app is None:
            app = _apps[key] = make_celery_app(settings)
        return app


def __getattr__(name: str):
    # `celery -A studio.broker inspect ...` looks for a module attribute named app/celery.
    if name in ("app", "celery"):
        return get_celery_app()
    raise AttributeError(name)
