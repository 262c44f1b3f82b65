"""The PPO critic: a value model initialised from the same base as the policy (verl's choice).

It is a deep copy of the policy's transformer body plus a fresh scalar head initialised at zero,
so V ≡ 0 at the start and the first advantages are the raw returns. A separate model (rather than
a value head on the policy) keeps the actor's gradients free of the value loss, as in verl.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from remix_engine.logprobs import TokenBatch


class ValueModel(nn.Module):
    def __init__(self, policy: nn.Module):
        super().__init__()
        body = getattr(policy, policy.base_model_prefix, None)
        if body is None:
            raise ValueError(f"cannot find the transformer body of {type(policy).__name__} to build a critic")
        self.body = copy.deepcopy(body)
        # The layers FSDP wraps one by one (accelerate reads this, as on a transformers model).
        self._no_split_modules = getattr(policy, "_no_split_modules", None)
        for p in self.body.parameters():
            p.requires_grad_(True)
        self.head = nn.Linear(policy.config.hidden_size, 1)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    def forward(self, batch: TokenBatch) -> torch.Tensor:
        """V(s_h) for every response position h: the state is the prefix before response token h."""
        hidden = self.body(input_ids=batch.input_ids, attention_mask=batch.attention_mask,
                           position_ids=batch.position_ids, use_cache=False).last_hidden_state
        r_width = batch.response_ids.shape[1]
        states = hidden[:, batch.prompt_width - 1: batch.prompt_width - 1 + r_width].float()
        return self.head(states).squeeze(-1) * batch.response_mask
