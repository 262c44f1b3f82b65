"""The rollout backend interface shared by the `hf` and `vllm` backends."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch


@dataclass(frozen=True)
class SamplingParams:
    n: int = 1  # samples per prompt
    temperature: float = 1.0  # 0 means greedy
    top_p: float = 1.0
    max_new_tokens: int = 64
    seed: int | None = None


@dataclass
class RolloutResult:
    """Outputs for len(prompts) * n samples, ordered prompt-major (all n samples of prompt 0 first)."""

    prompt_ids: list[list[int]]
    response_ids: list[list[int]]  # without padding; includes the EOS token when one was produced
    logprobs: list[list[float]]  # the engine's per-token behaviour log-probs (temperature applied)
    texts: list[str]  # decoded responses (special tokens skipped)
    truncated: list[bool]  # hit max_new_tokens without EOS
    timing_s: float = 0.0

    def __len__(self) -> int:
        return len(self.response_ids)


class RolloutBackend(Protocol):
    """Generates from the current policy. `sync_weights` is called after every policy update."""

    name: str

    def generate(self, prompt_ids: list[list[int]], params: SamplingParams) -> RolloutResult: ...

    def sync_weights(self, model: torch.nn.Module) -> float:
        """Make the backend generate with `model`'s current weights; returns seconds spent."""
        ...

    def close(self) -> None: ...
