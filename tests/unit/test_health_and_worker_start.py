"""Issue 15 item 7: an honest /health (starting | ok | degraded | error, lost workers named) and a
worker start that says what it uses and refuses the embedded fallback when asked to."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from datetime import timedelta

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from studio import jobs
from studio.db import session_scope
from studio.models import WorkerNode, utcnow
from studio.settings import PROJECT_DIR, get_settings, reset_settings_cache

TOKEN = "health-test-token"


@pytest.fixture
def client(studio_env, monkeypatch):
    from backend.app import create_app

    monkeypatch.setenv("REMIX_API_TOKENS", TOKEN)
    reset_settings_cache()
    return TestClient(create_app(get_settings()))  # no `with`: no reaper thread


def _worker(hostname: str, *, age_s: float = 0.0, status: str = "online", job: int | None = None) -> None:
    seen = utcnow() - timedelta(seconds=age_s)
    with session_scope() as s:
        s.add(WorkerNode(hostname=hostname, pid=123, queues="gpu", status=status, current_job_id=job,
                         started_at=seen, last_seen_at=seen))


def test_health_is_starting_until_a_worker_comes_online_then_degraded_after_the_grace(client):
    h = client.get("/api/v1/health").json()
    assert h["status"] == "starting", h  # the API just started, its worker is still importing torch
    assert h["reasons"] == [] and h["workers"]["online"] == 0
    _worker("w-ok@host")
    h = client.get("/api/v1/health").json()
    assert h["status"] == "ok" and h["reasons"] == [] and h["workers"]["online"] == 1, h
    with session_scope() as s:
        s.execute(WorkerNode.__table__.delete())
    client.app.state.started_at = time.monotonic() - get_settings().worker_start_grace_s - 1
    h = client.get("/api/v1/health").json()
    assert h["status"] == "degraded", h
    assert any("no worker is online" in r for r in h["reasons"]), h


def test_a_lost_worker_degrades_health_is_named_and_runs_no_job(client):
    _worker("w-ok@host")
    _worker("w-dead@host", age_s=3600, job=7)  # silent for an hour, the reaper has not passed yet
    _worker("w-gone@host", age_s=3600, status="offline")  # stopped cleanly: not a problem
    h = client.get("/api/v1/health").json()  # without a token: counted and explained, not named
    assert h["status"] == "degraded" and h["workers"]["lost"] == 1 and h["workers"]["online"] == 1, h
    assert "w-dead" not in str(h) and any("a worker is lost" in r for r in h["reasons"]), h
    h = client.get("/api/v1/health", headers={"Authorization": f"Bearer {TOKEN}"}).json()
    assert any("worker w-dead@host is lost" in r for r in h["reasons"]), h
    items = {w["hostname"]: w for w in h["workers"]["items"]}
    assert items["w-dead@host"]["status"] == "lost" and items["w-dead@host"]["current_job_id"] is None
    assert items["w-gone@host"]["status"] == "offline"
    # a lost worker also starts nothing: not `starting` even right after the API started
    with session_scope() as s:
        s.execute(WorkerNode.__table__.delete().where(WorkerNode.hostname == "w-ok@host"))
    assert client.get("/api/v1/health").json()["status"] == "degraded"


def test_the_reaper_marks_a_silent_worker_lost_and_clears_its_job(studio_env):
    _worker("w-dead@host", age_s=3600, job=7)
    jobs.reap(studio_env)
    with session_scope() as s:
        node = s.execute(select(WorkerNode)).scalar_one()
        assert (node.status, node.current_job_id) == ("lost", None)


def test_worker_require_urls_refuses_the_embedded_fallback(studio_env, capsys):
    from worker.cli import MISSING_URLS, main

    assert main(["worker", "--require-urls", "--no-migrate"]) == MISSING_URLS
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "REMIX_DATABASE_URL and REMIX_BROKER_URL not set" in err, err


def test_worker_start_disables_hugging_face_progress_bars():
    """Celery logs a task's stderr at WARNING: the 'Loading weights' bar must not be written at all."""
    env = {k: v for k, v in os.environ.items() if k != "HF_HUB_DISABLE_PROGRESS_BARS"}
    code = ("import transformers.utils.logging as l; assert l.is_progress_bar_enabled(); "
            "from worker.cli import quiet_startup; quiet_startup(); "
            "print(l.is_progress_bar_enabled())")
    out = subprocess.run([sys.executable, "-c", code], cwd=PROJECT_DIR, env=env, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "False", out.stderr
    code = ("from worker.cli import quiet_startup; quiet_startup(); import transformers.utils.logging as l; "
            "print(l.is_progress_bar_enabled())")  # the worker's own order: quiet first, engine later
    out = subprocess.run([sys.executable, "-c", code], cwd=PROJECT_DIR, env=env, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "False", out.stderr


def test_worker_start_silences_the_root_warning_only(monkeypatch):
    import warnings

    from celery import platforms
    from celery.exceptions import SecurityError

    from worker.cli import quiet_startup

    monkeypatch.setattr(os, "getuid", lambda: 0)
    monkeypatch.delenv("C_FORCE_ROOT", raising=False)
    monkeypatch.setenv("HF_HUB_DISABLE_PROGRESS_BARS", "1")  # restored afterwards
    if "transformers" in sys.modules:  # quiet_startup switches the bars off process-wide: switch them back
        from transformers.utils import logging as hf_logging

        if hf_logging.is_progress_bar_enabled():
            monkeypatch.setattr(hf_logging, "disable_progress_bar", lambda: None)
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        quiet_startup()
        platforms.check_privileges({"json"})
    assert not [w for w in seen if "superuser" in str(w.message)]
    with pytest.raises(SecurityError):  # the real hazard still stops the worker
        platforms.check_privileges({"pickle"})


def test_the_filesystem_broker_connects_without_the_no_hostname_warning(studio_env, caplog):
    from studio.broker import get_celery_app

    with get_celery_app(studio_env).connection_for_write() as conn:
        conn.ensure_connection(max_retries=1)
        conn.info()
    assert "No hostname was supplied" not in caplog.text
