"""Benchmark evaluation (remix_engine.evaluate) end to end on real toy checkpoints.

Two checkpoints: the toy trainer's own (a 2-step run, written by `remix train`) and a toy model
fine-tuned here for a few seconds to answer every prompt with ``</think> \\boxed{7}``, so that the
grader, math-verify, pass@1/avg@k/pass@k and the average can be checked against exact numbers.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from remix_engine.benchmarks import BENCHMARKS, EvaluationError, resolve_benchmark_spec
from remix_engine.evaluate import (
    EvalOptions,
    evaluate,
    evaluate_policy,
    load_eval_model,
    resolve_model_path,
)
from remix_engine.models import build_toy_model, build_toy_tokenizer
from remix_engine.prompts import DEFAULT_TEMPLATE, fill_template, render_user_turn
from remix_engine.reward.mathverify import mathverify_available
from remix_engine.reward.pool import GraderPool
from remix_engine.rollout import make_backend

REPO = Path(__file__).resolve().parents[2]
SHARED_BENCHMARKS = REPO.parent / "shared" / "data" / "benchmarks"
ANSWER = "</think> \\boxed{7}"


def train_constant_answer_checkpoint(out: Path, steps: int = 40) -> Path:
    """A toy model taught to reply ANSWER to any prompt (real weights, saved like the trainer does)."""
    torch.manual_seed(0)
    tok = build_toy_tokenizer()
    model = build_toy_model(tok, seed=0)
    texts = [json.loads(line)["problem"] for name in ("aime24", "math500")
             for line in (SHARED_BENCHMARKS / f"{name}.jsonl").read_text().splitlines()[:12]]
    texts += ["Compute 12+7-3.", "x", "What is $2^{10}$?", "Find all real roots."]
    target = tok(ANSWER, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    gen = torch.Generator().manual_seed(0)
    for _ in range(steps):
        idx = torch.randint(len(texts), (8,), generator=gen).tolist()
        rows = []
        for i in idx:
            prompt = render_user_turn(tok, fill_template(DEFAULT_TEMPLATE, texts[i]), True)
            ids = tok(prompt, add_special_tokens=False, verbose=False)["input_ids"][-120:]
            rows.append((ids, target))
        width = max(len(p) + len(t) for p, t in rows)
        inp = torch.full((len(rows), width), tok.pad_token_id)
        att = torch.zeros((len(rows), width), dtype=torch.long)
        labels = torch.full((len(rows), width), -100)
        for r, (p, t) in enumerate(rows):
            seq = p + t
            inp[r, width - len(seq):] = torch.tensor(seq)
            att[r, width - len(seq):] = 1
            labels[r, width - len(t):] = torch.tensor(t)
        pos = (att.cumsum(-1) - 1).clamp(min=0)
        loss = model(input_ids=inp, attention_mask=att, position_ids=pos, labels=labels).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def seven(tmp_path_factory) -> Path:
    return train_constant_answer_checkpoint(tmp_path_factory.mktemp("seven") / "policy")


@pytest.fixture(scope="module")
def grader():
    with GraderPool(processes=1, timeout_s=20.0) as pool:
        yield pool


@pytest.fixture
def small_bench(tmp_path) -> Path:
    """Four problems: three references equivalent to 7 (one a list, one a fraction), one not."""
    rows = [
        {"id": "p1", "problem": "What is 3+4?", "answer": "7"},
        {"id": "p2", "problem": "Simplify $\\frac{14}{2}$ — café π.", "answer": "\\frac{14}{2}"},
        {"id": "p3", "problem": "What is 2+6?", "answer": "8"},
        {"id": "p4", "problem": "Name a prime between 6 and 8.", "answer": ["7", "seven"]},
    ]
    path = tmp_path / "tiny.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_benchmark_names_resolve_to_files_paths_and_hub_ids(tmp_path, monkeypatch):
    name, src = resolve_benchmark_spec("math500")
    assert name == "math500" and Path(src).name == "math500.jsonl"
    (tmp_path / "mine.jsonl").write_text('{"problem": "1+1?", "answer": "2"}\n')
    monkeypatch.setenv("REMIX_BENCHMARKS_DIR", str(tmp_path))
    assert resolve_benchmark_spec("mine") == ("mine", str((tmp_path / "mine.jsonl").resolve()))
    assert resolve_benchmark_spec(str(tmp_path / "mine.jsonl"))[0] == "mine"
    assert resolve_benchmark_spec("HuggingFaceH4/MATH-500") == ("MATH-500", "hf:HuggingFaceH4/MATH-500:test")
    assert resolve_benchmark_spec("hf:org/set:validation") == ("set", "hf:org/set:validation")
    # the studio sets REMIX_DATA_DIR to its own folder: standard names still resolve
    monkeypatch.setenv("REMIX_DATA_DIR", str(tmp_path / "studio-data"))
    assert Path(resolve_benchmark_spec("aime24")[1]).parent == SHARED_BENCHMARKS.resolve()
    with pytest.raises(EvaluationError, match="nosuch"):
        resolve_benchmark_spec("nosuch")
    with pytest.raises(EvaluationError, match="not found"):
        resolve_benchmark_spec(str(tmp_path / "missing.jsonl"))


def test_options_follow_the_paper_protocol():
    greedy = EvalOptions()
    assert greedy.temperature == 0.0 and greedy.k_for("aime24") == 1 and greedy.mode_label == "greedy"
    sample = EvalOptions(mode="sample")
    assert sample.temperature == 0.1 and sample.mode_label == "t0.1"
    assert [sample.k_for(b) for b in BENCHMARKS] == [32, 32, 1, 1, 1]
    assert EvalOptions(mode="sample", samples=4).k_for("math500") == 4
    assert fill_template(DEFAULT_TEMPLATE, "P") == \
        "P Let's think step by step and output the final answer within \\boxed{}."
    for bad, field in (({"mode": "greedy", "temperature": 0.5}, "temperature"), ({"mode": "sample", "temperature": 0},
                       "temperature"), ({"samples": 4}, "samples"), ({"prompt_template": "no slot"}, "prompt_template"),
                       ({"mode": "beam"}, "mode")):
        with pytest.raises(EvaluationError, match=field):
            EvalOptions(**bad)


def test_model_paths_and_the_toy_tokenizer_round_trip(seven, tmp_path):
    run = tmp_path / "run"
    (run / "checkpoints" / "step_000004").mkdir(parents=True)
    (run / "checkpoints" / "step_000004" / "policy").symlink_to(seven)
    assert resolve_model_path(run) == str(run / "checkpoints" / "step_000004" / "policy")
    assert resolve_model_path(run / "checkpoints" / "step_000004") == str(run / "checkpoints" / "step_000004" / "policy")
    assert resolve_model_path("org/model") == "org/model"
    with pytest.raises(EvaluationError, match="toy run"):
        resolve_model_path("toy")
    with pytest.raises(EvaluationError, match="config.json"):
        resolve_model_path(tmp_path)
    _, tok, _ = load_eval_model(seven)
    text = "What is 3 + 4?\nπ ≤ x"
    ids = tok(text, add_special_tokens=False)["input_ids"]
    assert ids == build_toy_tokenizer()(text, add_special_tokens=False)["input_ids"]  # spaces/newlines kept
    assert ids.count(tok.unk_token_id) == 2  # π and ≤ become <unk>, no crash
    assert tok.padding_side == "left"


def test_greedy_scores_are_exact_and_deterministic(seven, small_bench, grader):
    kwargs = dict(max_new_tokens=12, grader=grader, batch_size=3)
    res = evaluate(seven, [str(small_bench)], **kwargs)
    m = res["benchmarks"]["tiny"]
    assert [s["extracted"] for s in res["samples"]] == ["7"] * 4, [s["response"] for s in res["samples"]]
    # DeepScaleR's rule: an un-reduced fraction reference must be matched exactly, so 7 != 14/2;
    # math-verify (the second opinion) accepts it. The score is the grader's, never math-verify's.
    assert [s["correct"] for s in res["samples"]] == [True, False, False, True]
    assert m["pass@1"] == m["avg@k"] == m["pass@k"] == 0.5 and m["k"] == 1
    assert m["n_problems"] == 4 and m["n_samples"] == 4 and m["format_ok"] == 1.0
    assert res["average"]["pass@1"] == 0.5 and res["grader"] == "deepscaler-v1"
    if mathverify_available():
        assert [s["mathverify"] for s in res["samples"]] == [True, True, False, True]
        assert m["mathverify"] == 0.75 and m["mathverify_agreement"] == 0.75
        assert res["average"]["mathverify"] == 0.75 and res["mathverify_version"] == "0.9.0"
    row = res["samples"][1]
    assert row["reference"] == "\\frac{14}{2}" and row["prompt"].endswith("\\boxed{}.\n<think>")
    assert json.loads(res["samples"][3]["reference"]) == ["7", "seven"]
    again = evaluate(seven, [str(small_bench)], **kwargs)
    assert [s["response"] for s in again["samples"]] == [s["response"] for s in res["samples"]]
    assert again["benchmarks"]["tiny"]["pass@1"] == 0.5


def test_sampling_reports_avg_at_k_and_pass_at_k(seven, small_bench, grader):
    res = evaluate(seven, [str(small_bench)], mode="sample", samples=3, max_new_tokens=12, grader=grader,
                   mathverify=False, seed=5)
    m = res["benchmarks"]["tiny"]
    assert m["k"] == 3 and m["n_samples"] == 12 and res["temperature"] == 0.1
    assert sorted({(s["problem_id"], s["sample_index"]) for s in res["samples"]}) == \
        [(p, i) for p in ("p1", "p2", "p3", "p4") for i in range(3)]
    per_problem = {p: [s["correct"] for s in res["samples"] if s["problem_id"] == p] for p in ("p1", "p2", "p3", "p4")}
    assert m["avg@k"] == pytest.approx(sum(map(sum, per_problem.values())) / 12)
    assert m["pass@k"] == pytest.approx(sum(any(v) for v in per_problem.values()) / 4)
    assert m["mathverify"] is None and res["mode_label"] == "t0.1"
    # error bars: unbiased pass@k for k = 1, 2, 3, maj@3, avg@3, each with a bootstrap interval
    from remix_engine.eval_stats import majority_vote, pass_at_k
    from remix_engine.evaluate import vote_key

    est = m["estimates"]
    assert set(est) == {"pass@1", "pass@2", "pass@3", "maj@3", "avg@3"}
    assert est["pass@2"]["value"] == pytest.approx(sum(pass_at_k(3, sum(v), 2) for v in per_problem.values()) / 4)
    assert est["pass@3"]["value"] == pytest.approx(m["pass@k"]) and est["avg@3"]["value"] == pytest.approx(m["avg@k"])
    votes = {p: [(vote_key(s["extracted"]), s["correct"]) for s in res["samples"] if s["problem_id"] == p]
             for p in per_problem}
    assert est["maj@3"]["value"] == pytest.approx(sum(majority_vote(v) for v in votes.values()) / 4)
    assert all(e["ci95"][0] <= e["value"] <= e["ci95"][1] for e in est.values()) and m["ci95"] == est["pass@1"]["ci95"]
    assert m["protocol"] == {"n": 3, "temperature": 0.1, "top_p": 1.0, "max_new_tokens": 12, "grader": "deepscaler-v1",
                             "require_think": False, "benchmark_sha256": m["sha256"], "n_problems": 4}
    same = evaluate(seven, [str(small_bench)], mode="sample", samples=3, max_new_tokens=12, grader=grader,
                    mathverify=False, seed=5)
    assert [s["response"] for s in same["samples"]] == [s["response"] for s in res["samples"]]


def test_evaluate_policy_gives_flat_metrics_for_the_trainer(seven, small_bench, grader):
    model, tok, _ = load_eval_model(seven)
    backend = make_backend("hf", model, tok)
    out = evaluate_policy(model, tok, backend, grader, [str(small_bench), "aime24"], limit=2, max_new_tokens=12)
    assert out["eval/tiny/pass@1"] == 0.5  # of the first two problems, 7 is right and 14/2 is not (exact fraction)
    assert out["eval/aime24/pass@1"] == 0.0  # 204 and 25 are not 7
    assert out["eval/average/pass@1"] == 0.25
    assert {"eval/tiny/format_ok", "eval/tiny/response_length", "eval/tiny/truncated",
            "timing_s/eval_benchmarks"} <= set(out)


def test_cli_evaluates_a_trainer_checkpoint_on_all_five_benchmarks(tmp_path):
    from remix_engine.config import build_config
    from remix_engine.trainer import train

    run = tmp_path / "run"
    cfg = build_config("toy", "grpo", steps=1, overrides=[
        "warm_start.steps=0", "rollout.prompts_per_step=2", "rollout.group_size=2", "rollout.max_new_tokens=8",
        "data.heldout_size=2", "trainer.torch_threads=1"])
    train(cfg, run)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop("REMIX_DATA_DIR", None)
    out = tmp_path / "eval"
    cmd = [sys.executable, "-m", "remix_engine.cli", "eval", "--model", str(run / "checkpoints" / "step_000001"),
           "--benchmarks", ",".join(BENCHMARKS), "--limit", "2", "--max-tokens", "8", "--threads", "1",
           "--output", str(out)]
    proc = subprocess.run(cmd, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads((out / "results.json").read_text())
    assert list(results["benchmarks"]) == list(BENCHMARKS)
    for name, m in results["benchmarks"].items():
        assert m["n_problems"] == 2 and m["n_samples"] == 2 and 0.0 <= m["pass@1"] <= 1.0, name
        assert len(m["sha256"]) == 16 and m["source"].endswith(f"{name}.jsonl")
    assert results["average"]["pass@1"] == pytest.approx(sum(m["pass@1"] for m in results["benchmarks"].values()) / 5)
    assert results["mode"] == "greedy" and results["limit"] == 2 and "samples" not in results
    rows = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    assert len(rows) == 10 and {r["benchmark"] for r in rows} == set(BENCHMARKS)
    assert any(r["prompt_truncated"] for r in rows)  # long problems do not fit the 256-position toy
    assert "average" in proc.stdout and "deepscaler-v1" in proc.stdout
    from remix_engine.cli import main

    assert main(["eval", "--model", "./nosuch-model-dir", "--output", str(tmp_path / "x")]) == 2
    assert main(["eval", "--model", str(run), "--benchmarks", "nosuch", "--output", str(tmp_path / "x")]) == 2


def test_eval_of_a_checkpoint_prompts_like_its_run_and_agrees_with_training(tmp_path):
    """The toy trains without the paper's instruction; `remix eval` of its checkpoint must render
    prompts the same way (saved with the checkpoint), so both report the same held-out numbers."""
    from remix_engine.config import build_config
    from remix_engine.toy import toy_problems
    from remix_engine.trainer import train

    heldout = tmp_path / "heldout.jsonl"
    heldout.write_text("".join(json.dumps({"problem": p.problem, "answer": p.answer}) + "\n"
                               for p in toy_problems("heldout", 12)))
    cfg = build_config("toy", "grpo", steps=1, overrides=[
        "warm_start.steps=30", "rollout.prompts_per_step=2", "rollout.group_size=2", "rollout.max_new_tokens=24",
        f"data.heldout={heldout}", "data.heldout_size=12"])
    trained = train(cfg, tmp_path / "run")["final_eval"]

    def evaluated(**kw):
        res = evaluate(tmp_path / "run", [str(heldout)], max_new_tokens=24, require_think=cfg.data.require_think,
                       batch_size=12, mathverify=False, **kw)
        return res, next(iter(res["benchmarks"].values()))

    res, m = evaluated()
    assert res["prompt_source"] == "checkpoint" and res["prompt_template"] == "{problem}"
    assert m["pass@1"] == trained["eval/heldout/pass@1"]
    assert m["response_length"] == pytest.approx(trained["eval/heldout/response_length"])
    forced, _ = evaluated(prompt_template=DEFAULT_TEMPLATE)  # the paper's prompt: not what the toy saw
    assert forced["prompt_source"] == "given"
    assert [r["response"] for r in forced["samples"]] != [r["response"] for r in res["samples"]]
