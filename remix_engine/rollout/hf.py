"""The `hf` rollout backend: transformers `generate` on the trainer's own model object.

Because it shares the trainer's module, weight sync is free. Behaviour log-probs are taken
from the raw logits that `generate` saw, divided by the temperature, so they follow the same
formula as the trainer's recomputation (top-p only filters which token is drawn).
"""

from __future__ import annotations

import time

import torch

from remix_engine.rollout.base import RolloutResult, SamplingParams

# Above this many logit values per chunk we do not keep generate's logits; we recompute the
# log-probs with one teacher-forced forward pass instead (real vocabularies are ~150k wide).
_MAX_KEPT_LOGITS = 64_000_000


def left_pad(sequences: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-pad token lists into (input_ids, attention_mask)."""
    width = max(len(s) for s in sequences)
    ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for i, seq in enumerate(sequences):
        if seq:
            ids[i, width - len(seq):] = torch.tensor(seq, dtype=torch.long)
            mask[i, width - len(seq):] = 1
    return ids, mask


def split_response(tokens: list[int], eos_ids: set[int]) -> tuple[list[int], bool]:
    """Cut a generated row after its first EOS. Returns (response tokens, truncated)."""
    for i, tok in enumerate(tokens):
        if tok in eos_ids:
            return tokens[: i + 1], False
    return tokens, True


class HFRolloutBackend:
    name = "hf"

    def __init__(self, model: torch.nn.Module, tokenizer, chunk_size: int = 256):
        self.model = model
        self.tokenizer = tokenizer
        self.chunk_size = chunk_size
        eos = tokenizer.eos_token_id
        self.eos_ids = set(eos if isinstance(eos, list) else [eos])
        gen_eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
        if gen_eos is not None:
            self.eos_ids |= set(gen_eos if isinstance(gen_eos, list) else [gen_eos])
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else next(iter(self.eos_ids))

    def sync_weights(self, model: torch.nn.Module) -> float:
        self.model = model  # same object as the trainer's: nothing to copy
        return 0.0

    def close(self) -> None:
        pass

    @torch.no_grad()
    def generate(self, prompt_ids: list[list[int]], params: SamplingParams) -> RolloutResult:
        start = time.perf_counter()
        expanded = [p for p in prompt_ids for _ in range(params.n)]
        out = RolloutResult(prompt_ids=expanded, response_ids=[], logprobs=[], texts=[], truncated=[])
        was_training = self.model.training
        self.model.eval()
        if params.seed is not None:
            torch.manual_seed(params.seed)
        try:
            for lo in range(0, len(expanded), self.chunk_size):
                self._generate_chunk(expanded[lo: lo + self.chunk_size], params, out)
        finally:
            self.model.train(was_training)
        out.texts = self.tokenizer.batch_decode(out.response_ids, skip_special_tokens=True)
        out.timing_s = time.perf_counter() - start
        return out

    def _generate_chunk(self, prompts: list[list[int]], params: SamplingParams, out: RolloutResult) -> None:
        device = next(self.model.parameters()).device
        input_ids, attention_mask = left_pad(prompts, self.pad_id)
        input_ids, attention_mask = input_ids.to(device), attention_mask.to(device)
        greedy = params.temperature == 0
        vocab = self.model.get_output_embeddings().weight.shape[0]
        keep_logits = len(prompts) * params.max_new_tokens * vocab <= _MAX_KEPT_LOGITS
        gen = self.model.generate(
            input_ids=input_ids,
            attention_mask=attention_mask,
            do_sample=not greedy,
            temperature=None if greedy else params.temperature,
            top_p=None if greedy else params.top_p,
            top_k=None if greedy else 0,
            max_new_tokens=params.max_new_tokens,
            pad_token_id=self.pad_id,
            eos_token_id=sorted(self.eos_ids),
            return_dict_in_generate=True,
            output_logits=keep_logits,
        )
        new_tokens = gen.sequences[:, input_ids.shape[1]:]
        temp = 1.0 if greedy else params.temperature
        if keep_logits and new_tokens.shape[1] > 0:
            logits = torch.stack(gen.logits, dim=1).float() / temp  # [B, T, V]
            token_lp = torch.log_softmax(logits, dim=-1).gather(-1, new_tokens.unsqueeze(-1)).squeeze(-1)
        else:
            token_lp = None
        for i in range(len(prompts)):
            resp, truncated = split_response(new_tokens[i].tolist(), self.eos_ids)
            out.response_ids.append(resp)
            out.truncated.append(truncated)
            out.logprobs.append(token_lp[i, : len(resp)].tolist() if token_lp is not None else [])
        if token_lp is None:
            _fill_logprobs_by_forward(self.model, prompts, out, temp, self.pad_id)


def _fill_logprobs_by_forward(model, prompts, out: RolloutResult, temperature: float, pad_id: int) -> None:
    """Teacher-forced log-probs for the rows just appended (used when logits were not kept)."""
    from remix_engine.logprobs import sequence_logprobs

    rows = out.response_ids[-len(prompts):]
    lps = sequence_logprobs(model, prompts, rows, temperature=temperature, pad_id=pad_id)
    for k, lp in enumerate(lps):
        out.logprobs[len(out.logprobs) - len(prompts) + k] = lp
