"""/api/v1/jobs, /api/v1/health and /api/v1/benchmarks."""

from __future__ import annotations

import concurrent.futures
import threading
import time
from datetime import timedelta

from fastapi import APIRouter, Depends, HTTPException, Query, Request, Response
from sqlalchemy import func, select

from backend.api.deps import FullView, SessionDep, SessionReleasingRoute, errors
from backend.api.read_cache import json_response
from backend.api.schemas import BenchmarkOut, HealthOut, JobList, JobOut
from backend.auth import require_read
from remix_engine.benchmarks import BENCHMARKS, LABELS
from studio import paths
from studio.migrate import current_revision, head_revision
from studio.models import Job, WorkerNode, as_utc, utcnow
from studio.settings import get_settings, redact_url

router = APIRouter(tags=["system"], dependencies=[Depends(require_read)], route_class=SessionReleasingRoute)

_probe_pool = concurrent.futures.ThreadPoolExecutor(max_workers=2, thread_name_prefix="health-probe")


@router.get("/jobs", response_model=JobList, summary="Jobs (newest first)")
def list_jobs(session: SessionDep, full: FullView, status_: str | None = Query(None, alias="status", description="comma-separated"),
              run_id: int | None = None, kind: str | None = None,
              limit: int = Query(50, ge=1, le=500), offset: int = Query(0, ge=0)) -> JobList:
    cond = []
    if status_:
        cond.append(Job.status.in_([s.strip() for s in status_.split(",") if s.strip()]))
    if run_id is not None:
        cond.append(Job.run_id == run_id)
    if kind:
        cond.append(Job.kind == kind)
    count = session.execute(select(func.count()).select_from(Job).where(*cond)).scalar_one()
    rows = session.execute(select(Job).where(*cond).order_by(Job.created_at.desc(), Job.id.desc())
                           .limit(limit).offset(offset)).scalars().all()
    return JobList(data=[JobOut.of(j, full) for j in rows], count=count, limit=limit, offset=offset)


@router.get("/jobs/{job_id}", response_model=JobOut, summary="One job", responses=errors(404))
def get_job(job_id: int, session: SessionDep, full: FullView) -> JobOut:
    job = session.get(Job, job_id)
    if job is None:
        raise HTTPException(404, detail=f"job {job_id} not found")
    return JobOut.of(job, full)


@router.get("/benchmarks", response_model=list[BenchmarkOut],
            summary="The standard benchmarks (the leaderboard's columns and the evaluation form's default)")
def list_benchmarks() -> list[BenchmarkOut]:
    return [BenchmarkOut(name=name, label=LABELS[name]) for name in BENCHMARKS]


def _probe_broker() -> dict:
    from studio.broker import get_celery_app

    settings = get_settings()
    app = get_celery_app(settings)
    with app.connection_for_write() as conn:
        conn.ensure_connection(max_retries=1, interval_start=0, interval_step=0, timeout=3)
    return {"ok": True}


# What /health reports that changes rarely is worked out at most every SLOW_FACTS_TTL_S per app: a
# dashboard (or a load test) calling it many times a second shares one broker probe (a broker
# connection each) and one schema-revision read (Alembic's, the costliest part of a call).
# The database's reachability and the workers are read on every call.
SLOW_FACTS_TTL_S = 2.0


class Recent:
    """`fn()`'s result, computed at most once per SLOW_FACTS_TTL_S. Only callers that find no result
    yet wait for a computation (one at a time); once there is one, a caller that finds it old
    recomputes it while the others keep getting the last one at once. (Waiting for every refresh
    had a broker probe hold every API thread that asked for /health meanwhile.) An exception is
    not kept: it goes to the caller that computed."""

    def __init__(self) -> None:
        self._lock = threading.Lock()  # guards the fields below; never held across fn()
        self._computing = threading.Lock()  # held across fn(): one computation at a time
        self._value = None
        self._at = float("-inf")

    def get(self, fn):  # noqa: ANN001, ANN201
        with self._lock:
            if time.monotonic() - self._at < SLOW_FACTS_TTL_S:
                return self._value
            have_one = self._at > float("-inf")
        if not self._computing.acquire(blocking=not have_one):
            return self._value  # another caller is refreshing it
        try:
            with self._lock:  # computed while this caller waited?
                if time.monotonic() - self._at < SLOW_FACTS_TTL_S:
                    return self._value
            value = fn()
            with self._lock:
                self._value, self._at = value, time.monotonic()
            return value
        finally:
            self._computing.release()


_recent_made = threading.Lock()


def _recent(request: Request, name: str) -> Recent:
    state = request.app.state  # per app: tests build several apps on several databases in one process
    with _recent_made:
        if getattr(state, name, None) is None:
            setattr(state, name, Recent())
        return getattr(state, name)


def _broker_state() -> dict:
    try:
        return _probe_pool.submit(_probe_broker).result(timeout=5)
    except Exception as exc:  # noqa: BLE001
        return {"ok": False, "error": f"{type(exc).__name__}: {exc}"[:500]}


@router.get("/health", response_model=HealthOut,
            summary="Database, broker and the workers seen recently; status ok | starting | degraded | error",
            responses={503: {"description": "the database is unreachable"}})
def health(request: Request, session: SessionDep, full: FullView) -> Response:
    from remix_engine import __version__

    settings = get_settings()
    db: dict = {"url": redact_url(settings.sqlalchemy_url), "dialect": session.get_bind().dialect.name}
    try:
        conn = session.connection()  # Core: the ORM's per-statement work is most of a cheap read
        # the workers' rows are the database check too: one round trip
        nodes = conn.execute(select(WorkerNode).order_by(WorkerNode.last_seen_at.desc()).limit(50)).all()
        db["ok"] = True
        db["revision"] = _recent(request, "schema_revision").get(lambda: current_revision(conn))
        db["head"] = head_revision()
        db["schema_current"] = db["revision"] == db["head"]
        if not db["schema_current"]:
            db["warning"] = "the schema is behind the code: restart `remix studio` (or run the migrations)"
    except Exception as exc:  # noqa: BLE001
        db.update(ok=False, error=f"{type(exc).__name__}: {exc}")
    broker: dict = {"url": redact_url(settings.celery_broker_url), **_recent(request, "broker_state").get(_broker_state)}
    workers: dict = {"online": 0, "lost": 0, "items": []}
    reasons: list[str] = []
    if db.get("ok"):
        fresh = utcnow() - timedelta(seconds=settings.heartbeat_timeout_s)
        for w in nodes:
            seen = as_utc(w.last_seen_at)
            alive = w.status == "online" and seen is not None and seen >= fresh
            # online and silent: lost, even before the reaper's next pass marks it so
            state = "online" if alive else (w.status if w.status != "online" else "lost")
            workers["online"] += int(alive)
            if state == "lost":
                workers["lost"] += 1
                who = f"worker {w.hostname}" if full else "a worker"
                reasons.append(f"{who} is lost: no heartbeat since {seen.isoformat() if seen else '?'} "
                               "(it died without stopping; its job was re-queued)")
            workers["items"].append({"hostname": w.hostname if full else None, "pid": w.pid if full else None,
                                     "queues": w.queues, "status": state,
                                     # a lost worker runs nothing (the reaper re-queued its job)
                                     "current_job_id": w.current_job_id if state == "online" else None,
                                     "last_seen_at": seen, "started_at": as_utc(w.started_at)})
        if not db.get("schema_current"):
            reasons.append("the database schema is behind the code")
    if not broker.get("ok"):
        reasons.append("the broker is unreachable")
    # The documented rule (docs/studio.md, "Health"): `starting` while no worker has come online yet,
    # none is lost and the API started less than REMIX_WORKER_START_GRACE_S ago; after that no
    # online worker is `degraded`.
    booting = time.monotonic() - getattr(request.app.state, "started_at", 0.0) < settings.worker_start_grace_s
    starting = False
    if db.get("ok") and workers["online"] == 0:
        if booting and not workers["lost"]:
            starting = True
        else:
            reasons.append("no worker is online: jobs wait in the queue")
    overall = "degraded" if reasons else "starting" if starting else "ok"
    if not db.get("ok"):
        reasons.insert(0, "the database is unreachable")
        overall = "error"
    if not full:  # the SQLite file's absolute path, error texts
        db, broker = paths.scrub(db), paths.scrub(broker)
    return json_response(HealthOut(status=overall, reasons=reasons, database=db, broker=broker, workers=workers,
                                   version=__version__), status_code=503 if overall == "error" else 200)
