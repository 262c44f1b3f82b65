"""Evaluation jobs and the leaderboard end to end: real API process, real worker, real DB/broker.

train a toy run → POST /evaluations on its checkpoint (all five benchmarks, --limit) → the worker
writes per-benchmark and per-sample rows → the leaderboard shows the measured line (with the run's
cost at that checkpoint) beside the published ones → all four exports download. A toy model that
always answers 7 gives exact scores through REST; cancel and import are checked too.
"""

from __future__ import annotations

import csv
import importlib.util
import io
import json
from pathlib import Path

import pytest
from studio_harness import Deployment, fast_config, wait_for

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
BENCHMARKS = ["aime24", "amc23", "math500", "minerva", "olympiadbench"]


def _helpers():
    spec = importlib.util.spec_from_file_location("_evaluate_helpers", REPO / "tests" / "unit" / "test_evaluate.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _submit(dep: Deployment, body: dict) -> dict:
    r = dep.client.post("/evaluations", json=body, headers=dep.write_headers)
    assert r.status_code == 201, r.text
    return r.json()


def _wait(dep: Deployment, eval_id: int, statuses: tuple[str, ...], timeout: float = 300) -> dict:
    def done() -> dict | None:
        ev = dep.client.get(f"/evaluations/{eval_id}", headers=dep.read_headers).json()  # full error
        if ev["status"] in statuses:
            return ev
        if ev["status"] in ("failed", "succeeded", "cancelled"):
            raise AssertionError(f"evaluation {eval_id} ended {ev['status']}: {ev['error_detail']}\n{dep.logs_tail()}")
        return None

    try:
        return wait_for(done, timeout, what=f"evaluation {eval_id} to reach {statuses}")
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{dep.logs_tail()}") from None


def test_evaluate_a_run_checkpoint_and_see_it_on_the_leaderboard(deployment: Deployment) -> None:
    c = deployment.client
    run = deployment.submit(fast_config(2), name="eval-source")
    run = deployment.wait_status(run["id"], ("succeeded",))
    step = max(ck["step"] for ck in run["checkpoints"])
    ev = _submit(deployment, {"run_id": run["id"], "benchmarks": BENCHMARKS, "limit": 2, "max_new_tokens": 8,
                              "batch_size": 4})
    # a fast worker may have claimed (or even finished) the job before the response was written
    assert ev["step"] == step and ev["status"] in ("pending", "queued", "running", "succeeded")
    assert ev["job"]["kind"] == "eval"
    assert [b["benchmark"] for b in ev["benchmarks"]] == BENCHMARKS
    ev = _wait(deployment, ev["id"], ("succeeded",))
    for b in ev["benchmarks"]:
        assert b["status"] == "succeeded" and b["n_samples"] == 2 and b["pass_at_1"] is not None, b
        assert b["metrics"]["n_problems"] == 2 and b["metrics"]["source"].endswith(f"{b['benchmark']}.jsonl")
    assert ev["average"]["benchmarks_done"] == 5
    assert ev["average"]["pass@1"] == pytest.approx(sum(b["pass_at_1"] for b in ev["benchmarks"]) / 5)
    assert ev["job"]["progress_step"] == ev["job"]["progress_total"] == 10
    samples = c.get(f"/evaluations/{ev['id']}/samples", params={"limit": 100}).json()
    assert samples["count"] == 10 and {s["benchmark"] for s in samples["data"]} == set(BENCHMARKS)
    # prompted the way the run trained (saved with the checkpoint): the toy has no instruction suffix
    assert all(s["prompt"].endswith("\n<think>") and "\\boxed{}" not in s["prompt"] for s in samples["data"])
    # the run is not touched by its evaluation job
    assert deployment.run(run["id"])["status"] == "succeeded"

    cost = c.get(f"/runs/{run['id']}/metrics", params={"keys": "cost/rollouts"}).json()["series"][0]
    expected_cost = int(cost["y"][cost["step"].index(step)])
    assert ev["cost_rollouts"] == expected_cost > 0
    table = c.get("/leaderboard", params={"mode": "greedy"}).json()
    mine = [r for r in table["rows"] if r["evaluation_job_id"] == ev["id"]]
    assert len(mine) == 1 and mine[0]["source"] == "measured" and mine[0]["cost_rollouts"] == expected_cost
    assert mine[0]["run_id"] == run["id"] and mine[0]["checkpoint_step"] == step and mine[0]["method"] == "remix-grpo"
    assert mine[0]["average"] == pytest.approx(100 * ev["average"]["pass@1"])
    assert any(r["source"] == "published" and r["model"] == "ReMix" and r["average"] == 52.10 for r in table["rows"])
    runs_evals = c.get("/evaluations", params={"run_id": run["id"]}).json()
    assert [e["id"] for e in runs_evals["data"]] == [ev["id"]]

    for fmt, media in (("json", "application/json"), ("csv", "text/csv"), ("md", "text/markdown"),
                       ("latex", "application/x-latex")):
        r = c.get("/leaderboard", params={"format": fmt, "mode": "greedy", "download": True})
        assert r.status_code == 200 and r.headers["content-type"].startswith(media), (fmt, r.headers)
        assert "attachment" in r.headers["content-disposition"]
        assert mine[0]["model"].split(" @ ")[0] in r.text and "DeepScaleR" in r.text
    rows = list(csv.DictReader(io.StringIO(c.get("/leaderboard", params={"format": "csv"}).text)))
    measured = next(row for row in rows if row["source"] == "measured" and row["model"] == mine[0]["model"])
    assert float(measured["avg_greedy"]) == mine[0]["average"]
    page = c.get(deployment.base_url + "/leaderboard")
    assert page.status_code == 200 and "leaderboard.js" in page.text


def test_exact_scores_through_rest_and_sample_filters(deployment: Deployment) -> None:
    import torch

    helpers = _helpers()
    root = Path(deployment.env["REMIX_DATA_DIR"]) / "seven"  # the studio reads files inside its data roots only
    root.mkdir(parents=True, exist_ok=True)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the worker shares the cores; more threads only slow both down
    try:
        ckpt = helpers.train_constant_answer_checkpoint(root / "policy")
    finally:
        torch.set_num_threads(threads)
    bench = root / "tiny.jsonl"
    bench.write_text("".join(json.dumps(r) + "\n" for r in [
        {"id": "p1", "problem": "What is 3+4?", "answer": "7"},
        {"id": "p2", "problem": "Simplify $\\frac{14}{2}$.", "answer": "\\frac{14}{2}"},
        {"id": "p3", "problem": "What is 2+6?", "answer": "8"},
        {"id": "p4", "problem": "A prime between 6 and 8?", "answer": "7"}]))
    ev = _submit(deployment, {"model": str(ckpt), "benchmarks": [str(bench)], "max_new_tokens": 12,
                              "name": "always-seven", "size": "toy"})
    ev = _wait(deployment, ev["id"], ("succeeded",))
    (b,) = ev["benchmarks"]
    assert b["benchmark"] == "tiny" and b["pass_at_1"] == 0.5 and b["mathverify"] == 0.75 and b["k"] == 1
    c = deployment.client
    wrong = c.get(f"/evaluations/{ev['id']}/samples", params={"correct": False}).json()
    assert sorted(s["sample_id"] for s in wrong["data"]) == ["p2", "p3"]
    disagree = c.get(f"/evaluations/{ev['id']}/samples", params={"disagree": True}).json()["data"]
    assert [(s["sample_id"], s["extracted"], s["correct"], s["mathverify"]) for s in disagree] == [("p2", "7", False, True)]
    row = next(r for r in c.get("/leaderboard", params={"size": "toy"}).json()["rows"])
    assert row["model"] == "always-seven" and row["scores"] == {"tiny": 50.0} and row["mathverify"] == {"tiny": 75.0}
    assert "tiny" in c.get("/leaderboard", params={"size": "toy"}).json()["benchmarks"]

    sampled = _submit(deployment, {"model": str(ckpt), "benchmarks": [str(bench)], "max_new_tokens": 12,
                                   "mode": "sample", "samples": 2, "mathverify": False, "size": "toy"})
    sampled = _wait(deployment, sampled["id"], ("succeeded",))
    assert sampled["mode_label"] == "t0.1" and sampled["benchmarks"][0]["n_samples"] == 8
    t01 = c.get("/leaderboard", params={"size": "toy", "mode": "t0.1"}).json()["rows"]
    assert [r["evaluation_job_id"] for r in t01] == [sampled["id"]]
    # issue 18: stamps and intervals travel worker -> evaluations -> leaderboard; paired comparison over REST
    m = sampled["benchmarks"][0]["metrics"]
    assert m["protocol"]["n"] == 2 and m["protocol"]["temperature"] == 0.1 and m["protocol"]["n_problems"] == 4
    assert set(m["estimates"]) == {"pass@1", "pass@2", "maj@2", "avg@2"} and len(m["ci95"]) == 2
    assert t01[0]["protocol"]["benchmarks"]["tiny"]["n"] == 2 and t01[0]["ci95"]["tiny"] is not None
    assert t01[0]["protocol_key"].startswith("p-") and t01[0]["rank"] == 1
    cmp = c.get("/evaluations/compare", params={"a": ev["id"], "b": sampled["id"]}).json()
    (pb,) = cmp["benchmarks"]
    assert pb["n_problems"] == 4 and pb["pass_at_1"]["a"] == 0.5 and any(d.startswith("n: 1 vs 2")
                                                                          for d in pb["protocol_differences"])


def test_cancel_and_bad_requests(deployment: Deployment) -> None:
    c, h = deployment.client, deployment.write_headers
    missing = Path(deployment.env["REMIX_DATA_DIR"]) / "no-such-dir-but-queued"  # inside a root: accepted
    big = _submit(deployment, {"model": str(missing), "benchmarks": ["math500"],
                               "max_new_tokens": 64, "batch_size": 2})
    r = c.post(f"/evaluations/{big['id']}/cancel", headers=h)
    assert r.status_code == 202
    ev = _wait(deployment, big["id"], ("cancelled", "failed"), timeout=120)
    assert ev["status"] in ("cancelled", "failed")  # cancelled while queued, or the worker got it first
    assert c.post(f"/evaluations/{big['id']}/cancel", headers=h).status_code == 409

    run = c.get("/runs", params={"status": "succeeded", "limit": 1}).json()["data"]
    if run:  # a running evaluation stops after its current batch
        slow = _submit(deployment, {"run_id": run[0]["id"], "benchmarks": ["olympiadbench"], "max_new_tokens": 64,
                                    "batch_size": 2})
        wait_for(lambda: c.get(f"/evaluations/{slow['id']}").json()["job"]["progress_step"] > 0, 180,
                 what="the evaluation to make progress")
        assert c.post(f"/evaluations/{slow['id']}/cancel", headers=h).status_code == 202
        ev = _wait(deployment, slow["id"], ("cancelled",), timeout=120)
        assert ev["benchmarks"][0]["status"] == "cancelled"
        assert all(r["evaluation_job_id"] != slow["id"] for r in c.get("/leaderboard").json()["rows"])

    def bad(body: dict, field: str) -> None:
        r = c.post("/evaluations", json=body, headers=h)
        assert r.status_code == 422 and field in r.text, r.text

    bad({"benchmarks": ["math500"]}, "model")
    bad({"model": "x", "run_id": 1}, "model")
    bad({"run_id": 999999}, "run_id")
    bad({"model": "x", "benchmarks": ["nosuch"]}, "nosuch")
    bad({"model": str(REPO / "no-such-dir"), "benchmarks": ["math500"]}, "REMIX_DATA_ROOTS")  # outside the roots
    bad({"model": "x", "mode": "greedy", "temperature": 0.5}, "temperature")
    bad({"model": "x", "samples": 4}, "samples")
    bad({"model": "x", "prompt_template": "no slot"}, "prompt_template")
    bad({"model": "x", "mode": "beam"}, "mode")
    assert c.post("/evaluations", json={"model": "x"}).status_code == 401
    assert c.post("/evaluations", json={"model": "x"}, headers=deployment.read_headers).status_code == 403
    assert c.get("/evaluations/999999").status_code == 404


def test_import_published_rows(deployment: Deployment) -> None:
    c, h = deployment.client, deployment.write_headers
    body = "size,model,aime24_greedy,avg_greedy,cost_rollouts\n7B,Imported-Model,12.5,40.25,>2M\n"
    assert c.post("/leaderboard/import", content=body, headers={"content-type": "text/csv"}).status_code == 401
    r = c.post("/leaderboard/import", params={"reference": "Someone et al. 2026, Table 1"}, content=body,
               headers={**h, "content-type": "text/csv"})
    assert r.status_code == 201, r.text
    assert r.json()["models"] == ["Imported-Model"] and r.json()["rows"] == 2
    again = c.post("/leaderboard/import", params={"reference": "Someone et al. 2026, Table 1"}, content=body,
                   headers={**h, "content-type": "text/csv"})
    assert again.json()["replaced_rows"] == 2
    rows = c.get("/leaderboard", params={"size": "7B"}).json()["rows"]
    imp = [r for r in rows if r["model"] == "Imported-Model"]
    assert len(imp) == 1 and imp[0]["source"] == "published" and imp[0]["cost_lower_bound"]
    assert imp[0]["average"] == 40.25 and imp[0]["reference"] == "Someone et al. 2026, Table 1"
    js = {"reference": "J", "rows": [{"size": "7B", "model": "Json-Model", "math500_t0.1": 70, "avg_t0.1": 50}]}
    assert c.post("/leaderboard/import", json=js, headers=h).status_code == 201
    assert any(r["model"] == "Json-Model" for r in c.get("/leaderboard", params={"mode": "t0.1"}).json()["rows"])
    # formula-looking cells: stored as given, exported with a "'" in front, and an exported
    # ("'"-escaped) cell imports back to the original text
    body = 'size,model,aime24_greedy,avg_greedy\n7B,"=HYPERLINK(""http://x"")",1,1\n7B,\'@SUM(1),2,2\n'
    assert c.post("/leaderboard/import", content=body, params={"reference": "formulas"},
                  headers={**h, "content-type": "text/csv"}).status_code == 201
    models = {r["model"] for r in c.get("/leaderboard", params={"size": "7B"}).json()["rows"]}
    assert {'=HYPERLINK("http://x")', "@SUM(1)"} <= models
    exported = list(csv.DictReader(io.StringIO(c.get("/leaderboard", params={"format": "csv"}).text)))
    cells = {row["model"] for row in exported}
    assert {"'=HYPERLINK(\"http://x\")", "'@SUM(1)"} <= cells and not any(m.startswith(("=", "@")) for m in cells)
    r = c.post("/leaderboard/import", content="size,model,aime24_greedy\n7B,X,abc\n",
               headers={**h, "content-type": "text/csv"}, params={"reference": "r"})
    assert r.status_code == 422 and "not a number" in r.text
    assert c.delete("/leaderboard/entries", params={"key": imp[0]["key"]}, headers=h).status_code == 204
    assert all(r["model"] != "Imported-Model" for r in c.get("/leaderboard", params={"size": "7B"}).json()["rows"])
    assert c.delete("/leaderboard/entries", params={"key": imp[0]["key"]}, headers=h).status_code == 404


def test_the_benchmark_list_is_served_for_the_dashboard(deployment: Deployment) -> None:
    # one list (remix_engine/benchmarks.py): the evaluation form's chips and the leaderboard's columns
    served = deployment.client.get("/benchmarks").json()
    assert [b["name"] for b in served] == BENCHMARKS
    table = deployment.client.get("/leaderboard").json()
    assert table["benchmarks"][:5] == BENCHMARKS and [table["labels"][b["name"]] for b in served] == [
        b["label"] for b in served]
