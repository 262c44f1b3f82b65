"""The job state machine (studio/jobs.py), on a real SQLite database and the real filesystem broker.

    pending ──dispatch──▶ queued ──claim──▶ running ──finish──▶ succeeded | failed | cancelled
       ▲                                       │
       └──────── requeue (lost worker, shutdown) ┘

Each test reads as one rule of that machine; the integration tests drive the same machine
through the API and real workers.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select, update
from sqlmodel import Session

from studio import jobs
from studio.db import get_engine, session_scope
from studio.models import Evaluation, Job, JobKind, JobStatus, Run, WorkerNode, utcnow
from studio.settings import get_settings, reset_settings_cache


def _new_run(settings, steps: int = 3) -> tuple[int, int]:
    cfg = {"preset": "toy", "algorithm": "grpo", "trainer": {"steps": steps}}
    with session_scope() as s:
        run, job = jobs.create_run_with_job(s, name=None, cfg_dict=cfg, request={}, settings=settings)
        return run.id, job.id


def _job(job_id: int) -> Job:
    with Session(get_engine()) as s:
        return s.get(Job, job_id)


def _run(run_id: int) -> Run:
    with Session(get_engine()) as s:
        return s.get(Run, run_id)


def _messages(settings) -> int:
    return len(list((settings.broker_folder / "queue").glob("*.msg")))


def _running(settings) -> tuple[int, int, jobs.Claim]:
    run_id, job_id = _new_run(settings)
    assert jobs.dispatch(job_id, settings)
    claim = jobs.claim(job_id, _job(job_id).dispatch_token, "w1")
    assert claim is not None
    return run_id, job_id, claim


# ----------------------------------------------------------------------------------- create, dispatch
def test_create_writes_a_pending_run_and_job_before_anything_is_sent(studio_env):
    run_id, job_id = _new_run(studio_env)
    job, run = _job(job_id), _run(run_id)
    assert (job.status, run.status) == ("pending", "pending")
    assert job.kind == JobKind.TRAIN.value and job.dispatch_token and job.progress_total == 3
    assert run.name == f"grpo toy #{run_id}"  # the default name
    assert run.output_dir.endswith(f"runs/{run_id}")
    assert _messages(studio_env) == 0


def test_dispatch_sends_one_message_carrying_the_token_and_marks_queued(studio_env):
    run_id, job_id = _new_run(studio_env)
    assert jobs.dispatch(job_id, studio_env)
    job = _job(job_id)
    assert (job.status, _run(run_id).status) == ("queued", "queued")
    assert job.celery_task_id == job.dispatch_token
    assert _messages(studio_env) == 1
    assert not jobs.dispatch(job_id, studio_env), "only a pending job is dispatched"
    assert _messages(studio_env) == 1


def test_dispatch_of_the_job_a_request_just_created_reads_nothing_back_and_a_stale_copy_changes_nothing(studio_env):
    run_id, job_id = _new_run(studio_env)
    assert jobs.dispatch(job_id, studio_env, created=_job(job_id))
    assert (_job(job_id).status, _run(run_id).status) == ("queued", "queued") and _messages(studio_env) == 1
    # cancelled between its creator's commit and the send: the message goes out, nothing else changes
    run_id, job_id = _new_run(studio_env)
    created = _job(job_id)
    with session_scope() as s:
        jobs.request_cancel(s, s.get(Job, job_id))
    assert jobs.dispatch(job_id, studio_env, created=created)
    assert (_job(job_id).status, _run(run_id).status) == ("cancelled", "cancelled") and _messages(studio_env) == 2
    assert jobs.claim(job_id, created.dispatch_token, "w1") is None


def test_a_failed_send_leaves_the_job_pending_for_the_reaper(studio_env, monkeypatch):
    run_id, job_id = _new_run(studio_env)
    monkeypatch.setenv("REMIX_BROKER_URL", "redis://127.0.0.1:9/0")  # nothing listens on port 9
    reset_settings_cache()
    assert not jobs.dispatch(job_id, get_settings())
    assert _job(job_id).status == "pending"


# ----------------------------------------------------------------------------------- claim
def test_claim_starts_the_first_attempt_once(studio_env):
    run_id, job_id = _new_run(studio_env)
    jobs.dispatch(job_id, studio_env)
    token = _job(job_id).dispatch_token
    claim = jobs.claim(job_id, token, "w1")
    assert claim == jobs.Claim(job_id, run_id, 1, "train", {})
    job = _job(job_id)
    assert (job.status, job.worker, _run(run_id).status) == ("running", "w1", "running")
    assert job.started_at is not None and job.heartbeat_at is not None
    # a re-delivery of the same message (acks_late, visibility timeout) cannot start a second copy
    assert jobs.claim(job_id, token, "w2") is None
    assert _job(job_id).worker == "w1"


def test_claim_refuses_a_wrong_token_and_an_unknown_job(studio_env):
    _, job_id = _new_run(studio_env)
    jobs.dispatch(job_id, studio_env)
    assert jobs.claim(job_id, "not-the-token", "w1") is None
    assert jobs.claim(job_id + 100, "x", "w1") is None
    assert _job(job_id).status == "queued"


def test_a_message_claimed_before_dispatch_marked_it_queued_still_runs_once(studio_env):
    # the worker can be faster than the API process that sent the message
    run_id, job_id = _new_run(studio_env)
    token = _job(job_id).dispatch_token
    claim = jobs.claim(job_id, token, "w1")
    assert claim is not None and _job(job_id).celery_task_id == token
    assert jobs.claim(job_id, token, "w2") is None
    assert not jobs.dispatch(job_id, studio_env), "a running job is not sent again"
    assert _job(job_id).status == "running"


# ----------------------------------------------------------------------------------- heartbeat, fence
def test_heartbeat_reports_ownership_and_the_cancel_flag(studio_env):
    _, job_id, claim = _running(studio_env)
    assert jobs.heartbeat(job_id, claim.attempt) == (True, False)
    with session_scope() as s:
        jobs.request_cancel(s, s.get(Job, job_id))
    assert _job(job_id).status == "running", "a running job only gets the flag"
    assert jobs.heartbeat(job_id, claim.attempt) == (True, True)
    assert jobs.heartbeat(job_id, claim.attempt + 1) == (False, False), "another attempt's beat is fenced"


def test_fence_writes_only_for_the_owning_attempt(studio_env):
    run_id, job_id, claim = _running(studio_env)
    with get_engine().connect() as conn:
        assert jobs.fence(conn, job_id, claim.attempt, progress_step=2)
        jobs.record_progress(conn, run_id=run_id, job_id=job_id, step=2, counters={"rollouts_generated": 16})
        jobs.record_checkpoint(conn, job_id, 2)
        assert not jobs.fence(conn, job_id, claim.attempt + 1, progress_step=99)
        conn.commit()
    job, run = _job(job_id), _run(run_id)
    assert (job.progress_step, job.last_checkpoint_step) == (2, 2)
    assert (run.steps_done, run.rollouts_generated) == (2, 16)


# ----------------------------------------------------------------------------------- finish
def test_finish_ends_job_and_run_together(studio_env):
    run_id, job_id, claim = _running(studio_env)
    assert jobs.finish(job_id, claim.attempt, JobStatus.SUCCEEDED.value, summary={"steps": 3})
    job, run = _job(job_id), _run(run_id)
    assert (job.status, run.status, run.summary) == ("succeeded", "succeeded", {"steps": 3})
    assert job.finished_at is not None and run.finished_at is not None


def test_a_finished_job_cannot_finish_again_or_be_cancelled(studio_env):
    _, job_id, claim = _running(studio_env)
    assert jobs.finish(job_id, claim.attempt, JobStatus.FAILED.value, error="boom")
    assert not jobs.finish(job_id, claim.attempt, JobStatus.SUCCEEDED.value)
    assert jobs.claim(job_id, _job(job_id).dispatch_token, "w2") is None
    with session_scope() as s, pytest.raises(jobs.TransitionError):
        jobs.request_cancel(s, s.get(Job, job_id))
    assert (_job(job_id).status, _job(job_id).error) == ("failed", "boom")


# ----------------------------------------------------------------------------------- cancel
def test_cancel_of_a_queued_job_ends_it_and_its_message_is_discarded(studio_env):
    run_id, job_id = _new_run(studio_env)
    jobs.dispatch(job_id, studio_env)
    with session_scope() as s:
        jobs.request_cancel(s, s.get(Job, job_id))
    assert (_job(job_id).status, _run(run_id).status) == ("cancelled", "cancelled")
    assert _run(run_id).cancel_requested
    assert jobs.claim(job_id, _job(job_id).dispatch_token, "w1") is None


def test_delete_is_refused_while_the_run_is_active(studio_env):
    run_id, job_id = _new_run(studio_env)
    with session_scope() as s, pytest.raises(jobs.TransitionError):
        jobs.delete_run(s, s.get(Run, run_id))
    with session_scope() as s:
        jobs.request_cancel(s, s.get(Job, job_id))
    with session_scope() as s:
        jobs.delete_run(s, s.get(Run, run_id))
    assert _job(job_id) is None, "the job goes with its run"


# ----------------------------------------------------------------------------------- re-queue, reaper
def test_a_lost_worker_is_fenced_and_the_job_redelivered_to_a_new_attempt(studio_env):
    run_id, job_id, first = _running(studio_env)
    old_token = _job(job_id).dispatch_token
    with session_scope() as s:  # the worker stopped heartbeating long ago
        s.execute(update(Job).where(Job.id == job_id).values(heartbeat_at=utcnow() - timedelta(hours=1)))
    assert jobs.reap(studio_env)["requeued"] == 1
    job = _job(job_id)
    assert (job.status, job.lost_attempts) == ("queued", 1), "re-queued and sent again"
    assert job.dispatch_token != old_token and _messages(studio_env) == 2
    assert "no heartbeat" in job.error
    # the stale worker wakes up: everything it tries is refused
    assert jobs.heartbeat(job_id, first.attempt) == (False, False)
    assert not jobs.finish(job_id, first.attempt, JobStatus.SUCCEEDED.value)
    assert jobs.claim(job_id, old_token, "w1") is None, "its old message is stale"
    second = jobs.claim(job_id, job.dispatch_token, "w2")
    assert second is not None and second.attempt == 2
    with get_engine().connect() as conn:
        assert not jobs.fence(conn, job_id, first.attempt)
    assert jobs.finish(job_id, second.attempt, JobStatus.SUCCEEDED.value)
    assert _run(run_id).status == "succeeded"


def test_a_job_lost_max_attempts_times_fails(studio_env):
    run_id, job_id, claim = _running(studio_env)  # REMIX_MAX_ATTEMPTS=2
    assert jobs.requeue(job_id, claim.attempt, reason="lost", settings=studio_env) == "requeued"
    claim = jobs.claim(job_id, _job(job_id).dispatch_token, "w2")
    assert jobs.requeue(job_id, claim.attempt, reason="lost again", settings=studio_env) == "failed"
    job = _job(job_id)
    assert (job.status, _run(run_id).status, job.lost_attempts) == ("failed", "failed", 2)
    assert "gave up after 2 lost attempts" in job.error


def test_a_graceful_shutdown_requeues_without_counting_a_lost_attempt(studio_env):
    _, job_id, claim = _running(studio_env)
    for attempt in (1, 2, 3):
        assert jobs.requeue(job_id, attempt, reason="shutdown", lost=False, settings=studio_env) == "requeued"
        claim = jobs.claim(job_id, _job(job_id).dispatch_token, "w")
        assert claim.attempt == attempt + 1
    assert _job(job_id).lost_attempts == 0


def test_requeue_of_a_job_with_a_cancel_request_cancels_it(studio_env):
    run_id, job_id, claim = _running(studio_env)
    with session_scope() as s:
        jobs.request_cancel(s, s.get(Job, job_id))
    assert jobs.requeue(job_id, claim.attempt, reason="lost", settings=studio_env) == "cancelled"
    assert (_job(job_id).status, _run(run_id).status) == ("cancelled", "cancelled")


def test_requeue_of_another_attempt_or_a_finished_job_is_skipped(studio_env):
    _, job_id, claim = _running(studio_env)
    assert jobs.requeue(job_id, claim.attempt + 1, reason="x", settings=studio_env) == "skipped"
    jobs.finish(job_id, claim.attempt, JobStatus.SUCCEEDED.value)
    assert jobs.requeue(job_id, claim.attempt, reason="x", settings=studio_env) == "skipped"


def test_the_reaper_resends_a_dispatch_that_never_went_out(studio_env):
    _, job_id = _new_run(studio_env)  # created, never dispatched (the API died, or the broker was down)
    token = _job(job_id).dispatch_token
    assert jobs.reap(studio_env)["redispatched"] == 0, "too young: its dispatch may still be under way"
    with session_scope() as s:
        s.execute(update(Job).where(Job.id == job_id).values(queued_at=utcnow() - timedelta(hours=1)))
    assert jobs.reap(studio_env)["redispatched"] == 1
    job = _job(job_id)
    assert job.status == "queued" and job.dispatch_token != token and _messages(studio_env) == 1


def _queues_of_messages(settings) -> list[str]:
    """The queue of each message waiting in the filesystem broker (file names end in .<queue>.msg)."""
    return sorted(p.name.split(".")[-2] for p in (settings.broker_folder / "queue").glob("*.msg"))


def test_a_run_goes_to_its_resources_queue_and_is_requeued_there(studio_env):
    cfg = {"preset": "toy", "algorithm": "grpo", "trainer": {"steps": 3}, "resources": {"gpus": 8, "queue": "gpu8"}}
    with session_scope() as s:
        _, job = jobs.create_run_with_job(s, name=None, cfg_dict=cfg, request={}, settings=studio_env)
        job_id = job.id
    assert _job(job_id).queue == "gpu8"
    assert jobs.dispatch(job_id, studio_env)
    assert _queues_of_messages(studio_env) == ["gpu8"]
    claim = jobs.claim(job_id, _job(job_id).dispatch_token, "w1")
    assert jobs.requeue(job_id, claim.attempt, reason="lost", settings=studio_env) == "requeued"
    assert _queues_of_messages(studio_env) == ["gpu8", "gpu8"], "the re-dispatch goes to the same queue"
    # without resources.queue: the default queue (REMIX_GPU_QUEUE)
    _, other = _new_run(studio_env)
    assert jobs.dispatch(other, studio_env)
    assert _job(other).queue == studio_env.gpu_queue == "gpu"
    assert _queues_of_messages(studio_env) == ["gpu", "gpu8", "gpu8"]


def test_a_queued_job_says_why_it_waits(studio_env):
    """The run page's line for a queued run: no worker for its queue, or what the busy worker does."""
    def reason(job_id: int) -> str | None:
        with Session(get_engine()) as s:
            return jobs.waiting_reason(s, s.get(Job, job_id), studio_env)

    first_run, first = _new_run(studio_env)
    assert jobs.dispatch(first, studio_env)
    assert reason(first) == "waiting for a worker: none is online for queue 'gpu'"
    with session_scope() as s:
        s.add(WorkerNode(hostname="w1", queues="gpu,other"))
        s.add(WorkerNode(hostname="stale", queues="gpu", last_seen_at=utcnow() - timedelta(hours=1)))
    assert reason(first) == "queued: a free worker takes it next"
    claim = jobs.claim(first, _job(first).dispatch_token, "w1")
    with session_scope() as s:
        s.execute(update(WorkerNode).where(WorkerNode.hostname == "w1").values(current_job_id=first))
    assert reason(first) is None, "a running job waits for nothing"
    jobs.set_phase(first, claim.attempt, "warm start: step 70 of 700, about 200 s left")
    _, second = _new_run(studio_env)
    _, third = _new_run(studio_env)
    assert reason(second) == (f"waiting: the worker is busy, with run #{first_run} "
                              "(warm start: step 70 of 700, about 200 s left)")
    assert reason(third).endswith("; 1 queued job ahead of it")
    jobs.set_phase(first, claim.attempt, None)
    assert f"run #{first_run} (step 0 of 3)" in reason(second)


# ----------------------------------------------------------------------------------- evaluation jobs
def _new_eval(settings) -> int:
    with session_scope() as s:
        job = jobs.create_eval_job(s, params={"model": "m", "model_path": "/m"}, run_id=None, model="m",
                                   mode="greedy", temperature=0.0, cost_rollouts=None, grader="g",
                                   benchmarks=[("aime24", "aime24", 1), ("/x/b.jsonl", "b", 1)], settings=settings)
        return job.id


def test_an_evaluation_job_is_created_with_one_pending_row_per_benchmark(studio_env):
    job_id = _new_eval(studio_env)
    job = _job(job_id)
    assert (job.kind, job.status, job.run_id) == ("eval", "pending", None)
    with Session(get_engine()) as s:
        rows = s.execute(select(Evaluation).where(Evaluation.job_id == job_id).order_by(Evaluation.id)).scalars().all()
    assert [(e.benchmark, e.status, e.metrics["spec"]) for e in rows] == [("aime24", "pending", "aime24"),
                                                                          ("b", "pending", "/x/b.jsonl")]


def test_an_evaluation_job_runs_through_the_same_machine(studio_env):
    job_id = _new_eval(studio_env)
    assert jobs.dispatch(job_id, studio_env)
    claim = jobs.claim(job_id, _job(job_id).dispatch_token, "w1")
    assert claim.kind == "eval" and claim.run_id is None and claim.params["model_path"] == "/m"
    jobs.start_progress(job_id, 10)
    with get_engine().connect() as conn:
        assert jobs.fence(conn, job_id, claim.attempt, progress_step=4)
        conn.commit()
    assert (_job(job_id).progress_step, _job(job_id).progress_total) == (4, 10)
    assert jobs.finish(job_id, claim.attempt, JobStatus.SUCCEEDED.value)
    assert _job(job_id).status == "succeeded"


def test_cancel_of_a_queued_evaluation_cancels_its_benchmarks(studio_env):
    job_id = _new_eval(studio_env)
    jobs.dispatch(job_id, studio_env)
    with session_scope() as s:
        jobs.request_cancel(s, s.get(Job, job_id))
    with Session(get_engine()) as s:
        statuses = s.execute(select(Evaluation.status).where(Evaluation.job_id == job_id)).scalars().all()
    assert _job(job_id).status == "cancelled" and statuses == ["cancelled", "cancelled"]


def test_the_sqlite_store_is_private_to_its_owner(tmp_path):
    import stat

    from sqlalchemy import text

    from studio.db import make_engine

    path = tmp_path / "data" / "studio.db"
    with make_engine(f"sqlite:///{path}").begin() as conn:
        conn.execute(text("CREATE TABLE t (a INTEGER)"))
        conn.execute(text("INSERT INTO t VALUES (1)"))
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in path.parent.iterdir()}
    assert modes and set(modes.values()) == {0o600}, modes
