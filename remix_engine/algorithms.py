"""Algorithm kernels for ReMix: small pure functions over tensors.

Everything here is stateless: no trainer logic, no model code, no optimiser. The layout follows
verl's ``core_algos.py``: each function states its formula in its docstring and returns a tensor
(a loss or per-token values) and, for losses, a dict of float metrics.

Conventions
-----------
* Token tensors are ``[batch, response_len]``; ``mask`` is a float tensor of the same shape with 1
  for valid response tokens and 0 for padding.
* Log-probs are those of the sampled token (``log π(a_h | s_h)``), not full distributions.
* ``old_logp`` is π_k: the current policy at the start of the iteration, before any update of this
  iteration (verl's ``old_log_prob``). ``behavior_logp`` is π_b: the policy that generated the
  sample (π_b = π_k for fresh samples, π_{k−i} for samples replayed at lag i).
* Losses are to be minimised. Metric floats are always normalised over the tensors passed in
  (a local mean), even when ``global_token_count`` changes the normaliser of the returned loss;
  this keeps logged values comparable between mini-batches of different sizes.

References: remix_algorithm.md §2 (Mix-PPG), §2.5–§2.6 (advantages), §4 (KL-Convex).
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Sequence

import torch
from torch import Tensor

from remix_engine.group_stats import GRPO_EPS, STD_DDOF

__all__ = [
    "AGG_MODES",
    "KL_KINDS",
    "agg_loss",
    "broadcast_to_tokens",
    "clipped_tokens",
    "drgrpo_advantages",
    "entropy_bonus_loss",
    "entropy_from_logits",
    "gae_advantages",
    "grpo_advantages",
    "kl_convex_lambda",
    "kl_convex_loss",
    "kl_penalty",
    "log_probs_from_logits",
    "masked_mean",
    "masked_sum",
    "masked_var",
    "masked_whiten",
    "mix_ppg_clip_window",
    "mix_ppg_policy_loss",
    "per_sample_ratio_stats",
    "rloo_advantages",
    "value_loss",
]

AGG_MODES = ("token-mean", "seq-mean-token-mean", "seq-mean-token-sum")
KL_KINDS = ("k1", "k2", "k3")

# Smallest divisor used for masked means: a count of zero gives 0 instead of NaN, and any
# real count (>= 1 for 0/1 masks) is left untouched, so results stay exact.
_TINY = 1e-12
# Log-ratios are clamped to this range before exp() so a stale token cannot overflow to inf
# (inf · 0 advantage would be NaN). Same bound as verl's compute_policy_loss.
_LOG_RATIO_BOUND = 20.0
# k3 per-token values are clamped to ±10, as verl's "low_var_kl".
_K3_BOUND = 10.0


def _checked_agg(mode: str) -> str:
    if mode not in AGG_MODES:
        raise ValueError(f"unknown loss aggregation mode '{mode}' (choose from {', '.join(AGG_MODES)})")
    return mode


def _checked_kl(kind: str) -> str:
    if kind not in KL_KINDS:
        raise ValueError(f"unknown KL estimator '{kind}' (choose from {', '.join(KL_KINDS)})")
    return kind


def _float(x: Tensor) -> float:
    return float(x.detach().float().item())


# --------------------------------------------------------------------------------------------
# Masked reductions
# --------------------------------------------------------------------------------------------


def masked_sum(x: Tensor, mask: Tensor, dim: int | None = None) -> Tensor:
    """Σ x·mask, over all elements (dim=None) or along `dim`."""
    prod = x * mask
    return prod.sum() if dim is None else prod.sum(dim=dim)


def masked_mean(x: Tensor, mask: Tensor, dim: int | None = None) -> Tensor:
    """Σ x·mask / Σ mask, over all elements (dim=None) or along `dim`.

    An empty mask (Σ mask = 0) gives 0, not NaN; a non-empty one is divided exactly.
    """
    return masked_sum(x, mask, dim) / masked_sum(torch.ones_like(x), mask, dim).clamp_min(_TINY)


def masked_var(x: Tensor, mask: Tensor, unbiased: bool = True) -> Tensor:
    """Masked variance over all elements: Σ mask·(x − μ)² / (n − 1) (unbiased) or / n.

    n = Σ mask. With n ≤ 1 the unbiased variance is reported as 0.
    """
    mean = masked_mean(x, mask)
    sq = masked_sum((x - mean) ** 2, mask)
    n = mask.sum()
    denom = (n - 1.0) if unbiased else n
    return sq / denom.clamp_min(_TINY) if float(denom) > 0 else torch.zeros_like(sq)


def masked_whiten(x: Tensor, mask: Tensor, shift_mean: bool = True) -> Tensor:
    """Whiten over valid elements: (x − μ) / sqrt(σ² + 1e-8), with μ, σ² the masked mean and
    unbiased masked variance. With shift_mean=False the mean is added back: (x − μ)/σ + μ.

    Padding positions (mask = 0) are set to 0 in the output (verl leaves them arbitrary).
    """
    mean = masked_mean(x, mask)
    var = masked_var(x, mask, unbiased=True)
    out = (x - mean) * torch.rsqrt(var + 1e-8)
    if not shift_mean:
        out = out + mean
    return out * mask


# --------------------------------------------------------------------------------------------
# Loss aggregation
# --------------------------------------------------------------------------------------------


def agg_loss(
    loss_mat: Tensor,
    mask: Tensor,
    mode: str = "token-mean",
    global_token_count: float | int | None = None,
    global_seq_count: float | int | None = None,
) -> Tensor:
    """Reduce a per-token loss [B, T] to a scalar.

    * ``token-mean``:          Σ_{b,h} ℓ·m / N_tok, with N_tok = Σ m, or ``global_token_count``
      when given. Passing the token count of the whole (mini-)batch to each of its splits makes the
      sum of the split losses equal the full-batch token-mean (the weighting does not depend on how
      the batch is split).
    * ``seq-mean-token-mean``: (1/N_seq) Σ_b [ Σ_h ℓ·m / Σ_h m ]  (per-sequence mean, then mean).
    * ``seq-mean-token-sum``:  (1/N_seq) Σ_b [ Σ_h ℓ·m ]          (per-sequence sum, then mean).

    N_seq counts the sequences with at least one valid token, or is ``global_seq_count`` when given.
    ``global_token_count`` is only used by token-mean and ``global_seq_count`` only by the two
    seq-mean modes; the other one is ignored, so a trainer may pass both whatever the mode.
    An empty mask gives a zero loss (still attached to the graph). TRL-style underscore spellings
    (``token_mean`` ...) are accepted.
    """
    mode = _checked_agg(mode)
    mask = mask.to(loss_mat.dtype)
    if mode == "token-mean":
        total = masked_sum(loss_mat, mask)
        if global_token_count is not None:
            if global_token_count <= 0:
                raise ValueError("global_token_count must be positive")
            return total / global_token_count
        return total / mask.sum().clamp_min(_TINY)

    tokens_per_seq = mask.sum(dim=-1)
    seq_sum = masked_sum(loss_mat, mask, dim=-1)
    if mode == "seq-mean-token-mean":
        seq_loss = seq_sum / tokens_per_seq.clamp_min(_TINY)
    else:
        seq_loss = seq_sum
    seq_valid = (tokens_per_seq > 0).to(seq_loss.dtype)
    if global_seq_count is not None:
        if global_seq_count <= 0:
            raise ValueError("global_seq_count must be positive")
        return (seq_loss * seq_valid).sum() / global_seq_count
    return (seq_loss * seq_valid).sum() / seq_valid.sum().clamp_min(_TINY)


# --------------------------------------------------------------------------------------------
# Advantages
# --------------------------------------------------------------------------------------------


def _group_index(group_ids: Tensor | Sequence[Hashable], n: int, device: torch.device) -> tuple[Tensor, int]:
    """Map arbitrary group ids (tensor of ints, or any hashables such as uid strings) to 0..G−1."""
    if isinstance(group_ids, Tensor):
        if group_ids.numel() != n:
            raise ValueError(f"group_ids has {group_ids.numel()} entries for {n} rewards")
        uniq, inverse = torch.unique(group_ids.reshape(-1), return_inverse=True)
        return inverse.to(device), int(uniq.numel())
    ids = list(group_ids)
    if len(ids) != n:
        raise ValueError(f"group_ids has {len(ids)} entries for {n} rewards")
    seen: dict[Hashable, int] = {}
    index = [seen.setdefault(g, len(seen)) for g in ids]
    return torch.tensor(index, dtype=torch.long, device=device), len(seen)


def _group_stats(rewards: Tensor, group_ids: Tensor | Sequence[Hashable]) -> dict[str, Tensor]:
    """Per-sample group statistics: size n, sum, mean, unbiased std, and whether the group is
    degenerate (size 1, or all members equal, checked exactly via max == min)."""
    if rewards.dim() != 1:
        raise ValueError(f"rewards must be 1-D [B], got shape {tuple(rewards.shape)}")
    r = rewards.detach().to(torch.float64)
    idx, n_groups = _group_index(group_ids, r.numel(), r.device)
    zeros = torch.zeros(n_groups, dtype=r.dtype, device=r.device)
    count = zeros.index_add(0, idx, torch.ones_like(r))
    total = zeros.index_add(0, idx, r)
    mean = total / count
    sq = zeros.index_add(0, idx, (r - mean[idx]) ** 2)
    std = torch.sqrt(sq / (count - STD_DDOF).clamp_min(1))  # the sample std (group_stats.py defines it)
    gmax = zeros.scatter_reduce(0, idx, r, reduce="amax", include_self=False)
    gmin = zeros.scatter_reduce(0, idx, r, reduce="amin", include_self=False)
    degenerate = (count < 2) | (gmax == gmin)
    return {
        "r": r,
        "count": count[idx],
        "sum": total[idx],
        "mean": mean[idx],
        "std": std[idx],
        "degenerate": degenerate[idx],
    }


def grpo_advantages(
    rewards: Tensor,
    group_ids: Tensor | Sequence[Hashable],
    eps: float = GRPO_EPS,
    norm_by_std: bool = True,
) -> Tensor:
    """GRPO outcome advantage per sample [B]:

        A_j = (r_j − mean_g) / (std_g + eps)      (std_g the UNBIASED std of the group; eps = 1e-6)
        A_j = r_j − mean_g                        (norm_by_std=False, Dr. GRPO)

    A group of size 1, or whose rewards are all equal, gets A = 0 for every member (exactly).
    `group_ids` may be a tensor or any sequence of hashables (e.g. verl-style uid strings).
    Statistics are computed in float64 and cast back to the dtype of `rewards`.
    """
    st = _group_stats(rewards, group_ids)
    adv = st["r"] - st["mean"]
    if norm_by_std:
        adv = adv / (st["std"] + eps)
    adv = torch.where(st["degenerate"], torch.zeros_like(adv), adv)
    out_dtype = rewards.dtype if rewards.is_floating_point() else torch.float32
    return adv.to(out_dtype)


def drgrpo_advantages(rewards: Tensor, group_ids: Tensor | Sequence[Hashable]) -> Tensor:
    """Dr. GRPO advantage per sample [B]: A_j = r_j − mean_g (no std normalisation).
    Degenerate groups (size 1 or zero variance) get exactly 0."""
    return grpo_advantages(rewards, group_ids, norm_by_std=False)


def rloo_advantages(rewards: Tensor, group_ids: Tensor | Sequence[Hashable]) -> Tensor:
    """RLOO advantage per sample [B]: A_j = r_j − (1/(n−1)) Σ_{i≠j} r_i  (leave-one-out baseline).

    Equals n/(n−1)·(r_j − mean_g). Groups of size 1 (no other member) and zero-variance groups get 0.
    """
    st = _group_stats(rewards, group_ids)
    others = (st["sum"] - st["r"]) / (st["count"] - 1).clamp_min(1)
    adv = st["r"] - others
    adv = torch.where(st["degenerate"], torch.zeros_like(adv), adv)
    out_dtype = rewards.dtype if rewards.is_floating_point() else torch.float32
    return adv.to(out_dtype)


def broadcast_to_tokens(adv: Tensor, mask: Tensor) -> Tensor:
    """Per-sample advantage [B] → per-token [B, T]: A_{j,h} = A_j · mask_{j,h}."""
    return adv.to(mask.dtype).unsqueeze(-1) * mask


def gae_advantages(
    token_rewards: Tensor,
    values: Tensor,
    mask: Tensor,
    gamma: float,
    lam: float,
) -> tuple[Tensor, Tensor]:
    """Generalised advantage estimation over the valid tokens of each row [B, T].

    Reverse scan over valid positions only (padding, also interior padding, is skipped):

        δ_h = r_h + γ·V(s_{h'}) − V(s_h)        h' = next valid position; V = 0 after the last one
        A_h = δ_h + γλ·A_{h'}
        returns_h = A_h + V(s_h)

    With γ = λ = 1 and an outcome reward R on the last valid token, A_h = R − V(s_h).
    Advantages are NOT whitened here (call `masked_whiten` when CriticConfig.whiten_advantages);
    both outputs are 0 at padding and carry no gradient.
    """
    with torch.no_grad():
        rewards = token_rewards.detach().to(values.dtype)
        vals = values.detach()
        valid = mask > 0
        batch, length = vals.shape
        next_value = torch.zeros(batch, dtype=vals.dtype, device=vals.device)
        last_adv = torch.zeros_like(next_value)
        adv = torch.zeros_like(vals)
        for h in range(length - 1, -1, -1):
            m = valid[:, h]
            delta = rewards[:, h] + gamma * next_value - vals[:, h]
            cur = delta + gamma * lam * last_adv
            last_adv = torch.where(m, cur, last_adv)
            next_value = torch.where(m, vals[:, h], next_value)
            adv[:, h] = torch.where(m, cur, torch.zeros_like(cur))
        fmask = mask.to(vals.dtype)
        returns = (adv + vals) * fmask
        adv = adv * fmask
    return adv, returns


# --------------------------------------------------------------------------------------------
# KL estimators and KL-Convex
# --------------------------------------------------------------------------------------------


def kl_penalty(logp: Tensor, ref_logp: Tensor, kind: str = "k3") -> Tensor:
    """Per-token estimate of KL(π_θ ‖ π_ref) from sampled-token log-probs.

    * k1:  logp − ref_logp
    * k2:  0.5·(logp − ref_logp)²
    * k3:  exp(ref_logp − logp) − (ref_logp − logp) − 1, clamped to [−10, 10] (verl "low_var_kl";
      only k3 is clamped, as in verl)

    Aliases: "kl" = k1, "mse" = k2, "low_var_kl" = k3.
    """
    kind = _checked_kl(kind)
    diff = logp - ref_logp
    if kind == "k1":
        return diff
    if kind == "k2":
        return 0.5 * diff.square()
    neg = ref_logp - logp
    return torch.clamp(torch.exp(neg) - neg - 1.0, min=-_K3_BOUND, max=_K3_BOUND)


def kl_convex_lambda(
    t: int,
    start: int = 50,
    interval: int = 10,
    decay: float = 0.1,
    floor: float = 0.5,
) -> float:
    """KL-Convex weight schedule (remix_algorithm.md §4):

        λ(t) = max(1 − decay·ceil(max(t − start, 0) / interval), floor)

    t is the global training step (it keeps running across reincarnation). The value is rounded to
    10 decimals so that e.g. 1 − 0.1·3 is exactly 0.7. Defaults: λ = 1 for t ≤ 50, 0.9 for 51–60,
    0.8 for 61–70, …, 0.5 from 91 on.
    """
    if interval <= 0:
        raise ValueError("interval must be positive")
    over = max(t - start, 0)
    if isinstance(over, int) and isinstance(interval, int):
        k = -(-over // interval)  # exact integer ceil
    else:
        k = math.ceil(over / interval)
    lam = round(1.0 - decay * k, 10)
    return float(max(lam, floor))


def kl_convex_loss(
    logp: Tensor,
    anchor_logp: Tensor,
    precedent_logp: Tensor | None,
    lam: float,
    mask: Tensor,
    kind: str = "k3",
    agg: str = "token-mean",
    global_token_count: float | int | None = None,
    global_seq_count: float | int | None = None,
) -> tuple[Tensor, dict[str, float]]:
    """KL-Convex regulariser (remix_algorithm.md §4), per token then aggregated:

        L_KLC = agg( λ·KL(π_θ ‖ anchor) + (1 − λ)·KL(π_θ ‖ precedent) )

    a convex combination of two per-token KL estimates (`kl_penalty` with `kind`), not a KL to a
    mixture. With λ = 1 the loss is computed as agg(KL(π_θ ‖ anchor)) alone, identical to the plain
    KL-to-anchor loss, and `precedent_logp` may be None. β is applied by the caller.

    Metrics (local normalisation, same agg mode): ``actor/kl_anchor``, ``actor/kl_precedent``
    (omitted when precedent_logp is None), ``actor/kl_convex`` (the combined value) and
    ``actor/kl_lambda``.
    """
    if not 0.0 <= lam <= 1.0:
        raise ValueError(f"lam must be in [0, 1], got {lam}")
    kl_anchor = kl_penalty(logp, anchor_logp, kind)
    if lam == 1.0:
        kl_prec = None if precedent_logp is None else kl_penalty(logp, precedent_logp, kind)
        combined = kl_anchor
    else:
        if precedent_logp is None:
            raise ValueError("precedent_logp is required when lam < 1")
        kl_prec = kl_penalty(logp, precedent_logp, kind)
        combined = lam * kl_anchor + (1.0 - lam) * kl_prec
    loss = agg_loss(
        combined, mask, agg, global_token_count=global_token_count, global_seq_count=global_seq_count
    )
    with torch.no_grad():
        metrics = {
            "actor/kl_anchor": _float(agg_loss(kl_anchor, mask, agg)),
            "actor/kl_convex": _float(agg_loss(combined, mask, agg)),
            "actor/kl_lambda": float(lam),
        }
        if kl_prec is not None:
            metrics["actor/kl_precedent"] = _float(agg_loss(kl_prec, mask, agg))
    return loss, metrics


# --------------------------------------------------------------------------------------------
# Mix-PPG policy loss
# --------------------------------------------------------------------------------------------


def mix_ppg_clip_window(
    old_logp: Tensor, behavior_logp: Tensor, clip_eps_low: float = 0.2, clip_eps_high: float | None = None
) -> tuple[Tensor, Tensor, Tensor]:
    """Mix-PPG trust region per token, returned as (centre, low, high), all detached:

        c = π_k/π_b = exp(old_logp − behavior_logp),   low = max(c − ε_low, 0),   high = c + ε_high

    ε_high defaults to ε_low. The floor at 0 only matters when c < ε_low (a ratio is never negative).
    """
    eps_high = clip_eps_low if clip_eps_high is None else clip_eps_high
    log_c = (old_logp.detach() - behavior_logp.detach()).clamp(-_LOG_RATIO_BOUND, _LOG_RATIO_BOUND)
    center = torch.exp(log_c)
    low = (center - clip_eps_low).clamp_min(0.0)
    high = center + eps_high
    return center, low, high


def mix_ppg_policy_loss(
    logp: Tensor,
    old_logp: Tensor,
    behavior_logp: Tensor,
    advantages: Tensor,
    mask: Tensor,
    clip_eps_low: float = 0.2,
    clip_eps_high: float | None = None,
    dual_clip_c: float | None = None,
    agg: str = "token-mean",
    global_token_count: float | int | None = None,
    global_seq_count: float | int | None = None,
) -> tuple[Tensor, dict[str, float]]:
    """Mix-policy proximal policy-gradient loss (remix_algorithm.md §2.3), per token:

        r      = π_θ / π_b = exp(logp − behavior_logp)           ratio vs the BEHAVIOUR policy
        c      = π_k / π_b = exp(old_logp − behavior_logp)       centre (detached; 1 for fresh data)
        r_clip = clip(r, max(c − ε_low, 0), c + ε_high)          ε_high = ε_low unless set (DAPO)
        ℓ      = −min(r·A, r_clip·A) = max(−r·A, −r_clip·A)

    Dual clip (verl's definition, when `dual_clip_c` = C > 1 is set): for tokens with A < 0,
    ℓ = min(ℓ, −C·A), i.e. the loss of a negative-advantage token never exceeds the one at ratio C
    (C is compared with r itself, not scaled by the centre). Tokens with A ≥ 0 are unaffected.

    For fresh tokens (behavior_logp == old_logp) c = 1 exactly and this is PPO's clipped loss with
    window [1 − ε_low, 1 + ε_high]. Log-ratios are clamped to ±20 before exp (as verl) so stale
    tokens cannot overflow. old_logp and behavior_logp are treated as constants (detached).

    Returns (agg(ℓ), metrics):
    * ``actor/pg_loss``: the aggregated loss (local normalisation)
    * ``actor/pg_clipfrac``: fraction of valid tokens where the clipped branch is taken (−r_clip·A > −r·A)
    * ``actor/pg_clipfrac_lower``: fraction of valid tokens where the dual clip bites (A < 0 and
      ℓ > −C·A before capping); 0 without dual clip
    * ``actor/ppo_kl``: masked mean of old_logp − logp (approx. KL(π_k ‖ π_θ), verl's name)
    * ``actor/importance_ratio_mean`` / ``actor/importance_ratio_max``: masked mean / max of r
    """
    if clip_eps_low < 0 or (clip_eps_high is not None and clip_eps_high < 0):
        raise ValueError("clip ranges must be non-negative")
    if dual_clip_c is not None and dual_clip_c <= 1.0:
        raise ValueError(f"dual_clip_c must be > 1, got {dual_clip_c}")
    behavior = behavior_logp.detach()
    old = old_logp.detach()
    adv = advantages.detach()

    log_ratio = (logp - behavior).clamp(-_LOG_RATIO_BOUND, _LOG_RATIO_BOUND)
    ratio = torch.exp(log_ratio)
    _, low, high = mix_ppg_clip_window(old, behavior, clip_eps_low, clip_eps_high)
    ratio_clipped = torch.clamp(ratio, min=low, max=high)

    pg1 = -adv * ratio
    pg2 = -adv * ratio_clipped
    pg_clip = torch.maximum(pg1, pg2)
    if dual_clip_c is not None:
        pg3 = -adv * dual_clip_c
        per_token = torch.where(adv < 0, torch.minimum(pg_clip, pg3), pg_clip)
    else:
        pg3 = None
        per_token = pg_clip

    loss = agg_loss(
        per_token, mask, agg, global_token_count=global_token_count, global_seq_count=global_seq_count
    )

    with torch.no_grad():
        fmask = mask.to(ratio.dtype)
        valid = fmask > 0
        clipfrac = masked_mean((pg2 > pg1).to(ratio.dtype), fmask)
        if pg3 is not None:
            lower = ((pg_clip > pg3) & (adv < 0)).to(ratio.dtype)
            clipfrac_lower = _float(masked_mean(lower, fmask))
        else:
            clipfrac_lower = 0.0
        ratio_max = _float(ratio[valid].max()) if bool(valid.any()) else 0.0
        metrics = {
            "actor/pg_loss": _float(agg_loss(per_token, mask, agg)),
            "actor/pg_clipfrac": _float(clipfrac),
            "actor/pg_clipfrac_lower": clipfrac_lower,
            "actor/ppo_kl": _float(masked_mean(old - logp, fmask)),
            "actor/importance_ratio_mean": _float(masked_mean(ratio, fmask)),
            "actor/importance_ratio_max": ratio_max,
        }
    return loss, metrics


def clipped_tokens(
    logp: Tensor, behavior_logp: Tensor, old_logp: Tensor, clip_eps_low: float, clip_eps_high: float | None = None,
) -> Tensor:
    """1.0 where the token's Mix-PPG ratio r = exp(logp − behavior_logp) lies outside its clip window
    [max(c − ε_low, 0), c + ε_high] (c = exp(old_logp − behavior_logp)), else 0.0 — [B, R], detached.
    Whatever the sign of A: this marks where the clip is active for r."""
    with torch.no_grad():
        behavior = behavior_logp.detach()
        ratio = torch.exp((logp.detach() - behavior).clamp(-_LOG_RATIO_BOUND, _LOG_RATIO_BOUND))
        _, low, high = mix_ppg_clip_window(old_logp, behavior, clip_eps_low, clip_eps_high)
        return ((ratio < low) | (ratio > high)).to(ratio.dtype)


def per_sample_ratio_stats(
    logp: Tensor,
    behavior_logp: Tensor,
    old_logp: Tensor,
    mask: Tensor,
    clip_eps_low: float,
    clip_eps_high: float | None = None,
) -> dict[str, Tensor]:
    """Per-sample [B] diagnostics of the Mix-PPG ratio, all detached, for bucketing by policy age:

    * ``ratio_mean``:     masked mean over the row of r = exp(logp − behavior_logp)
    * ``ratio_max``:      masked max of r over the row
    * ``clipfrac``:       fraction of the row's valid tokens whose r lies outside the window
      [max(c − ε_low, 0), c + ε_high] (c = exp(old_logp − behavior_logp)). The advantage is not an
      input, so this counts where the clip is active for r, whatever the sign of A.
    * ``kl_to_behavior``: masked mean of behavior_logp − logp (k1 estimate of KL(π_b ‖ π_θ))
    * ``center_mean``:    masked mean of c (how far π_k has moved from π_b on this sample)

    Rows without valid tokens get 0 everywhere.
    """
    with torch.no_grad():
        fmask = mask.to(logp.dtype)
        valid = fmask > 0
        behavior = behavior_logp.detach()
        lp = logp.detach()
        ratio = torch.exp((lp - behavior).clamp(-_LOG_RATIO_BOUND, _LOG_RATIO_BOUND))
        center, _, _ = mix_ppg_clip_window(old_logp, behavior, clip_eps_low, clip_eps_high)
        outside = clipped_tokens(logp, behavior_logp, old_logp, clip_eps_low, clip_eps_high)
        ratio_max = torch.where(valid, ratio, torch.full_like(ratio, -math.inf)).amax(dim=-1)
        ratio_max = torch.where(valid.any(dim=-1), ratio_max, torch.zeros_like(ratio_max))
        return {
            "ratio_mean": masked_mean(ratio, fmask, dim=-1),
            "ratio_max": ratio_max,
            "clipfrac": masked_mean(outside, fmask, dim=-1),
            "kl_to_behavior": masked_mean(behavior - lp, fmask, dim=-1),
            "center_mean": masked_mean(center, fmask, dim=-1),
        }


# --------------------------------------------------------------------------------------------
# Entropy, value loss, log-probs
# --------------------------------------------------------------------------------------------


def entropy_from_logits(logits: Tensor, temperature: float = 1.0) -> Tensor:
    """Per-token entropy [B, T] of softmax(logits / temperature) over the last dim [B, T, V]:

        H = logsumexp(z) − Σ_v softmax(z)_v · z_v

    Numerically stable (no log of a softmax); −inf logits (masked vocabulary) contribute 0.
    Half-precision inputs are computed in float32.
    """
    z = logits.float() if logits.dtype in (torch.float16, torch.bfloat16) else logits
    if temperature != 1.0:
        z = z / temperature
    lse = torch.logsumexp(z, dim=-1)
    p = torch.softmax(z, dim=-1)
    z_finite = z.masked_fill(torch.isneginf(z), 0.0)
    return lse - (p * z_finite).sum(dim=-1)


def entropy_bonus_loss(
    entropy: Tensor,
    mask: Tensor,
    coef: float,
    agg: str = "token-mean",
    global_token_count: float | int | None = None,
    global_seq_count: float | int | None = None,
) -> tuple[Tensor, dict[str, float]]:
    """Entropy bonus as a loss term: −coef · agg(H). Metric ``actor/entropy`` = agg(H) (local)."""
    agg_h = agg_loss(
        entropy, mask, agg, global_token_count=global_token_count, global_seq_count=global_seq_count
    )
    with torch.no_grad():
        metrics = {"actor/entropy": _float(agg_loss(entropy, mask, agg))}
    return -coef * agg_h, metrics


def value_loss(
    values: Tensor,
    old_values: Tensor,
    returns: Tensor,
    mask: Tensor,
    cliprange_value: float,
    agg: str = "token-mean",
    global_token_count: float | int | None = None,
    global_seq_count: float | int | None = None,
) -> tuple[Tensor, dict[str, float]]:
    """Clipped value loss (verl / PPO2), per token:

        V_clip = V_old + clip(V − V_old, −cliprange_value, +cliprange_value)
        ℓ      = 0.5 · max((V − R)², (V_clip − R)²)

    Returns (agg(ℓ), metrics): ``critic/vf_loss`` (local agg), ``critic/vf_clipfrac`` (fraction of
    valid tokens where V moved past the clip range and the clipped term is the larger one) and
    ``critic/vpred_mean`` (masked mean of V).
    """
    old = old_values.detach()
    ret = returns.detach()
    v_clip = old + torch.clamp(values - old, -cliprange_value, cliprange_value)
    vf1 = (values - ret).square()
    vf2 = (v_clip - ret).square()
    per_token = 0.5 * torch.maximum(vf1, vf2)
    loss = agg_loss(
        per_token, mask, agg, global_token_count=global_token_count, global_seq_count=global_seq_count
    )
    with torch.no_grad():
        fmask = mask.to(values.dtype)
        metrics = {
            "critic/vf_loss": _float(agg_loss(per_token, mask, agg)),
            # Only where the clip acted: where it did not, V_clip equals V up to rounding and
            # vf2 > vf1 would count float noise (it changed with the micro-batch split).
            "critic/vf_clipfrac": _float(masked_mean(
                (((values - old).abs() > cliprange_value) & (vf2 > vf1)).to(values.dtype), fmask)),
            "critic/vpred_mean": _float(masked_mean(values, fmask)),
        }
    return loss, metrics


def log_probs_from_logits(logits: Tensor, tokens: Tensor, temperature: float = 1.0) -> Tensor:
    """log softmax(logits / temperature)[token] for each position: [B, T, V], [B, T] → [B, T].

    Computed as z_token − logsumexp(z) (no full log-softmax tensor is kept); half-precision
    inputs are computed in float32.
    """
    z = logits.float() if logits.dtype in (torch.float16, torch.bfloat16) else logits
    if temperature != 1.0:
        z = z / temperature
    picked = torch.gather(z, -1, tokens.long().unsqueeze(-1)).squeeze(-1)
    return picked - torch.logsumexp(z, dim=-1)
