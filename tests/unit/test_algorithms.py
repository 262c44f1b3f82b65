"""Hand-computed checks of the algorithm kernels (remix_engine/algorithms.py).

Expected values are written as numbers, with the arithmetic in a comment next to them.
ln 2 = 0.693147, ln 4 = 1.386294.
"""

from __future__ import annotations

import math

import pytest
import torch

from remix_engine import algorithms as A

F64 = torch.float64


def t(values, dtype=F64):
    return torch.tensor(values, dtype=dtype)


def lg(values):
    """log of a list of probabilities, as float64."""
    return torch.log(t(values))


def close(actual, expected, atol=1e-6):
    if not isinstance(actual, torch.Tensor):
        assert actual == pytest.approx(expected, abs=atol)
        return
    torch.testing.assert_close(actual, t(expected, dtype=actual.dtype), atol=atol, rtol=0)


# ------------------------------------------------------------------------------------------
# masked reductions and aggregation
# ------------------------------------------------------------------------------------------


def test_masked_mean_sum_and_empty_mask():
    x = t([[1.0, 2.0, 99.0], [4.0, 99.0, 99.0]])
    m = t([[1.0, 1.0, 0.0], [1.0, 0.0, 0.0]])
    close(A.masked_sum(x, m), 7.0)  # 1 + 2 + 4
    close(A.masked_mean(x, m), 7.0 / 3.0)  # 7 / 3 valid tokens = 2.333333
    close(A.masked_mean(x, m, dim=-1), [1.5, 4.0])  # (1+2)/2, 4/1
    close(A.masked_mean(x, torch.zeros_like(m)), 0.0)  # empty mask → 0, not NaN


def test_masked_whiten():
    x = t([[1.0, 2.0, 3.0, 100.0]])
    m = t([[1.0, 1.0, 1.0, 0.0]])
    # mean = 2, unbiased var = ((−1)² + 0² + 1²)/(3−1) = 1 → (x − 2)/1; padding → 0
    close(A.masked_whiten(x, m), [[-1.0, 0.0, 1.0, 0.0]], atol=1e-6)
    # shift_mean=False adds the mean back: (x − 2)/1 + 2 = x
    close(A.masked_whiten(x, m, shift_mean=False), [[1.0, 2.0, 3.0, 0.0]], atol=1e-6)


RAGGED_LOSS = t([[1.0, 2.0, 3.0, 4.0], [5.0, 6.0, 100.0, 100.0], [7.0, 7.0, 7.0, 7.0]])
RAGGED_MASK = t([[1.0, 1.0, 1.0, 1.0], [1.0, 1.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]])


def test_agg_modes_on_ragged_mask():
    # token-mean: (1+2+3+4+5+6)/6 = 21/6 = 3.5 (padding and the empty row ignored)
    close(A.agg_loss(RAGGED_LOSS, RAGGED_MASK, "token-mean"), 3.5)
    # seq-mean-token-mean: (10/4 + 11/2) / 2 sequences = (2.5 + 5.5)/2 = 4.0 (empty row not counted)
    close(A.agg_loss(RAGGED_LOSS, RAGGED_MASK, "seq-mean-token-mean"), 4.0)
    # seq-mean-token-sum: (10 + 11) / 2 = 10.5
    close(A.agg_loss(RAGGED_LOSS, RAGGED_MASK, "seq-mean-token-sum"), 10.5)
    # the default mode is token-mean
    close(A.agg_loss(RAGGED_LOSS, RAGGED_MASK), 3.5)
    # global_seq_count: (10 + 11) / 4 = 5.25
    close(A.agg_loss(RAGGED_LOSS, RAGGED_MASK, "seq-mean-token-sum", global_seq_count=4), 5.25)
    with pytest.raises(ValueError, match="aggregation"):
        A.agg_loss(RAGGED_LOSS, RAGGED_MASK, "seq-sum")
    # all-padding batch: zero loss, no NaN
    for mode in A.AGG_MODES:
        close(A.agg_loss(RAGGED_LOSS, torch.zeros_like(RAGGED_MASK), mode), 0.0)
    # a boolean mask is accepted too
    close(A.agg_loss(RAGGED_LOSS, RAGGED_MASK.bool(), "seq-mean-token-mean"), 4.0)


def test_token_mean_with_global_count_sums_to_full_batch():
    full = A.agg_loss(RAGGED_LOSS, RAGGED_MASK, "token-mean")  # 21/6 = 3.5
    n_tokens = int(RAGGED_MASK.sum())  # 6
    mb1 = A.agg_loss(RAGGED_LOSS[:1], RAGGED_MASK[:1], "token-mean", global_token_count=n_tokens)  # 10/6
    mb2 = A.agg_loss(RAGGED_LOSS[1:], RAGGED_MASK[1:], "token-mean", global_token_count=n_tokens)  # 11/6
    close(mb1, 10.0 / 6.0)
    close(mb2, 11.0 / 6.0)
    close(mb1 + mb2, float(full))  # 10/6 + 11/6 = 3.5
    # without the global count each split is its own mean: 10/4 + 11/2 = 8.0 ≠ 3.5
    local = A.agg_loss(RAGGED_LOSS[:1], RAGGED_MASK[:1]) + A.agg_loss(RAGGED_LOSS[1:], RAGGED_MASK[1:])
    close(local, 8.0)


def test_mix_ppg_global_count_split_matches_full_batch_loss_and_grad():
    g = torch.Generator().manual_seed(0)
    old = torch.randn(4, 5, generator=g, dtype=F64) - 1.0
    behavior = old - 0.1 * torch.rand(4, 5, generator=g, dtype=F64)
    theta = (old + 0.3 * torch.randn(4, 5, generator=g, dtype=F64)).requires_grad_(True)
    adv = torch.randn(4, 5, generator=g, dtype=F64)
    mask = t([[1, 1, 1, 1, 1], [1, 1, 0, 0, 0], [1, 1, 1, 0, 0], [1, 0, 0, 0, 0]])
    full, _ = A.mix_ppg_policy_loss(theta, old, behavior, adv, mask)
    (grad_full,) = torch.autograd.grad(full, theta)
    n = int(mask.sum())  # 11 tokens
    parts = [
        A.mix_ppg_policy_loss(theta[s], old[s], behavior[s], adv[s], mask[s], global_token_count=n)[0]
        for s in (slice(0, 2), slice(2, 4))
    ]
    split = parts[0] + parts[1]
    (grad_split,) = torch.autograd.grad(split, theta)
    torch.testing.assert_close(split, full, atol=1e-12, rtol=0)
    torch.testing.assert_close(grad_split, grad_full, atol=1e-12, rtol=0)


# ------------------------------------------------------------------------------------------
# advantages
# ------------------------------------------------------------------------------------------


def test_grpo_advantages_with_zero_variance_and_singleton_groups():
    # groups (interleaved on purpose): "a" = [1, 0, 0], "b" = [1, 1, 1] (zero variance),
    # "c" = [0.5] (size 1), "d" = [1, 0, 1, 0]
    rewards = t([1.0, 1.0, 0.0, 0.5, 1.0, 0.0, 1.0, 1.0, 0.0, 1.0, 0.0], dtype=torch.float32)
    groups = ["a", "b", "a", "c", "b", "a", "b", "d", "d", "d", "d"]
    adv = A.grpo_advantages(rewards, groups)
    assert adv.dtype == torch.float32
    # group a: mean 1/3; deviations 2/3, −1/3, −1/3; Σ² = 4/9 + 1/9 + 1/9 = 2/3;
    #   unbiased var = (2/3)/2 = 1/3, std = 0.5773503
    #   A = (2/3)/(0.5773503 + 1e-6) = 1.1546985,  (−1/3)/(0.5773503 + 1e-6) = −0.5773493
    # group d: mean 1/2; Σ² = 4·0.25 = 1; var = 1/3; std = 0.5773503; A = ±0.5/0.5773513 = ±0.8660239
    a_hi, a_lo, d = 1.1546985, -0.5773493, 0.8660239
    expected = [a_hi, 0.0, a_lo, 0.0, 0.0, a_lo, 0.0, d, -d, d, -d]
    close(adv, expected, atol=1e-6)
    # zero variance and singleton groups are exactly zero
    assert adv[1].item() == 0.0 and adv[4].item() == 0.0 and adv[6].item() == 0.0 and adv[3].item() == 0.0


def test_grpo_zero_variance_is_exact_for_non_representable_rewards():
    # mean of [0.1, 0.1, 0.1] in floating point need not equal 0.1 exactly; the group still gets 0
    adv = A.grpo_advantages(t([0.1, 0.1, 0.1, 0.0, 1.0]), torch.tensor([7, 7, 7, 3, 3]))
    assert adv[:3].tolist() == [0.0, 0.0, 0.0]
    # group 3: mean 0.5, std = sqrt((0.25+0.25)/1) = 0.7071068; A = ±0.5/(0.7071068+1e-6) = ±0.7071058
    close(adv[3:], [-0.7071058, 0.7071058])


def test_drgrpo_and_rloo_advantages():
    rewards = t([1.0, 0.0, 0.0, 1.0, 1.0, 0.3])
    groups = torch.tensor([0, 0, 0, 1, 1, 2])
    # Dr. GRPO: r − mean; group 0 mean 1/3 → [2/3, −1/3, −1/3]; group 1 zero variance → 0; singleton → 0
    close(A.drgrpo_advantages(rewards, groups), [2 / 3, -1 / 3, -1 / 3, 0.0, 0.0, 0.0])
    # RLOO: r_j − mean of the others; group 0: 1 − (0+0)/2 = 1, 0 − (1+0)/2 = −0.5, −0.5
    close(A.rloo_advantages(rewards, groups), [1.0, -0.5, -0.5, 0.0, 0.0, 0.0])
    # group-size check: RLOO = n/(n−1)·(r − mean) = 1.5·(2/3) = 1 ✓ (same numbers)


def test_broadcast_to_tokens():
    out = A.broadcast_to_tokens(t([2.0, -1.0]), t([[1.0, 1.0, 0.0], [1.0, 0.0, 0.0]]))
    close(out, [[2.0, 2.0, 0.0], [-1.0, 0.0, 0.0]])


def test_gae_gamma_lambda_one_equals_outcome_minus_value():
    values = t([[0.2, 0.4, 0.7, 9.0], [0.5, 0.1, 9.0, 9.0]])  # 9.0 = padding garbage
    mask = t([[1.0, 1.0, 1.0, 0.0], [1.0, 1.0, 0.0, 0.0]])
    rewards = t([[0.0, 0.0, 1.0, 0.0], [0.0, 0.0, 0.0, 0.0]])  # R = 1 on row 0's last token, R = 0 on row 1
    adv, ret = A.gae_advantages(rewards, values, mask, gamma=1.0, lam=1.0)
    # A_h = R − V(s_h): row 0 = 1 − [0.2, 0.4, 0.7] = [0.8, 0.6, 0.3]; row 1 = 0 − [0.5, 0.1]
    close(adv, [[0.8, 0.6, 0.3, 0.0], [-0.5, -0.1, 0.0, 0.0]], atol=1e-12)
    # returns = A + V = R on valid tokens, 0 on padding
    close(ret, [[1.0, 1.0, 1.0, 0.0], [0.0, 0.0, 0.0, 0.0]], atol=1e-12)


def test_gae_hand_case_gamma_09_lambda_08():
    values = t([[0.5, 0.6, 0.7, 5.0]])  # last column is padding (must not be bootstrapped from)
    mask = t([[1.0, 1.0, 1.0, 0.0]])
    rewards = t([[0.0, 0.0, 1.0, 0.0]])
    adv, ret = A.gae_advantages(rewards, values, mask, gamma=0.9, lam=0.8)
    # h=2: δ = 1 + 0.9·0 − 0.7 = 0.3;            A2 = 0.3
    # h=1: δ = 0 + 0.9·0.7 − 0.6 = 0.03;         A1 = 0.03 + 0.72·0.3 = 0.246
    # h=0: δ = 0 + 0.9·0.6 − 0.5 = 0.04;         A0 = 0.04 + 0.72·0.246 = 0.21712
    close(adv, [[0.21712, 0.246, 0.3, 0.0]], atol=1e-12)
    # returns = A + V: 0.71712, 0.846, 1.0
    close(ret, [[0.71712, 0.846, 1.0, 0.0]], atol=1e-12)


def test_gae_skips_interior_padding():
    # the middle position is masked out: the scan goes from h=2 straight to h=0
    values = t([[0.5, 123.0, 0.7]])
    mask = t([[1.0, 0.0, 1.0]])
    rewards = t([[0.0, 50.0, 1.0]])
    adv, _ = A.gae_advantages(rewards, values, mask, gamma=0.9, lam=0.8)
    # h=2: A2 = 1 − 0.7 = 0.3; h=0: δ = 0.9·0.7 − 0.5 = 0.13; A0 = 0.13 + 0.72·0.3 = 0.346
    close(adv, [[0.346, 0.0, 0.3]], atol=1e-12)


# ------------------------------------------------------------------------------------------
# KL estimators, λ(t), KL-Convex
# ------------------------------------------------------------------------------------------


def test_kl_estimators_on_known_log_probs():
    logp = lg([0.5, 0.2])
    ref = lg([0.25, 0.4])
    # token 0: logp − ref = ln(0.5/0.25) = ln 2 = 0.693147
    # token 1: logp − ref = ln(0.2/0.4) = −ln 2 = −0.693147
    close(A.kl_penalty(logp, ref, "k1"), [0.6931472, -0.6931472])
    # k2 = 0.5·(ln 2)² = 0.5·0.480453 = 0.2402265 for both
    close(A.kl_penalty(logp, ref, "k2"), [0.2402265, 0.2402265])
    # k3 token 0: exp(−ln 2) − (−ln 2) − 1 = 0.5 + 0.693147 − 1 = 0.1931472
    # k3 token 1: exp(ln 2) − ln 2 − 1 = 2 − 0.693147 − 1 = 0.3068528
    close(A.kl_penalty(logp, ref, "k3"), [0.1931472, 0.3068528])
    with pytest.raises(ValueError, match="KL estimator"):
        A.kl_penalty(logp, ref, "k4")


def test_k3_is_clamped_and_k1_is_not():
    logp = t([0.0, 0.0])
    ref = t([20.0, -30.0])
    # k3: e^20 − 20 − 1 ≈ 4.85e8 → 10;  e^−30 + 30 − 1 ≈ 29 → 10
    close(A.kl_penalty(logp, ref, "k3"), [10.0, 10.0])
    # k1 unclamped: 0 − 20 = −20, 0 + 30 = 30
    close(A.kl_penalty(logp, ref, "k1"), [-20.0, 30.0])


@pytest.mark.parametrize(
    ("step", "expected"),
    [
        (0, 1.0),
        (50, 1.0),  # ceil(0/10) = 0 → 1
        (51, 0.9),  # ceil(1/10) = 1 → 1 − 0.1
        (60, 0.9),  # ceil(10/10) = 1
        (61, 0.8),  # ceil(11/10) = 2 → 1 − 0.2
        (71, 0.7),  # ceil(21/10) = 3 → 1 − 0.3 (naive float gives 0.7000000000000001)
        (81, 0.6),  # ceil(31/10) = 4
        (90, 0.6),
        (91, 0.5),  # ceil(41/10) = 5 → 0.5 = floor
        (500, 0.5),  # 1 − 0.1·45 = −3.5 → floor 0.5
    ],
)
def test_kl_convex_lambda_schedule(step, expected):
    assert A.kl_convex_lambda(step) == expected  # exact, not approximate


def test_kl_convex_lambda_custom_schedule():
    # toy preset: start 20, interval 5: t=25 → ceil(5/5)=1 → 0.9; t=26 → ceil(6/5)=2 → 0.8
    assert A.kl_convex_lambda(25, start=20, interval=5) == 0.9
    assert A.kl_convex_lambda(26, start=20, interval=5) == 0.8
    assert A.kl_convex_lambda(10_000, decay=0.0) == 1.0
    assert A.kl_convex_lambda(100, start=50, interval=10, decay=0.25, floor=0.0) == 0.0  # 1 − 0.25·5 < 0


def test_kl_convex_lambda_one_is_plain_anchor_kl():
    g = torch.Generator().manual_seed(1)
    logp = torch.randn(3, 6, generator=g) - 2.0
    anchor = logp + 0.2 * torch.randn(3, 6, generator=g)
    precedent = logp + 0.5 * torch.randn(3, 6, generator=g)
    mask = (torch.rand(3, 6, generator=g) > 0.3).float()
    for kind in A.KL_KINDS:
        for agg in A.AGG_MODES:
            plain = A.agg_loss(A.kl_penalty(logp, anchor, kind), mask, agg)
            off, m_off = A.kl_convex_loss(logp, anchor, None, 1.0, mask, kind=kind, agg=agg)
            on_prec, _ = A.kl_convex_loss(logp, anchor, precedent, 1.0, mask, kind=kind, agg=agg)
            assert torch.equal(off, plain)
            assert torch.equal(on_prec, plain)
            assert "actor/kl_precedent" not in m_off
            assert m_off["actor/kl_lambda"] == 1.0
            assert m_off["actor/kl_convex"] == m_off["actor/kl_anchor"]
    with pytest.raises(ValueError, match="precedent"):
        A.kl_convex_loss(logp, anchor, None, 0.9, mask)


def test_kl_convex_hand_values():
    logp = lg([0.5, 0.2])
    anchor = lg([0.25, 0.4])
    precedent = lg([0.5, 0.1])
    mask = t([1.0, 1.0])
    # k1: anchor terms [ln 2, −ln 2]; precedent terms [ln(0.5/0.5), ln(0.2/0.1)] = [0, ln 2]
    # λ = 0.75: 0.75·[0.693147, −0.693147] + 0.25·[0, 0.693147] = [0.519860, −0.346574]
    # token-mean = (0.519860 − 0.346574)/2 = 0.0866434
    loss, m = A.kl_convex_loss(logp, anchor, precedent, 0.75, mask, kind="k1")
    close(loss, 0.0866434)
    close(m["actor/kl_anchor"], 0.0)  # (ln 2 − ln 2)/2
    close(m["actor/kl_precedent"], 0.3465736)  # (0 + ln 2)/2
    close(m["actor/kl_convex"], 0.0866434)  # 0.75·0 + 0.25·0.3465736
    assert m["actor/kl_lambda"] == 0.75
    # k3, λ = 0.5: anchor k3 = [0.1931472, 0.3068528] (mean 0.25)
    #   precedent k3: token 0 → 0; token 1: exp(ln 0.1 − ln 0.2) − ln(0.5) − 1 = 0.5 + 0.693147 − 1 = 0.1931472
    #   (mean 0.0965736); combined = 0.5·0.25 + 0.5·0.0965736 = 0.1732868
    loss, m = A.kl_convex_loss(logp, anchor, precedent, 0.5, mask, kind="k3")
    close(loss, 0.1732868)
    close(m["actor/kl_anchor"], 0.25)
    close(m["actor/kl_precedent"], 0.0965736)


# ------------------------------------------------------------------------------------------
# Mix-PPG
# ------------------------------------------------------------------------------------------


def _replayed_tokens():
    """Five replayed tokens: behaviour p = 0.5, π_k p = 0.6 → centre c = 0.6/0.5 = 1.2,
    ε = 0.2 → window [1.0, 1.4]."""
    behavior = lg([0.5] * 5)
    old = lg([0.6] * 5)
    # θ probabilities → r = p_θ/0.5: 0.8→1.6 (above), 0.4→0.8 (below), 0.4→0.8, 0.8→1.6, 0.6→1.2 (inside)
    theta = lg([0.8, 0.4, 0.4, 0.8, 0.6]).requires_grad_(True)
    adv = t([1.0, 1.0, -1.0, -1.0, 2.0])
    return theta, old, behavior, adv, torch.ones(5, dtype=F64)


def test_mix_ppg_replayed_tokens_hand_values():
    theta, old, behavior, adv, mask = _replayed_tokens()
    loss, m = A.mix_ppg_policy_loss(theta, old, behavior, adv, mask, clip_eps_low=0.2)
    # token a: r=1.6 > 1.4, A=+1: max(−1.6, −1.4) = −1.4  (clipped)
    # token b: r=0.8 < 1.0, A=+1: max(−0.8, −1.0) = −0.8  (unclipped: PPO never clips down for A>0)
    # token c: r=0.8 < 1.0, A=−1: max(0.8, 1.0)  = 1.0   (clipped)
    # token d: r=1.6 > 1.4, A=−1: max(1.6, 1.4)  = 1.6   (unclipped)
    # token e: r=1.2 inside, A=+2: −2.4
    # token-mean = (−1.4 − 0.8 + 1.0 + 1.6 − 2.4)/5 = −2.0/5 = −0.4
    close(loss, -0.4)
    close(m["actor/pg_loss"], -0.4)
    close(m["actor/pg_clipfrac"], 0.4)  # tokens a and c: 2/5
    close(m["actor/pg_clipfrac_lower"], 0.0)
    close(m["actor/importance_ratio_mean"], 1.2)  # (1.6+0.8+0.8+1.6+1.2)/5 = 6/5
    close(m["actor/importance_ratio_max"], 1.6)
    # ppo_kl = mean(ln π_k − ln π_θ) = (2·ln(0.6/0.8) + 2·ln(0.6/0.4) + 0)/5
    #        = (2·(−0.2876821) + 2·0.4054651)/5 = 0.0471132
    close(m["actor/ppo_kl"], 0.0471132)


def test_mix_ppg_gradient_zero_when_clipped_nonzero_inside_window():
    theta, old, behavior, adv, mask = _replayed_tokens()
    loss, _ = A.mix_ppg_policy_loss(theta, old, behavior, adv, mask, clip_eps_low=0.2)
    (grad,) = torch.autograd.grad(loss, theta)
    # d/dlogθ of −A·r/5 = −A·r/5 for unclipped tokens, 0 for clipped ones:
    # a: 0 (clipped); b: −1·0.8/5 = −0.16; c: 0 (clipped); d: +1·1.6/5 = 0.32; e: −2·1.2/5 = −0.48
    close(grad, [0.0, -0.16, 0.0, 0.32, -0.48], atol=1e-9)
    assert grad[0].item() == 0.0 and grad[2].item() == 0.0


def test_mix_ppg_window_floor_at_zero_when_centre_below_eps():
    behavior = lg([0.5, 0.5, 0.5])
    old = lg([0.05, 0.05, 0.05])  # c = 0.05/0.5 = 0.1 < ε = 0.2
    center, low, high = A.mix_ppg_clip_window(old, behavior, 0.2)
    close(center, [0.1, 0.1, 0.1])
    close(low, [0.0, 0.0, 0.0])  # max(0.1 − 0.2, 0) = 0, not −0.1
    close(high, [0.3, 0.3, 0.3])  # 0.1 + 0.2
    # θ p: 0.01 → r = 0.02 (inside [0, 0.3]); 0.25 → r = 0.5 (above)
    theta = lg([0.01, 0.25, 0.25]).requires_grad_(True)
    adv = t([-1.0, -1.0, 1.0])
    loss, m = A.mix_ppg_policy_loss(theta, old, behavior, adv, torch.ones(3, dtype=F64), clip_eps_low=0.2)
    # token 0: A=−1, r=0.02 inside: 0.02; token 1: A=−1, r=0.5: max(0.5, 0.3) = 0.5 (unclipped)
    # token 2: A=+1, r=0.5: max(−0.5, −0.3) = −0.3 (clipped)
    # mean = (0.02 + 0.5 − 0.3)/3 = 0.22/3 = 0.0733333
    close(loss, 0.0733333)
    close(m["actor/pg_clipfrac"], 1 / 3)


def test_mix_ppg_fresh_tokens_equal_ppo_clipped_loss():
    g = torch.Generator().manual_seed(2)
    old = -torch.rand(6, 7, generator=g) * 3.0
    theta = (old + 0.4 * torch.randn(6, 7, generator=g)).requires_grad_(True)
    adv = torch.randn(6, 7, generator=g)
    mask = (torch.rand(6, 7, generator=g) > 0.25).float()
    eps = 0.2
    loss, m = A.mix_ppg_policy_loss(theta, old, old.clone(), adv, mask, clip_eps_low=eps)
    # textbook PPO: −min(r·A, clip(r, 1−ε, 1+ε)·A), r = π_θ/π_old, token-mean
    ratio = torch.exp(theta - old)
    ppo_tok = torch.maximum(-adv * ratio, -adv * torch.clamp(ratio, 1 - eps, 1 + eps))
    ppo = (ppo_tok * mask).sum() / mask.sum()
    assert torch.equal(loss, ppo)
    (g1,) = torch.autograd.grad(loss, theta)
    (g2,) = torch.autograd.grad(ppo, theta)
    assert torch.equal(g1, g2)
    assert 0.0 < m["actor/pg_clipfrac"] < 1.0


def test_mix_ppg_clip_higher():
    # fresh tokens (c = 1), ε_low = 0.2, ε_high = 0.28 → window [0.8, 1.28]
    behavior = lg([0.4, 0.4])
    theta = lg([0.5, 0.52])  # r = 1.25 (inside), 1.3 (above)
    adv = t([1.0, 1.0])
    loss, m = A.mix_ppg_policy_loss(theta, behavior, behavior, adv, t([1.0, 1.0]), 0.2, clip_eps_high=0.28)
    # token 0: −1.25; token 1: max(−1.3, −1.28) = −1.28; mean = (−1.25 − 1.28)/2 = −1.265
    close(loss, -1.265)
    close(m["actor/pg_clipfrac"], 0.5)
    # with the symmetric window [0.8, 1.2] both are clipped: (−1.2 − 1.2)/2 = −1.2
    loss_sym, _ = A.mix_ppg_policy_loss(theta, behavior, behavior, adv, t([1.0, 1.0]), 0.2)
    close(loss_sym, -1.2)


def test_mix_ppg_dual_clip():
    # fresh tokens, behaviour p = 0.2, dual clip C = 3
    behavior = lg([0.2, 0.2, 0.2])
    theta = lg([0.8, 0.4, 0.8]).requires_grad_(True)  # r = 4, 2, 4
    adv = t([-1.0, -1.0, 1.0])
    mask = t([1.0, 1.0, 1.0])
    loss, m = A.mix_ppg_policy_loss(theta, behavior, behavior, adv, mask, 0.2, dual_clip_c=3.0)
    # token 0: A=−1, r=4: max(4, 1.2) = 4 → min(4, −A·C = 3) = 3 (dual clip bites)
    # token 1: A=−1, r=2: max(2, 1.2) = 2 → min(2, 3) = 2
    # token 2: A=+1, r=4: max(−4, −1.2) = −1.2 (ordinary clip; dual clip ignores A ≥ 0)
    # mean = (3 + 2 − 1.2)/3 = 3.8/3 = 1.2666667
    close(loss, 1.2666667)
    close(m["actor/pg_clipfrac"], 1 / 3)  # token 2
    close(m["actor/pg_clipfrac_lower"], 1 / 3)  # token 0
    close(m["actor/importance_ratio_max"], 4.0)
    # the capped token has no gradient; token 1 does: d/dlogθ (−A·r)/3 = 2/3
    (grad,) = torch.autograd.grad(loss, theta)
    close(grad, [0.0, 0.6666667, 0.0])
    # without dual clip token 0 stays at 4: (4 + 2 − 1.2)/3 = 1.6
    loss_plain, _ = A.mix_ppg_policy_loss(theta, behavior, behavior, adv, mask, 0.2)
    close(loss_plain, 1.6)
    with pytest.raises(ValueError, match="dual_clip_c"):
        A.mix_ppg_policy_loss(theta, behavior, behavior, adv, mask, 0.2, dual_clip_c=1.0)


def test_per_sample_ratio_stats():
    # row 0: replayed, behaviour 0.5, π_k 0.6 (c = 1.2, window [1.0, 1.4]); θ 0.8, 0.4 → r = 1.6, 0.8
    # row 1: fresh, behaviour = π_k = 0.5; θ 0.5, 0.55 → r = 1.0, 1.1 (window [0.8, 1.2])
    # row 2: no valid tokens
    behavior = lg([[0.5, 0.5, 0.5], [0.5, 0.5, 0.5], [0.5, 0.5, 0.5]])
    old = lg([[0.6, 0.6, 0.6], [0.5, 0.5, 0.5], [0.5, 0.5, 0.5]])
    theta = lg([[0.8, 0.4, 0.9], [0.5, 0.55, 0.1], [0.3, 0.3, 0.3]])
    mask = t([[1.0, 1.0, 0.0], [1.0, 1.0, 0.0], [0.0, 0.0, 0.0]])
    s = A.per_sample_ratio_stats(theta, behavior, old, mask, clip_eps_low=0.2)
    close(s["ratio_mean"], [1.2, 1.05, 0.0])  # (1.6+0.8)/2, (1.0+1.1)/2
    close(s["ratio_max"], [1.6, 1.1, 0.0])
    close(s["clipfrac"], [1.0, 0.0, 0.0])  # 1.6 > 1.4 and 0.8 < 1.0; both fresh ratios inside
    # kl_to_behavior = mean(ln π_b − ln π_θ):
    #   row 0: (ln(0.5/0.8) + ln(0.5/0.4))/2 = (−0.4700036 + 0.2231436)/2 = −0.1234300
    #   row 1: (0 + ln(0.5/0.55))/2 = −0.0953102/2 = −0.0476551
    close(s["kl_to_behavior"], [-0.1234300, -0.0476551, 0.0])
    close(s["center_mean"], [1.2, 1.0, 0.0])


# ------------------------------------------------------------------------------------------
# entropy, value loss, log-probs
# ------------------------------------------------------------------------------------------


def test_entropy_from_logits_hand_values():
    logits = torch.stack(
        [
            torch.zeros(4, dtype=F64),  # uniform over 4: H = ln 4 = 1.3862944
            torch.log(t([0.5, 0.25, 0.25, 1e-300])),  # ≈ 0.5 ln 2 + 2·0.25 ln 4 = 0.3465736 + 0.6931472
            t([0.0, 0.0, -math.inf, -math.inf]),  # masked vocab: uniform over 2 → ln 2
        ]
    ).unsqueeze(0)  # [1, 3, 4]
    logits.requires_grad_(True)
    h = A.entropy_from_logits(logits)
    close(h, [[1.3862944, 1.0397208, 0.6931472]])
    (grad,) = torch.autograd.grad(h.sum(), logits)
    assert torch.isfinite(grad).all()
    # temperature: logits [2 ln 2, 0] / 2 = [ln 2, 0] → p = [2/3, 1/3]
    # H = (2/3)·ln 1.5 + (1/3)·ln 3 = 0.2703101 + 0.3662041 = 0.6365142
    close(A.entropy_from_logits(t([[[2 * math.log(2), 0.0]]]), temperature=2.0), [[0.6365142]])


def test_entropy_matches_definition_on_random_logits():
    g = torch.Generator().manual_seed(3)
    logits = torch.randn(2, 3, 11, generator=g, dtype=F64) * 5
    p = torch.softmax(logits, -1)
    expected = -(p * torch.log(p)).sum(-1)
    torch.testing.assert_close(A.entropy_from_logits(logits), expected)


def test_entropy_bonus_loss():
    entropy = t([[1.0, 2.0], [3.0, 9.0]])
    mask = t([[1.0, 1.0], [1.0, 0.0]])
    loss, m = A.entropy_bonus_loss(entropy, mask, coef=0.01)
    # token-mean H = (1 + 2 + 3)/3 = 2 → loss = −0.01·2 = −0.02
    close(loss, -0.02)
    close(m["actor/entropy"], 2.0)
    # seq-mean-token-mean: (1.5 + 3)/2 = 2.25 → −0.0225
    loss, m = A.entropy_bonus_loss(entropy, mask, coef=0.01, agg="seq-mean-token-mean")
    close(loss, -0.0225)
    close(m["actor/entropy"], 2.25)


def test_value_loss_hand_values():
    values = t([1.0, 0.0, 0.5, 7.0]).requires_grad_(True)  # last token is padding
    old_values = t([0.0, 0.0, 0.4, 0.0])
    returns = t([1.0, 2.0, 0.0, 0.0])
    mask = t([1.0, 1.0, 1.0, 0.0])
    loss, m = A.value_loss(values, old_values, returns, mask, cliprange_value=0.5)
    # token 0: (V−R)² = 0; V_clip = 0 + clip(1, ±0.5) = 0.5 → (0.5−1)² = 0.25; 0.5·max = 0.125 (clipped wins)
    # token 1: V = V_old = 0: (0−2)² = 4 both; 0.5·4 = 2.0
    # token 2: V−V_old = 0.1 inside: (0.5−0)² = 0.25 both; 0.125
    # mean = (0.125 + 2.0 + 0.125)/3 = 0.75
    close(loss, 0.75)
    close(m["critic/vf_loss"], 0.75)
    close(m["critic/vf_clipfrac"], 1 / 3)
    close(m["critic/vpred_mean"], 0.5)  # (1 + 0 + 0.5)/3
    (grad,) = torch.autograd.grad(loss, values)
    # d/dV: token 0 clipped → 0; token 1: (V−R)/3 = −2/3; token 2: 0.5/3 = 0.1666667; padding 0
    close(grad, [0.0, -0.6666667, 0.1666667, 0.0])


def test_log_probs_from_logits():
    logits = torch.log(t([[[0.5, 0.25, 0.25], [0.1, 0.6, 0.3]]]))  # [1, 2, 3]
    tokens = torch.tensor([[1, 1]])
    # ln 0.25 = −1.3862944, ln 0.6 = −0.5108256
    close(A.log_probs_from_logits(logits, tokens), [[-1.3862944, -0.5108256]])
    # temperature 2: [2 ln 2, 0]/2 = [ln 2, 0] → p = [2/3, 1/3]; ln(2/3) = −0.4054651
    lt = t([[[2 * math.log(2), 0.0]]])
    close(A.log_probs_from_logits(lt, torch.tensor([[0]]), temperature=2.0), [[-0.4054651]])
    # agrees with log_softmax + gather on random logits
    g = torch.Generator().manual_seed(4)
    rl = torch.randn(2, 5, 13, generator=g)
    tok = torch.randint(0, 13, (2, 5), generator=g)
    ref = torch.log_softmax(rl / 0.7, -1).gather(-1, tok.unsqueeze(-1)).squeeze(-1)
    torch.testing.assert_close(A.log_probs_from_logits(rl, tok, temperature=0.7), ref)


def test_clipped_tokens_mark_ratios_outside_the_mix_ppg_window():
    # c = π_k/π_b = 1 on every token; ε = 0.2: the window is [0.8, 1.2]
    behavior = torch.zeros(1, 4)
    old = torch.zeros(1, 4)
    theta = torch.log(torch.tensor([[1.0, 1.19, 1.3, 0.7]]))
    assert A.clipped_tokens(theta, behavior, old, 0.2).tolist() == [[0.0, 0.0, 1.0, 1.0]]
    # the window follows c: with π_k = 1.3 π_b, r = 1.3 is inside and r = 1.0 outside
    old_moved = torch.log(torch.full((1, 4), 1.3))
    assert A.clipped_tokens(theta, behavior, old_moved, 0.2).tolist() == [[1.0, 0.0, 0.0, 1.0]]
