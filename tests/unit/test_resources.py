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
