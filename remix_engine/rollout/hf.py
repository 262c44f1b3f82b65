"""The `hf` rollout backend: transformers `generate` on the trainer's own model object.

Because it shares the trainer's module, weight sync is free. Behaviour log-probs are taken
from the raw logits that `generate` saw, divided by the temperature, so they follow the same
formula as the trainer's recomputation (top-p only filters which token is drawn).

Sampling with seeds (`SamplingParams.seed` / `prompt_seeds`) draws every row from its own
generator by the Gumbel-max trick (argmax of logits/T + Gumbel noise is an exact sample of
softmax(logits/T)): a row's tokens then do not depend on the other rows of the batch, on the
chunking or on the process that generates it — which is what lets N training processes
reproduce the one-process rollouts. Without seeds, `generate` samples from the global RNG.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

import torch

from remix_engine.rollout.base import RolloutResult, SamplingParams
from remix_engine.sinks import StopRequested

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
        # Polled after every generated token (set by the trainer to its sink's should_stop): a
        # cancel then interrupts even one very long generation, raising StopRequested.
        self.should_stop: Callable[[], bool] | None = None
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

    def sleep(self) -> None:  # generation reads the trainer's own weights: nothing of its own to free
        pass

    def wake_up(self) -> None:
        pass

    def close(self) -> None:
        pass

    @torch.no_grad()
    def generate(self, prompt_ids: list[list[int]], params: SamplingParams) -> RolloutResult:
        start = time.perf_counter()
        expanded = [p for p in prompt_ids for _ in range(params.n)]
        out = RolloutResult(prompt_ids=expanded, response_ids=[], logprobs=[], texts=[], truncated=[])
        was_training = self.model.training
        self.model.eval()
        greedy = params.temperature == 0
        seeds = None if greedy or (params.seed is None and params.prompt_seeds is None) else [
            s + k for s in params.seeds_for(len(prompt_ids)) for k in range(params.n)]
        try:
            for lo in range(0, len(expanded), self.chunk_size):
                self._generate_chunk(expanded[lo: lo + self.chunk_size], params, out,
                                     seeds[lo: lo + self.chunk_size] if seeds else None)
        finally:
            self.model.train(was_training)
        out.texts = self.tokenizer.batch_decode(out.response_ids, skip_special_tokens=True)
        out.timing_s = time.perf_counter() - start
        return out

    def _generate_chunk(self, prompts: list[list[int]], params: SamplingParams, out: RolloutResult,
                        seeds: list[int] | None) -> None:
        device = next(self.model.parameters()).device
        input_ids, attention_mask = left_pad(prompts, self.pad_id)
        input_ids, attention_mask = input_ids.to(device), attention_mask.to(device)
        greedy = params.temperature == 0
        vocab = self.model.get_output_embeddings().weight.shape[0]
        keep_logits = len(prompts) * params.max_new_tokens * vocab <= _MAX_KEPT_LOGITS
        sample_globally = not greedy and seeds is None
        gen = self.model.generate(
            input_ids=input_ids,
            attention_mask=attention_mask,
            do_sample=sample_globally,  # seeded rows are sampled by the Gumbel processor + argmax
            temperature=params.temperature if sample_globally else None,
            top_p=params.top_p if sample_globally else None,
            top_k=0 if sample_globally else None,
            logits_processor=([SeededGumbelSampler(seeds, params.temperature, params.top_p, device)]
                              if seeds is not None else None),
            stopping_criteria=[_RaiseOnStop(self.should_stop)] if self.should_stop is not None else None,
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


class _RaiseOnStop:
    """A stopping criterion that aborts `generate` by raising when a stop was requested."""

    def __init__(self, should_stop: Callable[[], bool]):
        self.should_stop = should_stop

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor, **kwargs) -> torch.Tensor:
        if self.should_stop():
            raise StopRequested("stopped during generation")
        return torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)


class SeededGumbelSampler:
    """A logits processor that turns greedy decoding into sampling, one generator per row.

    Each row's scores become logits/T (top-p filtered) plus Gumbel noise drawn from that row's own
    seeded generator; `generate`'s argmax then picks an exact sample of softmax(logits/T)
    restricted to the nucleus. Finished rows keep drawing noise, so a row's k-th token always uses
    the k-th draw of its stream, whatever else is in the batch."""

    def __init__(self, seeds: list[int], temperature: float, top_p: float, device: torch.device):
        self.temperature, self.top_p = temperature, top_p
        self.generators = [torch.Generator(device=device).manual_seed(int(s) % 2**63) for s in seeds]

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        scores = scores.float() / self.temperature
        if self.top_p < 1.0:
            scores = _top_p_filter(scores, self.top_p)
        uniform = torch.stack([torch.rand(scores.shape[1], generator=g, device=scores.device)
                               for g in self.generators])
        gumbel = -torch.log(-torch.log(uniform.clamp_min(1e-20)))
        return scores + gumbel


def _top_p_filter(scores: torch.Tensor, top_p: float) -> torch.Tensor:
    """Mask (−inf) the tokens outside the smallest set whose probability reaches top_p."""
    sorted_scores, order = torch.sort(scores, descending=True, dim=-1)
    cum = torch.softmax(sorted_scores, dim=-1).cumsum(dim=-1)
    drop_sorted = cum - torch.softmax(sorted_scores, dim=-1) >= top_p  # mass before this token already reaches p
    drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
    return scores.masked_fill(drop, -math.inf)


def _fill_logprobs_by_forward(model, prompts, out: RolloutResult, temperature: float, pad_id: int) -> None:
    """Teacher-forced log-probs for the rows just appended (used when logits were not kept)."""
    from remix_engine.logprobs import sequence_logprobs

    rows = out.response_ids[-len(prompts):]
    lps = sequence_logprobs(model, prompts, rows, temperature=temperature, pad_id=pad_id)
    for k, lp in enumerate(lps):
        out.logprobs[len(out.logprobs) - len(prompts) + k] = lp
