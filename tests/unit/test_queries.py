"""The dashboard's analytic SQL (studio/queries.py), called without HTTP, on rows that the real SQL
sink (worker/sink.py) wrote from trainer events into a SQLite database brought up by the migrations."""

from __future__ import annotations

import pytest
from sqlmodel import Session

from remix_engine.events import RolloutRecord, RolloutUseRecord
from studio import jobs, queries
from studio.db import make_engine, session_scope
from studio.migrate import upgrade_database
from studio.settings import Settings
from worker.sink import SqlSink


@pytest.fixture
def engine(tmp_path):
    settings = Settings(data_dir=tmp_path, database_url=None)
    eng = make_engine(settings.sqlalchemy_url)
    upgrade_database(settings, eng)
    yield eng
    eng.dispose()


def _run(engine) -> int:
    with session_scope(engine) as s:
        run, _ = jobs.create_run_with_job(s, name="q", cfg_dict={"preset": "toy", "algorithm": "remix-grpo"},
                                          request={}, settings=Settings(data_dir=engine.url.database + ".d"))
        return run.id


def _rollout(uid: str, step: int, reward: float = 1.0) -> RolloutRecord:
    return RolloutRecord(uid=uid, step=step, policy_version=step, group_id=f"g{step}", prompt_id="p",
                         prompt="Compute 1+1.", response="</think> \\boxed{2}", extracted="2", reference="2",
                         reward=reward, correct=reward > 0, format_ok=True, reason="correct", length=5,
                         truncated=False, advantage=0.5)


def _use(uid: str, step: int, age: int, ratio: float, clip: float) -> RolloutUseRecord:
    return RolloutUseRecord(rollout_uid=uid, step=step, age=age, ratio_mean=ratio, ratio_max=ratio + 0.1,
                            clipfrac=clip, kl_to_behavior=0.01 * age)


def _write(engine, run_id: int, steps: int) -> None:
    """Step t generates rollout r<t> and uses it fresh; from step 2 on it also replays r<t-1> (age 1)."""
    sink = SqlSink(run_id, engine=engine)
    sink.on_start({"resumed_from": None})
    for t in range(1, steps + 1):
        sink.on_rollouts(t, [_rollout(f"r{t}", t)])
        uses = [_use(f"r{t}", t, 0, 1.0, 0.0)] + ([_use(f"r{t - 1}", t, 1, 1.2, 0.5)] if t > 1 else [])
        sink.on_rollout_uses(t, uses)
        sink.on_step(t, {"critic/score/mean": float(t % 7), "cost/rollouts": 8.0 * t, "timing_s/elapsed": 0.5 * t})
    sink.close()


def test_offpolicy_counts_fresh_and_replayed_uses_per_step_and_age(engine):
    run_id = _run(engine)
    _write(engine, run_id, 4)
    with Session(engine) as s:
        out = queries.offpolicy(s, run_id)
    assert [(b["step"], b["fresh"], b["replayed"]) for b in out["reuse_by_step"]] == [(1, 1, 0), (2, 1, 1), (3, 1, 1),
                                                                                     (4, 1, 1)]
    assert [(b["age"], b["count"], b["ratio_mean"], b["clipfrac"]) for b in out["by_age"]] == [
        (0, 4, 1.0, 0.0), (1, 3, 1.2, 0.5)]
    assert out["staleness_histogram"] == [{"age": 0, "count": 4}, {"age": 1, "count": 3}]
    # r1..r3 were replayed once, r4 not yet
    assert out["rollout_reuse_histogram"] == [{"reuse_count": 0, "rollouts": 1}, {"reuse_count": 1, "rollouts": 3}]
    assert out["totals"]["uses"] == 7 and out["totals"]["reuse_ratio"] == pytest.approx(3 / 7)
    with Session(engine) as s:
        window = queries.offpolicy(s, run_id, step_min=3, step_max=3)
    assert [b["step"] for b in window["reuse_by_step"]] == [3] and window["totals"]["uses"] == 2


def test_downsampling_keeps_each_buckets_extremes_and_both_ends(engine):
    run_id = _run(engine)
    _write(engine, run_id, 60)
    with Session(engine) as s:
        full = queries.downsample_metrics(s, run_id, ["critic/score/mean"], "step", 1000)[0]
        small = queries.downsample_metrics(s, run_id, ["critic/score/mean", "cost/rollouts"], "rollouts", 12)
    assert full["total"] == 60 and not full["downsampled"] and full["step"] == list(range(1, 61))
    score, cost = small
    assert score["downsampled"] and len(score["y"]) <= 12 + 2
    assert score["step"][0] == 1 and score["step"][-1] == 60, "the line spans the whole range"
    assert max(score["y"]) == 6.0 and min(score["y"]) == 0.0, "spikes survive"
    assert score["x"] == [8.0 * t for t in score["step"]], "x is rollouts so far"
    assert cost["key"] == "cost/rollouts" and cost["y"] == cost["x"]


def test_cost_at_step_reads_the_runs_cumulative_rollouts(engine):
    run_id = _run(engine)
    _write(engine, run_id, 3)
    with Session(engine) as s:
        assert queries.cost_at_step(s, run_id, 2) == 16
        assert queries.cost_at_step(s, run_id, 99) is None
