"""Studio runs with `resources.gpus: 2`: the worker trains them in a child process group of two
ranks (worker/ranks.py; gloo on CPU), rank 0 writing to SQL.

Completion (every step and rollout in SQL exactly once), cancel (all ranks stop at one step, with a
checkpoint, and no rank is left behind), and failures: SIGKILL of one rank re-queues the job, which
resumes from its last checkpoint; SIGKILL of the worker itself takes its ranks with it and a standby
worker resumes the job.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest
from studio_harness import Deployment, assert_every_step_once, fast_config, fresh_per_step, wait_for

pytestmark = pytest.mark.integration


def two_process_config(steps: int, **overrides):
    return fast_config(steps, **{"resources.gpus": 2, **overrides})


def rank_processes(run_id: int) -> dict[int, str]:
    """pid → role ('launcher' or 'rank N') of the live processes of this run's process group."""
    found: dict[int, str] = {}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            argv = (proc / "cmdline").read_bytes().split(b"\0")
            if b"worker.ranks" not in argv or b"--run-id" not in argv:
                continue
            if argv[argv.index(b"--run-id") + 1] != str(run_id).encode():
                continue
            if "zombie" in (proc / "status").read_text():
                continue
            if b"torch.distributed.run" in argv:
                found[int(proc.name)] = "launcher"
                continue
            env = dict(e.split(b"=", 1) for e in (proc / "environ").read_bytes().split(b"\0") if b"=" in e)
            found[int(proc.name)] = f"rank {env.get(b'RANK', b'?').decode()}"
        except (OSError, ValueError, IndexError):  # the process ended while we looked
            continue
    return found


def test_two_process_run_trains_to_completion(deployment: Deployment) -> None:
    steps = 4
    cfg = two_process_config(steps)
    created = deployment.submit(cfg, name="two processes")
    assert created["config"]["resources"] == {"gpus": 2, "queue": None}
    run_id = created["id"]
    run = deployment.wait_status(run_id, ("succeeded",))
    assert run["job"]["attempt"] == 1 and run["job"]["lost_attempts"] == 0
    assert run["steps_done"] == steps and run["summary"]["status"] == "completed"
    assert run["rollouts_generated"] == steps * fresh_per_step(cfg)
    assert [ck["step"] for ck in run["checkpoints"]] == [2, 4] and run["checkpoints"][-1]["exists"]
    assert "eval/heldout/pass@1" in run["latest_metrics"]
    assert_every_step_once(deployment, run_id, cfg, steps)
    wait_for(lambda: not rank_processes(run_id), 30, what="the process group to end")
    log = deployment.log("worker-w1.log")
    assert f"job {run['job']['id']} attempt 1: 2 training processes" in log
    assert f"/rank 1] remix.worker: rank 1 of 2: run {run_id}" in log, "the ranks' log lines reach the worker's log"


def test_two_process_run_cancel_stops_every_rank(deployment: Deployment) -> None:
    from celery.result import AsyncResult

    from studio.broker import make_celery_app

    c, h = deployment.client, deployment.write_headers
    run_id = deployment.submit(two_process_config(400, **{"trainer.eval_every": 50, "trainer.checkpoint_every": 50}),
                               name="two processes, cancelled")["id"]
    running = deployment.wait_progress(run_id, lambda r: r["status"] == "running" and r["steps_done"] >= 2,
                                       what="2 steps")
    found = rank_processes(run_id)
    assert sorted(found.values()) == ["launcher", "rank 0", "rank 1"], found
    # the supervisor relays rank 0's progress as the task's Celery PROGRESS state
    result = AsyncResult(running["job"]["celery_task_id"], app=make_celery_app(deployment.settings()))
    progress = wait_for(lambda: result.state == "PROGRESS" and result.info["step"] >= 1 and result.info, 30,
                        what="Celery PROGRESS")
    assert progress["run_id"] == run_id and progress["step"] >= 1 and progress["steps"] == 400
    assert "critic/score/mean" in progress
    assert c.post(f"/runs/{run_id}/cancel", headers=h).status_code == 202
    run = deployment.wait_status(run_id, ("cancelled",), timeout=120)
    assert 2 <= run["steps_done"] < 400
    assert run["job"]["status"] == "cancelled" and run["summary"]["status"] == "cancelled"
    assert run["checkpoints"][-1]["step"] == run["steps_done"] and run["checkpoints"][-1]["exists"]
    wait_for(lambda: not rank_processes(run_id), 30, what="every rank to exit")


def test_sigkill_of_a_rank_resumes_and_a_killed_worker_leaves_no_rank(deployment: Deployment) -> None:
    steps = 15  # room for a checkpoint of the second attempt before the end
    cfg = two_process_config(steps, **{"trainer.checkpoint_every": 3, "trainer.eval_every": 5})
    run_id = deployment.submit(cfg, name="two processes, killed")["id"]
    deployment.wait_progress(run_id, lambda r: (r["job"]["last_checkpoint_step"] or 0) >= 3 and r["steps_done"] >= 4,
                             what="a checkpoint and a few more steps")
    # 1. SIGKILL one rank: the launcher stops the other, the job is re-queued and resumes
    ranks = rank_processes(run_id)
    victim = next(pid for pid, role in ranks.items() if role == "rank 1")
    os.kill(victim, signal.SIGKILL)
    # the claim makes attempt 2 `running`; the worker records where it resumed a moment later
    resumed = deployment.wait_progress(run_id, lambda r: r["job"]["attempt"] == 2 and r["status"] == "running"
                                       and r["job"]["resumed_from_step"] is not None, what="the second attempt's resume")
    wait_for(lambda: not set(ranks) & set(rank_processes(run_id)), 30, what="the first attempt's processes to end")
    assert resumed["job"]["resumed_from_step"] >= 3
    assert "training processes failed (torch.distributed.run exit" in deployment.log("worker-w1.log")
    # 2. SIGKILL the worker itself once the second attempt checkpointed: its ranks die with it
    worker = next(p for p in deployment.workers.values() if p.poll() is None)
    deployment.start_worker("standby")
    first_resume = resumed["job"]["resumed_from_step"]
    deployment.wait_progress(run_id, lambda r: (r["job"]["last_checkpoint_step"] or 0) > first_resume
                             and r["job"]["attempt"] == 2, what="a checkpoint of the second attempt")
    second = rank_processes(run_id)
    assert sorted(second.values()) == ["launcher", "rank 0", "rank 1"], second
    os.kill(worker.pid, signal.SIGKILL)
    worker.wait()
    wait_for(lambda: not set(second) & set(rank_processes(run_id)), 30, what="the ranks to die with their worker")
    run = deployment.wait_status(run_id, ("succeeded",), timeout=400)
    job = run["job"]
    assert job["attempt"] == 3 and job["lost_attempts"] == 1, job  # the rank crash made progress: not counted
    assert job["resumed_from_step"] > first_resume
    assert run["steps_done"] == steps and run["rollouts_generated"] == steps * fresh_per_step(cfg)
    assert run["checkpoints"][-1]["step"] == steps
    assert_every_step_once(deployment, run_id, cfg, steps)
