"""`remix worker`: a Celery worker for the studio's training/evaluation jobs (one per accelerator).

    remix worker                       # reads REMIX_DATABASE_URL / REMIX_BROKER_URL from env or .env
    remix worker --queues gpu -n gpu0@%h
    remix worker --require-urls        # scale-out: refuse to start on the embedded SQLite/filesystem default

The worker uses the solo pool by default: one job at a time in the worker's own process, which lets
the engine start its grading subprocesses and keeps one process per GPU. Run one worker per device
(CUDA_VISIBLE_DEVICES=N remix worker -n gpuN@%h).
"""

from __future__ import annotations

import argparse
import os
import socket
import sys

LOCK_HELD = 3  # exit code: another worker holds the lock file
MISSING_URLS = 4  # exit code: --require-urls without REMIX_DATABASE_URL / REMIX_BROKER_URL


def register_worker(subparsers) -> argparse.ArgumentParser:  # noqa: ANN001
    p = subparsers.add_parser("worker", help="run a studio worker (Celery) that executes training/evaluation jobs",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_worker_arguments(p)
    p.set_defaults(func=run_worker)
    return p


def add_worker_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data-dir", help="data directory of the embedded default (REMIX_DATA_DIR)")
    p.add_argument("-Q", "--queues", help="comma-separated queues to consume (default: REMIX_GPU_QUEUE, 'gpu')")
    p.add_argument("-n", "--hostname", help="node name (default: remix-<pid>@<host>)")
    p.add_argument("-l", "--loglevel", default="INFO")
    p.add_argument("--pool", default="solo", choices=["solo", "threads", "prefork"],
                   help="execution pool (default solo: the job runs in this process)")
    p.add_argument("-c", "--concurrency", type=int, default=1)
    p.add_argument("--no-migrate", action="store_true", help="do not upgrade the database schema on start")
    p.add_argument("--require-urls", action="store_true",
                   help="refuse to start (exit code 4) unless REMIX_DATABASE_URL and REMIX_BROKER_URL are set: a "
                        "scale-out worker must never fall back to the embedded SQLite file and filesystem broker")
    p.add_argument("--lock-file", default=None, help="hold this lock file while running and refuse to start if "
                   "another worker holds it (`remix studio` passes DATA_DIR/worker.lock: one worker per studio)")


def quiet_startup() -> None:
    """Keep the worker's start-up output to what its user can act on. Call before Celery and the
    engine are imported."""
    import warnings

    from celery.exceptions import SecurityWarning

    # Celery warns on every start as root ("running the worker with superuser privileges"): in a
    # container root is the norm and there is nothing to act on. Silenced knowingly: the dangerous
    # case (pickle accepted as root) is Celery's SecurityError, which is raised, not a warning,
    # and the studio accepts JSON only (studio/broker.py).
    warnings.filterwarnings("ignore", message=r"You're running the worker with superuser privileges",
                            category=SecurityWarning)
    # Celery logs what a task writes to stderr at WARNING: Hugging Face / transformers progress bars
    # ("Loading weights", downloads) would land there as warnings. Jobs report progress in SQL.
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    if "transformers" in sys.modules:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()


def embedded_fallbacks(settings) -> list[str]:  # noqa: ANN001
    """The URL settings this worker falls back on (unset): a scale-out worker with one of them has
    a private SQLite file or broker folder and waits forever for jobs the API never sends it."""
    return [name for name, value in (("REMIX_DATABASE_URL", settings.database_url),
                                     ("REMIX_BROKER_URL", settings.broker_url)) if not value]


def run_worker(args: argparse.Namespace) -> int:
    if getattr(args, "data_dir", None):
        os.environ["REMIX_DATA_DIR"] = str(args.data_dir)
    from studio.settings import get_settings, redact_url, reset_settings_cache

    reset_settings_cache()
    settings = get_settings()
    missing = embedded_fallbacks(settings)
    if missing and args.require_urls:
        print(f"remix worker: error: --require-urls but {' and '.join(missing)} not set (environment or .env)",
              file=sys.stderr, flush=True)
        return MISSING_URLS
    quiet_startup()
    if args.lock_file:
        from studio.processes import FolderLock

        lock = FolderLock(args.lock_file)
        if not lock.acquire():  # released by the kernel when this process ends, however it ends
            print(f"remix worker: error: another worker (pid {lock.holder()}) already holds {args.lock_file}; "
                  "stop it first", file=sys.stderr, flush=True)
            return LOCK_HELD
    if not args.no_migrate:
        from studio.migrate import upgrade_database

        upgrade_database(settings)
    from studio.broker import get_celery_app

    app = get_celery_app(settings)
    from celery.utils.nodenames import host_format

    import worker.tasks  # noqa: F401  (registers the tasks and the worker signals)

    queues = args.queues or settings.gpu_queue
    # expanded here (%h, %n, %d) so this process's own lines show the name Celery registers
    hostname = host_format(args.hostname or f"remix-{os.getpid()}@{socket.gethostname()}")
    argv = ["worker", f"--loglevel={args.loglevel}", f"--pool={args.pool}", f"--concurrency={args.concurrency}",
            "-Q", queues, "-n", hostname]
    if settings.broker_is_filesystem:
        # no broker-side fanout needed: SQL tracks workers and cancellation
        argv += ["--without-gossip", "--without-mingle", "--without-heartbeat"]
    if missing:
        used = []
        if "REMIX_DATABASE_URL" in missing:
            used.append(f"the embedded SQLite file {settings.sqlalchemy_url.removeprefix('sqlite:///')}")
        if "REMIX_BROKER_URL" in missing:
            used.append(f"the filesystem broker {settings.broker_folder}")
        print(f"remix worker {hostname}: {' and '.join(missing)} not set: using {' and '.join(used)} "
              f"(this host only; queues {queues})", flush=True)
    else:
        print(f"remix worker {hostname}: broker {redact_url(settings.celery_broker_url)}, "
              f"database {redact_url(settings.sqlalchemy_url)}, queues {queues}", flush=True)
    try:
        app.worker_main(argv)
    except SystemExit as exc:
        return int(exc.code or 0) if isinstance(exc.code, int) else 0
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m worker.cli")
    sub = parser.add_subparsers(dest="command", required=True)
    register_worker(sub)
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
