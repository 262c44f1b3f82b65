"""`remix studio`: the embedded default in one command.

    remix studio [--host 127.0.0.1] [--port 8000] [--data-dir DIR] [--api-workers N]

runs the database migrations, makes sure an API token exists (created on first start, stored in
DIR/api_token and printed), starts one Celery worker process (solo pool, server-less filesystem
broker and SQLite in DIR unless REMIX_BROKER_URL / REMIX_DATABASE_URL say otherwise) and serves the
API with uvicorn. Ctrl-C stops both: the API shuts down, the worker finishes its current training
step, checkpoints, re-queues the job (it resumes on the next start) and exits. If the studio
dies without stopping it (kill -9), the kernel sends its worker the same SIGTERM (PR_SET_PDEATHSIG),
and a new `remix studio` on the folder waits for that worker to finish before starting its own:
one worker per studio, guarded by the lock file DIR/worker.lock.

With REMIX_DATABASE_URL=postgresql://... and REMIX_BROKER_URL=redis://... the same command is the
API node of the scale-out setup; add `--no-worker` and run `remix worker` on the GPU machines.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

from studio.processes import FolderLock, die_with_parent
from studio.settings import PROJECT_DIR

log = logging.getLogger("remix.studio")


def register_studio(subparsers) -> argparse.ArgumentParser:  # noqa: ANN001
    p = subparsers.add_parser("studio", help="run the studio: API + one worker (embedded default)",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_studio_arguments(p)
    p.set_defaults(func=run_studio)
    return p


def add_studio_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    p.add_argument("--data-dir", help="data directory: SQLite file, broker folders, token, runs (REMIX_DATA_DIR, "
                                      "default ./.remix)")
    p.add_argument("--no-worker", action="store_true", help="serve the API only (workers run elsewhere)")
    p.add_argument("--api-workers", type=_positive_int, default=1, metavar="N",
                   help="API processes sharing the port (default 1). One process uses at most about one core "
                        "(Python's GIL): on a machine with more cores, N up to the core count serves more "
                        "dashboard readers at once. Each process has its own database pool and read cache")
    p.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"])
    p.add_argument("--worker-stop-timeout", type=float, default=120.0,
                   help="seconds to wait for the worker to checkpoint and exit on Ctrl-C before killing it")


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a whole number, not {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


class WorkerProcess:
    """The studio's own worker: a separate OS process (its own session, so a terminal Ctrl-C reaches
    only the studio, which then asks the worker to stop). Restarted if it dies unexpectedly."""

    def __init__(self, hostname: str, lock_file: Path, loglevel: str = "INFO", max_restarts: int = 5):
        self.hostname = hostname
        self.lock_file = lock_file
        self.loglevel = loglevel
        self.max_restarts = max_restarts
        self.proc: subprocess.Popen | None = None
        self._stopping = threading.Event()
        self._restarts: list[float] = []
        self._watcher = threading.Thread(target=self._watch, name="worker-watch", daemon=True)

    def _spawn(self) -> None:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(PROJECT_DIR), env.get("PYTHONPATH", "")) if p)
        cmd = [sys.executable, "-m", "worker.cli", "worker", "--no-migrate", "-n", self.hostname,
               f"--loglevel={self.loglevel}", "--lock-file", str(self.lock_file)]
        studio = os.getpid()
        # SIGTERM when the studio dies, even by kill -9: a warm shutdown (the job checkpoints and is
        # re-queued for the next studio's worker) instead of an orphan that keeps the device.
        self.proc = subprocess.Popen(cmd, env=env, start_new_session=True,  # noqa: PLW1509 - main thread forks
                                     preexec_fn=lambda: die_with_parent(signal.SIGTERM, studio))
        print(f"  worker:   pid {self.proc.pid} ({self.hostname})", flush=True)

    def start(self) -> None:
        self._spawn()
        self._watcher.start()

    def _watch(self) -> None:
        while not self._stopping.is_set():
            proc = self.proc
            if proc is not None and proc.poll() is not None and not self._stopping.is_set():
                now = time.monotonic()
                self._restarts = [t for t in self._restarts if now - t < 60] + [now]
                if len(self._restarts) > self.max_restarts:
                    log.error("the worker keeps dying (exit %s); not restarting it again", proc.returncode)
                    print(f"worker exited with {proc.returncode} {len(self._restarts)} times in a minute; "
                          "giving up (see the log above)", file=sys.stderr, flush=True)
                    return
                print(f"worker pid {proc.pid} exited with {proc.returncode}; starting a new one "
                      "(its job resumes from the last checkpoint)", file=sys.stderr, flush=True)
                time.sleep(1.0)
                if not self._stopping.is_set():
                    self._spawn()
            self._stopping.wait(0.5)

    def stop(self, timeout: float) -> int | None:
        self._stopping.set()
        proc = self.proc
        if proc is None or proc.poll() is not None:
            return proc.returncode if proc else None
        proc.send_signal(signal.SIGTERM)  # Celery warm shutdown: the job checkpoints and is re-queued
        try:
            return proc.wait(timeout=timeout)
        except (subprocess.TimeoutExpired, KeyboardInterrupt):
            print("worker did not stop in time; killing it", file=sys.stderr, flush=True)
            proc.kill()
            return proc.wait()


def _previous_worker_gone(lock_file: Path, timeout_s: float) -> bool:
    """One worker per studio folder: a worker of an earlier studio (killed a moment ago; its worker
    got SIGTERM and is checkpointing) still holds the lock. Wait for it to stop, up to `timeout_s`."""
    lock = FolderLock(lock_file)
    holder = lock.holder()
    if holder is None:
        return True
    print(f"  waiting for the previous studio's worker (pid {holder}) to checkpoint and stop ...", flush=True)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        time.sleep(0.5)
        if lock.holder() is None:
            return True
    print(f"remix studio: error: a worker (pid {holder}) still serves {lock_file.parent}; stop it "
          f"(kill -TERM {holder}) or start with --no-worker", file=sys.stderr, flush=True)
    return False


def run_studio(args: argparse.Namespace) -> int:
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        logging.getLogger("alembic").setLevel(logging.WARNING)
    if args.data_dir:
        os.environ["REMIX_DATA_DIR"] = str(Path(args.data_dir).expanduser().resolve())
    from studio.settings import get_settings, redact_url, reset_settings_cache

    reset_settings_cache()
    settings = get_settings()
    data_dir = settings.data_path
    data_dir.mkdir(parents=True, exist_ok=True)
    os.environ["REMIX_DATA_DIR"] = str(data_dir)  # the worker process resolves the same folder

    from backend.auth import TOKEN_FILE, ensure_embedded_token

    token_note = "from REMIX_API_TOKENS"
    if not settings.write_tokens:
        token, created = ensure_embedded_token(data_dir)
        os.environ["REMIX_API_TOKENS"] = token
        reset_settings_cache()
        settings = get_settings()
        token_note = (f"{token}  (new; stored in {data_dir / TOKEN_FILE})" if created
                      else f"stored in {data_dir / TOKEN_FILE}")

    from studio.migrate import upgrade_database

    revision = upgrade_database(settings)

    import uvicorn
    from uvicorn.supervisors import Multiprocess

    from backend.app import API_PARENT_ENV, create_app

    url_host = "127.0.0.1" if args.host in ("0.0.0.0", "::") else args.host
    print(f"ReMix Studio on http://{url_host}:{args.port}   (API docs: /docs, OpenAPI: /openapi.json)", flush=True)
    print(f"  data dir: {data_dir}", flush=True)
    print(f"  database: {redact_url(settings.sqlalchemy_url)} (schema {revision})", flush=True)
    print(f"  broker:   {redact_url(settings.celery_broker_url)}", flush=True)
    print(f"  API token (write): {token_note}", flush=True)

    worker = None
    if not args.no_worker:
        lock_file = data_dir / "worker.lock"
        if not _previous_worker_gone(lock_file, args.worker_stop_timeout):
            return 2
        worker = WorkerProcess(f"studio-{os.getpid()}@{socket.gethostname()}", lock_file,
                               loglevel=args.log_level.upper())
        worker.start()
    # Keep-alive of 30 s (uvicorn's default is 5): a client's pooled connection closing under it
    # is the commonest connection reset under load.
    options = {"host": args.host, "port": args.port, "log_level": args.log_level, "timeout_keep_alive": 30}
    if args.api_workers > 1:
        # uvicorn's supervisor spawns the processes; each builds the app from the environment set
        # above (data dir, token, URLs) and dies with this one (API_PARENT_ENV, backend/app.py)
        os.environ[API_PARENT_ENV] = str(os.getpid())
        config = uvicorn.Config("backend.app:create_app", factory=True, workers=args.api_workers, **options)
    else:
        server = uvicorn.Server(uvicorn.Config(create_app(settings), **options))
    code = 0

    def _terminate(signum, _frame):  # noqa: ANN001
        # uvicorn handles SIGTERM itself and re-raises it after its shutdown; end up in `finally`.
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, _terminate), signal.getsignal(signal.SIGINT)
    try:
        if args.api_workers > 1:
            # the supervisor takes SIGINT and SIGTERM over: it stops its processes, then returns here
            # (a port in use exits 1 from bind_socket, after `finally` stopped the worker)
            Multiprocess(config, sockets=[config.bind_socket()]).run()
        else:
            server.run()
            code = 0 if server.started else 1
    except KeyboardInterrupt:  # uvicorn re-raises the Ctrl-C it handled
        pass
    finally:
        signal.signal(signal.SIGINT, previous[1])
        if worker is not None:
            print("stopping the worker (the running job checkpoints and resumes on the next start) ...", flush=True)
            try:
                rc = worker.stop(args.worker_stop_timeout)
            except KeyboardInterrupt:
                rc = worker.stop(0)
            print(f"worker stopped (exit {rc})", flush=True)
        signal.signal(signal.SIGTERM, previous[0])
    return code


def main(argv: list[str] | None = None) -> int:
    """`python -m backend.cli studio ...` (the same as `remix studio ...`)."""
    parser = argparse.ArgumentParser(prog="python -m backend.cli")
    sub = parser.add_subparsers(dest="command", required=True)
    register_studio(sub)
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("alembic").setLevel(logging.WARNING)
    sys.exit(main())
