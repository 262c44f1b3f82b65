"""/api/v1/evaluations: benchmark evaluation jobs (a run's checkpoint or a model path/hub id).

An evaluation is one job (its id is the job id) over one or more benchmarks; each benchmark gets an
`evaluations` row with its scores, and every generated response an `eval_samples` row. A finished
evaluation adds a measured line to the leaderboard (studio/leaderboard.py). The job rows are
studio.jobs'; the work happens on a worker (worker/evaluation.py).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from fastapi import APIRouter, Depends, HTTPException, Query, Response, status
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import func, select
from sqlmodel import Session

from backend.api.deps import (
    UNREADABLE_BODY,
    WRITE,
    WRITE_ERRORS,
    FullView,
    SessionDep,
    SessionReleasingRoute,
    errors,
    refused,
)
from backend.api.idempotency import RESPONSES as IDEMPOTENCY_RESPONSES
from backend.api.idempotency import IdempotencyKeyHeader, idempotency_of, submit_once
from backend.api.schemas import ERROR_DETAIL, JobOut, public_error, public_path, public_value
from backend.auth import require_read
from remix_engine.benchmarks import BENCHMARKS, EvaluationError, resolve_benchmark_spec
from remix_engine.reward.grader import GRADER_TAG
from studio import jobs, paths
from studio.leaderboard import size_label
from studio.models import (
    Checkpoint,
    EvalSample,
    Evaluation,
    Job,
    JobKind,
    Run,
    as_utc,
)
from studio.queries import cost_at_step

router = APIRouter(prefix="/evaluations", tags=["evaluations"], dependencies=[Depends(require_read)],
                   route_class=SessionReleasingRoute)


class EvaluationCreate(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"run_id": 1, "step": 100, "benchmarks": ["aime24", "math500"], "mode": "greedy", "limit": 50,
         "max_new_tokens": 8192},
        {"model": "AnitaLeung/Remix-R1-Distilled-Qwen-1.5B", "mode": "sample", "temperature": 0.1, "dtype": "bfloat16"},
    ]})

    name: str | None = Field(None, max_length=200, description="leaderboard name (default: run name @ step, or the model)")
    model: str | None = Field(None, max_length=1000, description="checkpoint directory inside the studio's data roots, or a hub "
                                                                          "id (or give run_id)")
    run_id: int | None = Field(None, description="evaluate a checkpoint of this training run")
    step: int | None = Field(None, ge=0, description="the run's checkpoint step (default: its newest checkpoint)")
    benchmarks: list[str] = Field(default_factory=lambda: list(BENCHMARKS), min_length=1, max_length=20,
                                  description="names (aime24, amc23, math500, minerva, olympiadbench), .jsonl paths "
                                              "inside the studio's data roots, or hf:<dataset id>[:split]")
    mode: Literal["greedy", "sample"] = "greedy"
    temperature: float | None = Field(None, gt=0, le=2, description="sample mode (default 0.1)")
    samples: int | None = Field(None, ge=1, le=256, description="k per problem in sample mode "
                                                                 "(default: 32 for aime24/amc23, else 1)")
    top_p: float = Field(1.0, gt=0, le=1, description="nucleus sampling in sample mode (part of the protocol stamp)")
    max_new_tokens: int = Field(8192, ge=1, le=65536)
    max_prompt_tokens: int | None = Field(None, ge=1)
    limit: int | None = Field(None, ge=1, description="first N problems of each benchmark")
    prompt_template: str | None = Field(None, max_length=4000, description="user turn with {problem} (default: as "
                                        "the checkpoint's run trained; other models: the paper's)")
    use_chat_template: bool | None = Field(None, description="render the turn with the tokenizer's chat template "
                                                              "(default: as the checkpoint's run trained, else true)")
    mathverify: bool = True
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    backend: Literal["hf", "vllm"] = "hf"
    seed: int = 0
    batch_size: int = Field(64, ge=1, le=4096)
    size: str | None = Field(None, max_length=32, description="leaderboard size label, e.g. 1.5B (default: from the name)")


class EvaluationBenchmarkOut(BaseModel):
    id: int
    benchmark: str
    status: str
    n_samples: int
    k: int
    temperature: float
    pass_at_1: float | None = Field(description="fraction (pass@1; avg@k when k > 1)")
    avg_at_k: float | None
    mathverify: float | None = Field(description="math-verify's accuracy on the same samples (second opinion)")
    metrics: dict[str, Any]
    finished_at: str | None


class EvaluationOut(BaseModel):
    id: int = Field(description="the evaluation job's id")
    name: str
    status: str
    model: str
    model_path: str | None
    run_id: int | None
    step: int | None
    mode: str
    mode_label: str
    temperature: float
    cost_rollouts: int | None
    params: dict[str, Any]
    job: JobOut
    benchmarks: list[EvaluationBenchmarkOut]
    average: dict[str, Any]
    error: str | None = Field(description="one line; without a token without absolute paths")
    error_detail: str | None = Field(None, description=ERROR_DETAIL)
    created_at: str | None
    finished_at: str | None


class EvaluationList(BaseModel):
    data: list[EvaluationOut]
    count: int
    limit: int
    offset: int


class EvalSampleOut(BaseModel):
    id: int
    benchmark: str
    sample_id: str
    sample_index: int
    prompt: str
    response: str
    extracted: str | None
    reference: str | None
    correct: bool
    mathverify: bool | None
    format_ok: bool
    reason: str | None
    length: int
    truncated: bool


class EvalSamplePage(BaseModel):
    data: list[EvalSampleOut]
    count: int
    limit: int
    offset: int


def evaluation_summary(evaluations: list[Evaluation]) -> dict[str, Any]:
    """Unweighted averages over the job's finished benchmarks (fractions); ``ci95``: pass@1's 95%
    interval combined from the benchmarks' bootstrap intervals (None without them)."""
    from remix_engine.eval_stats import combine_ci

    done = [e for e in evaluations if e.pass_at_1 is not None]
    mv = [e.mathverify for e in done if e.mathverify is not None]
    cis = [(e.pass_at_1, (e.metrics or {}).get("ci95")) for e in done]
    ci = combine_ci([(v, tuple(c)) if isinstance(c, list) and len(c) == 2 else (v, None) for v, c in cis]) if cis else None
    return {"pass@1": sum(e.pass_at_1 for e in done) / len(done) if done else None,
            "mathverify": sum(mv) / len(mv) if done and len(mv) == len(done) else None,
            "ci95": list(ci) if ci else None,
            "benchmarks_done": len(done), "benchmarks": len(evaluations)}


def iso(value: datetime | None) -> str | None:
    v = as_utc(value)
    return v.isoformat() if v else None


def _unprocessable(field: str, msg: str) -> HTTPException:
    return HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT,
                         detail=[{"type": "value_error", "loc": ["body", field], "msg": msg, "field": field}])


def _check_sources(body: EvaluationCreate) -> None:
    """Benchmarks and the model path through the studio's path policy (the worker checks again)."""
    for i, spec in enumerate(body.benchmarks):
        if not spec.strip():
            raise _unprocessable("benchmarks", f"benchmarks[{i}]: empty name")
    if refusals := paths.evaluation_refusals(body.model, body.benchmarks):
        raise refused(refusals, ["body"])
    if len(set(body.benchmarks)) != len(body.benchmarks):
        raise _unprocessable("benchmarks", "benchmarks: a benchmark is listed twice")


def evaluation_out(session: Session, job: Job, full: bool) -> EvaluationOut:
    """`full`: the request has a valid token (absolute paths, worker, full error)."""
    p = job.params or {}
    evs = session.execute(select(Evaluation).where(Evaluation.job_id == job.id).order_by(Evaluation.id)).scalars().all()
    return EvaluationOut(
        id=job.id, name=public_value(p.get("name") or "", full), status=job.status,
        model=public_value(p.get("model") or "", full), model_path=public_path(p.get("model_path"), full),
        run_id=p.get("run_id"), step=p.get("step"), mode=p.get("mode", "greedy"),
        mode_label=p.get("mode_label", "greedy"), temperature=float(p.get("temperature") or 0.0),
        cost_rollouts=p.get("cost_rollouts"), params=public_value(p, full), job=JobOut.of(job, full),
        benchmarks=[EvaluationBenchmarkOut(
            id=e.id, benchmark=e.benchmark, status=e.status, n_samples=e.n_samples, k=e.k, temperature=e.temperature,
            pass_at_1=e.pass_at_1, avg_at_k=e.avg_at_k, mathverify=e.mathverify,
            metrics=public_value(e.metrics or {}, full), finished_at=iso(e.finished_at)) for e in evs],
        average=evaluation_summary(list(evs)), error=public_error(job.error, full),
        error_detail=job.error if full else None, created_at=iso(job.created_at), finished_at=iso(job.finished_at))


def _eval_job_or_404(session: Session, eval_id: int) -> Job:
    job = session.get(Job, eval_id)
    if job is None or job.kind != JobKind.EVAL.value:
        raise HTTPException(404, detail=f"evaluation {eval_id} not found")
    return job


@router.post("", status_code=status.HTTP_201_CREATED, response_model=EvaluationOut,
             dependencies=WRITE, summary="Queue a benchmark evaluation of a checkpoint or model",
             responses={**WRITE_ERRORS, **errors(UNREADABLE_BODY, 413, (422, "invalid request, or a path the studio's policy "
                                                            "refuses; `detail[].field` names it")),
                        **IDEMPOTENCY_RESPONSES})
def create_evaluation(body: EvaluationCreate, session: SessionDep, response: Response,
                      idempotency_key: IdempotencyKeyHeader = None) -> EvaluationOut:
    from remix_engine.evaluate import EvalOptions

    if (body.model is None) == (body.run_id is None):
        raise _unprocessable("model", "give either model (a checkpoint path or hub id) or run_id, not both")
    if body.step is not None and body.run_id is None:
        raise _unprocessable("step", "step selects a checkpoint of run_id")
    try:
        options = EvalOptions(mode=body.mode, temperature=body.temperature, samples=body.samples, top_p=body.top_p,
                              max_new_tokens=body.max_new_tokens, max_prompt_tokens=body.max_prompt_tokens,
                              prompt_template=body.prompt_template,
                              batch_size=body.batch_size)
    except EvaluationError as exc:
        field = str(exc).split(":", 1)[0].strip()
        raise _unprocessable(field if field in EvaluationCreate.model_fields else "mode", str(exc)) from None
    _check_sources(body)
    idem = idempotency_of(idempotency_key, body)

    params: dict[str, Any] = body.model_dump()
    method = ""
    cost = None
    if body.run_id is not None:
        run = session.get(Run, body.run_id)
        if run is None:
            raise _unprocessable("run_id", f"run {body.run_id} not found")
        q = select(Checkpoint).where(Checkpoint.run_id == run.id)
        q = q.where(Checkpoint.step == body.step) if body.step is not None else q.order_by(Checkpoint.step.desc())
        ckpt = session.execute(q.limit(1)).scalar_one_or_none()
        if ckpt is None:
            what = f"no checkpoint at step {body.step}" if body.step is not None else "no checkpoint yet"
            raise _unprocessable("step" if body.step is not None else "run_id", f"run {run.id} has {what}")
        params["step"] = ckpt.step
        params["model_path"] = ckpt.policy_path or f"{ckpt.path}/policy"
        params["model"] = f"{run.name} @ step {ckpt.step}"
        method = run.algorithm
        cost = cost_at_step(session, run.id, ckpt.step)
        if cost is None and ckpt.step == 0:
            cost = 0
    else:
        params["model_path"] = body.model
    name = body.name or paths.scrub(params["model"])  # a leaderboard line is public: no absolute path
    names = []
    for spec in body.benchmarks:
        try:
            base = resolve_benchmark_spec(spec)[0] if spec not in BENCHMARKS else spec
        except EvaluationError:
            base = spec.rsplit("/", 1)[-1].removesuffix(".jsonl")
        short, i = base, 2
        while short in names:
            short, i = f"{base}_{i}", i + 1
        names.append(short)
    params.update(name=name, method=method, cost_rollouts=cost, temperature=options.temperature,
                  mode_label=options.mode_label,
                  size=body.size or size_label(name) or size_label(str(params["model_path"])),
                  grader=GRADER_TAG, benchmark_names=names)

    def create() -> Job:
        job = jobs.create_eval_job(
            session, params=params, run_id=body.run_id, model=name, mode=options.mode,
            temperature=options.temperature, cost_rollouts=cost, grader=GRADER_TAG, idempotency=idem,
            benchmarks=[(spec, short, options.k_for(short)) for spec, short in zip(body.benchmarks, names, strict=True)])
        session.commit()
        return job

    job, created = submit_once(session, idem, JobKind.EVAL, create)
    if created:
        jobs.dispatch(job.id, created=job)
    else:
        response.status_code = status.HTTP_200_OK
    session.expire_all()
    return evaluation_out(session, session.get(Job, job.id), full=True)


@router.get("", response_model=EvaluationList, summary="Evaluations (newest first)")
def list_evaluations(session: SessionDep, full: FullView, run_id: int | None = None,
                     status_: str | None = Query(None, alias="status", description="comma-separated"),
                     limit: int = Query(50, ge=1, le=500), offset: int = Query(0, ge=0)) -> EvaluationList:
    cond = [Job.kind == JobKind.EVAL.value]
    if status_:
        cond.append(Job.status.in_([s.strip() for s in status_.split(",") if s.strip()]))
    if run_id is not None:
        cond.append(Job.id.in_(select(Evaluation.job_id).where(Evaluation.run_id == run_id)))
    count = session.execute(select(func.count()).select_from(Job).where(*cond)).scalar_one()
    rows = session.execute(select(Job).where(*cond).order_by(Job.id.desc()).limit(limit).offset(offset)).scalars().all()
    return EvaluationList(data=[evaluation_out(session, j, full) for j in rows], count=count, limit=limit, offset=offset)


@router.get("/{eval_id}", response_model=EvaluationOut, summary="One evaluation with per-benchmark results",
            responses=errors(404))
def get_evaluation(eval_id: int, session: SessionDep, full: FullView) -> EvaluationOut:
    return evaluation_out(session, _eval_job_or_404(session, eval_id), full)


@router.get("/{eval_id}/samples", response_model=EvalSamplePage, responses=errors(404),
            summary="Per-sample rows: response, extracted answer, grader and math-verify verdicts")
def list_samples(eval_id: int, session: SessionDep, benchmark: str | None = None,
                 sample_id: str | None = Query(None, max_length=128, description="one problem's samples (its id)"),
                 correct: bool | None = None,
                 disagree: bool = Query(False, description="only samples where math-verify disagrees with the grader"),
                 limit: int = Query(50, ge=1, le=1000), offset: int = Query(0, ge=0)) -> EvalSamplePage:
    _eval_job_or_404(session, eval_id)
    cond = [Evaluation.job_id == eval_id]
    if benchmark:
        cond.append(Evaluation.benchmark == benchmark)
    if sample_id is not None:
        cond.append(EvalSample.sample_id == sample_id)
    if correct is not None:
        cond.append(EvalSample.correct.is_(correct))
    if disagree:
        cond.append(EvalSample.mathverify.is_not(None))
        cond.append(EvalSample.mathverify != EvalSample.correct)
    base = select(EvalSample, Evaluation.benchmark).join(Evaluation, Evaluation.id == EvalSample.evaluation_id).where(*cond)
    count = session.execute(select(func.count()).select_from(base.subquery())).scalar_one()
    rows = session.execute(base.order_by(EvalSample.id).limit(limit).offset(offset)).all()
    return EvalSamplePage(data=[EvalSampleOut(
        id=s.id, benchmark=b, sample_id=s.sample_id, sample_index=s.sample_index, prompt=s.prompt, response=s.response,
        extracted=s.extracted, reference=s.reference, correct=s.correct, mathverify=s.mathverify,
        format_ok=s.format_ok, reason=s.reason, length=s.length, truncated=s.truncated) for s, b in rows],
        count=count, limit=limit, offset=offset)


@router.post("/{eval_id}/cancel", status_code=status.HTTP_202_ACCEPTED, response_model=EvaluationOut,
             dependencies=WRITE, responses={**WRITE_ERRORS, **errors(404, (409, "the evaluation has already finished"))},
             summary="Cancel: a queued evaluation ends now; a running one stops after its current batch")
def cancel_evaluation(eval_id: int, session: SessionDep) -> EvaluationOut:
    job = _eval_job_or_404(session, eval_id)
    try:
        jobs.request_cancel(session, job)
    except jobs.TransitionError:
        raise HTTPException(status.HTTP_409_CONFLICT, detail=f"evaluation {eval_id} is {job.status}") from None
    session.commit()
    session.expire_all()
    return evaluation_out(session, session.get(Job, eval_id), full=True)
