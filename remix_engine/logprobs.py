"""Teacher-forced forward passes: per-token log-probs (and entropy) of responses under a model.

Layout matches generation: the prompt is left-padded, the response follows it right-padded, and
position ids count only real tokens, so the numbers agree with what `generate` saw.

Memory at real vocabularies (V ≈ 152k): the transformer body runs on the whole micro-batch, but
logits are only formed for *response* tokens, `LOGITS_CHUNK_TOKENS` at a time, and under autograd
each chunk is recomputed in the backward pass (activation checkpointing) instead of being kept.
So no [B, P+R, V] tensor ever exists: the largest logit tensor is [chunk, V].

Micro-batches: `token_budget_split` packs rows into micro-batches of at most a given number of
padded tokens (verl's "dynamic batch size"), each re-padded to its own widths.
"""

from __future__ import annotations

import contextlib
import types
from dataclasses import dataclass

import torch
from torch.utils.checkpoint import checkpoint

from remix_engine.algorithms import entropy_from_logits, log_probs_from_logits

# Response positions whose logits are materialised at once: 1024 x 152k vocabulary x 4 bytes
# = 0.6 GB in float32 — small next to a 1.5B model's activations, large enough to keep the GPU busy.
LOGITS_CHUNK_TOKENS = 1024

_COMPUTE_DTYPES = {"no": None, "bf16": torch.bfloat16}


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


def token_budget_split(prompt_lens: list[int], response_lens: list[int], rows: list[int],
                       max_tokens: int | None) -> list[list[int]]:
    """Pack `rows` into micro-batches whose padded size, n_rows × (max prompt + max response
    length), is at most `max_tokens` (a row longer than the budget goes alone).

    Rows are taken longest first so that rows of similar length share a micro-batch (less padding).
    `max_tokens=None` keeps all rows, in their given order, in one micro-batch.
    """
    if max_tokens is None:
        return [list(rows)] if rows else []
    ordered = sorted(rows, key=lambda i: prompt_lens[i] + response_lens[i], reverse=True)
    groups: list[list[int]] = []
    current: list[int] = []
    p_max = r_max = 0
    for i in ordered:
        p, r = max(p_max, prompt_lens[i]), max(r_max, response_lens[i], 1)
        if current and (len(current) + 1) * (p + r) > max_tokens:
            groups.append(current)
            current, p, r = [], prompt_lens[i], max(response_lens[i], 1)
        current.append(i)
        p_max, r_max = p, r
    if current:
        groups.append(current)
    return groups


def autocast(device: torch.device, mixed_precision: str):
    """The compute-precision context for forward passes: bf16 autocast over fp32 master weights,
    or a no-op for full precision."""
    dtype = _COMPUTE_DTYPES[mixed_precision]
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def _logp_entropy(hidden: torch.Tensor, tokens: torch.Tensor, head: torch.nn.Module, temperature: float,
                  with_entropy: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Log-prob of `tokens` and entropy for a [N, H] chunk of hidden states (float32 results)."""
    logits = head(hidden).float()
    if temperature != 1.0:
        logits = logits / temperature
    logp = log_probs_from_logits(logits.unsqueeze(0), tokens.unsqueeze(0)).squeeze(0)
    entropy = entropy_from_logits(logits) if with_entropy else logp.new_zeros(())
    return logp, entropy


def forward_response(model, batch: TokenBatch, temperature: float = 1.0, with_entropy: bool = False,
                     chunk_tokens: int = LOGITS_CHUNK_TOKENS) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Run `model` on the batch; return (log-probs [B,R], entropy [B,R] or None), float32.

    The hidden state at position P−1+h predicts response token h. Only the hidden states of real
    response tokens go through the output head, in chunks of `chunk_tokens`.
    """
    sharded_entry = getattr(model, _SHARDED_ENTRY, None)
    if sharded_entry is not None:
        return sharded_entry(batch, temperature, with_entropy, chunk_tokens)
    return _forward_response(model, batch, temperature, with_entropy, chunk_tokens)


_SHARDED_ENTRY = "remix_forward_response"


def enable_sharded_forward_response(model: torch.nn.Module) -> None:
    """An FSDP2-sharded model gathers its weights in hooks around `forward()`, but
    `forward_response` calls the body and the output head itself; register it as another forward
    method of the root so the same hooks run around it."""
    from torch.distributed.fsdp import register_fsdp_forward_method

    setattr(model, _SHARDED_ENTRY, types.MethodType(_forward_response, model))
    register_fsdp_forward_method(model, _SHARDED_ENTRY)


def _forward_response(model, batch: TokenBatch, temperature: float, with_entropy: bool,
                      chunk_tokens: int) -> tuple[torch.Tensor, torch.Tensor | None]:
    body = getattr(model, model.base_model_prefix)
    hidden = body(input_ids=batch.input_ids, attention_mask=batch.attention_mask,
                  position_ids=batch.position_ids, use_cache=False).last_hidden_state
    r_width = batch.response_ids.shape[1]
    mask = batch.response_mask.bool()
    states = hidden[:, batch.prompt_width - 1: batch.prompt_width - 1 + r_width][mask]  # [N, H]
    tokens = batch.response_ids[mask]
    head = model.get_output_embeddings()
    recompute = torch.is_grad_enabled()
    logp_parts, ent_parts = [], []
    for lo in range(0, states.shape[0], chunk_tokens):
        args = (states[lo: lo + chunk_tokens], tokens[lo: lo + chunk_tokens], head, temperature, with_entropy)
        lp, ent = (checkpoint(_logp_entropy, *args, use_reentrant=False) if recompute else _logp_entropy(*args))
        logp_parts.append(lp)
        ent_parts.append(ent)
    logp = torch.zeros(mask.shape, dtype=torch.float32, device=mask.device)
    entropy = torch.zeros(mask.shape, dtype=torch.float32, device=mask.device) if with_entropy else None
    if logp_parts:
        logp = logp.index_put((mask,), torch.cat(logp_parts))
        if with_entropy:
            entropy = entropy.index_put((mask,), torch.cat(ent_parts))
    return logp, entropy


@torch.no_grad()
def logprob_micro_batches(prompts: list[list[int]], responses: list[list[int]], max_tokens: int | None,
                          max_rows: int = 64) -> list[list[int]]:
    """The row groups `sequence_logprobs` runs one forward pass each on."""
    rows = list(range(len(prompts)))
    if max_tokens is None:
        return [rows[lo: lo + max_rows] for lo in range(0, len(rows), max_rows)]
    return token_budget_split([len(p) for p in prompts], [len(r) for r in responses], rows, max_tokens)


def idle_batch(pad_id: int) -> TokenBatch:
    """A one-token batch for a forward pass whose only purpose is to join a sharded model's
    collectives (a rank with fewer micro-batches than the others must still take part)."""
    return make_token_batch([[pad_id]], [[pad_id]], pad_id)


@torch.no_grad()
def sequence_logprobs(model, prompts: list[list[int]], responses: list[list[int]], temperature: float = 1.0,
                      pad_id: int = 0, max_tokens: int | None = None, mixed_precision: str = "no",
                      max_rows: int = 64, min_passes: int = 0) -> list[list[float]]:
    """Per-token log-probs of each response (lists trimmed to the response lengths), in a no-grad pass.

    Rows are processed in micro-batches of at most `max_tokens` padded tokens (None: `max_rows`
    rows at a time), so the pass fits whatever the batch size. `min_passes` pads with idle passes
    (for a sharded model, whose every forward pass is a collective).
    """
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    result: list[list[float] | None] = [None] * len(prompts)
    groups = logprob_micro_batches(prompts, responses, max_tokens, max_rows)
    try:
        for group in groups:
            batch = make_token_batch([prompts[i] for i in group], [responses[i] for i in group], pad_id).to(device)
            with autocast(device, mixed_precision):
                logp, _ = forward_response(model, batch, temperature)
            for row, i in zip(logp.cpu(), group, strict=True):
                result[i] = row[: len(responses[i])].tolist()
        for _ in range(min_passes - len(groups)):
            with autocast(device, mixed_precision):
                forward_response(model, idle_batch(pad_id).to(device), temperature)
    finally:
        model.train(was_training)
    return result  # type: ignore[return-value]
