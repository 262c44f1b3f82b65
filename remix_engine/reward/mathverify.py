"""HuggingFace math-verify (pinned 0.9.0) as an optional second-opinion metric, never the reward.

The configuration is the strict RL one of ``docs/math_reward.md`` section 4 ("mv-rl"): boxed
answers first (priority 0), no anchor-free extraction, ``first_match`` extraction, equations and
malformed-operator repair on. math-verify's own ``signal.alarm`` timeouts are disabled
(``parsing_timeout=None, timeout_seconds=None``) because they fail off the main thread; run this
through :meth:`remix_engine.reward.pool.GraderPool.mathverify_many` to get a hard timeout.

The package is optional (extra ``mathverify``): every function returns ``None`` when it is missing.
"""

from __future__ import annotations

import logging
from functools import lru_cache

from remix_engine.reward.grader import THINK_CLOSE, Reference, prepare_references

MATHVERIFY_VERSION = "0.9.0"


@lru_cache(maxsize=1)
def _load():
    """Import math-verify once; ``None`` when it is not installed."""
    try:
        import math_verify
        from latex2sympy2_extended import NormalizationConfig
    except ImportError:
        return None
    for name in (
        "math_verify",
        "math_verify.parser",
        "math_verify.grader",
        "latex2sympy2_extended.math_normalization",
    ):
        logging.getLogger(name).addFilter(_drop_expected_warnings)
    return math_verify, NormalizationConfig


_EXPECTED_WARNINGS = ("Timeout is disabled", "equations=True in NormalizationConfig is deprecated")


def _drop_expected_warnings(record: logging.LogRecord) -> bool:
    """Logging filter: hide the warnings this configuration triggers on purpose.

    Disabled timeouts are intended (the pool enforces its own), and ``equations=True`` is part
    of the pinned "mv-rl" configuration even though 0.9.0 logs it as deprecated on every call.
    """
    return not str(record.msg).startswith(_EXPECTED_WARNINGS)


def mathverify_available() -> bool:
    """True when math-verify can be imported."""
    return _load() is not None


def answer_region(response: str) -> str:
    """The text math-verify looks at: everything after the last ``</think>`` (or all of it)."""
    return response.rsplit(THINK_CLOSE, 1)[-1]


@lru_cache(maxsize=1)
def _prediction_config():
    """Strict RL extraction config for model output (see module docstring)."""
    math_verify, normalization_config = _load()
    normalization = normalization_config(
        basic_latex=True,
        units=True,
        malformed_operators=True,
        nits=True,
        boxed="all",
        equations=True,
    )
    return [
        math_verify.LatexExtractionConfig(
            try_extract_without_anchor=False,
            boxed_match_priority=0,
            normalization_config=normalization,
        )
    ]


def parse_prediction(response: str) -> list:
    """Parse a model response with the strict config (empty list when nothing is found)."""
    math_verify, _ = _load()
    return math_verify.parse(
        answer_region(response),
        extraction_config=_prediction_config(),
        extraction_mode="first_match",
        parsing_timeout=None,
    )


def parse_reference(reference: str) -> list:
    """Parse one reference string wrapped as ``$...$`` with the default extraction configs."""
    math_verify, _ = _load()
    return math_verify.parse("$" + reference + "$", parsing_timeout=None)


def mathverify_correct(response: str, reference: Reference) -> bool | None:
    """True if math-verify accepts the response for any reference; ``None`` if not installed.

    References follow the grader's rules (numbers ``str()``-ed, boxes unwrapped, lists any-of).
    """
    if _load() is None:
        return None
    math_verify, _ = _load()
    prediction = parse_prediction(response)
    if not prediction:
        return False
    for ref in prepare_references(reference):
        gold = parse_reference(ref)
        if gold and math_verify.verify(gold, prediction, timeout_seconds=None):
            return True
    return False
