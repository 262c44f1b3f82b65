"""`make_backend`: the backend named by `rollout.backend`. Kept apart from base.py, which the
backends themselves import (the factory imports them)."""

from __future__ import annotations

import torch

from remix_engine.rollout.base import RolloutBackend


def make_backend(name: str, model: torch.nn.Module, tokenizer, **kwargs) -> RolloutBackend:
    if name == "hf":
        from remix_engine.rollout.hf import HFRolloutBackend

        return HFRolloutBackend(model, tokenizer)
    if name == "vllm":
        try:
            from remix_engine.rollout.vllm_backend import VLLMRolloutBackend
        except ImportError as exc:  # the optional extra is missing
            raise RuntimeError(f"rollout.backend=vllm needs the vllm extra: {exc}") from None
        return VLLMRolloutBackend(model, tokenizer, **kwargs)
    raise ValueError(f"rollout.backend: unknown backend '{name}'")
