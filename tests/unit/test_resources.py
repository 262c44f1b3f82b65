"""Studio jobs with resources: the job goes to `resources.queue`; runs with `resources.gpus > 1`
train in a supervised child process group (worker/ranks.py). The end-to-end runs are in
tests/integration/test_multiprocess_jobs.py."""

from __future__ import annotations

from fastapi.testclient import TestClient
from sqlalchemy import select

from studio.db import session_scope
from studio.models import Job


def test_post_runs_sends_the_job_to_resources_queue(studio_env, monkeypatch):
    from backend.app import create_app
    from studio.settings import get_settings, reset_settings_cache

    monkeypatch.setenv("REMIX_API_TOKENS", "t")
    reset_settings_cache()
    client = TestClient(create_app(get_settings()))  # no `with`: no reaper thread
    auth = {"Authorization": "Bearer t"}
    body = {"config": {"preset": "toy", "steps": 2, "overrides": {"resources.gpus": 8, "resources.queue": "gpu8"}}}
    r = client.post("/api/v1/runs", json=body, headers=auth)
    assert r.status_code == 201, r.text
    run = r.json()
    assert run["config"]["resources"] == {"gpus": 8, "queue": "gpu8"}
    assert run["job"]["queue"] == "gpu8" and run["job"]["status"] == "queued"
    queue_dir = get_settings().broker_folder / "queue"
    assert [p.name.split(".")[-2] for p in queue_dir.glob("*.msg")] == ["gpu8"]
    # a retry (the dashboard's Retry button) goes to the same queue
    client.post(f"/api/v1/runs/{run['id']}/cancel", headers=auth)
    child = client.post(f"/api/v1/runs/{run['id']}/retry", headers=auth).json()
    assert child["job"]["queue"] == "gpu8"
    # bad values are refused naming the field
    for overrides, field in (({"resources.gpus": 0}, "resources.gpus"), ({"resources.gpus": 65}, "resources.gpus"),
                             ({"resources.queue": "no spaces"}, "resources.queue")):
        r = client.post("/api/v1/runs", json={"config": {"overrides": overrides}}, headers=auth)
        assert r.status_code == 422 and field in r.text, r.text
    plain = client.post("/api/v1/runs", json={"config": {"steps": 1}}, headers=auth).json()
    assert plain["config"]["resources"] == {"gpus": 1, "queue": None} and plain["job"]["queue"] == "gpu"
    with session_scope() as s:
        assert set(s.execute(select(Job.queue)).scalars()) == {"gpu8", "gpu"}


# ----------------------------------------------------------------------------------- the supervisor
# A stand-in for `torch.distributed.run ... -m worker.ranks`: the same arguments and control files as
# rank 0, without the engine (the real thing runs in tests/integration/test_multiprocess_jobs.py).
FAKE_RANKS = r"""
import json, os, subprocess, sys, time
from pathlib import Path
args = sys.argv[1:]
control = Path(args[args.index("--out-dir") + 1]) / "ranks"
mode = os.environ["FAKE_RANKS_MODE"]
def put(name, data):
    (control / (name + ".tmp")).write_text(json.dumps(data))
    os.replace(control / (name + ".tmp"), control / name)
assert json.loads((control / "config.json").read_text())["resources"]["gpus"] == 2
put("progress.json", {"step": 1, "metrics": {"critic/score/mean": 0.5}})
if mode == "crash":  # one rank lingers in the process group after the launcher exits
    lingering = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    (control / "lingering.pid").write_text(str(lingering.pid))
    sys.exit(3)
if mode == "stop":
    deadline = time.monotonic() + 60
    while not (control / "stop").exists():
        assert time.monotonic() < deadline, "no stop file"
        time.sleep(0.05)
put("result.json", {"summary": {"status": "cancelled" if mode == "stop" else "completed", "steps": 1}, "fenced": False})
"""


def _alive(pid: int) -> bool:
    """Running (not gone, not a zombie waiting for its reaper)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            return "zombie" not in f.read()
    except FileNotFoundError:
        return False


def _wait_gone(pid: int, what: str) -> None:
    """SIGKILL is asynchronous: wait (bounded) for it to land."""
    import time

    deadline = time.monotonic() + 30
    while _alive(pid):
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


def _supervised(studio_env, monkeypatch, tmp_path, mode: str, *, cancel: bool = False, checkpoint: int | None = None,
                resume_step: int | None = None):
    """Run worker.ranks.supervise against FAKE_RANKS; returns (outcome, progress reports, control dir)."""
    import sys

    from remix_engine.config import build_config
    from studio import jobs
    from worker import ranks
    from worker.job import JobContext, JobHeartbeat

    monkeypatch.setenv("FAKE_RANKS_MODE", mode)
    monkeypatch.setattr(ranks, "launch_command", lambda n, argv: [sys.executable, "-c", FAKE_RANKS, *argv[2:]])
    cfg = build_config("toy", overrides={"resources.gpus": 2})
    with session_scope() as s:
        run, job = jobs.create_run_with_job(s, name=None, cfg_dict={"trainer": {"steps": 1}}, request={})
        run_id, job_id = run.id, job.id
    if checkpoint is not None:
        with session_scope() as s:
            jobs.record_checkpoint(s, job_id, checkpoint)
    heartbeat = JobHeartbeat(job_id, 1, 60.0)  # not started: the test sets its flags
    heartbeat.cancel_requested = cancel
    reports: list[tuple[int, dict]] = []
    ctx = JobContext(jobs.Claim(job_id, run_id, 1, "train", {}), heartbeat)
    out = ranks.supervise(ctx, cfg, tmp_path / "attempt-01", resume_step, lambda step, m: reports.append((step, m)))
    return out, reports, tmp_path / "attempt-01" / "ranks"


def test_supervisor_relays_progress_and_returns_the_summary(studio_env, monkeypatch, tmp_path):
    out, reports, _ = _supervised(studio_env, monkeypatch, tmp_path, "ok")
    assert out.status == "succeeded" and out.summary == {"status": "completed", "steps": 1}
    assert reports == [(1, {"critic/score/mean": 0.5})]


def test_supervisor_relays_a_cancel_through_the_stop_file(studio_env, monkeypatch, tmp_path):
    out, _, control = _supervised(studio_env, monkeypatch, tmp_path, "stop", cancel=True)
    assert (control / "stop").exists()
    assert out.status == "cancelled" and out.summary["status"] == "cancelled"


def test_supervisor_relays_a_worker_shutdown_and_the_job_is_requeued(studio_env, monkeypatch, tmp_path):
    from worker.job import SHUTTING_DOWN

    SHUTTING_DOWN.set()
    try:
        out, _, control = _supervised(studio_env, monkeypatch, tmp_path, "stop")
    finally:
        SHUTTING_DOWN.clear()
    assert (control / "stop").exists() and out.status == "interrupted"


def test_a_crash_kills_the_group_and_requeues_counting_only_attempts_without_progress(studio_env, monkeypatch,
                                                                                     tmp_path):
    out, _, control = _supervised(studio_env, monkeypatch, tmp_path, "crash")
    assert out.status == "retry" and out.lost, "no checkpoint recorded: counts against REMIX_MAX_ATTEMPTS"
    assert "exit 3" in out.error
    _wait_gone(int((control / "lingering.pid").read_text()), "the lingering rank outlived its group")
    # a checkpoint newer than the one the attempt resumed from: progress, not counted
    out, _, _ = _supervised(studio_env, monkeypatch, tmp_path, "crash", checkpoint=4, resume_step=2)
    assert out.status == "retry" and not out.lost
    out, _, _ = _supervised(studio_env, monkeypatch, tmp_path, "crash", checkpoint=2, resume_step=2)
    assert out.lost


def test_the_launcher_dies_with_its_worker(tmp_path):
    """PR_SET_PDEATHSIG: a supervisor killed with SIGKILL takes its child (own session) with it."""
    import signal
    import subprocess
    import sys

    code = ("import os, signal, subprocess, sys; from studio.processes import die_with_parent; me = os.getpid(); "
            "p = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)'], start_new_session=True, "
            "preexec_fn=lambda: die_with_parent(signal.SIGKILL, me)); print(p.pid, flush=True); p.wait()")
    parent = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    child = int(parent.stdout.readline())
    assert _alive(child)
    parent.send_signal(signal.SIGKILL)
    parent.wait()
    _wait_gone(child, "the child outlived its killed parent")
