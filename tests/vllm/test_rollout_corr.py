"""Pure functions of the vllm backend module; these run with or without vLLM installed."""

from __future__ import annotations

import math

import pytest
import torch

from remix_engine.rollout.base import request_seeds
from remix_engine.rollout.vllm_backend import rollout_corr_metrics, vllm_available


def test_identical_logprobs_give_zero_gap():
    lp = [[-0.5, -1.0, -2.0], [-0.1]]
    m = rollout_corr_metrics(lp, [list(r) for r in lp])
    assert m["rollout_corr/logprob_abs_diff_mean"] == 0.0
    assert m["rollout_corr/logprob_abs_diff_max"] == 0.0
    assert m["rollout_corr/ratio_mean"] == 1.0
    assert m["rollout_corr/ratio_min"] == m["rollout_corr/ratio_max"] == 1.0
    assert m["rollout_corr/log_ppl_diff"] == 0.0
    assert m["rollout_corr/kl_k3"] == 0.0
    assert m["rollout_corr/tokens"] == 4.0


def test_hand_computed_values():
    engine = [[-1.0, -2.0], [-0.5]]
    recomputed = [[-1.5, -1.0], [-0.5]]  # d = rec − eng = [-0.5, +1.0], [0]
    m = rollout_corr_metrics(engine, recomputed)
    assert m["rollout_corr/logprob_abs_diff_mean"] == pytest.approx((0.5 + 1.0 + 0.0) / 3)
    assert m["rollout_corr/logprob_abs_diff_max"] == pytest.approx(1.0)
    assert m["rollout_corr/ratio_mean"] == pytest.approx((math.exp(-0.5) + math.exp(1.0) + 1.0) / 3)
    assert m["rollout_corr/ratio_max"] == pytest.approx(math.exp(1.0))
    assert m["rollout_corr/ratio_min"] == pytest.approx(math.exp(-0.5))
    # per-response log-ppl difference (trainer − engine) = −mean_t d: [−0.25, 0] → mean −0.125
    assert m["rollout_corr/log_ppl_diff"] == pytest.approx(-0.125)
    k3 = [math.exp(d) - 1 - d for d in (-0.5, 1.0, 0.0)]
    assert m["rollout_corr/kl_k3"] == pytest.approx(sum(k3) / 3)
    assert m["rollout_corr/tokens"] == 3.0


def test_padded_tensors_with_mask_equal_ragged_lists():
    engine = [[-1.0, -2.0, -0.3], [-0.5]]
    recomputed = [[-1.1, -1.7, -0.4], [-0.9]]
    eng_t = torch.tensor([[-1.0, -2.0, -0.3], [-0.5, 9.0, 9.0]])
    rec_t = torch.tensor([[-1.1, -1.7, -0.4], [-0.9, -7.0, 3.0]])  # padding holds junk
    mask = torch.tensor([[1.0, 1.0, 1.0], [1.0, 0.0, 0.0]])
    a = rollout_corr_metrics(engine, recomputed)
    b = rollout_corr_metrics(eng_t, rec_t, mask)
    assert a.keys() == b.keys()
    for key in a:
        assert a[key] == pytest.approx(b[key], rel=1e-6, abs=1e-7), key


def test_empty_and_mismatched_inputs():
    m = rollout_corr_metrics([[], []], [[], []])
    assert m["rollout_corr/tokens"] == 0.0 and m["rollout_corr/ratio_mean"] == 1.0
    # empty responses do not count in the per-response mean
    m = rollout_corr_metrics([[], [-1.0]], [[], [-2.0]])
    assert m["rollout_corr/log_ppl_diff"] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="row 0"):
        rollout_corr_metrics([[-1.0, -2.0]], [[-1.0]])
    with pytest.raises(ValueError, match="rows"):
        rollout_corr_metrics([[-1.0]], [[-1.0], [-2.0]])
    with pytest.raises(ValueError, match="shape"):
        rollout_corr_metrics(torch.zeros(2, 3), torch.zeros(2, 4))


def test_extreme_gaps_stay_finite():
    m = rollout_corr_metrics([[-100.0]], [[-0.0]])
    assert all(math.isfinite(v) for v in m.values())


def test_request_seeds_are_distinct_per_sample_and_call():
    assert request_seeds(None, 3, 4) == [None, None, None]
    seeds = request_seeds(7, 5, 4)
    per_sample = {s + k for s in seeds for k in range(4)}  # vLLM gives sample k the seed s + k
    assert len(per_sample) == 20
    nxt = request_seeds(8, 5, 4)
    assert per_sample.isdisjoint({s + k for s in nxt for k in range(4)})


@pytest.mark.skipif(vllm_available(), reason="vLLM is installed here")
def test_clear_error_without_vllm():
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from remix_engine.rollout import make_backend

    model = Qwen2ForCausalLM(Qwen2Config(vocab_size=16, hidden_size=64, intermediate_size=64, num_hidden_layers=1,
                                         num_attention_heads=2, num_key_value_heads=1))

    class Tok:
        eos_token_id = 1
        pad_token_id = 0

    with pytest.raises(RuntimeError, match="setup_vllm_env.sh"):
        make_backend("vllm", model, Tok())
