"""A few toy training steps with rollout.backend=vllm, compared with the same run on the hf backend."""

from __future__ import annotations

import json

import pytest
from vllm_testlib import TOY_TRAINING as OVERRIDES

from remix_engine.config import build_config
from remix_engine.data import encode_prompts, render_prompt
from remix_engine.rollout import SamplingParams
from remix_engine.rollout.hf import HFRolloutBackend
from remix_engine.sinks import JsonlSink

pytestmark = pytest.mark.vllm



def _config(backend: str, extra: list[str] | None = None):
    return build_config("toy", "remix-grpo", overrides=[*OVERRIDES, f"rollout.backend={backend}", *(extra or [])],
                        steps=3, seed=0)


def _metrics(run_dir) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Run the same toy config on both backends; keep the vllm trainer open for inspection."""
    pytest.importorskip("vllm")
    from remix_engine.trainer import Trainer, train

    hf_dir = tmp_path_factory.mktemp("hf")
    hf_summary = train(_config("hf"), hf_dir, JsonlSink(hf_dir))
    vllm_dir = tmp_path_factory.mktemp("vllm")
    trainer = Trainer(_config("vllm"), vllm_dir, JsonlSink(vllm_dir))
    try:
        vllm_summary = trainer.run()
        yield {"hf": (hf_summary, hf_dir), "vllm": (vllm_summary, vllm_dir), "trainer": trainer}
    finally:
        trainer.close()


def test_both_backends_complete_the_run(runs):
    for name in ("hf", "vllm"):
        summary, run_dir = runs[name]
        assert summary["status"] == "completed", name
        assert summary["steps"] == 3
        assert [m["step"] for m in _metrics(run_dir)] == [0, 1, 2, 3]
    assert runs["hf"][0]["cost/rollouts"] == runs["vllm"][0]["cost/rollouts"] > 0


def test_initial_greedy_eval_is_identical(runs):
    """Step 0 evaluates the same weights greedily: same tokens, hence the same eval metrics."""
    hf0 = _metrics(runs["hf"][1])[0]
    vllm0 = _metrics(runs["vllm"][1])[0]
    keys = [k for k in hf0 if k.startswith("eval/")]
    assert keys
    for k in keys:
        assert hf0[k] == vllm0[k], k


def test_rollout_corr_and_sync_metrics(runs):
    steps = [m for m in _metrics(runs["vllm"][1]) if m.get("timing_s/gen") is not None]
    assert len(steps) == 3
    for m in steps:
        assert m["rollout_corr/logprob_abs_diff_max"] < 1e-3, m
        assert abs(m["rollout_corr/ratio_mean"] - 1.0) < 1e-3
        assert m["timing_s/sync"] > 0.0


def test_trained_weights_reach_the_engine(runs):
    """After three updates the engine's greedy tokens equal HF generate on the trainer's model."""
    trainer = runs["trainer"]
    cfg = trainer.cfg
    texts = [render_prompt(trainer.tokenizer, p.problem, cfg.data, cfg.model.use_chat_template)
             for p in trainer.heldout[:8]]
    prompts = encode_prompts(trainer.tokenizer, texts, cfg.data.max_prompt_tokens)
    params = SamplingParams(n=1, temperature=0.0, max_new_tokens=cfg.rollout.max_new_tokens)
    ours = trainer.backend.generate(prompts, params)
    ref = HFRolloutBackend(trainer.model, trainer.tokenizer).generate(prompts, params)
    assert ours.response_ids == ref.response_ids
    assert ours.texts == ref.texts


def test_token_lens_records_the_vllm_rollouts(runs):
    """trainer.token_stats_every (1 on the toy) covers the vLLM backend's rollouts too: one record per
    use, the fresh one with the tokens of the generated response and their behaviour log-probs."""
    run_dir = runs["vllm"][1]
    rollouts = {json.loads(x)["uid"]: json.loads(x) for x in (run_dir / "rollouts.jsonl").read_text().splitlines()}
    uses = [json.loads(x) for x in (run_dir / "rollout_uses.jsonl").read_text().splitlines()]
    stats = [json.loads(x) for x in (run_dir / "token_stats.jsonl").read_text().splitlines()]
    assert sorted((t["rollout_uid"], t["step"]) for t in stats) == sorted((u["rollout_uid"], u["step"]) for u in uses)
    fresh = [t for t in stats if t["age"] == 0]
    assert len(fresh) == len(rollouts)
    for t in fresh:
        assert len(t["tokens"]) == len(t["behavior_logprobs"]) == len(t["entropy"]) == rollouts[t["rollout_uid"]]["length"]
