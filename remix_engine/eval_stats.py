"""Evaluation statistics with error bars: pass@k, maj@k, avg@k, bootstrap intervals, paired tests.

Small pure functions; evaluate.py, the studio's leaderboard and the paired comparison call them.
Everything is deterministic: the bootstraps take a seed.

Estimators (per problem, then the mean over problems):

* **pass@k** — the unbiased estimator of Chen et al. (2021), from n ≥ k samples of which c are
  correct: ``1 − C(n−c, k) / C(n, k)``, computed as the product ``∏_{i=n−c+1}^{n} (1 − k/i)``
  (no huge binomials, no overflow). With n = k it is "any of the k samples is correct".
* **avg@k** — the mean correctness over the k samples (c/k); pass@1 from n samples equals avg@n.
* **maj@k** — majority vote over the extracted answers of the *first k* samples (sample_index <
  k; with n = k, all of them). Samples without an extracted answer do not vote. Every correct
  answer matches the reference, so correct answers form one vote cluster; wrong answers cluster by
  their normalised text. A tie between the top clusters scores the expected value of a uniformly
  random tie-break (the share of tied clusters that are correct), so ties are neither won nor lost
  by the order of the samples. No answer at all scores 0.

Intervals: 95% percentile bootstrap over problems (``bootstrap_ci``; 1,000 resamples, seed 0 by
default). Paired tests: exact McNemar on single-sample verdicts (``mcnemar_exact``) and a paired
bootstrap on per-problem score differences (``paired_bootstrap``).
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Sequence
from typing import Any

import numpy as np

DEFAULT_RESAMPLES = 1000
DEFAULT_SEED = 0
CI_LEVEL = 0.95


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k for one problem from n samples with c correct: 1 − C(n−c, k)/C(n, k)."""
    if not 0 <= c <= n:
        raise ValueError(f"pass_at_k: need 0 <= c <= n (got n={n}, c={c})")
    if not 1 <= k <= n:
        raise ValueError(f"pass_at_k: need 1 <= k <= n (got n={n}, k={k})")
    if n - c < k:  # every k-subset holds a correct sample
        return 1.0
    # C(n−c,k)/C(n,k) = ∏_{i=n−c+1}^{n} (1 − k/i): a product of c factors in (0, 1], stable in floats
    prod = 1.0
    for i in range(n - c + 1, n + 1):
        prod *= 1.0 - k / i
    return 1.0 - prod


def report_ks(n: int) -> list[int]:
    """The k values to report for n samples: 1, the powers of two below n, and n (1, 2, 4, 8 for 8)."""
    ks, k = [], 1
    while k < n:
        ks.append(k)
        k *= 2
    return [*ks, n] if n >= 1 else []


def majority_vote(votes: Sequence[tuple[Hashable | None, bool]]) -> float:
    """maj@k score of one problem from its k samples' ``(answer key, correct)`` (see the module doc).

    Returns 1.0 when the top cluster is the correct one, 0.0 when it is wrong, and the share of
    correct clusters among tied top clusters otherwise (at most one cluster is correct).
    """
    counts: dict[Any, int] = {}
    for key, correct in votes:
        if key is None and not correct:
            continue  # no extracted answer: no vote
        cluster = ("correct",) if correct else ("answer", key)
        counts[cluster] = counts.get(cluster, 0) + 1
    if not counts:
        return 0.0
    top = max(counts.values())
    tied = [cl for cl, v in counts.items() if v == top]
    return sum(1 for cl in tied if cl == ("correct",)) / len(tied)


def mean(values: Sequence[float]) -> float | None:
    return float(sum(values) / len(values)) if len(values) else None


def bootstrap_ci(per_problem: Sequence[float], *, n_resamples: int = DEFAULT_RESAMPLES, seed: int = DEFAULT_SEED,
                 level: float = CI_LEVEL) -> tuple[float, float] | None:
    """Percentile bootstrap interval of the mean of per-problem scores (resampling problems).

    Deterministic for a given seed. ``None`` for no problems; a single problem gives a zero-width
    interval (there is nothing to resample — the interval says nothing then).
    """
    x = np.asarray(per_problem, dtype=np.float64)
    if x.size == 0:
        return None
    rng = np.random.default_rng(seed)
    means = _resampled_means(x, rng, n_resamples)
    alpha = (1.0 - level) / 2
    lo, hi = np.quantile(means, [alpha, 1.0 - alpha])
    return float(lo), float(hi)


def _resampled_means(x: np.ndarray, rng: np.random.Generator, n_resamples: int) -> np.ndarray:
    out = np.empty(n_resamples)
    chunk = max(1, 2_000_000 // max(1, x.size))  # bound memory for large benchmarks
    for lo in range(0, n_resamples, chunk):
        m = min(chunk, n_resamples - lo)
        out[lo: lo + m] = x[rng.integers(0, x.size, size=(m, x.size))].mean(axis=1)
    return out


def combine_ci(estimates: Sequence[tuple[float, tuple[float, float] | None]]) -> tuple[float, float] | None:
    """Interval of the unweighted mean of independent estimates (benchmarks), from their intervals.

    Normal approximation, one side at a time: the lower (upper) distances ``v − lo`` (``hi − v``)
    are read as z·se, and the mean's distance is ``z·sqrt(Σ se²) / m``. One estimate gives its own
    interval back; skewed intervals stay skewed; the bound never passes the mean of the bounds (so
    scores in [0, 1] keep their interval in [0, 1]). Used for the average over benchmarks, whose
    problem sets are independent (a stratified bootstrap would need every per-problem score at hand).
    """
    if not estimates or any(ci is None for _, ci in estimates):
        return None
    m = len(estimates)
    centre = sum(v for v, _ in estimates) / m
    below = math.sqrt(sum((v - ci[0]) ** 2 for v, ci in estimates)) / m  # type: ignore[index]
    above = math.sqrt(sum((ci[1] - v) ** 2 for v, ci in estimates)) / m  # type: ignore[index]
    return centre - below, centre + above


def mcnemar_exact(b: int, c: int) -> float:
    """Two-sided exact McNemar p-value from the discordant pairs of a paired 2×2 table.

    ``b``: problems A got right and B wrong; ``c``: the reverse. Under H0 (same accuracy) the
    b + c flips split Binomial(b + c, ½); p = min(1, 2·P[X ≤ min(b, c)]). No flips: p = 1.
    """
    if b < 0 or c < 0:
        raise ValueError("mcnemar_exact: counts must be >= 0")
    n = b + c
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, i) for i in range(min(b, c) + 1)) / 2 ** n
    return min(1.0, 2.0 * tail)


def paired_bootstrap(a: Sequence[float], b: Sequence[float], *, n_resamples: int = DEFAULT_RESAMPLES,
                     seed: int = DEFAULT_SEED, level: float = CI_LEVEL) -> dict[str, Any]:
    """Paired bootstrap over problems of the mean difference a − b (per-problem scores, same order).

    Returns ``{"diff", "ci95", "p_value", "n_resamples"}``. The interval is the percentile interval
    of the resampled mean differences; the two-sided p-value resamples the differences centred on
    zero (H0: no difference) and counts means at least as far from zero as the observed one,
    ``(1 + #extreme) / (1 + resamples)`` so it is never 0.
    """
    if len(a) != len(b):
        raise ValueError("paired_bootstrap: a and b must score the same problems")
    d = np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)
    if d.size == 0:
        return {"diff": None, "ci95": None, "p_value": None, "n_resamples": n_resamples}
    observed = float(d.mean())
    rng = np.random.default_rng(seed)
    means = _resampled_means(d, rng, n_resamples)
    alpha = (1.0 - level) / 2
    lo, hi = np.quantile(means, [alpha, 1.0 - alpha])
    null = means - observed  # the same resamples, centred: the distribution under H0
    extreme = int(np.sum(np.abs(null) >= abs(observed) - 1e-12))
    p = 1.0 if observed == 0 else (1 + extreme) / (1 + n_resamples)
    return {"diff": observed, "ci95": [float(lo), float(hi)], "p_value": min(1.0, p), "n_resamples": n_resamples}


def estimates(correct: Sequence[Sequence[bool]], answers: Sequence[Sequence[Hashable | None]] | None = None, *,
              n_resamples: int = DEFAULT_RESAMPLES, seed: int = DEFAULT_SEED) -> dict[str, dict[str, Any]]:
    """pass@k (k in `report_ks(n)`), maj@n and avg@n with 95% bootstrap intervals.

    ``correct[p]``: the verdicts of problem p's samples in sample order; ``answers[p]``: their answer
    keys (for maj@k; omitted: no maj). n is the smallest sample count over the problems (all equal
    in `remix eval`). Each entry is ``{"value", "ci95": [lo, hi], "k"}`` with fractions in [0, 1];
    every metric uses the same seed, so their resamples pick the same problems.
    """
    if not correct:
        return {}
    n = min(len(row) for row in correct)
    if n < 1:
        return {}
    out: dict[str, dict[str, Any]] = {}

    def put(name: str, k: int, scores: list[float]) -> None:
        ci = bootstrap_ci(scores, n_resamples=n_resamples, seed=seed)
        out[name] = {"value": mean(scores), "ci95": list(ci) if ci else None, "k": k}

    for k in report_ks(n):
        put(f"pass@{k}", k, [pass_at_k(len(row), sum(map(bool, row)), k) for row in correct])
    if answers is not None:
        put(f"maj@{n}", n, [majority_vote(list(zip(ans[:n], row[:n], strict=True)))
                            for ans, row in zip(answers, correct, strict=True)])
    put(f"avg@{n}", n, [sum(map(bool, row[:n])) / n for row in correct])
    return out
