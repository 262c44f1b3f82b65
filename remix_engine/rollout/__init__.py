"""Rollout backends: generate responses with per-token behaviour log-probs."""

from remix_engine.rollout.base import RolloutBackend, RolloutResult, SamplingParams
from remix_engine.rollout.factory import make_backend

__all__ = ["RolloutBackend", "RolloutResult", "SamplingParams", "make_backend"]
