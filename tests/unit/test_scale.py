"""The engine at scale: fp32 master weights under bf16 compute, token-budget micro-batches, chunked
log-probs, inference copies and checkpoints (issue: engine at the paper's scale on one GPU)."""

import json
import random

import pytest
import torch
from safetensors.torch import load_file

from remix_engine import algorithms as algo
from remix_engine.config import build_config
from remix_engine.logprobs import forward_response, make_token_batch, token_budget_split
from remix_engine.models import build_toy_model, build_toy_tokenizer
from remix_engine.sinks import JsonlSink, Sink
from remix_engine.trainer import MASTER_WEIGHTS_FILE, Trainer, UpdateBatch, latest_checkpoint, train

NO_WARM = {"warm_start.steps": 0, "data.heldout_size": 4, "rollout.max_new_tokens": 12}


# ------------------------------------------------------------------ micro-batch packing
def test_token_budget_split_covers_every_row_once_within_the_budget():
    rng = random.Random(0)
    prompts = [rng.randint(3, 20) for _ in range(40)]
    responses = [rng.randint(0, 60) for _ in range(40)]
    rows = list(range(40))
    for budget in (1, 50, 200, 1000, 10**6):
        groups = token_budget_split(prompts, responses, rows, budget)
        assert sorted(i for g in groups for i in g) == rows
        for g in groups:
            padded = len(g) * (max(prompts[i] for i in g) + max(max(responses[i] for i in g), 1))
            assert padded <= budget or len(g) == 1, (budget, g)
    assert len(token_budget_split(prompts, responses, rows, 1)) == 40  # every row alone
    assert token_budget_split(prompts, responses, rows, None) == [rows]  # one micro-batch, order kept


# ------------------------------------------------------------------ chunked log-probs
def test_chunked_logprobs_and_entropy_match_full_logits_values_and_gradients():
    tok = build_toy_tokenizer()
    model = build_toy_model(tok, seed=0)
    model.train()
    prompts = [[5, 6, 7, 8], [9, 10], [11, 12, 13]]
    responses = [[20, 21, 22], [23], [24, 25, 26, 27, 28]]
    batch = make_token_batch(prompts, responses, tok.pad_token_id)
    temp = 0.7

    logits = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask,
                   position_ids=batch.position_ids, use_cache=False).logits
    logits = logits[:, batch.prompt_width - 1: batch.prompt_width - 1 + batch.response_ids.shape[1]].float() / temp
    ref_lp = algo.log_probs_from_logits(logits, batch.response_ids)
    ref_ent = algo.entropy_from_logits(logits)
    mask = batch.response_mask
    ((ref_lp * mask).sum() + (ref_ent * mask).sum()).backward()
    ref_grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()

    lp, ent = forward_response(model, batch, temp, with_entropy=True, chunk_tokens=2)  # 5 chunks of logits
    torch.testing.assert_close(lp * mask, ref_lp * mask, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(ent * mask, ref_ent * mask, rtol=1e-5, atol=1e-5)
    assert float((lp.detach() * (1 - mask)).abs().sum()) == 0.0  # padding stays zero
    ((lp * mask).sum() + (ent * mask).sum()).backward()
    for n, p in model.named_parameters():
        torch.testing.assert_close(p.grad, ref_grads[n], rtol=1e-4, atol=1e-5, msg=n)  # summation order


# ------------------------------------------------------------------ one update on a fixed batch
def _trainer(tmp_path, algorithm: str, overrides: dict) -> Trainer:
    cfg = build_config("toy", algorithm, overrides={**NO_WARM, **overrides}, steps=1, seed=0)
    return Trainer(cfg, tmp_path / f"run-{random.random()}", Sink())


def _fixed_batch(trainer: Trainer, rows: int, seed: int = 0) -> UpdateBatch:
    """A batch of `rows` responses of varied lengths with log-probs from the trainer's own policy."""
    rng = random.Random(seed)
    vocab = list(range(4, 60))
    prompts = [[rng.choice(vocab) for _ in range(rng.randint(3, 9))] for _ in range(rows)]
    responses = [[rng.choice(vocab) for _ in range(rng.randint(1, 14))] for _ in range(rows)]
    width = max(len(r) for r in responses)
    mask = torch.zeros(rows, width)
    for i, r in enumerate(responses):
        mask[i, : len(r)] = 1
    old = torch.zeros(rows, width)
    for i, lp in enumerate(trainer._logprobs(trainer.model, prompts, responses)):
        old[i, : len(lp)] = torch.tensor(lp)
    gen = torch.Generator().manual_seed(seed)
    noise = torch.rand(rows, width, generator=gen) * mask
    adv = algo.broadcast_to_tokens(torch.randn(rows, generator=gen), mask)
    values = torch.randn(rows, width, generator=gen) * mask
    return UpdateBatch(prompts, responses, mask, old_lp=old, behavior_lp=old - 0.05 * noise, advantages=adv,
                       anchor_lp=old - 0.1 * noise, precedent_lp=old - 0.02 * noise,
                       old_values=values, returns=values + adv)


def _update_params(tmp_path, algorithm: str, overrides: dict, rows: int = 14) -> dict[str, torch.Tensor]:
    trainer = _trainer(tmp_path, algorithm, overrides)
    try:
        batch = _fixed_batch(trainer, rows)
        trainer._update(batch, lam=0.7, utd=1)
        params = {f"actor.{n}": p.detach().clone() for n, p in trainer.model.named_parameters()}
        if trainer.critic is not None:
            params.update({f"critic.{n}": p.detach().clone() for n, p in trainer.critic.named_parameters()})
        return params
    finally:
        trainer.close()


@pytest.mark.parametrize("algorithm, agg", [
    ("remix-grpo", "token-mean"), ("remix-grpo", "seq-mean-token-mean"), ("remix-grpo", "seq-mean-token-sum"),
    ("remix-ppo", "token-mean"),
])
def test_the_update_does_not_depend_on_the_micro_batch_split(tmp_path, algorithm, agg):
    # 14 responses in mini-batches of 7 (1 prompt x 7 responses, or 7 prompts x 1 for PPO):
    # no budget = 1 micro-batch; 60 tokens = 2 or more; 1 token = 7 (every row alone).
    ppo = algorithm.endswith("ppo")
    base = {"actor.loss_agg": agg, "actor.entropy_coef": 0.01, "actor.lr": 1e-3}
    base.update({"rollout.group_size": 1, "rollout.prompts_per_step": 14, "actor.mini_batch_size": 7,
                 "critic.lr": 1e-3} if ppo else {"rollout.group_size": 7, "actor.mini_batch_size": 1})
    results = {}
    for name, budget in (("one", None), ("two", 60), ("seven", 1)):
        extra = {"actor.max_tokens_per_microbatch": budget}
        if ppo:
            extra["critic.max_tokens_per_microbatch"] = budget
        results[name] = _update_params(tmp_path, algorithm, {**base, **extra})
    reference = results["one"]
    before = _update_params(tmp_path, algorithm, {**base, "actor.lr": 1e-30, "critic.lr": 1e-30} if ppo
                            else {**base, "actor.lr": 1e-30})
    assert any(not torch.allclose(reference[n], before[n]) for n in reference)  # the update did something
    # Compared as updates: Adam's first step is ±lr wherever the gradient is non-zero, so float
    # summation order can flip a few near-zero elements; the update as a whole must agree to 1e-3
    # (normalising each micro-batch by its own token count instead gives differences of ~10%).
    for name in ("two", "seven"):
        for n, p in reference.items():
            want, got = p - before[n], results[name][n] - before[n]
            if want.norm() > 0:
                assert float((got - want).norm() / want.norm()) < 1e-3, (name, n)
            else:
                assert torch.equal(got, want), (name, n)


def test_split_sizes_of_the_micro_batch_test_are_what_it_claims(tmp_path):
    trainer = _trainer(tmp_path, "remix-grpo", {"rollout.group_size": 7, "actor.mini_batch_size": 1})
    try:
        batch = _fixed_batch(trainer, 14)
        p_lens, r_lens = [len(p) for p in batch.prompts], [len(r) for r in batch.responses]
        rows = list(range(7))
        assert len(token_budget_split(p_lens, r_lens, rows, None)) == 1
        assert 2 <= len(token_budget_split(p_lens, r_lens, rows, 60)) < 7
        assert len(token_budget_split(p_lens, r_lens, rows, 1)) == 7
    finally:
        trainer.close()


# ------------------------------------------------------------------ precision
def _saved_toy(tmp_path):
    """The toy model and tokenizer saved as a local checkpoint (loaded like a real model)."""
    tok = build_toy_tokenizer()
    model = build_toy_model(tok, seed=3)
    path = tmp_path / "toy-ckpt"
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path


def test_bf16_setting_keeps_fp32_masters_and_moves_every_matrix_at_lr_1e_6(tmp_path):
    path = _saved_toy(tmp_path)
    common = {"model.name_or_path": str(path), "actor.lr": 1e-6, "rollout.group_size": 4,
              "actor.mini_batch_size": 4, "actor.entropy_coef": 0.001}
    bf16 = _trainer(tmp_path, "remix-grpo", {**common, "model.dtype": "bfloat16", "model.mixed_precision": "bf16"})
    try:
        assert all(p.dtype == torch.float32 for p in bf16.model.parameters())
        assert all(p.dtype == torch.bfloat16 for p in bf16.anchor.module.parameters())
        assert all(p.dtype == torch.bfloat16 for p in bf16.precedent.module.parameters())
        before = {n: p.detach().clone() for n, p in bf16.model.named_parameters()}
        batch = _fixed_batch(bf16, 16)
        bf16._update(batch, lam=0.7, utd=1)
        after = dict(bf16.model.named_parameters())
        matrices = [n for n, p in before.items() if p.dim() >= 2 or "norm" in n]
        assert matrices
        frozen = [n for n in matrices if torch.equal(before[n], after[n].detach())]
        assert frozen == [], f"weights that did not move at lr 1e-6: {frozen}"
        bf16_delta = {n: after[n].detach() - before[n] for n in before}
    finally:
        bf16.close()

    fp32 = _trainer(tmp_path, "remix-grpo", common)
    try:
        fp32._update(batch, lam=0.7, utd=1)
        fp32_delta = torch.cat([(p.detach() - before[n]).flatten() for n, p in fp32.model.named_parameters()])
        ours = torch.cat([bf16_delta[n].flatten() for n, _ in fp32.model.named_parameters()])
        # Adam's first step is about ±lr per element, so bf16 rounding shows up as sign flips where
        # the gradient is near zero (e.g. key biases, whose gradient is noise); the updates as a
        # whole must point the same way.
        cosine = float(torch.nn.functional.cosine_similarity(ours, fp32_delta, dim=0))
        print(f"cosine(bf16 update, fp32 update) = {cosine:.4f}")
        assert cosine > 0.9
    finally:
        fp32.close()


def test_bf16_run_exports_in_bf16_keeps_masters_and_resumes_exactly(tmp_path):
    path = _saved_toy(tmp_path)
    overrides = {**NO_WARM, "model.name_or_path": str(path), "model.dtype": "bfloat16",
                 "model.mixed_precision": "bf16", "rollout.prompts_per_step": 4, "rollout.group_size": 4,
                 "actor.mini_batch_size": 2, "trainer.checkpoint_every": 2, "trainer.eval_every": 2,
                 "actor.lr": 1e-4, "actor.max_tokens_per_microbatch": 200, "remix.reincarnate_at": 3,
                 "remix.schedule.start": 1, "remix.schedule.interval": 1}

    # The straight run writes its checkpoints on the background thread, the interrupted one in
    # place (the CPU default): both must hold the same state.
    straight = tmp_path / "straight"
    train(build_config("toy", "remix-grpo", overrides={**overrides, "trainer.async_checkpoint": True}, steps=4,
                       seed=0), straight, JsonlSink(straight))
    ckpt = latest_checkpoint(straight)
    export = load_file(ckpt / "policy" / "model.safetensors")
    master = load_file(ckpt / MASTER_WEIGHTS_FILE)
    assert {v.dtype for v in export.values()} == {torch.bfloat16}
    assert {v.dtype for v in master.values()} == {torch.float32}
    assert json.loads((ckpt / "policy" / "config.json").read_text())["dtype"] == "bfloat16"

    class StopAfterTwo(JsonlSink):
        def should_stop(self):
            return self.last_step >= 2

        def on_step(self, step, metrics):
            super().on_step(step, metrics)
            self.last_step = step

    cfg = build_config("toy", "remix-grpo", overrides=overrides, steps=4, seed=0)
    half = tmp_path / "half"
    sink = StopAfterTwo(half)
    sink.last_step = 0
    assert train(cfg, half, sink)["steps"] == 2
    train(None, half, JsonlSink(half, resume_step=2), resume=True)

    def rows(out):
        lines = (out / "metrics.jsonl").read_text().splitlines()
        return [{k: v for k, v in json.loads(x).items() if not k.startswith(("timing_s/", "perf/"))} for x in lines]

    assert rows(straight) == rows(half)
    resumed_master = load_file(latest_checkpoint(half) / MASTER_WEIGHTS_FILE)
    for k, v in master.items():
        assert torch.equal(v, resumed_master[k]), k
