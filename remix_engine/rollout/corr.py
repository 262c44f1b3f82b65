"""Rollout-engine vs trainer log-prob agreement (verl's rollout_corr metrics), for any backend."""

from __future__ import annotations

from collections.abc import Sequence

import torch


def rollout_corr_metrics(
    engine_logprobs: Sequence[Sequence[float]] | torch.Tensor,
    recomputed_logprobs: Sequence[Sequence[float]] | torch.Tensor,
    mask: torch.Tensor | None = None,
) -> dict[str, float]:
    """How far the rollout engine's behaviour log-probs are from the trainer's recomputation.

    Inputs are per-token log-probs of the same sampled tokens: either ragged lists (one list per
    response; the two lists of a response must have the same length) or padded [B, T] tensors with
    a float `mask` (1 on real tokens). Empty responses are ignored. With d = recomputed − engine
    over all valid tokens (verl's rollout_corr / training-inference mismatch metrics):

    * ``rollout_corr/logprob_abs_diff_mean``: mean |d|
    * ``rollout_corr/logprob_abs_diff_max``: max |d|
    * ``rollout_corr/ratio_mean``: mean exp(d), the importance ratio π_trainer/π_engine per token
      (1 when both agree)
    * ``rollout_corr/ratio_max`` / ``rollout_corr/ratio_min``: extremes of exp(d)
    * ``rollout_corr/log_ppl_diff``: mean over responses of (mean_t −recomputed) − (mean_t −engine),
      the difference of per-response log-perplexities (trainer − engine)
    * ``rollout_corr/kl_k3``: mean of exp(d) − 1 − d, the k3 estimate of KL(π_engine ‖ π_trainer) from
      the engine's samples (≥ 0, 0 when both agree)
    * ``rollout_corr/tokens``: number of tokens compared

    All values are 0.0 (ratios 1.0) when there is no token to compare.
    """
    eng, rec, m = _as_padded(engine_logprobs, recomputed_logprobs, mask)
    n_tokens = float(m.sum())
    if n_tokens == 0:
        return {
            "rollout_corr/logprob_abs_diff_mean": 0.0,
            "rollout_corr/logprob_abs_diff_max": 0.0,
            "rollout_corr/ratio_mean": 1.0,
            "rollout_corr/ratio_max": 1.0,
            "rollout_corr/ratio_min": 1.0,
            "rollout_corr/log_ppl_diff": 0.0,
            "rollout_corr/kl_k3": 0.0,
            "rollout_corr/tokens": 0.0,
        }
    valid = m > 0
    d = (rec - eng).masked_fill(~valid, 0.0)
    d = d.clamp(-20.0, 20.0)
    ratio = torch.exp(d)
    per_seq_tokens = m.sum(dim=1)
    seqs = per_seq_tokens > 0
    # log-ppl(response) = −mean_t logp; trainer − engine = −mean_t d
    log_ppl_diff = -(d.sum(dim=1)[seqs] / per_seq_tokens[seqs])
    k3 = (ratio - 1.0 - d) * m
    return {
        "rollout_corr/logprob_abs_diff_mean": float(d.abs().sum() / n_tokens),
        "rollout_corr/logprob_abs_diff_max": float(d.abs()[valid].max()),
        "rollout_corr/ratio_mean": float((ratio * m).sum() / n_tokens),
        "rollout_corr/ratio_max": float(ratio[valid].max()),
        "rollout_corr/ratio_min": float(ratio[valid].min()),
        "rollout_corr/log_ppl_diff": float(log_ppl_diff.mean()),
        "rollout_corr/kl_k3": float(k3.sum() / n_tokens),
        "rollout_corr/tokens": n_tokens,
    }


def _as_padded(engine, recomputed, mask) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    if isinstance(engine, torch.Tensor) or isinstance(recomputed, torch.Tensor):
        eng = torch.as_tensor(engine, dtype=torch.float64)
        rec = torch.as_tensor(recomputed, dtype=torch.float64)
        if eng.shape != rec.shape or eng.dim() != 2:
            raise ValueError(f"rollout_corr_metrics: expected two [B, T] tensors of one shape, got "
                             f"{tuple(eng.shape)} and {tuple(rec.shape)}")
        m = torch.ones_like(eng) if mask is None else torch.as_tensor(mask, dtype=torch.float64)
        if m.shape != eng.shape:
            raise ValueError(f"rollout_corr_metrics: mask shape {tuple(m.shape)} != {tuple(eng.shape)}")
        return eng, rec, m
    if len(engine) != len(recomputed):
        raise ValueError(f"rollout_corr_metrics: {len(engine)} engine rows but {len(recomputed)} recomputed rows")
    width = max([len(r) for r in engine] + [1])
    eng = torch.zeros((len(engine), width), dtype=torch.float64)
    rec = torch.zeros_like(eng)
    m = torch.zeros_like(eng)
    for i, (a, b) in enumerate(zip(engine, recomputed, strict=True)):
        if len(a) != len(b):
            raise ValueError(f"rollout_corr_metrics: row {i} has {len(a)} engine and {len(b)} recomputed log-probs")
        if a:
            eng[i, : len(a)] = torch.tensor(list(a), dtype=torch.float64)
            rec[i, : len(b)] = torch.tensor(list(b), dtype=torch.float64)
            m[i, : len(a)] = 1.0
    return eng, rec, m
