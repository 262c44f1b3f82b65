"""The replay buffer: rollouts of the last N policies, kept as whole groups.

Each policy version v (the policy that generated at step v) contributes one batch of groups.
A replayed group is drawn by picking a lag i uniformly among the lags present (ν uniform, the
default of remix_algorithm.md §11.2) and then a group of that version uniformly, without
replacement within one step. Whole groups are drawn so GRPO's group-normalised advantages stay valid.
"""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass, field


@dataclass
class Sample:
    """One response and everything needed to train on it again later."""

    uid: str
    prompt_id: str
    group_id: str
    prompt_ids: list[int]
    response_ids: list[int]
    behavior_logprobs: list[float]
    reward: float
    advantage: float  # the advantage computed when the group was generated
    policy_version: int
    step: int  # step that generated it
    truncated: bool = False
    reuse_count: int = 0  # times it was trained on after its own step
    token_advantages: list[float] | None = None  # PPO: stored per-token advantages (optional mode)


@dataclass
class Group:
    group_id: str
    policy_version: int
    samples: list[Sample] = field(default_factory=list)


class ReplayBuffer:
    def __init__(self, window: int):
        self.window = window
        self.batches: dict[int, list[Group]] = {}

    def __len__(self) -> int:
        return sum(len(g.samples) for groups in self.batches.values() for g in groups)

    @property
    def versions(self) -> list[int]:
        return sorted(self.batches)

    def push(self, version: int, groups: list[Group]) -> None:
        """Add the fresh groups of `version` and drop versions that left the window."""
        self.batches[version] = list(groups)
        for old in [v for v in self.batches if v <= version - self.window]:
            del self.batches[old]

    def clear(self) -> None:
        self.batches.clear()

    def sample_groups(self, n: int, rng: random.Random) -> list[Group]:
        """Draw up to `n` distinct groups: lag uniform over the versions present, then a group uniformly."""
        if n <= 0 or not self.batches:
            return []
        remaining = {v: list(range(len(gs))) for v, gs in self.batches.items() if gs}
        chosen: list[Group] = []
        while len(chosen) < n and remaining:
            version = rng.choice(sorted(remaining))
            pool = remaining[version]
            idx = pool.pop(rng.randrange(len(pool)))
            chosen.append(self.batches[version][idx])
            if not pool:
                del remaining[version]
        return chosen

    def state_dict(self) -> dict:
        return {
            "window": self.window,
            "batches": {v: [{"group_id": g.group_id, "policy_version": g.policy_version,
                             "samples": [asdict(s) for s in g.samples]} for g in gs]
                        for v, gs in self.batches.items()},
        }

    def load_state_dict(self, state: dict) -> None:
        self.window = state["window"]
        self.batches = {
            int(v): [Group(g["group_id"], g["policy_version"], [Sample(**s) for s in g["samples"]]) for g in gs]
            for v, gs in state["batches"].items()
        }
