"""SqlSink (worker/sink.py): the trainer's typed events become SQL rows, idempotently and fenced.
Real SQLite database (migrations), real job rows (studio.jobs), the sink's real writer thread,
the real filesystem broker for the re-queue."""

from __future__ import annotations

import pytest
from sqlalchemy import case, func, select
from sqlmodel import Session

from remix_engine.events import CheckpointRecord, RolloutRecord, RolloutUseRecord
from studio import jobs, queries
from studio import metric_chunks as mc
from studio.db import get_engine, session_scope
from studio.models import Checkpoint, Job, LatestMetric, MetricChunk, Rollout, RolloutUse, Run
from worker.sink import SqlSink


@pytest.fixture
def engine(studio_env):
    return get_engine()


def _job() -> jobs.Claim:
    with session_scope() as s:
        _, job = jobs.create_run_with_job(s, name="sink", cfg_dict={"trainer": {"steps": 5}}, request={})
        job_id, token = job.id, job.dispatch_token
    return jobs.claim(job_id, token, "w1")


def _rollout(uid: str, step: int, response: str = "</think> \\boxed{2}") -> RolloutRecord:
    return RolloutRecord(uid=uid, step=step, policy_version=step, group_id=f"g{step}", prompt_id="p",
                         prompt="Compute 1+1.", response=response, extracted="2", reference=["2", "two"],
                         reward=1.0, correct=True, format_ok=True, reason="correct", length=4, truncated=False,
                         advantage=float("nan"))


def _emit_steps(sink: SqlSink, steps: range, response: str = "</think> \\boxed{2}") -> None:
    for t in steps:
        sink.on_rollouts(t, [_rollout(f"r{t}", t, response)])
        sink.on_rollout_uses(t, [RolloutUseRecord(f"r{t}", t, 0, 1.0, 1.0, 0.0, 0.0)])
        sink.on_step(t, {"critic/score/mean": 1.0, "cost/rollouts": 4.0 * t, "cost/tokens": 10.0 * t,
                         "timing_s/elapsed": float(t)})
        if t % 2 == 0:
            sink.on_checkpoint(t, f"/ck/{t}", CheckpointRecord(step=t, policy_version=t + 1, path=f"/ck/{t}",
                                                               policy_path=f"/ck/{t}/policy"))


def _count(engine, model, run_id: int) -> int:
    with Session(engine) as s:
        return s.execute(select(func.count()).select_from(model).where(model.run_id == run_id)).scalar_one()


def _points(engine, run_id: int) -> dict[tuple[str, int], float | None]:
    """Every stored metric point of the run: (key, step) → value (None: NaN)."""
    out = {}
    with Session(engine) as s:
        for key, blob in s.execute(select(MetricChunk.key, MetricChunk.points).where(MetricChunk.run_id == run_id)
                                   .order_by(MetricChunk.key, MetricChunk.chunk)):
            for step, value, *_ in mc.unpack(blob).T.tolist():
                assert (key, int(step)) not in out, "a point stored twice"
                out[key, int(step)] = None if value != value else value
    return out


def test_events_become_rows_and_run_counters(engine):
    claim = _job()
    sink = SqlSink(claim.run_id, engine=engine, job_id=claim.job_id, attempt=claim.attempt)
    sink.on_start({"resumed_from": None})
    _emit_steps(sink, range(1, 5))
    sink.on_end({})
    sink.close()
    with Session(engine) as s:
        run, job = s.get(Run, claim.run_id), s.get(Job, claim.job_id)
        r4 = s.execute(select(Rollout).where(Rollout.uid == "r4")).scalar_one()
        ck = s.execute(select(Checkpoint).where(Checkpoint.step == 4)).scalar_one()
        latest = s.execute(select(LatestMetric.value).where(LatestMetric.key == "cost/rollouts")).scalar_one()
    assert (run.steps_done, run.rollouts_generated, run.tokens_generated, run.elapsed_s) == (4, 16, 40, 4.0)
    assert (job.progress_step, job.last_checkpoint_step) == (4, 4)
    assert r4.reference == "['2', 'two']" and r4.advantage is None and r4.use_count == 1, "NaN stored as NULL"
    assert (ck.policy_version, ck.policy_path, ck.info["path"]) == (5, "/ck/4/policy", "/ck/4")
    assert latest == 16.0 and len(_points(engine, claim.run_id)) == 16


def test_a_resumed_attempt_replaces_everything_after_its_checkpoint(engine):
    claim = _job()
    first = SqlSink(claim.run_id, engine=engine)
    first.on_start({"resumed_from": None})
    _emit_steps(first, range(1, 4))  # steps 1-3 written; the worker dies after step 3
    first.close()
    again = SqlSink(claim.run_id, engine=engine)
    again.on_start({"resumed_from": 2})  # resumes from the checkpoint at step 2: step 3 comes again
    _emit_steps(again, range(3, 5), response="second attempt")
    again.close()
    assert _count(engine, Rollout, claim.run_id) == 4 and _count(engine, RolloutUse, claim.run_id) == 4
    assert len(_points(engine, claim.run_id)) == 16, "exactly one point per step and key"
    with Session(engine) as s:
        assert s.get(Run, claim.run_id).steps_done == 4
        texts = {r.uid: r.step for r in s.execute(select(Rollout)).scalars()}
    assert texts == {"r1": 1, "r2": 2, "r3": 3, "r4": 4}


@pytest.mark.parametrize("one_batch", [True, False])
def test_metrics_of_a_batch_keep_each_keys_newest_step_and_the_last_copy_of_a_row(engine, one_batch):
    """Metrics are written once per writer batch; whatever the batching, a late re-delivery of an
    older step replaces that step's row and never moves latest_metrics back, and a key the newest
    step lacks keeps its own newest value."""
    from remix_engine.events import StepMetrics

    claim = _job()
    sink = SqlSink(claim.run_id, engine=engine)
    sink.on_start({"resumed_from": None})
    steps = [(1, {"a": 1.0, "b": 10.0}), (2, {"a": 2.0, "b": 20.0}), (4, {"a": 4.0}), (3, {"a": 3.0}),
             (1, {"a": -1.0, "b": -10.0})]  # step 3 after step 4, step 1 again: late
    if one_batch:  # the writer's own batch, as it drains a full queue
        sink._write([("step", st, StepMetrics(st, values), 0.0) for st, values in steps])
    else:
        for st, values in steps:
            sink.on_step(st, values)
            sink.flush()
    sink.close()
    with Session(engine) as s:
        latest = {k: (st, v) for k, st, v in s.execute(
            select(LatestMetric.key, LatestMetric.step, LatestMetric.value).where(LatestMetric.run_id == claim.run_id))}
    points = _points(engine, claim.run_id)
    assert latest == {"a": (4, 4.0), "b": (2, 20.0)}
    assert points[("a", 1)] == -1.0 and points[("b", 1)] == -10.0 and len(points) == 6


def test_a_resume_across_chunks_keeps_the_points_up_to_its_step_and_rebuilds_latest(engine):
    """Metric points live in chunks of CHUNK_STEPS steps: a resume from the middle of a chunk drops
    the later chunks and the tail of its own, and the re-emitted steps replace what they replace."""
    claim = _job()
    first = SqlSink(claim.run_id, engine=engine)
    first.on_start({"resumed_from": None})
    last = 2 * mc.CHUNK_STEPS + 50
    for t in range(1, last + 1):
        first.on_step(t, {"loss": float(t), "cost/rollouts": 4.0 * t, **({"late": 0.5} if t == last else {})})
    first.close()
    resume = mc.CHUNK_STEPS + 20
    again = SqlSink(claim.run_id, engine=engine)
    again.on_start({"resumed_from": resume})
    again.on_step(resume + 1, {"loss": -1.0, "nan": float("nan")})
    again.close()
    points = _points(engine, claim.run_id)
    assert sorted(step for key, step in points if key == "loss") == list(range(1, resume + 2))
    assert points[("loss", resume + 1)] == -1.0 and points[("nan", resume + 1)] is None
    assert ("late", last) not in points and ("cost/rollouts", resume + 1) not in points
    with Session(engine) as s:
        latest = {k: (st, v) for k, st, v in s.execute(
            select(LatestMetric.key, LatestMetric.step, LatestMetric.value).where(LatestMetric.run_id == claim.run_id))}
        assert queries.cost_at_step(s, claim.run_id, resume) == 4 * resume
        assert queries.cost_at_step(s, claim.run_id, last) is None
    assert latest == {"loss": (resume + 1, -1.0), "nan": (resume + 1, None), "cost/rollouts": (resume, 4.0 * resume)}


def test_a_sink_whose_job_was_taken_drops_its_events_and_asks_to_stop(engine):
    claim = _job()
    sink = SqlSink(claim.run_id, engine=engine, job_id=claim.job_id, attempt=claim.attempt)
    sink.on_start({"resumed_from": None})
    _emit_steps(sink, range(1, 2))
    sink.flush()
    # the reaper gave the job to another worker: it now runs as attempt 2
    assert jobs.requeue(claim.job_id, claim.attempt, reason="lost") == "requeued"
    with Session(engine) as s:
        token = s.get(Job, claim.job_id).dispatch_token
    assert jobs.claim(claim.job_id, token, "w2").attempt == 2
    sink.on_step(2, {"cost/rollouts": 8.0})
    sink.flush()
    assert sink.fenced and sink.should_stop()
    sink.close()
    with Session(engine) as s:
        assert max(step for _, step in _points(engine, claim.run_id)) == 1


def test_dict_events_must_hold_exactly_the_record_fields(engine):
    claim = _job()
    sink = SqlSink(claim.run_id, engine=engine)
    with pytest.raises(TypeError):
        sink.on_rollout_uses(1, [{"rollout_uid": "r1", "step": 1}])  # no silent defaults
    sink.close()


def test_alert_episodes_upsert_and_a_resume_reopens_them_at_its_checkpoint(engine, studio_env):
    """An episode is one row however often it is re-emitted; the API lists it with its rule's text
    and links, and the runs list counts it; a resume forgets episodes that began after the checkpoint."""
    from fastapi.testclient import TestClient

    from backend.app import create_app
    from remix_engine.events import AlertRecord

    def alert(rule: str, first: int, last: int, status: str = "firing") -> AlertRecord:
        return AlertRecord(rule=rule, status=status, first_step=first, last_step=last, value=0.9, threshold=0.8,
                           detail="90% of groups had one reward", metric="critic/frac_reward_zero_std")

    claim = _job()
    sink = SqlSink(claim.run_id, engine=engine, job_id=claim.job_id, attempt=claim.attempt)
    sink.on_start({"resumed_from": None})
    _emit_steps(sink, range(1, 5))
    for step in (2, 3):
        sink.on_alert(step, alert("zero_variance_groups", 2, step))
    sink.on_alert(4, alert("zero_variance_groups", 2, 3, "resolved"))
    sink.on_alert(4, alert("truncation", 4, 4))
    sink.on_end({})
    sink.close()

    client = TestClient(create_app(studio_env))
    listed = client.get(f"/api/v1/runs/{claim.run_id}/alerts").json()
    assert [(a["rule"], a["status"], a["first_step"], a["last_step"]) for a in listed] == [
        ("truncation", "firing", 4, 4), ("zero_variance_groups", "resolved", 2, 3)]  # firing first
    zv = listed[1]
    assert zv["title"] == "Zero-variance groups" and "group_size" in zv["explanation"]
    assert zv["links"]["traces"] == f"/traces/{claim.run_id}?step_min=2&step_max=3"
    assert listed[0]["links"]["traces"].endswith("&truncated=true")
    series = client.get(zv["links"]["metrics"]).json()
    assert series["keys"] == ["critic/frac_reward_zero_std"]
    runs = {r["id"]: r for r in client.get("/api/v1/runs").json()["data"]}
    assert runs[claim.run_id]["alerts"] == {"firing": 1, "total": 2}
    assert client.get(f"/api/v1/runs/{claim.run_id}").json()["alerts"] == {"firing": 1, "total": 2}
    assert client.get("/api/v1/runs/999999/alerts").status_code == 404

    # resumed from the checkpoint at step 2: the truncation episode (from step 4) is gone, the
    # zero-variance one is open again at step 2 (the restored monitor carries it on)
    jobs.requeue(claim.job_id, claim.attempt, reason="lost")
    again = jobs.claim(claim.job_id, _job_token(claim.job_id), "w2")
    sink = SqlSink(claim.run_id, engine=engine, job_id=claim.job_id, attempt=again.attempt)
    sink.on_start({"resumed_from": 2})
    sink.close()
    listed = client.get(f"/api/v1/runs/{claim.run_id}/alerts").json()
    assert [(a["rule"], a["status"], a["first_step"], a["last_step"]) for a in listed] == [
        ("zero_variance_groups", "firing", 2, 2)]


def _job_token(job_id: int) -> str:
    with Session(get_engine()) as s:
        return s.get(Job, job_id).dispatch_token


def test_token_stats_are_stored_compactly_and_served_per_use(engine, studio_env):
    """The token lens: one row per use (compressed JSON, 4 decimals); the API joins the generation's
    tokens and behaviour log-probs with every use and computes the per-token ratios."""
    import math

    from fastapi.testclient import TestClient

    from backend.app import create_app
    from remix_engine.events import TokenStatsRecord
    from studio.models import RolloutTokenStats

    claim = _job()
    sink = SqlSink(claim.run_id, engine=engine, job_id=claim.job_id, attempt=claim.attempt)
    sink.on_start({"resumed_from": None})
    _emit_steps(sink, range(1, 4))
    behavior = [-0.5, -1.25, -2.0, -0.123456]
    sink.on_token_stats(1, [TokenStatsRecord(
        rollout_uid="r1", step=1, age=0, logprobs=behavior, advantages=[0.5] * 4, entropy=[1.0, 0.5, 0.25, 0.1],
        clipped=[0, 0, 0, 0], tokens=["</think>", " \\boxed{", "2", "}"], behavior_logprobs=behavior)])
    sink.on_token_stats(3, [TokenStatsRecord(
        rollout_uid="r1", step=3, age=2, logprobs=[-0.4, -1.25, -3.0, float("-inf")], advantages=[-0.5] * 4,
        entropy=[0.9, 0.5, 0.2, 0.1], clipped=[0, 0, 2, 1])])
    sink.on_end({})
    with Session(engine) as s:
        payloads = [row.payload for row in s.execute(select(RolloutTokenStats)).scalars()]
    assert len(payloads) == 2 and RolloutTokenStats.unpack(payloads[0])["behavior_logprobs"][3] == -0.1235

    client = TestClient(create_app(studio_env))
    with Session(engine) as s:
        rid = s.execute(select(Rollout.id).where(Rollout.uid == "r1")).scalar_one()
        other = s.execute(select(Rollout.id).where(Rollout.uid == "r2")).scalar_one()
    lens = client.get(f"/api/v1/rollouts/{rid}/tokens").json()
    assert lens["tokens"] == ["</think>", " \\boxed{", "2", "}"] and lens["run_id"] == claim.run_id
    fresh, replayed = lens["uses"]
    assert (fresh["step"], fresh["age"], replayed["step"], replayed["age"]) == (1, 0, 3, 2)
    assert fresh["ratios"] == [1.0, 1.0, 1.0, 1.0]
    assert replayed["ratios"][0] == pytest.approx(math.exp(0.1)) and replayed["ratios"][2] == pytest.approx(math.exp(-1))
    assert replayed["logprobs"][3] is None and replayed["ratios"][3] is None  # -inf stored as null
    assert replayed["clipped"] == [0, 0, 2, 1] and replayed["advantages"] == [-0.5] * 4
    missing = client.get(f"/api/v1/rollouts/{other}/tokens")
    assert missing.status_code == 404 and "token_stats_every" in missing.json()["detail"]
    assert client.get("/api/v1/rollouts/999999/tokens").status_code == 404

    # a resume from step 2 forgets the use at step 3
    sink.close()
    jobs.requeue(claim.job_id, claim.attempt, reason="lost")
    again = jobs.claim(claim.job_id, _job_token(claim.job_id), "w2")
    sink = SqlSink(claim.run_id, engine=engine, job_id=claim.job_id, attempt=again.attempt)
    sink.on_start({"resumed_from": 2})
    sink.close()
    assert [u["step"] for u in client.get(f"/api/v1/rollouts/{rid}/tokens").json()["uses"]] == [1]


def test_use_statistics_written_with_the_insert_equal_those_recomputed_from_the_uses(engine):
    """New rows get their use statistics from the uses that follow them in the same batch (no
    UPDATE of every fresh row); older rows are refreshed by the UPDATE. Either way each row holds
    exactly what its stored uses give: fresh and replayed uses, replays in a later batch, a use sent
    twice with new values, non-finite ratios, a rollout used before it arrived, a re-delivered rollout."""
    claim = _job()
    sink = SqlSink(claim.run_id, engine=engine)
    sink.on_start({"resumed_from": None})

    def use(uid: str, step: int, age: int, ratio: float) -> RolloutUseRecord:
        return RolloutUseRecord(uid, step, age, ratio, ratio + 0.5, 0.1 * age, 0.01 * step)

    sink.on_rollout_uses(1, [use("early", 1, 0, 1.0)])  # before its rollout: stored without a rollout id
    for t in (1, 2, 3):
        sink.on_rollouts(t, [_rollout(f"a{t}", t), _rollout(f"b{t}", t), _rollout("early", 1)])
        uses = [use(f"a{t}", t, 0, 1.0 + t), use(f"b{t}", t, 0, float("nan"))]
        if t > 1:
            uses.append(use(f"a{t - 1}", t, 1, 0.9))  # a replay in the same batch as its rollout
        sink.on_rollout_uses(t, uses)
    sink.flush()  # a batch boundary: the replays below update rows of the earlier batch
    sink.on_rollouts(4, [_rollout("a4", 4), _rollout("a1", 1)])  # a1 re-delivered: keeps its statistics
    sink.on_rollout_uses(4, [use("a4", 4, 0, 1.2), use("a3", 4, 1, 1.1), use("a1", 4, 3, float("inf")),
                             use("b3", 4, 1, 0.8)])  # b3: the newest row before this batch
    sink.on_rollout_uses(4, [use("a3", 4, 1, 0.7), use("a4", 4, 0, 1.6)])  # the same uses again, new values: the later ones count
    sink.on_end({})
    sink.close()

    u = RolloutUse.__table__.c
    expected_q = (select(u.rollout_id, func.count(), func.sum(case((u.age > 0, 1), else_=0)), func.max(u.age),
                         func.avg(u.ratio_mean), func.max(u.ratio_max), func.avg(u.clipfrac), func.avg(u.kl_to_behavior))
                  .where(u.run_id == claim.run_id, u.rollout_id.is_not(None)).group_by(u.rollout_id))
    r = Rollout.__table__.c
    with Session(engine) as s:
        expected = {row[0]: tuple(row[1:]) for row in s.execute(expected_q)}
        stored = {row[0]: (row[1], tuple(row[2:])) for row in s.execute(
            select(r.id, r.uid, r.use_count, r.reuse_count, r.max_age, r.ratio_mean, r.ratio_max, r.clipfrac,
                   r.kl_to_behavior).where(r.run_id == claim.run_id))}
    assert len(stored) == 8
    for rid, (uid, stats) in stored.items():
        want = expected.get(rid, (0, 0, None, None, None, None, None))
        assert stats == pytest.approx(want), (uid, stats, want)
    by_uid = {uid: stats for uid, stats in stored.values()}
    assert by_uid["a3"][:3] == (2, 1, 1) and by_uid["a3"][3] == pytest.approx((4.0 + 0.7) / 2)
    assert by_uid["a1"][:3] == (3, 2, 3) and by_uid["b2"][3] is None  # NaN ratio stored as NULL
    assert by_uid["early"][0] == 0  # its only use came before it: no rollout id to count it by
    assert by_uid["a4"][:2] == (1, 0) and by_uid["a4"][3] == pytest.approx(1.6)  # a new row, its use sent twice
