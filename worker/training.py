"""The training job body: run the engine's trainer with the SQL sink, resuming from the newest
checkpoint that SQL knows about.

Resume: every attempt trains in its own folder, REMIX_RUNS_DIR/<run id>/attempt-NN. Before it
starts, the newest checkpoint recorded in SQL is hard-linked into that folder, so the trainer resumes
from exactly the checkpoint SQL knows about, and every step up to it is already in SQL (the sink
flushes before recording a checkpoint). Checkpoints written after it (just before a worker died) are
ignored, and a stalled worker of an older attempt can only write into its own folder.
"""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path
from typing import Any

from sqlalchemy import select

from remix_engine.config import RunConfig
from remix_engine.jsonsafe import json_safe
from remix_engine.trainer import STATE_FILE, train
from studio import jobs, paths
from studio.db import session_scope
from studio.models import Checkpoint, JobStatus, Run
from studio.settings import get_settings
from worker.job import JobContext, Outcome, short_error
from worker.ranks import supervise
from worker.sink import SqlSink

log = logging.getLogger("remix.worker")


def _link_tree(src: Path, dst: Path) -> None:
    """Hard-link (copy across filesystems) a checkpoint folder; atomic via a temporary name."""
    tmp = dst.with_name(dst.name + ".linking")
    shutil.rmtree(tmp, ignore_errors=True)
    for path in sorted(src.rglob("*")):
        target = tmp / path.relative_to(src)
        if path.is_dir():
            target.mkdir(parents=True, exist_ok=True)
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(path, target)
        except OSError:
            shutil.copy2(path, target)
    tmp.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(dst, ignore_errors=True)
    tmp.rename(dst)


def prepare_attempt_dir(run_id: int, run_root: Path, attempt: int) -> tuple[Path, int | None]:
    """Each attempt trains in its own folder, <run root>/attempt-NN. The newest checkpoint recorded
    in SQL (whose rows are all in SQL) is linked into it, so the trainer resumes from exactly there;
    a stalled worker of an earlier attempt that wakes up can only write into its own folder.
    Returns (attempt folder, step resumed from or None)."""
    out_dir = run_root / f"attempt-{attempt:02d}"
    ckpt_root = out_dir / "checkpoints"
    with session_scope() as s:
        recorded = s.execute(select(Checkpoint.step, Checkpoint.path).where(Checkpoint.run_id == run_id)
                             .order_by(Checkpoint.step.desc())).all()
    resume: tuple[int, Path] | None = None
    for step, path in recorded:
        src = Path(path)
        if (src / STATE_FILE).is_file():
            resume = (step, src)
            break
    keep: Path | None = None
    if resume is not None:
        step, src = resume
        keep = ckpt_root / src.name
        if src.resolve() != keep.resolve():
            _link_tree(src, keep)
    if ckpt_root.is_dir():  # anything else here is not recorded in SQL (e.g. this attempt number ran before)
        for entry in ckpt_root.iterdir():
            if keep is None or entry.resolve() != keep.resolve():
                log.info("run %s: removing checkpoint %s (not the newest recorded in SQL)", run_id, entry)
                if entry.is_dir():
                    shutil.rmtree(entry, ignore_errors=True)
                else:
                    entry.unlink(missing_ok=True)
    out_dir.mkdir(parents=True, exist_ok=True)
    return out_dir, (resume[0] if resume else None)


def run_training(ctx: JobContext) -> Outcome:
    settings = get_settings()
    claim = ctx.claim
    job_id, attempt, run_id = claim.job_id, claim.attempt, claim.run_id
    with session_scope() as s:
        run = s.get(Run, run_id)
        cfg_dict, run_root = dict(run.config), Path(run.output_dir or settings.runs_path / str(run_id))
        steps_total = run.steps_total

    def progress(step: int, metrics: dict[str, float]) -> None:
        meta = {"job_id": job_id, "run_id": run_id, "attempt": attempt, "step": step, "steps": steps_total}
        for key in ("critic/score/mean", "eval/heldout/pass@1", "cost/rollouts"):
            if key in metrics:
                meta[key] = metrics[key]
        ctx.report_progress(meta)

    sink: SqlSink | None = None
    summary: dict[str, Any] | None = None
    error: str | None = None
    try:
        cfg = RunConfig.model_validate(cfg_dict)
        if refusals := paths.run_config_refusals(cfg):  # again: the policy may have tightened since submission
            raise paths.PolicyError(refusals)
        out_dir, resume_step = prepare_attempt_dir(run_id, run_root, attempt)
        jobs.mark_resumed(job_id, resume_step)
        log.info("job %s attempt %s: run %s %s", job_id, attempt, run_id,
                 f"resuming from step {resume_step}" if resume_step is not None else "starting")
        if cfg.resources.gpus > 1:  # a child process group, see worker/ranks.py
            return supervise(ctx, cfg, out_dir, resume_step, progress)
        sink = SqlSink(run_id, job_id=job_id, attempt=attempt, should_stop=lambda: ctx.heartbeat.should_stop,
                       should_abort=lambda: ctx.heartbeat.cancel_requested or ctx.heartbeat.lost,
                       on_progress=progress, batch_rows=settings.sink_batch_rows)
        summary = train(cfg, out_dir, sink=sink, resume=True)
    except BaseException as exc:  # noqa: BLE001 (recorded in SQL; KeyboardInterrupt/SystemExit re-raised below)
        error = short_error(exc)
        log.exception("job %s attempt %s failed", job_id, attempt)
        if not isinstance(exc, Exception):
            raise
    finally:
        if sink is not None:
            try:
                sink.close()
            except Exception:
                log.warning("closing the SQL sink failed", exc_info=True)
        ctx.heartbeat.stop()

    if sink is not None and sink.fenced:
        return Outcome("lost")
    if error is not None:
        return Outcome(JobStatus.FAILED.value, error=error)
    assert summary is not None
    if summary.get("status") == "cancelled":  # the trainer stopped early: cancel or worker shutdown
        return Outcome(ctx.stopped_status(), summary=json_safe(summary))
    return Outcome(JobStatus.SUCCEEDED.value, summary=json_safe(summary),
                   result={"steps": summary.get("steps"), "cost/rollouts": summary.get("cost/rollouts")})
