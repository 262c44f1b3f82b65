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
    seed: int | None = None  # one seed for the call (prompt i gets request_seeds(seed, ...)[i])
    # One seed per prompt (overrides `seed`); sample k of prompt i draws from the stream
    # prompt_seeds[i] + k, so a prompt's samples do not depend on which other prompts share the
    # call, on the chunking, or on the process that generates them.
    prompt_seeds: tuple[int, ...] | None = None

    def seeds_for(self, n_prompts: int) -> list[int | None]:
        """The seed of each prompt's request (None: the engine's own random stream)."""
        if self.prompt_seeds is not None:
            if len(self.prompt_seeds) != n_prompts:
                raise ValueError(f"prompt_seeds has {len(self.prompt_seeds)} seeds for {n_prompts} prompts")
            return list(self.prompt_seeds)
        return request_seeds(self.seed, n_prompts, self.n)


_SEED_STRIDE = 1_000_003  # seeds of consecutive calls (seed, seed + 1, ...) never overlap below this many samples


def request_seeds(seed: int | None, n_prompts: int, n: int) -> list[int | None]:
    """One seed per prompt request; the n samples of a prompt use seed + k (k < n), as vLLM does.

    Prompt i gets base + i·n, so all samples of one call have distinct seeds, and calls with seeds
    s and s + 1 do not share any as long as a call has fewer than 1,000,003 samples.
    """
    if seed is None:
        return [None] * n_prompts
    base = (int(seed) * _SEED_STRIDE) % (2**62)
    return [base + i * n for i in range(n_prompts)]


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

    @classmethod
    def concat(cls, parts: list[RolloutResult]) -> RolloutResult:
        """The results of consecutive prompt shards, in order (timing: the slowest shard)."""
        if len(parts) == 1:
            return parts[0]
        return cls(prompt_ids=[x for p in parts for x in p.prompt_ids],
                   response_ids=[x for p in parts for x in p.response_ids],
                   logprobs=[x for p in parts for x in p.logprobs], texts=[x for p in parts for x in p.texts],
                   truncated=[x for p in parts for x in p.truncated], timing_s=max(p.timing_s for p in parts))


class RolloutBackend(Protocol):
    """Generates from the current policy. `sync_weights` is called after every policy update."""

    name: str

    def generate(self, prompt_ids: list[list[int]], params: SamplingParams) -> RolloutResult: ...

    def sync_weights(self, model: torch.nn.Module) -> float:
        """Make the backend generate with `model`'s current weights; returns seconds spent."""
        ...

    def sleep(self) -> None:
        """Free the accelerator memory generation holds (weights, KV cache) while the policy trains;
        the next `wake_up` + `sync_weights` restores it. A no-op where there is nothing to free."""
        ...

    def wake_up(self) -> None: ...

    def close(self) -> None: ...
