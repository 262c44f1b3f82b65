"""The dashboard's analytic SQL (studio/queries.py), called without HTTP, on rows that the real SQL
sink (worker/sink.py) wrote from trainer events into a database brought up by the migrations
(SQLite, and PostgreSQL where REMIX_TEST_BACKENDS names it, as in tests/integration)."""

from __future__ import annotations

import os
import time
import uuid
from pathlib import Path

import pytest
from sqlalchemy import case, func, literal, select, text
from sqlalchemy.exc import OperationalError
from sqlmodel import Session

from remix_engine.events import RolloutRecord, RolloutUseRecord
from studio import jobs, queries, rollout_text
from studio.db import (
    PING_AFTER_IDLE_S,
    autocommit_engine,
    fetch_binary,
    is_timeout,
    make_engine,
    session_scope,
)
from studio.migrate import upgrade_database
from studio.models import Rollout, RolloutUse
from studio.settings import Settings
from worker.sink import SqlSink

_tmp = []


def tmp_dir() -> str:
    import tempfile

    _tmp.append(tempfile.mkdtemp(prefix="remix-q-"))
    return _tmp[-1]


PG_ADMIN_URL = os.environ.get("REMIX_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
BACKENDS = [b.strip() for b in os.environ.get("REMIX_TEST_BACKENDS", "embedded,postgres").split(",") if b.strip()]


@pytest.fixture(params=BACKENDS)
def engine(request, tmp_path):
    url = None
    if request.param == "postgres":
        psycopg = pytest.importorskip("psycopg")
        name = f"remix_q_{uuid.uuid4().hex[:10]}"
        try:
            with psycopg.connect(PG_ADMIN_URL, autocommit=True, connect_timeout=3) as conn:
                conn.execute(f'CREATE DATABASE "{name}"')
        except psycopg.OperationalError:
            pytest.skip("no PostgreSQL at REMIX_TEST_POSTGRES_URL")
        url = f"{PG_ADMIN_URL.rpartition('/')[0]}/{name}"
    settings = Settings(data_dir=tmp_path, database_url=url)
    eng = make_engine(settings.sqlalchemy_url)
    upgrade_database(settings, eng)
    yield eng
    eng.dispose()
    if url:
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _run(engine) -> int:
    with session_scope(engine) as s:
        run, _ = jobs.create_run_with_job(s, name="q", cfg_dict={"preset": "toy", "algorithm": "remix-grpo"},
                                          request={}, settings=Settings(data_dir=Path(tmp_dir())))
        return run.id


def _rollout(uid: str, step: int, reward: float = 1.0, response: str = "</think> \\boxed{2}") -> RolloutRecord:
    return RolloutRecord(uid=uid, step=step, policy_version=step, group_id=f"g{step}", prompt_id="p",
                         prompt="Compute 1+1.", response=response, extracted="2", reference="2",
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


def test_redelivered_rollouts_and_uses_replace_their_rows(engine):
    """A rollout and a use sent again (a retried event, in a later batch and within one event) are
    upserted: one row each, holding the last copy, and the rollout's use statistics follow."""
    run_id = _run(engine)
    _write(engine, run_id, 3)
    sink = SqlSink(run_id, engine=engine)
    sink.on_rollouts(2, [_rollout("r2", 2, reward=0.0), _rollout("r9", 2)])
    sink.on_rollout_uses(3, [_use("r2", 3, 1, 1.5, 0.25), _use("r2", 3, 1, 1.6, 0.75)])  # twice: the last wins
    sink.close()
    with Session(engine) as s:
        rows = {r.uid: r for r in s.execute(select(Rollout).where(Rollout.run_id == run_id)).scalars()}
        uses = s.execute(select(RolloutUse.step, RolloutUse.ratio_mean, RolloutUse.clipfrac)
                         .where(RolloutUse.rollout_uid == "r2").order_by(RolloutUse.step)).all()
    assert sorted(rows) == ["r1", "r2", "r3", "r9"] and rows["r2"].correct is False
    assert [tuple(u) for u in uses] == [(2, 1.0, 0.0), (3, 1.6, 0.75)]
    assert (rows["r2"].use_count, rows["r2"].reuse_count, rows["r2"].ratio_mean) == (2, 1, pytest.approx(1.3))


def test_downsampling_keeps_each_buckets_extremes_and_both_ends(engine):
    run_id = _run(engine)
    _write(engine, run_id, 60)
    with Session(engine) as s:
        full = queries.metric_series(s, [run_id], ["critic/score/mean"], "step", 1000)[run_id][0]
        small = queries.metric_series(s, [run_id], ["critic/score/mean", "cost/rollouts"], "rollouts", 12)[run_id]
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


# ------------------------------------------------------------------------------------------ issue 17
def _page(engine, run_id: int, q: str | None = None, after=None, limit: int = 50, **filters):  # noqa: ANN001
    cond = [Rollout.run_id == run_id] + [getattr(Rollout, k) == v for k, v in filters.items()]
    with Session(engine) as s:
        rows, count, capped = queries.rollout_page(s, run_id, cond, q, after, "asc", limit)
    return [r.uid for r in rows], count, capped


def _texts(engine, run_id: int, texts: dict[str, str], step: int = 1, resumed_from: int | None = None) -> None:
    sink = SqlSink(run_id, engine=engine)
    sink.on_start({"resumed_from": resumed_from})
    sink.on_rollouts(step, [_rollout(uid, step, response=t) for uid, t in texts.items()])
    sink.close()


def test_search_finds_whole_words_in_this_run_only_and_every_word(engine):
    a, b = _run(engine), _run(engine)
    _texts(engine, a, {"a1": "Wait, let me check: 3*4 = 12.", "a2": "So the answer is 12.", "a3": "wait... WAITING"})
    _texts(engine, b, {"b1": "wait here too"})
    assert _page(engine, a, "wait")[0] == ["a1", "a3"], "whole words, case-insensitive, not run b's"
    assert _page(engine, a, "WAITING")[0] == ["a3"] and _page(engine, a, "wai")[0] == []
    assert _page(engine, a, "answer 12")[0] == ["a2"], "every word must occur"
    assert _page(engine, a, "compute")[0] == ["a1", "a2", "a3"], "the prompt is searched too"
    assert _page(engine, a, "nothing")[0] == [] and _page(engine, b, "wait")[0] == ["b1"]
    assert _page(engine, a, "  ...  ")[0] == ["a1", "a2", "a3"], "no word: no search"
    assert _page(engine, a, "wait", limit=1)[0] == ["a1", "a3"], "limit + 1 rows: the caller sees a next page"
    with Session(engine) as s:
        a1 = s.execute(select(Rollout.id).where(Rollout.uid == "a1")).scalar_one()
    assert _page(engine, a, "wait", after=(1, a1))[0] == ["a3"], "a cursor continues after the last hit"


def test_search_forgets_texts_a_resume_deleted_or_a_redelivery_replaced(engine):
    run_id = _run(engine)
    _texts(engine, run_id, {"r1": "alpha"}, step=1)
    _texts(engine, run_id, {"r2": "beta"}, step=2, resumed_from=1)
    sink = SqlSink(run_id, engine=engine)  # a re-delivered step 2 with another text
    sink.on_start({"resumed_from": 1})
    sink.on_rollouts(2, [_rollout("r2", 2, response="gamma")])
    sink.on_rollouts(2, [_rollout("r2", 2, response="delta")])
    sink.close()
    assert _page(engine, run_id, "beta")[0] == [] and _page(engine, run_id, "gamma")[0] == []
    assert _page(engine, run_id, "delta")[0] == ["r2"] and _page(engine, run_id, "alpha")[0] == ["r1"]


def test_counts_stop_at_the_cap_and_say_so(engine, monkeypatch):
    run_id = _run(engine)
    _texts(engine, run_id, {f"r{i}": "same words" for i in range(5)})
    assert _page(engine, run_id)[1:] == (5, False)
    monkeypatch.setattr(queries, "COUNT_CAP", 3)
    monkeypatch.setattr(queries, "SEARCH_COUNT_CAP", 2)
    assert _page(engine, run_id)[1:] == (3, True)
    assert _page(engine, run_id, "words")[1:] == (2, True)
    assert _page(engine, run_id, after=(1, 0))[1:] == (None, False), "cursor pages do not count again"


def test_metric_series_of_several_runs_in_one_query(engine):
    a, b = _run(engine), _run(engine)
    _write(engine, a, 5)
    _write(engine, b, 3)
    with Session(engine) as s:
        out = queries.metric_series(s, [a, b], ["cost/rollouts", "missing/key"], "step", 100)
    assert [ser["step"] for ser in out[a]] == [[1, 2, 3, 4, 5], []]
    assert out[b][0]["y"] == [8.0, 16.0, 24.0] and out[b][1]["total"] == 0
    with Session(engine) as s:
        latest = queries.latest_metrics(s, [a, b], ["cost/rollouts"])
    assert latest == {a: {"cost/rollouts": 40.0}, b: {"cost/rollouts": 24.0}}


def _offpolicy_from_uses(s: Session, run_id: int) -> tuple[list, list]:
    """What the off-policy view computed from every use per request before issue 17."""
    u = RolloutUse
    per_step = s.execute(select(u.step, func.count(), func.sum(case((u.age > 0, 1), else_=0)))
                         .where(u.run_id == run_id).group_by(u.step).order_by(u.step)).all()
    per_age = s.execute(select(u.age, func.count(), func.avg(u.ratio_mean), func.max(u.ratio_max), func.avg(u.clipfrac),
                               func.avg(u.kl_to_behavior)).where(u.run_id == run_id).group_by(u.age).order_by(u.age)).all()
    return ([(st, n, int(rep)) for st, n, rep in per_step],
            [(a, n, pytest.approx(rm), pytest.approx(rx), pytest.approx(cf), pytest.approx(kl))
             for a, n, rm, rx, cf, kl in per_age])


def test_preaggregated_offpolicy_equals_the_per_use_computation(engine):
    run_id = _run(engine)
    _write(engine, run_id, 9)
    sink = SqlSink(run_id, engine=engine)  # a resume from step 5 that re-sends steps 6..9 differently
    sink.on_start({"resumed_from": 5})
    for t in range(6, 10):
        sink.on_rollouts(t, [_rollout(f"r{t}", t)])
        sink.on_rollout_uses(t, [_use(f"r{t}", t, 0, 0.9, 0.1), _use(f"r{t - 2}", t, 2, 1.5, 0.25)])
    sink.close()
    with Session(engine) as s:
        out = queries.offpolicy(s, run_id)
        steps, ages = _offpolicy_from_uses(s, run_id)
    assert [(b["step"], b["uses"], b["replayed"]) for b in out["reuse_by_step"]] == steps
    assert [(b["age"], b["count"], b["ratio_mean"], b["ratio_max"], b["clipfrac"], b["kl_to_behavior"])
            for b in out["by_age"]] == ages


def test_rollout_text_is_compressed_and_comes_back_exactly(engine):
    run_id = _run(engine)
    long = "Wait — let me re-check: ∑ k² = n(n+1)(2n+1)/6. " * 80
    _texts(engine, run_id, {"r1": long})
    with Session(engine) as s:
        rid = s.execute(select(Rollout.id).where(Rollout.run_id == run_id)).scalar_one()
        assert queries.rollout_texts(s, [rid]) == {rid: ("Compute 1+1.", long)}
        assert queries.rollout_previews(s, [rid]) == {rid: long[:rollout_text.PREVIEW_CHARS] + "…"}
    assert len(rollout_text.pack("Compute 1+1.", long)) < len(long.encode()) / 10
    assert rollout_text.unpack(rollout_text.pack("", "")) == ("", "")


@pytest.mark.parametrize("char", ["a", "é", "∑", "𝔼"])  # 1, 2, 3 and 4 UTF-8 bytes
@pytest.mark.parametrize("length", [0, 1, 239, 240, 241, 300])
def test_a_preview_from_the_head_of_the_blob_equals_one_from_the_whole_response(char, length):
    n = rollout_text.PREVIEW_CHARS
    for response in (char * length, "x" * (n - 1) + char * (length - n + 1) if length >= n else char * length):
        body = rollout_text.pack("∑ prompt " * 50, response)
        assert rollout_text.response_preview(body) == rollout_text.preview(response)
        assert rollout_text.response_preview(body).endswith("…") == (length > n)


def test_api_sessions_give_up_on_a_slow_query(engine):
    slow = ("SELECT pg_sleep(2)" if engine.dialect.name == "postgresql" else
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 50000000) SELECT count(*) FROM n")
    t0 = time.monotonic()
    with Session(engine, info={"timeout_s": 0.2}) as s, pytest.raises(OperationalError) as err:
        s.execute(text(slow))
    assert is_timeout(err.value) and time.monotonic() - t0 < 1.5
    # the connection went back to the pool without the limit (PostgreSQL keeps it on the connection:
    # a session without a limit must lift it)
    lasting = "SELECT pg_sleep(0.5)" if engine.dialect.name == "postgresql" else "SELECT 1"
    with Session(engine) as s:
        s.execute(text(lasting))
    # the API's GET sessions run without a transaction around them: the limit holds there too,
    # and a transaction's session after them gets none
    with Session(autocommit_engine(engine), info={"timeout_s": 0.2}) as s, pytest.raises(OperationalError) as err:
        s.execute(text(slow))
    assert is_timeout(err.value)
    if engine.dialect.name == "postgresql":  # and plans each statement for its parameters (studio/db.py)
        with Session(autocommit_engine(engine), info={"timeout_s": 5}) as s:
            assert s.execute(text("SHOW plan_cache_mode")).scalar_one() == "force_custom_plan"
    with Session(engine) as s:
        s.execute(text(lasting))
        s.commit()
    with Session(engine, info={"timeout_s": 0.2}) as s, pytest.raises(OperationalError) as err:
        s.execute(text(slow))
    assert is_timeout(err.value)


def test_a_binary_fetch_gives_up_on_a_slow_query_like_any_other(engine):
    if engine.dialect.name != "postgresql":
        pytest.skip("SQLite has no binary wire format: fetch_binary runs the statement through SQLAlchemy")
    with Session(engine, info={"timeout_s": 0.2}) as s, pytest.raises(OperationalError) as err:
        fetch_binary(s, select(func.pg_sleep(2)))
    assert is_timeout(err.value)
    with Session(engine) as s:  # and the binary rows are the same rows
        assert fetch_binary(s, select(literal(b"\x00\xff"), literal(7))) == [(b"\x00\xff", 7)]


def test_a_connection_the_server_dropped_while_idle_is_replaced_unseen(engine):
    """PostgreSQL connections idle in the pool for PING_AFTER_IDLE_S are pinged before use; one
    the server ended (a restart, an idle-session killer) is replaced without the request noticing."""
    if engine.dialect.name != "postgresql":
        pytest.skip("SQLite has no server to drop a connection")
    import psycopg
    pid = _backend_pid(engine)
    with psycopg.connect(engine.url.set(drivername="postgresql").render_as_string(hide_password=False),
                         autocommit=True) as other:  # not from the pool: that would hand back the same connection
        other.execute(f"SELECT pg_terminate_backend({pid})")
    time.sleep(PING_AFTER_IDLE_S + 0.1)
    assert _backend_pid(engine) != pid


def _backend_pid(engine) -> int:
    with Session(autocommit_engine(engine)) as s:
        return s.execute(text("SELECT pg_backend_pid()")).scalar_one()


def test_a_deleted_runs_texts_leave_the_search_index(engine):
    old = _run(engine)
    _texts(engine, old, {"o1": "unicorn"})
    with session_scope(engine) as s:
        run = s.get(jobs.Run, old)
        run.status = "succeeded"
        s.flush()
        jobs.delete_run(s, run)
    new = _run(engine)
    _texts(engine, new, {"n1": "horse"})  # on SQLite it may get the deleted rollout's id
    assert _page(engine, new, "unicorn")[0] == [] and _page(engine, new, "horse")[0] == ["n1"]
