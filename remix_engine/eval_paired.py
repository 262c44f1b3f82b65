"""Paired comparison of two evaluations of the same problems (issue 18, part 4).

    paired_comparison(rows_a, rows_b)  # per-sample rows: problem_id, sample_index, correct, extracted

Two checkpoints scored on the *same* problems are compared problem by problem, which is far more
sensitive than comparing two accuracies with their own intervals (the problem difficulty cancels):

* **per problem**: both single-sample verdicts (sample 0), both answers, both avg@k (mean
  correctness over each side's samples), and the flip: ``gained`` (A wrong → B right) or ``lost``
  (A right → B wrong), judged on the single-sample verdicts;
* **exact McNemar** on the single-sample verdicts (pass@1 from one sample each): only the
  discordant problems carry information; p from Binomial(b + c, ½);
* **paired bootstrap** of the per-problem avg@k difference B − A (all samples; equals the
  pass@1 difference when k = 1), with its 95% interval and p-value.

Refused (`NotComparable`) when the two sides did not score the same problem set.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from remix_engine.eval_stats import DEFAULT_RESAMPLES, DEFAULT_SEED, mcnemar_exact, paired_bootstrap


class NotComparable(ValueError):
    """The two evaluations did not score the same problems; the message says how they differ."""


def _by_problem(rows: Iterable[Mapping[str, Any]]) -> dict[str, list[Mapping[str, Any]]]:
    out: dict[str, list[Mapping[str, Any]]] = {}
    for r in rows:
        out.setdefault(str(r["problem_id"]), []).append(r)
    for samples in out.values():
        samples.sort(key=lambda r: int(r.get("sample_index") or 0))
    return out


def _side(samples: list[Mapping[str, Any]]) -> dict[str, Any]:
    first = samples[0]
    return {"correct": bool(first["correct"]), "answer": first.get("extracted"),
            "avg": sum(bool(s["correct"]) for s in samples) / len(samples), "k": len(samples),
            "sample_row_id": first.get("id")}


def paired_comparison(rows_a: Iterable[Mapping[str, Any]], rows_b: Iterable[Mapping[str, Any]], *,
                      n_resamples: int = DEFAULT_RESAMPLES, seed: int = DEFAULT_SEED) -> dict[str, Any]:
    """The per-problem table, the flips and both paired tests (see the module docstring).

    Problems are listed in A's order of first appearance. Raises `NotComparable` when the problem
    sets differ (the message counts and names a few of the problems only one side has).
    """
    a, b = _by_problem(rows_a), _by_problem(rows_b)
    if not a or not b:
        raise NotComparable("no graded samples on " + ("either side" if not a and not b else "A" if not a else "B"))
    only_a, only_b = sorted(set(a) - set(b)), sorted(set(b) - set(a))
    if only_a or only_b:
        def few(ids: list[str]) -> str:
            return ", ".join(ids[:3]) + (" …" if len(ids) > 3 else "")
        parts = ([f"{len(only_a)} problems only in A ({few(only_a)})"] if only_a else []) + \
                ([f"{len(only_b)} only in B ({few(only_b)})"] if only_b else [])
        raise NotComparable("different problem sets: " + "; ".join(parts))
    problems, gained, lost = [], [], []
    for pid in a:
        sa, sb = _side(a[pid]), _side(b[pid])
        flip = "gained" if (not sa["correct"] and sb["correct"]) else "lost" if (sa["correct"] and not sb["correct"]) \
            else None
        if flip == "gained":
            gained.append(pid)
        elif flip == "lost":
            lost.append(pid)
        problems.append({"problem_id": pid, "a": sa, "b": sb, "flip": flip})
    n = len(problems)
    both = sum(1 for p in problems if p["a"]["correct"] and p["b"]["correct"])
    boot = paired_bootstrap([p["b"]["avg"] for p in problems], [p["a"]["avg"] for p in problems],
                            n_resamples=n_resamples, seed=seed)
    return {
        "n_problems": n,
        "pass_at_1": {"a": sum(p["a"]["correct"] for p in problems) / n, "b": sum(p["b"]["correct"] for p in problems) / n},
        "avg_at_k": {"a": sum(p["a"]["avg"] for p in problems) / n, "b": sum(p["b"]["avg"] for p in problems) / n},
        "table": {"both_correct": both, "only_a": len(lost), "only_b": len(gained),
                  "neither": n - both - len(lost) - len(gained)},
        "flips": {"gained": gained, "lost": lost},
        # b = A right & B wrong, c = A wrong & B right (single-sample verdicts)
        "mcnemar": {"b": len(lost), "c": len(gained), "p_value": mcnemar_exact(len(lost), len(gained)),
                    "test": "exact McNemar on the single-sample verdicts (sample 0)"},
        "paired_bootstrap": {**boot, "metric": "avg@k difference B − A",
                             "test": "paired bootstrap over problems, centred for the p-value"},
        "problems": problems,
    }
