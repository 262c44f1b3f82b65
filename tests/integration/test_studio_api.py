"""The studio end to end on each backend: real API process, real worker processes, real DB/broker.

submit → worker trains a few toy steps → rollouts, metrics, checkpoints in SQL → read back through
the API; cancel (queued and running); retry/delete; SIGKILL the worker mid-run and watch the job
resume on a new worker with no duplicated or missing steps; 4xx on bad input; token checks.
The core job path (marked `all_brokers`) also runs on RabbitMQ by default (see conftest.py).
"""

from __future__ import annotations

import math
import os
import signal
from collections import Counter
from pathlib import Path

import httpx
import pytest
from studio_harness import Deployment, assert_every_step_once, fast_config, fresh_per_step, wait_for

from studio.rollout_text import words

pytestmark = pytest.mark.integration


def test_tokens(deployment: Deployment) -> None:
    c = deployment.client
    body = {"config": {"preset": "no-such-preset"}}  # invalid on purpose: nothing gets queued
    r = c.post("/runs", json=body)
    assert r.status_code == 401 and r.headers.get("www-authenticate") == "Bearer"
    assert c.post("/runs", json=body, headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert c.post("/runs", json=body, headers={"Authorization": "Basic abc"}).status_code == 401
    r = c.post("/runs", json=body, headers=deployment.read_headers)
    assert r.status_code == 403 and "read-only" in r.json()["detail"]
    assert c.post("/runs", json=body, headers=deployment.write_headers).status_code == 422  # auth passed
    for method, path in (("post", "/runs/1/cancel"), ("post", "/runs/1/retry"), ("delete", "/runs/1")):
        assert getattr(c, method)(path).status_code == 401
        assert getattr(c, method)(path, headers=deployment.read_headers).status_code == 403
    # reads are open (REMIX_AUTH_READS=false)
    assert c.get("/runs").status_code == 200
    assert c.get("/jobs").status_code == 200


def test_invalid_inputs(deployment: Deployment) -> None:
    c, h = deployment.client, deployment.write_headers

    def problem(cfg: object, field: str) -> None:
        r = c.post("/runs", json={"config": cfg}, headers=h)
        assert r.status_code == 422, r.text
        assert field in r.text, r.text

    problem({"preset": "nope"}, "preset")
    problem({"algorithm": "dqn"}, "algorithm")
    problem({"overrides": {"remix.utd": 0}}, "remix.utd")
    problem({"overrides": {"rollout.group_size": "many"}}, "rollout.group_size")
    problem({"overrides": {"remix.no_such_knob": 1}}, "remix.no_such_knob")
    problem({"stepz": 3}, "stepz")
    problem({"steps": "ten"}, "steps")
    problem({"steps": 0}, "steps")
    problem({"overrides": "remix.utd=2"}, "overrides")
    problem({"algorithm": "grpo", "remix": {"utd": 3}}, "remix.utd")
    problem({"remix": {"replay_share": 1.5}}, "remix.replay_share")
    # upper bounds and non-finite numbers: refused at submission, never in the worker
    problem({"steps": 10**12}, "steps")
    problem({"seed": 10**30}, "seed")
    problem({"overrides": {"rollout.max_new_tokens": 10**9}}, "rollout.max_new_tokens")
    problem({"overrides": {"rollout.prompts_per_step": 10**9}}, "rollout.prompts_per_step")
    r = c.post("/runs", content=b'{"config": {"overrides": {"actor.lr": 1e999}}}',
               headers={**h, "content-type": "application/json"})
    assert r.status_code == 422 and "actor.lr" in r.text and "finite" in r.text, r.text
    before = c.get("/runs").json()["count"]
    for path in (f"/runs/{2**64}", f"/runs/{2**63}/metrics", f"/jobs/{2**70}"):
        r = c.get(path)
        assert r.status_code == 422 and "out of range" in r.text, (path, r.text)
    assert c.get("/runs").json()["count"] == before  # nothing stored by any of the refused requests
    r = c.post("/runs", json={"config": []}, headers=h)
    assert r.status_code == 422 and "config" in r.text
    r = c.post("/runs", json={"name": "x" * 300, "config": {}}, headers=h)
    assert r.status_code == 422 and "name" in r.text
    r = c.post("/runs", content=b"{not json", headers={**h, "content-type": "application/json"})
    assert r.status_code == 422
    assert c.get("/runs", params={"limit": 0}).status_code == 422
    assert c.get("/runs/999999").status_code == 404
    assert c.get("/runs/999999/metrics").status_code == 404
    assert c.get("/runs/999999/rollouts").status_code == 404
    assert c.get("/rollouts/999999").status_code == 404
    assert c.get("/jobs/999999").status_code == 404
    assert c.post("/runs/999999/cancel", headers=h).status_code == 404
    assert c.delete("/runs/999999", headers=h).status_code == 404


def test_metric_downsampling_keeps_extremes(deployment: Deployment) -> None:
    """600 synthetic steps written through the real SQL sink; the API returns ≤ max_points points
    per series, including the global minimum, maximum, first and last step."""
    from studio.db import make_engine, session_scope
    from studio.models import Run
    from studio.settings import Settings
    from worker.sink import SqlSink

    settings = Settings(data_dir=Path(deployment.env["REMIX_DATA_DIR"]),
                        database_url=deployment.env.get("REMIX_DATABASE_URL"))
    engine = make_engine(settings.sqlalchemy_url)
    try:
        with session_scope(engine) as s:
            run = Run(name="synthetic metrics", preset="toy", algorithm="grpo", config={}, request={},
                      status="succeeded")
            s.add(run)
            s.flush()
            run_id = run.id
        sink = SqlSink(run_id, engine=engine)
        sink.on_start({"resumed_from": None})
        for step in range(600):
            value = math.sin(step / 20.0)
            if step == 333:
                value = 42.0  # a spike that naive striding would drop
            if step == 444:
                value = -42.0
            sink.on_step(step, {"x/wave": value, "cost/rollouts": float(8 * step), "timing_s/elapsed": step * 0.1})
        sink.on_end({})
        sink.close()
    finally:
        engine.dispose()
    m = deployment.client.get(f"/runs/{run_id}/metrics", params={"keys": "x/wave", "max_points": 50}).json()
    ser = m["series"][0]
    assert ser["total"] == 600 and ser["downsampled"] is True
    assert 10 <= len(ser["y"]) <= 50
    assert max(ser["y"]) == 42.0 and min(ser["y"]) == -42.0
    assert ser["step"][0] == 0 and ser["step"][-1] == 599 and ser["step"] == sorted(ser["step"])
    full = deployment.client.get(f"/runs/{run_id}/metrics", params={"keys": "x/wave", "max_points": 1000}).json()
    assert full["series"][0]["downsampled"] is False and len(full["series"][0]["y"]) == 600
    ranged = deployment.client.get(f"/runs/{run_id}/metrics", params={"keys": "x/wave", "step_min": 150,
                                                                      "step_max": 249}).json()
    assert ranged["series"][0]["step"] == list(range(150, 250))  # across a chunk's boundary
    assert deployment.client.get(f"/runs/{run_id}/metrics", params={"x": "epochs"}).status_code == 422
    assert deployment.client.delete(f"/runs/{run_id}", headers=deployment.write_headers).status_code == 204


def test_health_and_openapi(deployment: Deployment) -> None:
    c = deployment.client
    health = wait_for(lambda: (h := c.get("/health").json())["workers"]["online"] >= 1 and h, 120,
                      what="a worker to announce itself")
    assert health["status"] == "ok" and health["reasons"] == [], health
    assert health["database"]["ok"] and health["broker"]["ok"]
    assert health["database"]["dialect"] == ("postgresql" if deployment.name == "postgres" else "sqlite")
    spec = c.get(deployment.base_url + "/openapi.json").json()
    for path in ("/api/v1/runs", "/api/v1/runs/{run_id}", "/api/v1/runs/{run_id}/cancel", "/api/v1/runs/{run_id}/retry",
                 "/api/v1/runs/{run_id}/metrics", "/api/v1/runs/{run_id}/rollouts", "/api/v1/rollouts/{rollout_id}",
                 "/api/v1/runs/{run_id}/groups/{group_id}", "/api/v1/runs/{run_id}/offpolicy", "/api/v1/jobs",
                 "/api/v1/health"):
        assert path in spec["paths"], path
    assert c.get(deployment.base_url + "/docs").status_code == 200


@pytest.mark.all_brokers
def test_submit_train_read_back(deployment: Deployment) -> None:
    c = deployment.client
    steps = 6
    cfg = fast_config(steps)
    created = deployment.submit(cfg, name="it full path")
    assert created["name"] == "it full path" and created["algorithm"] == "remix-grpo"
    assert created["config"]["trainer"]["steps"] == steps and created["config"]["remix"]["utd"] == 2
    assert created["job"]["status"] in ("pending", "queued", "running")
    run_id = created["id"]
    run = deployment.wait_status(run_id, ("succeeded",))
    per_step = fresh_per_step(cfg)
    assert run["steps_done"] == steps
    assert run["rollouts_generated"] == steps * per_step
    assert run["tokens_generated"] > 0 and run["elapsed_s"] > 0
    assert run["job"]["status"] == "succeeded" and run["job"]["attempt"] == 1
    assert run["summary"]["status"] == "completed"
    assert "critic/score/mean" in run["latest_metrics"] and "eval/heldout/pass@1" in run["latest_metrics"]
    # checkpoints recorded in SQL and present on disk (runs dir of the deployment)
    assert run["checkpoints"] and run["checkpoints"][-1]["step"] == steps
    assert [ck["step"] for ck in run["checkpoints"]] == [2, 4, 6]
    # the trainer keeps the newest trainer.keep_checkpoints (2) on disk; SQL keeps every version
    assert [ck["exists"] for ck in run["checkpoints"]] == [False, True, True]
    assert Path(run["checkpoints"][-1]["path"]).is_dir()

    # metrics: step 0 (initial eval) .. N, each once; other x axes
    m = c.get(f"/runs/{run_id}/metrics", params={"keys": "critic/score/mean,eval/heldout/pass@1,cost/rollouts"}).json()
    series = {s["key"]: s for s in m["series"]}
    assert series["critic/score/mean"]["step"] == list(range(1, steps + 1))
    assert series["eval/heldout/pass@1"]["step"] == [0, 2, 4, 6]
    assert series["cost/rollouts"]["y"] == [float(per_step * s) for s in range(0, steps + 1)]
    by_rollouts = c.get(f"/runs/{run_id}/metrics", params={"keys": "critic/score/mean", "x": "rollouts"}).json()
    assert by_rollouts["series"][0]["x"] == [float(per_step * s) for s in range(1, steps + 1)]
    by_time = c.get(f"/runs/{run_id}/metrics", params={"keys": "critic/score/mean", "x": "time"}).json()
    xs = by_time["series"][0]["x"]
    assert len(xs) == steps and xs == sorted(xs) and xs[-1] > 0
    assert "actor/pg_loss" in c.get(f"/runs/{run_id}/metrics/keys").json()

    # rollouts: cursor pagination covers everything exactly once
    rows = deployment.all_rollouts(run_id, limit=7)
    assert len(rows) == steps * per_step
    assert len({r["uid"] for r in rows}) == len(rows)
    assert [(r["step"], r["id"]) for r in rows] == sorted((r["step"], r["id"]) for r in rows)
    assert Counter(r["step"] for r in rows) == {s: per_step for s in range(1, steps + 1)}
    first = c.get(f"/runs/{run_id}/rollouts", params={"limit": 3}).json()
    assert first["count"] == len(rows) and len(first["data"]) == 3 and first["next_cursor"]
    desc = deployment.all_rollouts(run_id, order="desc")
    assert [r["id"] for r in desc] == [r["id"] for r in reversed(rows)]
    # filters
    n_correct = c.get(f"/runs/{run_id}/rollouts", params={"correct": True}).json()["count"]
    n_wrong = c.get(f"/runs/{run_id}/rollouts", params={"correct": False}).json()["count"]
    assert n_correct + n_wrong == len(rows)
    window = deployment.all_rollouts(run_id, step_min=2, step_max=3)
    assert {r["step"] for r in window} == {2, 3} and len(window) == 2 * per_step
    replayed = deployment.all_rollouts(run_id, reuse_min=1)
    assert replayed, "remix-grpo with replay_share 0.4 must replay some rollouts"
    assert all(r["reuse_count"] >= 1 for r in replayed)
    assert all(r["policy_version"] == 3 for r in deployment.all_rollouts(run_id, policy_version=3))
    assert deployment.all_rollouts(run_id, reward_min=0.5) == [r for r in rows if r["reward"] >= 0.5]
    truncated = c.get(f"/runs/{run_id}/rollouts", params={"truncated": True}).json()["count"]
    assert truncated == sum(1 for r in rows if r["truncated"])
    # text search finds a rollout by a word of its response (whole words, studio/rollout_text.py)
    full = c.get(f"/runs/{run_id}/rollouts", params={"limit": 50, "include_text": True}).json()["data"]
    target = next(r for r in full if words(r["response"]))
    needle = words(target["response"])[-1].upper()
    found = deployment.all_rollouts(run_id, q=needle, include_text=True)
    assert target["uid"] in {r["uid"] for r in found}
    assert all(needle.lower() in words(f"{r['prompt']}\n{r['response']}\n{r['extracted'] or ''}") for r in found)
    assert c.get(f"/runs/{run_id}/rollouts", params={"cursor": "garbage"}).status_code == 400

    # one rollout with its uses; a replayed one has a use with age > 0
    detail = c.get(f"/rollouts/{replayed[0]['id']}").json()
    assert detail["prompt"] and detail["response"] is not None
    assert detail["use_count"] == len(detail["uses"]) >= 2
    assert sum(1 for u in detail["uses"] if u["age"] > 0) == detail["reuse_count"] >= 1
    assert all(u["step"] - u["age"] == detail["policy_version"] for u in detail["uses"])

    # a GRPO group side by side
    group = c.get(f"/runs/{run_id}/groups/{rows[0]['group_id']}").json()
    assert group["size"] == cfg["overrides"]["rollout.group_size"] == len(group["rollouts"])
    assert {r["group_id"] for r in group["rollouts"]} == {rows[0]["group_id"]}
    assert group["prompt"] and group["reference"] is not None
    assert c.get(f"/runs/{run_id}/groups/no-such-group").status_code == 404

    # off-policy views
    off = c.get(f"/runs/{run_id}/offpolicy").json()
    assert [b["step"] for b in off["reuse_by_step"]] == list(range(1, steps + 1))
    assert all(b["fresh"] == per_step for b in off["reuse_by_step"])
    assert any(b["replayed"] > 0 for b in off["reuse_by_step"])
    ages = {b["age"] for b in off["staleness_histogram"]}
    assert 0 in ages and max(ages) >= 1
    assert sum(b["count"] for b in off["by_age"]) == off["totals"]["uses"]
    assert all(b["ratio_mean"] is not None and b["clipfrac"] is not None for b in off["by_age"])
    assert sum(b["rollouts"] for b in off["rollout_reuse_histogram"]) == len(rows)

    # lists
    runs = c.get("/runs", params={"status": "succeeded", "algorithm": "remix-grpo"}).json()
    assert run_id in {r["id"] for r in runs["data"]} and runs["count"] >= 1
    assert c.get("/runs", params={"algorithm": "ppo"}).json()["count"] == 0
    jobs = c.get("/jobs", params={"run_id": run_id}).json()
    assert jobs["count"] == 1 and jobs["data"][0]["status"] == "succeeded"


@pytest.mark.all_brokers
def test_cancel_retry_delete(deployment: Deployment) -> None:
    c, h = deployment.client, deployment.write_headers
    # A checkpoint every step: a cancel that lands inside a step's generation abandons that step and
    # the run ends at its last checkpoint (trainer: should_abort per token), one that lands between
    # steps checkpoints there. Either way the run then ends at a checkpoint of its last step. (With
    # checkpoint_every=50 the first case ended with none: seen on the rabbitmq backend, 3 of 4 runs.)
    long_run = deployment.submit(fast_config(400, **{"trainer.eval_every": 50, "trainer.checkpoint_every": 1}))
    rid = long_run["id"]
    running = deployment.wait_progress(rid, lambda r: r["status"] == "running" and r["steps_done"] >= 2,
                                       what="2 steps")
    # progress is also reported through Celery (update_state → result backend)
    from celery.result import AsyncResult

    from studio.broker import make_celery_app

    celery_app = make_celery_app(deployment.settings())
    result = AsyncResult(running["job"]["celery_task_id"], app=celery_app)
    progress = wait_for(lambda: result.state == "PROGRESS" and result.info, 30, what="Celery PROGRESS")
    assert progress["run_id"] == rid and progress["step"] >= 1 and progress["steps"] == 400
    # an active run can neither be retried nor deleted
    assert c.post(f"/runs/{rid}/retry", headers=h).status_code == 409
    assert c.delete(f"/runs/{rid}", headers=h).status_code == 409
    # a second run waits behind it (one worker, prefetch 1): cancelling it ends it at once
    queued = deployment.submit(fast_config(5), name="queued")
    assert queued["status"] in ("pending", "queued")
    r = c.post(f"/runs/{queued['id']}/cancel", headers=h)
    assert r.status_code == 202 and r.json()["status"] == "cancelled" and r.json()["job"]["status"] == "cancelled"
    # retry keeps lineage: a new run with the same config, queued behind the long run
    r = c.post(f"/runs/{queued['id']}/retry", headers=h)
    assert r.status_code == 201, r.text
    child = r.json()
    assert child["parent_run_id"] == queued["id"] and child["config"] == queued["config"]
    assert child["name"] == f"queued (retry of #{queued['id']})" and child["status"] in ("pending", "queued")
    assert c.get(f"/runs/{queued['id']}").json()["child_run_ids"] == [child["id"]]
    assert c.get("/runs", params={"parent_run_id": queued["id"]}).json()["count"] == 1
    assert c.post(f"/runs/{child['id']}/cancel", headers=h).json()["status"] == "cancelled"
    # the running one stops cooperatively (between steps, or abandoning the step in flight)
    r = c.post(f"/runs/{rid}/cancel", headers=h)
    assert r.status_code == 202 and r.json()["cancel_requested"] is True
    run = deployment.wait_status(rid, ("cancelled",), timeout=120)
    assert 2 <= run["steps_done"] < 400
    assert run["job"]["status"] == "cancelled" and run["summary"]["status"] == "cancelled"
    assert run["checkpoints"][-1]["step"] == run["steps_done"] and run["checkpoints"][-1]["exists"]
    assert c.post(f"/runs/{rid}/cancel", headers=h).status_code == 409
    # cancelled queued runs never started, even after the worker became free
    for other in (queued["id"], child["id"]):
        after = deployment.wait_status(other, ("cancelled",), timeout=5)
        assert after["job"]["attempt"] == 0 and after["steps_done"] == 0
    # delete: rows and artefacts go; lineage of the retry is set to null
    out_dir = Path(run["output_dir"])
    assert out_dir.is_dir()
    assert c.delete(f"/runs/{rid}", headers=h).status_code == 204
    assert c.get(f"/runs/{rid}").status_code == 404
    assert c.get(f"/runs/{rid}/rollouts").status_code == 404
    assert c.get("/jobs", params={"run_id": rid}).json()["count"] == 0
    assert not out_dir.exists()
    assert c.delete(f"/runs/{queued['id']}", headers=h).status_code == 204
    assert c.get(f"/runs/{child['id']}").json()["parent_run_id"] is None
    assert AsyncResult(running["job"]["celery_task_id"], app=celery_app).state == "SUCCESS"  # task returned


@pytest.mark.all_brokers
def test_worker_sigkill_resumes_on_new_worker(deployment: Deployment) -> None:
    steps = 10
    cfg = fast_config(steps, **{"trainer.checkpoint_every": 3, "trainer.eval_every": 5})
    victim = next(p for p in deployment.workers.values() if p.poll() is None)
    run_id = deployment.submit(cfg, name="killed mid-run")["id"]
    deployment.wait_progress(run_id, lambda r: r["status"] == "running", what="the job to start on the first worker")
    deployment.start_worker("standby")  # boots (idle) while the first worker trains
    deployment.wait_progress(run_id, lambda r: (r["job"]["last_checkpoint_step"] or 0) >= 3 and r["steps_done"] >= 4,
                             what="a checkpoint and a few more steps")
    os.kill(victim.pid, signal.SIGKILL)
    victim.wait()
    before = deployment.run(run_id)
    assert before["status"] == "running"  # SQL still says running: nobody told it
    run = deployment.wait_status(run_id, ("succeeded",), timeout=300)
    job = run["job"]
    assert job["attempt"] == 2 and job["lost_attempts"] == 1, job
    assert job["resumed_from_step"] is not None and job["resumed_from_step"] >= 3
    assert job["worker"] != before["job"]["worker"]
    assert_every_step_once(deployment, run_id, cfg, steps)
    per_step = fresh_per_step(cfg)
    off = deployment.client.get(f"/runs/{run_id}/offpolicy").json()
    assert [b["step"] for b in off["reuse_by_step"]] == list(range(1, steps + 1))
    assert all(b["fresh"] == per_step for b in off["reuse_by_step"])
    assert run["rollouts_generated"] == steps * per_step and run["steps_done"] == steps
    assert [ck["step"] for ck in run["checkpoints"]][-1] == steps
    health = deployment.client.get("/health", headers=deployment.read_headers).json()  # PIDs need a token
    workers = {w["pid"]: w for w in health["workers"]["items"]}
    lost = workers[victim.pid]
    assert lost["status"] == "lost" and lost["current_job_id"] is None, lost  # it runs nothing any more
    assert any(w["status"] == "online" for w in workers.values())
    # a worker died without stopping: not `ok` though another one took over, and it is named
    assert health["status"] == "degraded" and health["workers"]["lost"] == 1, health
    assert any(f"worker {lost['hostname']} is lost" in r for r in health["reasons"]), health


def test_config_help_is_served_for_the_new_run_page(deployment: Deployment) -> None:
    c = deployment.client
    fields = {f["key"]: f for f in c.get("/config/fields").json()}
    assert fields["remix.window"]["default"] == 2 and "past policies" in fields["remix.window"]["description"]
    toy = c.get("/config/presets/toy", params={"algorithm": "ppo"}).json()
    assert toy["preset"] == "toy" and toy["actor"]["advantage"] == "gae" and toy["remix"]["replay_share"] == 0
    assert c.get("/config/presets/nosuch").status_code == 404
    page = httpx.get(deployment.base_url + "/new", timeout=30).text  # the engine's presets, not a copy
    assert all(f'<option value="{name}"' in page for name in ("toy", "toy-long", "r1-distill-1.5b", "r1-distill-7b"))
    assert c.get("/config/presets/toy-long").json()["data"]["train"] == "toy-long"


def test_idempotent_submission(deployment: Deployment) -> None:
    from concurrent.futures import ThreadPoolExecutor

    c, h = deployment.client, deployment.write_headers
    body = {"name": "once", "config": fast_config(1)}
    before = c.get("/runs").json()["count"]
    first = c.post("/runs", json=body, headers={**h, "Idempotency-Key": "k-1"})
    assert first.status_code == 201, first.text
    again = c.post("/runs", json=body, headers={**h, "Idempotency-Key": "k-1"})
    assert again.status_code == 200 and again.json()["id"] == first.json()["id"]
    other = c.post("/runs", json={**body, "name": "other"}, headers={**h, "Idempotency-Key": "k-1"})
    assert other.status_code == 409 and "Idempotency-Key" in other.text
    assert c.post("/runs", json=body, headers={**h, "Idempotency-Key": "k" * 256}).status_code == 422
    # eight clients racing with one key: one run, every client gets it
    with ThreadPoolExecutor(8) as pool:
        racing = list(pool.map(lambda _: c.post("/runs", json=body, headers={**h, "Idempotency-Key": "k-2"}),
                               range(8)))
    assert sorted(r.status_code for r in racing) == [200] * 7 + [201], [r.text for r in racing]
    assert len({r.json()["id"] for r in racing}) == 1
    assert c.get("/runs").json()["count"] == before + 2
    # the key space is shared: a training key cannot be replayed as an evaluation
    ev = c.post("/evaluations", json={"model": "toy", "benchmarks": ["aime24"], "limit": 1},
                headers={**h, "Idempotency-Key": "k-1"})
    assert ev.status_code == 409, ev.text
    for rid in {first.json()["id"], racing[0].json()["id"]}:
        c.post(f"/runs/{rid}/cancel", headers=h)


def test_security_headers(deployment: Deployment) -> None:
    import httpx

    api = deployment.client.get("/runs")
    assert api.headers["x-content-type-options"] == "nosniff" and api.headers["x-frame-options"] == "DENY"
    page = httpx.get(deployment.base_url + "/", timeout=30)
    assert page.status_code == 200 and "script-src 'self'" in page.headers["content-security-policy"]
    assert "frame-ancestors 'none'" in page.headers["content-security-policy"]
    docs = httpx.get(deployment.base_url + "/docs", timeout=30)  # Swagger UI comes from a CDN: no CSP there
    assert docs.status_code == 200 and "content-security-policy" not in docs.headers


def test_oversized_bodies_are_refused(deployment: Deployment) -> None:
    c, h = deployment.client, deployment.write_headers
    before = c.get("/runs").json()["count"]
    huge = {"name": "big", "config": {"preset": "toy", "overrides": {"data.prompt_suffix": "x" * (3 * 1024 * 1024)}}}
    r = c.post("/runs", json=huge, headers=h)
    assert r.status_code == 413 and "MiB" in r.text, r.text

    def chunks():  # no Content-Length: counted as it streams
        for _ in range(3 * 1024):
            yield b"x" * 1024

    r = c.post("/runs", content=chunks(), headers={**h, "content-type": "application/json"})
    assert r.status_code == 413, r.text
    assert c.get("/runs").json()["count"] == before


def test_cancel_is_honoured_during_the_warm_start(deployment: Deployment) -> None:
    """A warm start of thousands of steps (minutes) shows as the job's phase (and as the reason a run
    queued behind it waits) and ends within seconds of a cancel: it is checked every warm-start step,
    nothing is cached, the run ends cancelled."""
    c, h = deployment.client, deployment.write_headers
    run = deployment.submit(fast_config(5, **{"warm_start.steps": 20000, "warm_start.batch_size": 4}))
    rid = run["id"]
    running = deployment.wait_progress(rid, lambda r: r["status"] == "running" and (r["job"]["phase"] or "")
                                       .startswith("warm start"), what="the warm start to begin")
    assert "20000 steps" in running["job"]["phase"]  # the run page shows what the job is doing
    # a run submitted meanwhile says what it waits for
    queued = deployment.submit(fast_config(5))
    waiting = c.get(f"/runs/{queued['id']}").json()["job"]["waiting"]
    assert waiting.startswith(f"waiting: the worker is busy, with run #{rid} (warm start"), waiting
    assert c.post(f"/runs/{queued['id']}/cancel", headers=h).status_code == 202
    r = c.post(f"/runs/{rid}/cancel", headers=h)
    assert r.status_code == 202, r.text
    done = deployment.wait_status(rid, ("cancelled",), timeout=60)
    assert done["steps_done"] == 0 and done["job"]["status"] == "cancelled"
