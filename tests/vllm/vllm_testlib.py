"""Helpers shared by the vLLM tests (imported by name: pytest puts this folder on sys.path)."""

from __future__ import annotations

STOP_PROMPT = "3+4="  # greedy generation from this prompt hits the extra stop token (conftest `toy`)


def build_tokenizer():
    """The project's character-level toy tokenizer."""
    from remix_engine.models import build_toy_tokenizer

    return build_toy_tokenizer()


def build_model(tokenizer, seed: int = 0):
    """The project's toy Qwen2 (float32; head_dim 32, which vLLM's CPU attention supports).

    Its own init (std 0.02) makes a degenerate random model whose greedy output repeats one token;
    seeded noise of std 0.1 is added to the non-embedding matrices so that greedy and sampled outputs
    vary between prompts.
    """
    import torch

    from remix_engine.models import build_toy_model

    model = build_toy_model(tokenizer, seed)
    gen = torch.Generator().manual_seed(1000 + seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if param.dim() > 1 and "embed" not in name:
                param.add_(torch.randn(param.shape, generator=gen) * 0.1)
    return model.eval()


def encode_all(tokenizer, texts: list[str]) -> list[list[int]]:
    return [tokenizer.encode(t) for t in texts]


# A toy training run small enough for the vLLM suite (test_vllm_training, test_vllm_ranks).
TOY_TRAINING = [
    "warm_start.steps=0",  # untrained toy model: no warm-start cost in the test
    "rollout.prompts_per_step=4",
    "rollout.group_size=4",
    "rollout.max_new_tokens=24",
    "data.heldout_size=12",
    "trainer.eval_every=3",
    "trainer.checkpoint_every=3",
    "trainer.torch_threads=1",
    "actor.mini_batch_size=16",
]
