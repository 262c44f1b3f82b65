"""Training jobs with `resources.gpus > 1`: one supervised child process group per attempt.

The worker's task (the *supervisor*, `supervise`) keeps the job's heartbeat as for any job and
launches `python -m torch.distributed.run --nproc-per-node N -m worker.ranks ...`
(remix_engine.distributed.launch_command) in a session of its own. Every rank (`main`) calls
`remix_engine.trainer.train(cfg, attempt folder, sink, resume=True)` with the same config and the
attempt folder prepared by worker/training.py (so all ranks resume from the checkpoint recorded in
SQL). Rank 0 writes the events to SQL through the fenced SqlSink of this job and attempt; the other
ranks get a plain Sink: the engine emits events and reads `should_stop` on rank 0 only and
broadcasts the decision, so every rank stops (and checkpoints) at the same step.

Files in <attempt folder>/ranks/ connect the two sides (written atomically):

    config.json    supervisor → ranks: the run config
    stop           supervisor → rank 0: cancel requested, worker shutting down or job lost; rank 0's
                   should_stop reads it before every step
    progress.json  rank 0 → supervisor: step and metrics of the newest step committed to SQL,
                   relayed as the task's Celery PROGRESS state
    result.json    rank 0 → supervisor: the trainer's summary, or its error; whether the sink was fenced

Logs: the ranks and the launcher inherit the worker's stdout/stderr, so their lines land in the
worker's log like the in-process trainer's, prefixed with the rank.

Failure: when a rank dies, torch.distributed.run stops the others and exits non-zero; the supervisor
SIGKILLs whatever is left of the group and re-queues the job (RETRY), which resumes from the newest
checkpoint recorded in SQL. An attempt that recorded no new checkpoint counts as a lost attempt, so
a job that keeps failing without progress fails after REMIX_MAX_ATTEMPTS with the ranks' error.
No orphans: Linux SIGKILLs the launcher when the worker dies and each rank when the launcher dies
(PR_SET_PDEATHSIG), so `kill -9` of the worker leaves no rank behind.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sqlalchemy import select

from remix_engine.config import RunConfig, config_to_dict
from remix_engine.distributed import env_rank, env_world_size, launch_command
from remix_engine.jsonsafe import json_safe
from remix_engine.sinks import Sink
from remix_engine.trainer import train
from studio.db import session_scope
from studio.models import Job, JobStatus
from studio.processes import die_with_parent
from studio.settings import get_settings
from worker.job import RETRY, JobContext, Outcome, short_error

log = logging.getLogger("remix.worker")

CONTROL_DIR = "ranks"
STOP, PROGRESS, RESULT, CONFIG = "stop", "progress.json", "result.json", "config.json"
POLL_S = 0.2  # how often the supervisor relays stop requests and progress


def _write_json(path: Path, data: Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(json_safe(data)))
    os.replace(tmp, path)


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


# ----------------------------------------------------------------------------------- supervisor
def supervise(ctx: JobContext, cfg: RunConfig, out_dir: Path, resume_step: int | None,
              on_progress: Callable[[int, dict[str, float]], None]) -> Outcome:
    """Run the attempt as a process group of `cfg.resources.gpus` ranks; the job's Outcome."""
    claim = ctx.claim
    control = out_dir / CONTROL_DIR
    shutil.rmtree(control, ignore_errors=True)
    control.mkdir(parents=True)
    _write_json(control / CONFIG, config_to_dict(cfg))
    cmd = launch_command(cfg.resources.gpus, ["-m", __name__, "--run-id", str(claim.run_id), "--job-id",
                                              str(claim.job_id), "--attempt", str(claim.attempt),
                                              "--out-dir", str(out_dir)])
    log.info("job %s attempt %s: %d training processes: %s", claim.job_id, claim.attempt, cfg.resources.gpus,
             " ".join(cmd))
    me = os.getpid()
    # Own session: a terminal's Ctrl-C reaches the worker only, which stops the ranks through the
    # stop file (they checkpoint). PDEATHSIG fires when the *thread* that forked exits: the task's
    # thread lives as long as the worker (solo pool: the main thread).
    proc = subprocess.Popen(cmd, start_new_session=True, preexec_fn=lambda: die_with_parent(signal.SIGKILL, me))  # noqa: PLW1509
    try:
        _watch(proc, ctx, control, on_progress)
    finally:
        _kill_group(proc)
    rc = proc.returncode
    result = _read_json(control / RESULT) or {}
    if result.get("fenced") or ctx.heartbeat.lost:
        return Outcome("lost")
    summary = result.get("summary")
    if rc == 0 and summary is not None:
        if summary.get("status") == "cancelled":  # stopped early: cancel or worker shutdown
            return Outcome(ctx.stopped_status(), summary=summary)
        return Outcome(JobStatus.SUCCEEDED.value, summary=summary,
                       result={"steps": summary.get("steps"), "cost/rollouts": summary.get("cost/rollouts")})
    if ctx.heartbeat.cancel_requested:  # a cancel wins over a crash (a re-queue would cancel it anyway)
        return Outcome(JobStatus.CANCELLED.value, error=result.get("error"))
    progressed = _checkpoint_step(claim.job_id) > (resume_step if resume_step is not None else -1)
    why = f"training processes failed (torch.distributed.run exit {rc})"
    if result.get("error"):  # its first line; the traceback is in the worker's log
        why += f"; rank 0: {result['error'].splitlines()[0][:1000]}"
    log.warning("job %s attempt %s: %s; re-queued to resume from its last checkpoint", claim.job_id, claim.attempt,
                why)
    return Outcome(RETRY, error=why[:4000], lost=not progressed)


def _watch(proc: subprocess.Popen, ctx: JobContext, control: Path,
           on_progress: Callable[[int, dict[str, float]], None]) -> None:
    """Until the launcher exits: relay stop requests and progress. The launcher is left unreaped
    (WNOWAIT) so that its process group id cannot be reused before _kill_group."""
    stop, progress = control / STOP, control / PROGRESS
    seen_ns = 0
    while True:
        exited = os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        if ctx.heartbeat.should_stop and not stop.exists():
            log.info("job %s: asking the training processes to stop (%s)", ctx.claim.job_id,
                     "cancel" if ctx.heartbeat.cancel_requested else "lost" if ctx.heartbeat.lost else "shutdown")
            stop.touch()
        try:
            mtime_ns = progress.stat().st_mtime_ns
        except OSError:
            mtime_ns = seen_ns
        if mtime_ns != seen_ns:
            seen_ns = mtime_ns
            data = _read_json(progress)
            if data is not None:
                on_progress(int(data["step"]), data["metrics"])
        if exited is not None:
            return
        time.sleep(POLL_S)


def _kill_group(proc: subprocess.Popen) -> None:
    """SIGKILL whatever is left of the launcher's process group (ranks, their grader processes)."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    proc.wait()


def _checkpoint_step(job_id: int) -> int:
    with session_scope() as s:
        step = s.execute(select(Job.last_checkpoint_step).where(Job.id == job_id)).scalar_one_or_none()
    return -1 if step is None else int(step)


# ----------------------------------------------------------------------------------- one rank
def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m worker.ranks", description="one rank of a studio training job "
                                "(started by the worker through torch.distributed.run)")
    p.add_argument("--run-id", type=int, required=True)
    p.add_argument("--job-id", type=int, required=True)
    p.add_argument("--attempt", type=int, required=True)
    p.add_argument("--out-dir", type=Path, required=True)
    args = p.parse_args(argv)
    die_with_parent(signal.SIGKILL)  # the launcher died (it was SIGKILLed with the worker): so do we
    rank = env_rank()
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format=f"[%(asctime)s: %(levelname)s/rank {rank}] %(name)s: %(message)s")
    control = args.out_dir / CONTROL_DIR
    cfg = RunConfig.model_validate(json.loads((control / CONFIG).read_text()))
    log.info("rank %d of %d: run %s, job %s attempt %s, in %s", rank, env_world_size(), args.run_id, args.job_id,
             args.attempt, args.out_dir)
    if rank != 0:
        train(cfg, args.out_dir, Sink(), resume=True)
        return 0

    from worker.sink import SqlSink

    def progress(step: int, metrics: dict[str, float]) -> None:
        _write_json(control / PROGRESS, {"step": step, "metrics": metrics})

    stop = control / STOP
    sink = SqlSink(args.run_id, job_id=args.job_id, attempt=args.attempt, should_stop=stop.exists,
                   on_progress=progress, batch_rows=get_settings().sink_batch_rows)
    result: dict[str, Any] = {}
    try:
        result["summary"] = train(cfg, args.out_dir, sink, resume=True)
    except BaseException as exc:
        result["error"] = short_error(exc)
        raise
    finally:
        try:
            sink.close()
        except Exception:
            log.warning("closing the SQL sink failed", exc_info=True)
        result["fenced"] = sink.fenced
        _write_json(control / RESULT, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
