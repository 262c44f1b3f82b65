"""The evaluation job body: run the engine's evaluator on the job's benchmarks and store
per-benchmark `evaluations` rows, per-sample `eval_samples` rows and the measured leaderboard entries.

The API creates the job and its pending `evaluations` rows (studio.jobs.create_eval_job); this body
runs inside the task skeleton of worker/job.py. Benchmarks that already succeeded in an earlier
attempt are kept, the others are (re)done from scratch.
"""

from __future__ import annotations

import logging
from typing import Any

from sqlalchemy import delete, select, update
from sqlmodel import Session

from remix_engine.benchmarks import EvaluationError
from remix_engine.data import load_benchmark
from remix_engine.evaluate import EvalOptions, EvaluationCancelled, Evaluator
from remix_engine.jsonsafe import json_safe
from remix_engine.models import n_parameters
from studio import jobs, paths
from studio.db import get_engine, retrying, session_scope
from studio.leaderboard import measured_entries, size_label, store_entries
from studio.models import EvalSample, Evaluation, Job, JobStatus, LeaderboardEntry, utcnow
from worker.job import INTERRUPTED, JobContext, Outcome

log = logging.getLogger("remix.evaluation")


class _Lost(RuntimeError):
    """The job row is no longer ours (re-queued elsewhere or finished)."""


class SqlEvalSink:
    """Evaluation events -> `eval_samples` rows and job progress, fenced by (job id, attempt)."""

    def __init__(self, engine, ctx: JobContext, evaluation_id: int, progress_base: int):  # noqa: ANN001
        self.engine, self.ctx = engine, ctx
        self.evaluation_id = evaluation_id
        self.progress_base = progress_base
        self.done = 0

    def on_benchmark_start(self, name: str, info: dict[str, Any]) -> None: ...

    def on_samples(self, name: str, rows: list[dict[str, Any]]) -> None:
        claim = self.ctx.claim

        def _write() -> None:
            with Session(self.engine) as s:
                if not jobs.fence(s, claim.job_id, claim.attempt, progress_step=self.progress_base + self.done + len(rows)):
                    s.rollback()
                    raise _Lost(f"job {claim.job_id} attempt {claim.attempt} is no longer running here")
                s.add_all([EvalSample(
                    evaluation_id=self.evaluation_id, sample_id=str(r["problem_id"])[:128],
                    sample_index=int(r["sample_index"]), prompt=r["prompt"], response=r["response"],
                    extracted=r["extracted"], reference=r["reference"], correct=bool(r["correct"]),
                    format_ok=bool(r["format_ok"]), reason=r["reason"], length=int(r["length"]),
                    truncated=bool(r["truncated"]), mathverify=r["mathverify"]) for r in rows])
                s.commit()

        retrying(_write)
        self.done += len(rows)

    def on_benchmark_end(self, name: str, metrics: dict[str, Any]) -> None: ...

    def should_stop(self) -> bool:
        return self.ctx.heartbeat.should_stop


def _set_evals(ids: list[int], **values: Any) -> None:
    if not ids:
        return

    def _set() -> None:
        with session_scope() as s:
            s.execute(update(Evaluation).execution_options(synchronize_session=False)
                      .where(Evaluation.id.in_(ids)).values(**values))

    retrying(_set)


def _options(params: dict[str, Any]) -> EvalOptions:
    return EvalOptions(mode=params.get("mode", "greedy"), temperature=params.get("temperature"),
                       samples=params.get("samples"), top_p=float(params.get("top_p", 1.0)),
                       max_new_tokens=int(params.get("max_new_tokens", 8192)),
                       max_prompt_tokens=params.get("max_prompt_tokens"),
                       prompt_template=params.get("prompt_template"),  # None: as the checkpoint trained
                       use_chat_template=params.get("use_chat_template"),
                       mathverify=bool(params.get("mathverify", True)),
                       batch_size=int(params.get("batch_size", 64)), seed=int(params.get("seed", 0)))


def run_evaluation(ctx: JobContext) -> Outcome:
    job_id = ctx.claim.job_id
    engine = get_engine()
    with session_scope() as s:
        params = dict(s.get(Job, job_id).params or {})
        evals = s.execute(select(Evaluation).where(Evaluation.job_id == job_id).order_by(Evaluation.id)).scalars().all()
        todo = [(ev.id, ev.benchmark, ev.metrics.get("spec", ev.benchmark) if ev.metrics else ev.benchmark)
                for ev in evals if ev.status != JobStatus.SUCCEEDED.value]

    status, error = JobStatus.SUCCEEDED.value, None
    current: list[int] = []
    evaluator = None
    try:
        options = _options(params)
        # checked at submission; again here: the policy may have tightened since
        if refusals := paths.evaluation_refusals(params.get("model_path"), [spec for _, _, spec in todo]):
            raise paths.PolicyError(refusals)
        benches = []
        for eval_id, name, spec in todo:
            bench = load_benchmark(spec, params.get("limit"))
            bench.name = name
            benches.append((eval_id, bench))
        jobs.start_progress(job_id, sum(len(b.problems) * options.k_for(b.name) for _, b in benches))
        evaluator = Evaluator(params["model_path"], options, backend=params.get("backend", "hf"),
                              dtype=params.get("dtype", "float32"), torch_threads=params.get("torch_threads"))
        if not params.get("size"):  # label by parameter count now that the model is loaded
            params["size"] = size_label("", n_parameters(evaluator.model))
            jobs.update_params(job_id, params)
        base = 0
        for index, (eval_id, bench) in enumerate(benches):
            current = [eval_id]

            def _start(eid: int = eval_id) -> None:
                with session_scope() as s:
                    s.execute(delete(EvalSample).where(EvalSample.evaluation_id == eid))
                    s.execute(update(Evaluation).execution_options(synchronize_session=False)
                              .where(Evaluation.id == eid).values(status=JobStatus.RUNNING.value, finished_at=None))

            retrying(_start)
            sink = SqlEvalSink(engine, ctx, eval_id, base)
            m = evaluator.run(bench, index, sink=sink, keep_samples=False).metrics
            _set_evals([eval_id], status=JobStatus.SUCCEEDED.value, n_samples=int(m["n_samples"]), k=int(m["k"]),
                       temperature=float(m["temperature"]), pass_at_1=m["pass@1"], avg_at_k=m["avg@k"],
                       mathverify=m["mathverify"], metrics=json_safe({**m, "spec": bench.source}), finished_at=utcnow())
            base += sink.done
        current = []
    except EvaluationCancelled as exc:
        status, error = ctx.stopped_status(), str(exc)
    except _Lost:
        return Outcome("lost")
    except (EvaluationError, paths.PolicyError) as exc:
        status, error = JobStatus.FAILED.value, str(exc)
    except Exception as exc:  # noqa: BLE001 - recorded on the job
        log.exception("evaluation job %s failed", job_id)
        status, error = JobStatus.FAILED.value, f"{type(exc).__name__}: {exc}"[:4000]
    finally:
        if evaluator is not None:
            evaluator.close()

    if ctx.heartbeat.lost:
        return Outcome("lost")
    if status == INTERRUPTED:  # the benchmark under way is redone by the next attempt
        _set_evals(current, status=JobStatus.PENDING.value)
        return Outcome(INTERRUPTED)
    _record_results(job_id, status)
    return Outcome(status, error=error)


def _record_results(job_id: int, status: str) -> None:
    """Unfinished benchmarks take the job's final status; a succeeded job gets its leaderboard line."""
    with session_scope() as s:
        remaining = [ev.id for ev in s.execute(select(Evaluation).where(
            Evaluation.job_id == job_id, Evaluation.status != JobStatus.SUCCEEDED.value)).scalars()]
    if status != JobStatus.SUCCEEDED.value:
        _set_evals(remaining, status=status, finished_at=utcnow())

    def _entries() -> None:
        with session_scope() as s:
            job = s.get(Job, job_id)
            evs = s.execute(select(Evaluation).where(Evaluation.job_id == job_id).order_by(Evaluation.id)).scalars().all()
            entries = measured_entries(job, list(evs))
            s.execute(delete(LeaderboardEntry).where(LeaderboardEntry.entry_key == f"eval:{job_id}"))
            if entries and status == JobStatus.SUCCEEDED.value:
                store_entries(s, entries)

    retrying(_entries)
