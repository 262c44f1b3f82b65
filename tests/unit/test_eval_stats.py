"""remix_engine/eval_stats.py: estimators against closed forms, maj@k ties, deterministic bootstrap,
McNemar against a known p-value."""

from __future__ import annotations

from math import comb

import pytest

from remix_engine.eval_stats import (
    bootstrap_ci,
    combine_ci,
    estimates,
    majority_vote,
    mcnemar_exact,
    paired_bootstrap,
    pass_at_k,
    report_ks,
)

# (n, c) hand-made counts, including the edges (none, all, n - c < k)
COUNTS = [(8, 0), (8, 1), (8, 3), (8, 7), (8, 8), (16, 5), (32, 2), (5, 4), (100, 37)]


@pytest.mark.parametrize(("n", "c"), COUNTS)
@pytest.mark.parametrize("k", [1, 2, 4, 5, 8, 16, 32])
def test_pass_at_k_equals_the_closed_form(n, c, k):
    if k > n:
        with pytest.raises(ValueError):
            pass_at_k(n, c, k)
        return
    closed = 1 - comb(n - c, k) / comb(n, k)
    assert pass_at_k(n, c, k) == pytest.approx(closed, abs=1e-12)


def test_pass_at_k_hand_values():
    assert pass_at_k(8, 1, 1) == pytest.approx(1 / 8)
    assert pass_at_k(8, 3, 4) == pytest.approx(1 - 5 / 70)  # C(5,4)/C(8,4) = 5/70
    assert pass_at_k(4, 1, 4) == 1.0 and pass_at_k(4, 0, 4) == 0.0
    assert pass_at_k(2000, 3, 1000) == pytest.approx(1 - comb(1997, 1000) / comb(2000, 1000))  # no overflow


def test_report_ks():
    assert report_ks(8) == [1, 2, 4, 8]
    assert report_ks(1) == [1]
    assert report_ks(6) == [1, 2, 4, 6]


def test_majority_vote_clusters_correct_answers_and_splits_ties():
    assert majority_vote([("5", True), ("5", True), ("3", False)]) == 1.0
    assert majority_vote([("3", False), ("3", False), ("5", True)]) == 0.0
    # "10/2" and "5" are both correct: one cluster (2 votes) beats "3" (1 vote)
    assert majority_vote([("10/2", True), ("5", True), ("3", False)]) == 1.0
    # a 2-2 tie between the correct cluster and a wrong one: half a point
    assert majority_vote([("5", True), ("5", True), ("3", False), ("3", False)]) == 0.5
    # a three-way 1-1-1 tie with one correct: a third
    assert majority_vote([("5", True), ("3", False), ("4", False)]) == pytest.approx(1 / 3)
    # no answers vote nothing; all missing scores 0
    assert majority_vote([(None, False), (None, False), ("5", True)]) == 1.0
    assert majority_vote([(None, False)] * 4) == 0.0


def test_estimates_maj_and_avg_on_hand_made_problems():
    correct = [[True] * 8, [False] * 8, [True, True, True, False, False, False, False, False]]
    answers = [["5"] * 8, ["1", "2", "3", "4", "5", "6", "7", "8"], ["5", "5", "5", "9", "9", "9", "9", "2"]]
    est = estimates(correct, answers)
    assert set(est) == {"pass@1", "pass@2", "pass@4", "pass@8", "maj@8", "avg@8"}
    assert est["avg@8"]["value"] == pytest.approx((1 + 0 + 3 / 8) / 3)
    assert est["pass@1"]["value"] == pytest.approx(est["avg@8"]["value"])
    assert est["pass@8"]["value"] == pytest.approx(2 / 3)
    assert est["pass@4"]["value"] == pytest.approx((1 + 0 + (1 - comb(5, 4) / comb(8, 4))) / 3)
    # problem 2: all distinct wrong answers tie at 1 vote, none correct -> 0; problem 3: "9" (4) beats "5" (3)
    assert est["maj@8"]["value"] == pytest.approx(1 / 3)
    for e in est.values():
        lo, hi = e["ci95"]
        assert lo <= e["value"] <= hi


def test_bootstrap_is_deterministic_and_covers_the_mean():
    scores = [1.0, 0.0, 1.0, 1.0, 0.0, 0.5, 0.25, 1.0, 0.0, 0.0] * 5
    a = bootstrap_ci(scores, seed=0)
    assert a == bootstrap_ci(scores, seed=0)  # same seed, same interval, bit for bit
    assert a != bootstrap_ci(scores, seed=1)
    lo, hi = a
    assert lo < sum(scores) / len(scores) < hi
    assert 0.0 <= lo and hi <= 1.0
    assert bootstrap_ci([]) is None
    assert bootstrap_ci([0.7]) == (0.7, 0.7)


def test_combine_ci_of_identical_independent_intervals_shrinks_by_sqrt_m():
    lo, hi = combine_ci([(0.5, (0.4, 0.6)), (0.5, (0.4, 0.6)), (0.5, (0.4, 0.6)), (0.5, (0.4, 0.6))])
    assert (hi - lo) == pytest.approx(0.2 / 2, rel=1e-9)
    assert combine_ci([(0.5, None)]) is None
    assert combine_ci([(1 / 6, (0.0, 5 / 12))]) == pytest.approx((0.0, 5 / 12))  # one benchmark: its own interval
    lo, hi = combine_ci([(0.1, (0.0, 0.3)), (0.1, (0.0, 0.3))])  # skewed stays skewed, never below 0
    assert lo >= 0.0 and hi - 0.1 > 0.1 - lo


def test_mcnemar_exact_known_p_values():
    # b=1, c=9: 2 * P[Bin(10, 1/2) <= 1] = 2 * 11/1024
    assert mcnemar_exact(1, 9) == pytest.approx(22 / 1024)
    assert mcnemar_exact(9, 1) == pytest.approx(22 / 1024)
    # b=2, c=8: 2 * (1 + 10 + 45)/1024 = 0.109375
    assert mcnemar_exact(2, 8) == pytest.approx(0.109375)
    assert mcnemar_exact(5, 5) == 1.0 and mcnemar_exact(0, 0) == 1.0
    # b=0, c=6: 2/64
    assert mcnemar_exact(0, 6) == pytest.approx(2 / 64)


def test_paired_bootstrap_detects_a_clear_difference_and_not_a_null_one():
    a = [1.0] * 30 + [0.0] * 10
    b = [0.0] * 30 + [0.0] * 10
    res = paired_bootstrap(a, b, seed=0)
    assert res["diff"] == pytest.approx(0.75)
    assert res["p_value"] < 0.01 and res["ci95"][0] > 0
    assert res == paired_bootstrap(a, b, seed=0)
    same = paired_bootstrap(a, a)
    assert same["diff"] == 0 and same["p_value"] == 1.0
    with pytest.raises(ValueError):
        paired_bootstrap([1.0], [1.0, 0.0])


# ----------------------------------------------------------------------------------- paired comparison
def _rows(verdicts: dict[str, list[bool]], answer: str = "5") -> list[dict]:
    return [{"problem_id": p, "sample_index": i, "correct": c, "extracted": answer if c else "0", "id": None}
            for p, vs in verdicts.items() for i, c in enumerate(vs)]


def test_paired_comparison_table_flips_and_tests():
    from remix_engine.eval_paired import NotComparable, paired_comparison

    # a hand-made 2x2 table: both right 5, A only 1, B only 9, neither 5 -> McNemar p = 22/1024
    a = {f"p{i}": [i < 6] for i in range(20)}
    b = {f"p{i}": [i < 5 or 6 <= i < 15] for i in range(20)}
    res = paired_comparison(_rows(a), _rows(b))
    assert res["table"] == {"both_correct": 5, "only_a": 1, "only_b": 9, "neither": 5}
    assert res["flips"] == {"lost": ["p5"], "gained": [f"p{i}" for i in range(6, 15)]}
    assert res["mcnemar"]["p_value"] == pytest.approx(22 / 1024)
    assert res["pass_at_1"] == {"a": 0.3, "b": 0.7}
    assert res["paired_bootstrap"]["diff"] == pytest.approx(0.4)
    row = next(p for p in res["problems"] if p["problem_id"] == "p6")
    assert row["flip"] == "gained" and row["a"]["answer"] == "0" and row["b"]["answer"] == "5"
    assert res == paired_comparison(_rows(a), _rows(b))  # deterministic
    # several samples: flips on sample 0, bootstrap on avg@k
    res = paired_comparison(_rows({"x": [True, False], "y": [False, False]}), _rows({"x": [True, True], "y": [False, True]}))
    assert res["avg_at_k"] == {"a": 0.25, "b": 0.75} and res["flips"] == {"gained": [], "lost": []}
    with pytest.raises(NotComparable, match="different problem sets: 1 problems only in A"):
        paired_comparison(_rows(a), _rows({k: v for k, v in b.items() if k != "p3"}))
