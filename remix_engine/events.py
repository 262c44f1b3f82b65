"""The records the trainer emits to its sinks (remix_engine/sinks.py), as typed classes: a renamed
field fails where it is produced and where it is consumed (the JSONL files, the studio's SQL sink),
never silently. Field order is the JSONL column order.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

from remix_engine.jsonsafe import finite_or_none

# Metric keys that sinks read besides recording them: cumulative cost and training time.
COST_ROLLOUTS = "cost/rollouts"
COST_TOKENS = "cost/tokens"
ELAPSED_S = "timing_s/elapsed"


class _Record:
    @classmethod
    def coerce(cls, value: Any):  # noqa: ANN206
        """`value` itself, or the record built from a dict holding exactly its fields (external
        producers such as benchmarks/ingest.py); a missing or unknown key raises TypeError."""
        return value if isinstance(value, cls) else cls(**value)

    @classmethod
    def field_names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in fields(cls))


@dataclass(frozen=True)
class StepMetrics(_Record):
    """One training step's metrics (verl-style keys, docs/algorithm.md) and the counters in them."""

    step: int
    values: Mapping[str, float]

    @property
    def rollouts(self) -> float | None:
        """Rollouts generated so far (absent before the first rollout)."""
        return finite_or_none(self.values.get(COST_ROLLOUTS))

    @property
    def tokens(self) -> float | None:
        return finite_or_none(self.values.get(COST_TOKENS))

    @property
    def elapsed_s(self) -> float | None:
        """Training seconds so far; the initial evaluation (step 0) counts as 0."""
        elapsed = finite_or_none(self.values.get(ELAPSED_S))
        return 0.0 if elapsed is None and self.step == 0 else elapsed


@dataclass(frozen=True)
class RolloutRecord(_Record):
    """One generated response with its grade, as generated at `step` by policy `policy_version`."""

    uid: str  # unique within the run: re-emitting it (resume, re-delivery) replaces it
    step: int
    policy_version: int
    group_id: str  # the GRPO group: all responses to one prompt at one step
    prompt_id: str
    prompt: str
    response: str
    extracted: str | None  # the grader's extracted answer
    reference: str | list[str]
    reward: float
    correct: bool
    format_ok: bool
    reason: str | None  # why it was graded so
    length: int  # response tokens
    truncated: bool
    advantage: float | None


@dataclass(frozen=True)
class RolloutUseRecord(_Record):
    """One update step's use of a rollout: fresh (age 0) or replayed, with its importance statistics."""

    rollout_uid: str
    step: int
    age: int  # consuming step − generating policy version
    ratio_mean: float
    ratio_max: float
    clipfrac: float
    kl_to_behavior: float


@dataclass(frozen=True)
class TokenStatsRecord(_Record):
    """Per-token statistics of one use of a sampled rollout (trainer.token_stats_every); lists run
    over the response tokens. The use at the rollout's own step (age 0) also carries the tokens and
    the behaviour log-probs, which do not change."""

    rollout_uid: str
    step: int  # the consuming step
    age: int
    logprobs: list[float]  # π_k, the consuming step's policy before its update (ratio = exp(this − behaviour))
    advantages: list[float]
    entropy: list[float]  # the policy's entropy at the token, mean over the update's epochs
    clipped: list[int]  # in how many of the update's epochs the clip was active at the token
    tokens: list[str] | None = None  # age 0 only
    behavior_logprobs: list[float] | None = None  # age 0 only


@dataclass(frozen=True)
class CheckpointRecord(_Record):
    """A checkpoint written completely (its folder is final)."""

    step: int
    policy_version: int
    path: str
    policy_path: str | None = None  # the Hugging Face export inside it


@dataclass(frozen=True)
class AlertRecord(_Record):
    """One episode of a health alert (remix_engine/alerts.py): the rule fired from `first_step` to
    `last_step`; re-emitted as it goes on (same rule and first step) and once more when resolved."""

    rule: str
    status: str  # firing | resolved
    first_step: int
    last_step: int
    value: float  # the worst value of the episode (the rule's own measure: a share, a ratio …)
    threshold: float
    detail: str  # one line with the numbers behind it
    metric: str  # the chart it marks
