"""Teacher-forced forward passes: per-token log-probs (and entropy) of responses under a model.

Layout matches generation: the prompt is left-padded, the response follows it right-padded, and
position ids count only real tokens, so the numbers agree with what `generate` saw.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from remix_engine.algorithms import entropy_from_logits, log_probs_from_logits


@dataclass
class TokenBatch:
    input_ids: torch.Tensor  # [B, P + R]
    attention_mask: torch.Tensor  # [B, P + R]
    position_ids: torch.Tensor  # [B, P + R]
    response_ids: torch.Tensor  # [B, R] (padded with pad_id)
    response_mask: torch.Tensor  # [B, R] float, 1 on real response tokens
    prompt_width: int

    def to(self, device) -> TokenBatch:
        return TokenBatch(*(t.to(device) if isinstance(t, torch.Tensor) else t for t in (
            self.input_ids, self.attention_mask, self.position_ids, self.response_ids, self.response_mask, self.prompt_width)))


def make_token_batch(prompts: list[list[int]], responses: list[list[int]], pad_id: int) -> TokenBatch:
    p_width = max(len(p) for p in prompts)
    r_width = max(1, max(len(r) for r in responses))
    bsz = len(prompts)
    input_ids = torch.full((bsz, p_width + r_width), pad_id, dtype=torch.long)
    attention = torch.zeros((bsz, p_width + r_width), dtype=torch.long)
    response_ids = torch.full((bsz, r_width), pad_id, dtype=torch.long)
    response_mask = torch.zeros((bsz, r_width), dtype=torch.float32)
    for i, (p, r) in enumerate(zip(prompts, responses, strict=True)):
        input_ids[i, p_width - len(p): p_width] = torch.tensor(p, dtype=torch.long)
        attention[i, p_width - len(p): p_width] = 1
        if r:
            input_ids[i, p_width: p_width + len(r)] = torch.tensor(r, dtype=torch.long)
            attention[i, p_width: p_width + len(r)] = 1
            response_ids[i, : len(r)] = torch.tensor(r, dtype=torch.long)
            response_mask[i, : len(r)] = 1.0
    position_ids = (attention.cumsum(dim=1) - 1).clamp(min=0)
    return TokenBatch(input_ids, attention, position_ids, response_ids, response_mask, p_width)


def forward_response(model, batch: TokenBatch, temperature: float = 1.0, with_entropy: bool = False,
                     with_hidden: bool = False):
    """Run `model` on the batch; return (log-probs [B,R], entropy [B,R] or None, outputs).

    Logits at position P−1+h predict response token h.
    """
    out = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask,
                position_ids=batch.position_ids, use_cache=False, output_hidden_states=with_hidden)
    r_width = batch.response_ids.shape[1]
    logits = out.logits[:, batch.prompt_width - 1: batch.prompt_width - 1 + r_width].float()
    if temperature != 1.0:
        logits = logits / temperature
    logp = log_probs_from_logits(logits, batch.response_ids)
    entropy = entropy_from_logits(logits) if with_entropy else None
    return logp, entropy, out


@torch.no_grad()
def sequence_logprobs(model, prompts: list[list[int]], responses: list[list[int]], temperature: float = 1.0,
                      pad_id: int = 0, batch_size: int = 64) -> list[list[float]]:
    """Per-token log-probs of each response (lists trimmed to the response lengths)."""
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    result: list[list[float]] = []
    try:
        for lo in range(0, len(prompts), batch_size):
            batch = make_token_batch(prompts[lo: lo + batch_size], responses[lo: lo + batch_size], pad_id).to(device)
            logp, _, _ = forward_response(model, batch, temperature)
            for row, resp in zip(logp, responses[lo: lo + batch_size], strict=True):
                result.append(row[: len(resp)].tolist())
    finally:
        model.train(was_training)
    return result
