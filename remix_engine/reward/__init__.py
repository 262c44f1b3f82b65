"""Math reward: the DeepScaleR-compatible grader, its process pool and analysis metrics.

``grade(response, reference)`` is the training reward and headline-eval grader (tag
``deepscaler-v1``); :class:`GraderPool` runs it in worker processes with a hard timeout;
``mathverify_correct`` is an optional second opinion; ``behavior_metrics`` computes the ReMix
reasoning-behaviour statistics. Importing this package does not import sympy or math-verify.
"""

from remix_engine.reward.behavior import BEHAVIOR_KEYWORDS, behavior_metrics
from remix_engine.reward.grader import (
    GRADER_TAG,
    GradeResult,
    extract_final_answer,
    grade,
    grader_tag,
    is_equivalent,
    reward_from,
)
from remix_engine.reward.mathverify import mathverify_available, mathverify_correct
from remix_engine.reward.pool import GraderPool, close_default_pool, get_default_pool

__all__ = [
    "BEHAVIOR_KEYWORDS",
    "GRADER_TAG",
    "GradeResult",
    "GraderPool",
    "behavior_metrics",
    "close_default_pool",
    "extract_final_answer",
    "get_default_pool",
    "grade",
    "grader_tag",
    "is_equivalent",
    "mathverify_available",
    "mathverify_correct",
    "reward_from",
]
