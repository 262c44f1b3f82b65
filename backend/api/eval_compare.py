"""GET /api/v1/evaluations/compare?a=ID&b=ID: a paired comparison of two evaluations (issue 18).

For every benchmark both evaluations finished on the same problems: the per-problem table (both
verdicts, both answers, links to both sets of samples), the problems that flipped, exact McNemar on
the single-sample verdicts and a paired bootstrap of avg@k (remix_engine/eval_paired.py).

Not comparable → 422 with a message that says why (different benchmark files, different problem
sets, no benchmark in common); an unknown evaluation → 404. Different decoding protocols (n,
temperature, …) are allowed — comparing two decodings of one checkpoint is a fair question — but
the response lists the differing stamp fields in ``protocol_differences``.

Registered before backend/api/evaluations.py's router, so that ``/evaluations/compare`` is not
taken for ``/evaluations/{eval_id}``.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, HTTPException, Query, status
from sqlalchemy import select
from sqlmodel import Session

from backend.api.deps import API_PREFIX, FullView, SessionDep, SessionReleasingRoute, errors
from backend.api.schemas import public_value
from backend.auth import require_read
from remix_engine.eval_paired import NotComparable, paired_comparison
from remix_engine.eval_protocol import differences
from studio.models import EvalSample, Evaluation, Job, JobKind, JobStatus

router = APIRouter(prefix="/evaluations", tags=["evaluations"], dependencies=[Depends(require_read)],
                   route_class=SessionReleasingRoute)



def _unprocessable(field: str, msg: str) -> HTTPException:
    return HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT,
                         detail=[{"type": "value_error", "loc": ["query", field], "msg": msg, "field": field}])


def _job(session: Session, eval_id: int) -> Job:
    job = session.get(Job, eval_id)
    if job is None or job.kind != JobKind.EVAL.value:
        raise HTTPException(404, detail=f"evaluation {eval_id} not found")
    return job


def _finished(session: Session, job_id: int) -> dict[str, Evaluation]:
    rows = session.execute(select(Evaluation).where(Evaluation.job_id == job_id, Evaluation.status ==
                                                    JobStatus.SUCCEEDED.value).order_by(Evaluation.id)).scalars()
    return {e.benchmark: e for e in rows}


def _sha(ev: Evaluation) -> str | None:
    m = ev.metrics or {}
    return (m.get("protocol") or {}).get("benchmark_sha256") or m.get("sha256")


def _samples(session: Session, evaluation_id: int) -> list[dict[str, Any]]:
    rows = session.execute(select(EvalSample.id, EvalSample.sample_id, EvalSample.sample_index, EvalSample.correct,
                                  EvalSample.extracted).where(EvalSample.evaluation_id == evaluation_id)
                           .order_by(EvalSample.id)).all()
    return [{"id": r.id, "problem_id": r.sample_id, "sample_index": r.sample_index, "correct": r.correct,
             "extracted": r.extracted} for r in rows]


def _link(job_id: int, benchmark: str, problem_id: str) -> str:
    from urllib.parse import urlencode

    return f"{API_PREFIX}/evaluations/{job_id}/samples?" + urlencode({"benchmark": benchmark, "sample_id": problem_id})


def _who(job: Job, full: bool) -> dict[str, Any]:
    p = job.params or {}
    return {"id": job.id, "name": public_value(p.get("name") or p.get("model") or "", full),
            "mode_label": p.get("mode_label"), "run_id": p.get("run_id"), "step": p.get("step")}


@router.get("/compare", summary="Paired comparison of two evaluations on the same problems (flips, McNemar, "
                                 "paired bootstrap)",
            responses=errors(404, (422, "not comparable: no benchmark in common, different benchmark files or "
                                        "problem sets (`detail[].msg` says which)")))
def compare_evaluations(session: SessionDep, full: FullView,
                        a: int = Query(..., ge=1, description="evaluation id (its job id): the baseline"),
                        b: int = Query(..., ge=1, description="evaluation id: the candidate (flips are A → B)"),
                        benchmark: str | None = Query(None, max_length=128,
                                                      description="only this benchmark (default: all in common)"),
                        ) -> dict[str, Any]:
    if a == b:
        raise _unprocessable("b", f"a and b are the same evaluation ({a}); pick two")
    job_a, job_b = _job(session, a), _job(session, b)
    fin_a, fin_b = _finished(session, a), _finished(session, b)
    if benchmark is not None:
        missing = [side for side, fin in (("A", fin_a), ("B", fin_b)) if benchmark not in fin]
        if missing:
            raise _unprocessable("benchmark", f"benchmark {benchmark!r} has no finished result in evaluation "
                                              f"{' and '.join(missing)} (A={a}, B={b})")
        names = [benchmark]
    else:
        names = [n for n in fin_a if n in fin_b]
        if not names:
            raise _unprocessable("b", f"not comparable: no benchmark finished in both evaluations (A={a}: "
                                      f"{sorted(fin_a) or 'none'}; B={b}: {sorted(fin_b) or 'none'})")
    out = []
    for name in names:
        ea, eb = fin_a[name], fin_b[name]
        if _sha(ea) and _sha(eb) and _sha(ea) != _sha(eb):
            raise _unprocessable("b", f"not comparable: {name} was evaluated on different benchmark files "
                                      f"(sha256 {_sha(ea)} vs {_sha(eb)})")
        try:
            res = paired_comparison(_samples(session, ea.id), _samples(session, eb.id))
        except NotComparable as exc:
            raise _unprocessable("b", f"not comparable on {name}: {exc}") from None
        for p in res["problems"]:
            p["a"]["link"] = _link(a, name, p["problem_id"])
            p["b"]["link"] = _link(b, name, p["problem_id"])
        pa, pb = (ea.metrics or {}).get("protocol"), (eb.metrics or {}).get("protocol")
        out.append({"benchmark": name, "evaluation_a": ea.id, "evaluation_b": eb.id, "protocol_a": pa,
                    "protocol_b": pb, "protocol_differences": differences(pa, pb) if pa and pb else
                    ["protocol not stamped on " + ("both" if not pa and not pb else "A" if not pa else "B")],
                    **res})
    return {"a": _who(job_a, full), "b": _who(job_b, full), "benchmarks": out}
