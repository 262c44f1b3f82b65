"""Hand-computed tests for the ReMix reasoning-behaviour metrics (remix_algorithm.md section 9.1)."""

from __future__ import annotations

import pytest

from remix_engine.reward import BEHAVIOR_KEYWORDS, behavior_metrics
from remix_engine.reward.behavior import count_words, keyword_hits

CATEGORIES = ("self_reflection", "hypotheticals", "branching", "uncertainty", "meta_cognition")


def test_keyword_lists_match_the_paper_code():
    assert BEHAVIOR_KEYWORDS["self_reflection"] == (
        "verify", "re-examine", "double-check", "why", "root cause", "validate", "abduct", "question",
        "check", "but", "wait", "confirm", "scrutinize", "analyze", "investigate", "probe",
    )  # fmt: skip
    assert BEHAVIOR_KEYWORDS["hypotheticals"] == (
        "suppose", "assume", "if", "hypothetically", "what if", "doubt", "presume", "envision",
        "try to", "imagine", "assuming", "speculate", "pretend", "postulate", "consider",
    )  # fmt: skip
    assert BEHAVIOR_KEYWORDS["branching"] == (
        "alternatively", "on the other hand", "another approach", "option", "another", "otherwise",
        "instead", "conversely", "plan b", "fallback", "choose", "diverge",
    )  # fmt: skip
    assert BEHAVIOR_KEYWORDS["uncertainty"] == (
        "possibly", "uncertain", "seems", "likely", "probable", "might", "tentatively", "conceivably",
        "surmise", "perhaps", "maybe", "perchance", "plausibly", "potentially", "presumably", "guess",
    )  # fmt: skip
    assert BEHAVIOR_KEYWORDS["meta_cognition"] == (
        "reflect", "contemplate", "meditate", "deep thought", "introspect", "ponder", "ruminate",
        "deliberate", "cogitate", "theorize", "philosophize",
    )  # fmt: skip


def test_words_and_plain_substring_counts():
    assert count_words("Let me re-check: x_1 = 2.5!") == 7  # let, me, re, check, x_1, 2, 5
    assert keyword_hits("A different IF", ["if"]) == 2  # inside "different" and the upper-case "IF"
    assert keyword_hits("what if", ["if", "what if"]) == 2
    assert keyword_hits("Plan B", BEHAVIOR_KEYWORDS["branching"]) == 1


def test_metrics_hand_computed():
    texts = ["Wait, but why?", "Let me verify: if x then y.", "No keywords here."]
    # words: 3 + 7 + 3 = 13
    # self-reflection hits: wait, but, why (text 1) + verify (text 2) = 4, in 2 of 3 texts
    # hypotheticals: "if" twice in text 2 (once inside "verIFy"), nowhere else
    metrics = behavior_metrics(texts)
    assert set(metrics) == {f"behavior/{c}_{s}" for c in CATEGORIES for s in ("rate", "density")}
    assert metrics["behavior/self_reflection_rate"] == 2 / 3
    assert metrics["behavior/self_reflection_density"] == 4 / 13
    assert metrics["behavior/hypotheticals_rate"] == 1 / 3
    assert metrics["behavior/hypotheticals_density"] == 2 / 13
    for category in ("branching", "uncertainty", "meta_cognition"):
        assert metrics[f"behavior/{category}_rate"] == 0.0
        assert metrics[f"behavior/{category}_density"] == 0.0


def test_overlapping_phrases_count_for_every_keyword():
    # words: what, if, we, try, another, approach, perhaps, plan, b, deep, thought = 11
    metrics = behavior_metrics(["What if we try another approach? Perhaps plan B. Deep thought."])
    assert metrics["behavior/hypotheticals_density"] == 2 / 11  # "what if" and "if"
    assert metrics["behavior/branching_density"] == 3 / 11  # "another approach", "another", "plan b"
    assert metrics["behavior/uncertainty_density"] == 1 / 11
    assert metrics["behavior/meta_cognition_density"] == 1 / 11
    assert metrics["behavior/self_reflection_rate"] == 0.0
    assert metrics["behavior/meta_cognition_rate"] == 1.0


def test_density_pools_words_over_all_responses():
    metrics = behavior_metrics(["check check check check", "one two three four five six"])
    assert metrics["behavior/self_reflection_density"] == pytest.approx(4 / 10)
    assert metrics["behavior/self_reflection_rate"] == 0.5


def test_empty_inputs_give_zeros():
    for texts in ([], ["", "?!"]):
        metrics = behavior_metrics(texts)
        assert len(metrics) == 10
        assert all(value == 0.0 for value in metrics.values())
