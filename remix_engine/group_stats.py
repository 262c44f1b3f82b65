"""The one definition of a group's reward statistics for group-relative advantages — no torch.

`algorithms.grpo_advantages` / `rloo_advantages` (tensors, used by the trainer) take their epsilon
and std convention from here, and the studio's API reports a GRPO group's mean and std through
`group_stats`, so the numbers printed beside a group are the ones its advantages were computed
from. `advantage` is the scalar form of the tensor kernels (tests/unit/test_group_stats.py checks
that they agree).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

GRPO_EPS = 1e-6
"""Added to the group std in GRPO's denominator: A = (r − mean) / (std + GRPO_EPS)."""

STD_DDOF = 1
"""The group std is the unbiased (sample) std: Σ(r − mean)² / (n − STD_DDOF)."""

FORMULAS = {
    "grpo": "advantage = (reward − group mean) / (group std + 1e-6), with the sample std (divides by n − 1)",
    "drgrpo": "advantage = reward − group mean (Dr. GRPO: no std normalisation)",
    "rloo": "advantage = reward − mean of the other n − 1 rewards = n/(n − 1) · (reward − group mean) (RLOO)",
    "gae": "advantage from the critic (GAE), averaged over the response's tokens; the group's mean and std play no part",
}
"""What each `actor.advantage` estimator computes, in words (shown under a group in the dashboard)."""

DEGENERATE_NOTE = "a group whose rewards are all equal (or a group of one) gets advantage 0 for every response"


@dataclass(frozen=True)
class GroupStats:
    n: int
    mean: float | None
    std: float | None  # the sample std (n − STD_DDOF); None for an empty group, 0 for one member
    degenerate: bool  # size < 2 or all rewards equal: every advantage is exactly 0


def group_stats(rewards: Sequence[float]) -> GroupStats:
    """Mean, sample std and degeneracy of one group's rewards, as the advantage kernels use them
    (float64; degenerate = fewer than 2 members or max == min exactly)."""
    r = [float(x) for x in rewards]
    n = len(r)
    if not n:
        return GroupStats(0, None, None, True)
    mean = sum(r) / n
    std = math.sqrt(sum((x - mean) ** 2 for x in r) / max(n - STD_DDOF, 1))
    return GroupStats(n, mean, std, n < 2 or max(r) == min(r))


def advantage(reward: float, stats: GroupStats, kind: str = "grpo") -> float | None:
    """The advantage of one member with `reward` in a group with `stats`, for the group-relative
    estimators (`grpo`, `drgrpo`, `rloo`); None for `gae` (the critic's, not a function of the group)."""
    if kind not in ("grpo", "drgrpo", "rloo"):
        return None
    if stats.degenerate or stats.mean is None:
        return 0.0
    centred = float(reward) - stats.mean
    if kind == "grpo":
        return centred / (stats.std + GRPO_EPS)
    if kind == "rloo":
        return centred * stats.n / (stats.n - 1)
    return centred
