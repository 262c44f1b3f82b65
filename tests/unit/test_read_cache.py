"""The read cache of GET /runs, /runs/{id}, /runs/{id}/metrics and /runs/metrics (backend/api/read_cache.py) and the
slow facts of /health: a repeated read is served from the cache, and no write -- through the API,
by the worker's sink, or a hand-made SQL update -- is ever answered with the state before it.
Token holders and open reads are cached apart."""

from __future__ import annotations

import concurrent.futures
import threading
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text

from backend.api.read_cache import ReadCache
from studio import jobs
from studio import metric_chunks as mc
from studio.db import get_engine, session_scope
from studio.models import WorkerNode
from worker.sink import SqlSink

TOKEN = {"Authorization": "Bearer w"}
RUN = {"config": {"preset": "toy", "steps": 3, "overrides": {"warm_start.steps": 0}}}


@pytest.fixture
def client(studio_env, monkeypatch):
    from backend.app import create_app
    from studio.settings import get_settings, reset_settings_cache

    monkeypatch.setenv("REMIX_API_TOKENS", "w")
    reset_settings_cache()
    return TestClient(create_app(get_settings()))  # no `with`: no reaper thread


def _cache(client: TestClient) -> ReadCache:
    return client.app.state.read_cache


def _submit(client: TestClient) -> int:
    r = client.post("/api/v1/runs", json=RUN, headers=TOKEN)
    assert r.status_code == 201, r.text
    return r.json()["id"]


def _claimed_run() -> jobs.Claim:
    """A run whose job a worker ("w1") has claimed: what the sink writes for."""
    with session_scope() as s:
        _, job = jobs.create_run_with_job(s, name="cached", cfg_dict={"trainer": {"steps": 5}}, request={})
        job_id, token = job.id, job.dispatch_token
    return jobs.claim(job_id, token, "w1")


def _sql(statement: str, **params) -> None:
    with get_engine().begin() as conn:
        conn.execute(text(statement), params)


def _get(client: TestClient, path: str, **kwargs) -> dict:
    r = client.get("/api/v1" + path, **kwargs)
    assert r.status_code == 200, r.text
    return r.json()


def test_a_repeated_read_is_a_hit_with_the_same_bytes_and_headers(client):
    rid = _submit(client)
    for path in ("/runs?limit=20", f"/runs/{rid}", f"/runs/{rid}/metrics", f"/runs/metrics?runs={rid},999&keys=a"):
        first = client.get("/api/v1" + path)
        hits = _cache(client).hits
        again = client.get("/api/v1" + path)
        assert _cache(client).hits == hits + 1, path
        assert again.content == first.content and again.status_code == 200
        assert again.headers["content-type"] == "application/json"
        assert again.headers["x-content-type-options"] == "nosniff"  # the middlewares still apply


def test_writes_through_the_api_are_seen_at_once(client):
    a = _submit(client)
    assert _get(client, "/runs")["count"] == 1
    assert _get(client, f"/runs/{a}")["status"] == "queued"
    assert client.post(f"/api/v1/runs/{a}/cancel", headers=TOKEN).status_code == 202
    assert _get(client, f"/runs/{a}")["status"] == "cancelled"
    assert _get(client, "/runs")["data"][0]["status"] == "cancelled"
    b = _submit(client)
    listed = _get(client, "/runs")
    assert listed["count"] == 2 and listed["data"][0]["id"] == b
    child = client.post(f"/api/v1/runs/{a}/retry", headers=TOKEN).json()["id"]
    assert _get(client, f"/runs/{a}")["child_run_ids"] == [child]
    assert _get(client, f"/runs?parent_run_id={a}")["count"] == 1
    assert client.post(f"/api/v1/runs/{child}/cancel", headers=TOKEN).status_code == 202
    assert client.delete(f"/api/v1/runs/{child}", headers=TOKEN).status_code == 204
    assert _get(client, f"/runs/{a}")["child_run_ids"] == []
    assert client.get(f"/api/v1/runs/{child}").status_code == 404
    assert client.get(f"/api/v1/runs/{child}/metrics").status_code == 404


def _compared(client: TestClient, rid: int) -> list[float]:
    """The compare page's read of one run's loss (GET /runs/metrics)."""
    (run,) = _get(client, f"/runs/metrics?runs={rid}&keys=loss")["runs"]
    return run["series"][0]["y"]


def test_the_sinks_writes_are_seen_at_once(client, tmp_path):
    claim = _claimed_run()
    rid = claim.run_id
    assert _get(client, f"/runs/{rid}/metrics")["series"] == []
    assert _get(client, f"/runs/{rid}")["latest_metrics"] == {}
    _get(client, "/runs?metrics=loss")
    sink = SqlSink(rid, engine=get_engine(), job_id=claim.job_id, attempt=claim.attempt)
    try:
        sink.on_step(1, {"loss": 0.5, "cost/rollouts": 4.0})
        sink.flush(10)
        (series,) = [s for s in _get(client, f"/runs/{rid}/metrics")["series"] if s["key"] == "loss"]
        assert series["y"] == [0.5] and _compared(client, rid) == [0.5]
        run = _get(client, f"/runs/{rid}")
        assert run["latest_metrics"]["loss"] == 0.5 and run["steps_done"] == 1 and run["job"]["progress_step"] == 1
        assert _get(client, "/runs?metrics=loss")["data"][0]["latest_metrics"] == {"loss": 0.5}
        sink.on_step(2, {"loss": 0.25, "cost/rollouts": 8.0})
        sink.flush(10)
        (series,) = [s for s in _get(client, f"/runs/{rid}/metrics?keys=loss")["series"]]
        assert series["y"] == [0.5, 0.25]
        assert _compared(client, rid) == [0.5, 0.25]
        assert _get(client, "/runs?metrics=loss")["data"][0]["latest_metrics"] == {"loss": 0.25}
        # a checkpoint row, then its files gone from the disk (no row changes)
        ckpt = tmp_path / "ckpt-2"
        ckpt.mkdir()
        from remix_engine.events import CheckpointRecord

        sink.on_checkpoint(2, str(ckpt), CheckpointRecord(step=2, policy_version=2, path=str(ckpt)))
        sink.flush(10)
        (row,) = _get(client, f"/runs/{rid}", headers=TOKEN)["checkpoints"]
        assert row["exists"] and _get(client, f"/runs/{rid}", headers=TOKEN)["job"]["last_checkpoint_step"] == 2
        ckpt.rmdir()
        (row,) = _get(client, f"/runs/{rid}", headers=TOKEN)["checkpoints"]
        assert not row["exists"]
    finally:
        sink.close()


def test_hand_made_sql_updates_are_seen_without_updated_at(client):
    rid = _submit(client)
    before = _get(client, f"/runs/{rid}")
    _get(client, "/runs")
    _sql("UPDATE runs SET status = 'failed', error = 'boom', steps_done = 2 WHERE id = :id", id=rid)
    run = _get(client, f"/runs/{rid}")
    assert (run["status"], run["error"], run["steps_done"]) == ("failed", "boom", 2)
    assert run["updated_at"] == before["updated_at"]  # the version did not rely on it
    assert _get(client, "/runs")["data"][0]["status"] == "failed"
    _sql("UPDATE jobs SET status = 'failed', phase = 'x' WHERE run_id = :id", id=rid)
    assert _get(client, f"/runs/{rid}")["job"]["status"] == "failed"
    _sql("INSERT INTO alerts (run_id, rule, status, first_step, last_step, threshold, detail, metric) "
         "VALUES (:id, 'r', 'firing', 1, 1, 0.0, 'd', 'loss')", id=rid)
    assert _get(client, f"/runs/{rid}")["alerts"] == {"firing": 1, "total": 1}
    assert _get(client, "/runs")["data"][0]["alerts"] == {"firing": 1, "total": 1}
    _sql("UPDATE alerts SET status = 'resolved' WHERE run_id = :id", id=rid)
    assert _get(client, f"/runs/{rid}")["alerts"] == {"firing": 0, "total": 1}
    assert _get(client, "/runs")["data"][0]["alerts"] == {"firing": 0, "total": 1}
    # metric points with their latest_metrics row, as the sink writes them (but no run update)
    _get(client, f"/runs/{rid}/metrics")
    _sql("INSERT INTO metric_chunks (run_id, key, chunk, points) VALUES (:id, 'loss', 0, :p)", id=rid,
         p=mc.pack(mc.points([(1, 1.5, None, None, 1.0)])))
    _sql("INSERT INTO latest_metrics (run_id, key, step, value, wall_time) VALUES (:id, 'loss', 1, 1.5, 1.0)", id=rid)
    assert [s["y"] for s in _get(client, f"/runs/{rid}/metrics")["series"]] == [[1.5]]
    assert _get(client, f"/runs/{rid}")["latest_metrics"] == {"loss": 1.5} and _compared(client, rid) == [1.5]
    _sql("UPDATE metric_chunks SET points = :p WHERE run_id = :id", id=rid,
         p=mc.pack(mc.points([(1, 1.5, None, None, 1.0), (2, 0.5, None, None, 2.0)])))
    _sql("UPDATE latest_metrics SET step = 2, value = 0.5, wall_time = 2.0 WHERE run_id = :id", id=rid)
    assert _compared(client, rid) == [1.5, 0.5]


def test_the_waiting_reason_follows_the_workers(client):
    rid = _submit(client)
    assert "none is online" in _get(client, f"/runs/{rid}")["job"]["waiting"]
    with session_scope() as s:
        s.add(WorkerNode(hostname="w@host", pid=1, queues="gpu", status="online"))
    assert _get(client, f"/runs/{rid}")["job"]["waiting"] == "queued: a free worker takes it next"


def test_token_holders_and_open_reads_are_cached_apart(client):
    rid = _submit(client)
    secret = "Traceback: /srv/private/file.py line 1"
    _sql("UPDATE runs SET error = :e WHERE id = :id", e=secret, id=rid)
    for order in (({}, TOKEN), (TOKEN, {})):
        _cache(client).__init__()  # empty, to try both orders
        for headers in order * 2:
            run = _get(client, f"/runs/{rid}", headers=headers)
            listed = _get(client, "/runs", headers=headers)["data"][0]
            if headers:
                assert Path(run["output_dir"]).is_absolute() and run["error_detail"] == secret
                assert listed["error_detail"] == secret
            else:
                assert not Path(run["output_dir"]).is_absolute() and run["error_detail"] is None
                assert "/srv/private" not in str(run) and "/srv/private" not in str(listed)
                assert listed["error_detail"] is None
        assert _cache(client).hits >= 4


def test_the_cache_keeps_to_its_bounds():
    cache = ReadCache(max_bytes=10, max_entry_bytes=6)
    cache.put("a", 1, b"aaaa")
    cache.put("big", 1, b"x" * 7)  # over max_entry_bytes: not kept
    assert cache.get("a", 1) == b"aaaa" and cache.get("big", 1) is None
    assert cache.get("a", 2) is None  # another version: a miss
    cache.put("b", 1, b"bbbb")
    cache.get("a", 1)  # a is now the most recently used
    cache.put("c", 1, b"cccc")  # 12 bytes > 10: b goes
    assert cache.get("b", 1) is None and cache.get("a", 1) == b"aaaa" and cache.get("c", 1) == b"cccc"
    cache.put("a", 2, b"aa")
    assert cache.get("a", 1) is None and cache.get("a", 2) == b"aa" and len(cache) == 2


def test_health_probes_the_broker_and_reads_the_revision_at_most_every_few_seconds(client, monkeypatch):
    from backend.api import system

    calls = {"broker": 0, "revision": 0}
    probe, revision = system._probe_broker, system.current_revision

    def counted_probe():  # noqa: ANN202
        calls["broker"] += 1
        return probe()

    def counted_revision(conn):  # noqa: ANN001, ANN202
        calls["revision"] += 1
        return revision(conn)

    monkeypatch.setattr(system, "_probe_broker", counted_probe)
    monkeypatch.setattr(system, "current_revision", counted_revision)
    for _ in range(5):
        h = _get(client, "/health")
        assert h["broker"]["ok"] and h["database"]["schema_current"]
    assert calls == {"broker": 1, "revision": 1}
    monkeypatch.setattr(system, "SLOW_FACTS_TTL_S", 0.0)
    _get(client, "/health")
    assert calls == {"broker": 2, "revision": 2}


def test_an_old_slow_fact_is_served_while_one_caller_refreshes_it(monkeypatch):
    """Callers that find the health's broker state old do not queue behind the caller refreshing
    it: they get the last state at once; only the first computation is waited for."""
    from backend.api import system

    recent, started, release = system.Recent(), threading.Event(), threading.Event()
    assert recent.get(lambda: "first") == "first"
    monkeypatch.setattr(system, "SLOW_FACTS_TTL_S", 0.0)

    def slow_probe() -> str:
        started.set()
        assert release.wait(10)
        return "second"

    refresher = concurrent.futures.ThreadPoolExecutor(1).submit(recent.get, slow_probe)
    assert started.wait(10)
    assert recent.get(lambda: "never computed: a refresh is under way") == "first"
    release.set()
    assert refresher.result(10) == "second"
    assert recent.get(lambda: "third") == "third"  # old (TTL 0): this caller refreshes it


def test_the_first_slow_fact_is_waited_for_by_every_caller():
    from backend.api import system

    recent, started, release = system.Recent(), threading.Event(), threading.Event()

    def slow_probe() -> str:
        started.set()
        assert release.wait(10)
        return "only"

    pool = concurrent.futures.ThreadPoolExecutor(2)
    first = pool.submit(recent.get, slow_probe)
    assert started.wait(10)
    second = pool.submit(recent.get, lambda: "never computed: the first computation is waited for")
    release.set()
    assert first.result(10) == second.result(10) == "only"
