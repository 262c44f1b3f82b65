"""GET /api/v1/evaluations/compare: the paired comparison of two evaluations, and its refusals."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from remix_engine.eval_protocol import stamp


def _evaluation(session, name: str, verdicts: dict[str, list[bool]], sha: str = "abc", temperature: float = 0.0,
                benchmark: str = "toy") -> int:
    from studio.models import EvalSample, Evaluation, Job, JobKind, JobStatus

    job = Job(kind=JobKind.EVAL.value, status=JobStatus.SUCCEEDED.value,
              params={"name": name, "model": name, "mode_label": "greedy" if not temperature else f"t{temperature:g}"})
    session.add(job)
    session.flush()
    k = len(next(iter(verdicts.values())))
    proto = stamp(n=k, temperature=temperature, top_p=1.0, max_new_tokens=32, grader="deepscaler-v1",
                  require_think=False, benchmark_sha256=sha, n_problems=len(verdicts))
    ev = Evaluation(job_id=job.id, benchmark=benchmark, status=JobStatus.SUCCEEDED.value, k=k,
                    pass_at_1=0.3, metrics={"protocol": proto, "sha256": sha, "ci95": [0.1, 0.5]})
    session.add(ev)
    session.flush()
    session.add_all([EvalSample(evaluation_id=ev.id, sample_id=pid, sample_index=i, correct=c,
                                extracted="5" if c else "4", format_ok=True)
                     for pid, vs in verdicts.items() for i, c in enumerate(vs)])
    session.commit()
    return job.id


@pytest.fixture
def client(studio_env):
    from backend.app import create_app

    return TestClient(create_app(studio_env))  # no `with`: no reaper thread


def test_compare_two_evaluations_gives_flips_and_both_tests(client):
    from studio.db import session_scope

    a_v = {f"p{i}": [i < 6] for i in range(20)}
    b_v = {f"p{i}": [i < 5 or 6 <= i < 15] for i in range(20)}
    with session_scope() as s:
        a = _evaluation(s, "toy @ step 3", a_v)
        b = _evaluation(s, "toy @ step 6", b_v)
        other_file = _evaluation(s, "other file", a_v, sha="zzz")
        fewer = _evaluation(s, "fewer problems", {k: v for k, v in a_v.items() if k != "p0"})
        sampled = _evaluation(s, "sampled", {k: v * 2 for k, v in b_v.items()}, temperature=0.6)
        elsewhere = _evaluation(s, "elsewhere", a_v, benchmark="math500")
    r = client.get("/api/v1/evaluations/compare", params={"a": a, "b": b})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["a"]["name"] == "toy @ step 3" and len(body["benchmarks"]) == 1
    bench = body["benchmarks"][0]
    assert bench["flips"] == {"gained": [f"p{i}" for i in range(6, 15)], "lost": ["p5"]}
    assert bench["mcnemar"]["p_value"] == pytest.approx(22 / 1024)
    assert bench["protocol_differences"] == []
    row = next(p for p in bench["problems"] if p["problem_id"] == "p6")
    assert (row["a"]["correct"], row["b"]["correct"], row["flip"]) == (False, True, "gained")
    link = client.get(row["b"]["link"]).json()
    assert link["count"] == 1 and link["data"][0]["sample_id"] == "p6" and link["data"][0]["correct"] is True
    # different decodings of the same problems: compared, with the differences named
    r = client.get("/api/v1/evaluations/compare", params={"a": a, "b": sampled})
    assert r.status_code == 200 and any(d.startswith("n: 1 vs 2") for d in r.json()["benchmarks"][0]["protocol_differences"])
    # refusals
    r = client.get("/api/v1/evaluations/compare", params={"a": a, "b": other_file})
    assert r.status_code == 422 and "different benchmark files" in r.json()["detail"][0]["msg"]
    r = client.get("/api/v1/evaluations/compare", params={"a": a, "b": fewer})
    assert r.status_code == 422 and "different problem sets: 1 problems only in A (p0)" in r.json()["detail"][0]["msg"]
    r = client.get("/api/v1/evaluations/compare", params={"a": a, "b": elsewhere})
    assert r.status_code == 422 and "no benchmark finished in both" in r.json()["detail"][0]["msg"]
    r = client.get("/api/v1/evaluations/compare", params={"a": a, "b": b, "benchmark": "math500"})
    assert r.status_code == 422 and r.json()["detail"][0]["field"] == "benchmark"
    assert client.get("/api/v1/evaluations/compare", params={"a": a, "b": a}).status_code == 422
    r = client.get("/api/v1/evaluations/compare", params={"a": a, "b": 9999})
    assert r.status_code == 404 and r.json()["detail"] == "evaluation 9999 not found"
    # the compare route is not shadowed by /evaluations/{eval_id}, which still works
    one = client.get(f"/api/v1/evaluations/{a}")
    assert one.status_code == 200 and one.json()["average"]["ci95"] == pytest.approx([0.1, 0.5])
