"""Reasoning-behaviour metrics of the ReMix paper (``docs/remix_algorithm.md`` section 9.1).

Each response is lower-cased; every keyword of a category is counted with a plain substring count
(so ``"if"`` also matches inside ``"different"``, and ``"what if"`` counts for both ``"what if"``
and ``"if"``). Words are ``\\b\\w+\\b`` tokens. Per category:

* ``behavior/<cat>_density``: total keyword hits / total words over all responses;
* ``behavior/<cat>_rate``: fraction of responses with at least one hit (the paper's
  "Self-Reflection rate" is ``behavior/self_reflection_rate``).

Unlike the paper's code the values are not rounded.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

BEHAVIOR_KEYWORDS: dict[str, tuple[str, ...]] = {
    "self_reflection": (
        "verify", "re-examine", "double-check", "why", "root cause", "validate", "abduct",
        "question", "check", "but", "wait", "confirm", "scrutinize", "analyze", "investigate",
        "probe",
    ),
    "hypotheticals": (
        "suppose", "assume", "if", "hypothetically", "what if", "doubt", "presume", "envision",
        "try to", "imagine", "assuming", "speculate", "pretend", "postulate", "consider",
    ),
    "branching": (
        "alternatively", "on the other hand", "another approach", "option", "another",
        "otherwise", "instead", "conversely", "plan b", "fallback", "choose", "diverge",
    ),
    "uncertainty": (
        "possibly", "uncertain", "seems", "likely", "probable", "might", "tentatively",
        "conceivably", "surmise", "perhaps", "maybe", "perchance", "plausibly", "potentially",
        "presumably", "guess",
    ),
    "meta_cognition": (
        "reflect", "contemplate", "meditate", "deep thought", "introspect", "ponder", "ruminate",
        "deliberate", "cogitate", "theorize", "philosophize",
    ),
}  # fmt: skip

_WORD = re.compile(r"\b\w+\b")


def count_words(text: str) -> int:
    """Number of ``\\b\\w+\\b`` words in the lower-cased text."""
    return len(_WORD.findall(text.lower()))


def keyword_hits(text: str, keywords: Sequence[str]) -> int:
    """Sum of plain substring counts of each keyword in the lower-cased text."""
    lowered = text.lower()
    return sum(lowered.count(keyword) for keyword in keywords)


def behavior_metrics(texts: Sequence[str]) -> dict[str, float]:
    """Appearance rate and density of each behaviour category over ``texts``.

    An empty list, or texts without any word, give 0.0 for the affected statistics.
    """
    total_words = sum(count_words(text) for text in texts)
    metrics: dict[str, float] = {}
    for category, keywords in BEHAVIOR_KEYWORDS.items():
        hits_per_text = [keyword_hits(text, keywords) for text in texts]
        appearing = sum(1 for hits in hits_per_text if hits > 0)
        metrics[f"behavior/{category}_rate"] = appearing / len(texts) if texts else 0.0
        metrics[f"behavior/{category}_density"] = sum(hits_per_text) / total_words if total_words else 0.0
    return metrics
