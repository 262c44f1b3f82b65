"""Engine lifecycle: its own engine, so it runs in a module with no other engine alive."""

from __future__ import annotations

import random

import pytest
import torch
from vllm_testlib import build_model, build_tokenizer

from remix_engine.rollout import SamplingParams, make_backend

pytestmark = pytest.mark.vllm


def test_engine_keeps_process_state():
    """Building an engine leaves the global RNG streams and torch.set_num_threads as they were."""
    pytest.importorskip("vllm")
    tokenizer = build_tokenizer()
    model = build_model(tokenizer)
    torch.manual_seed(77)
    random.seed(77)
    expected_torch = torch.rand(3)
    expected_py = random.random()
    torch.manual_seed(77)
    random.seed(77)
    threads = torch.get_num_threads()
    backend = make_backend("vllm", model, tokenizer, kv_cache_gib=0.125)
    try:
        assert torch.equal(torch.rand(3), expected_torch)
        assert random.random() == expected_py
        assert torch.get_num_threads() == threads
        torch.set_num_threads(1)
        assert torch.get_num_threads() == 1  # not the engine's no-op replacement
    finally:
        torch.set_num_threads(threads)
        backend.close()


def test_close_then_restart_and_bf16_model():
    """A closed engine frees its place: a new one starts in the same process (here from a bf16 model,
    which the CPU engine runs in float32)."""
    pytest.importorskip("vllm")
    tokenizer = build_tokenizer()
    model = build_model(tokenizer, seed=1).to(torch.bfloat16)
    prompts = [tokenizer.encode("12+34=")]
    params = SamplingParams(n=2, temperature=1.0, max_new_tokens=6, seed=0)
    first = make_backend("vllm", model, tokenizer, kv_cache_gib=0.125)
    a = first.generate(prompts, params)
    first.close()
    first.close()  # idempotent
    second = make_backend("vllm", model, tokenizer, kv_cache_gib=0.125)
    try:
        b = second.generate(prompts, params)
    finally:
        second.close()
    assert a.response_ids == b.response_ids
    assert len(a) == 2


def test_sleep_mode_is_refused_on_cpu_with_the_setting_to_change():
    """vLLM's CPU build has no sleep mode: asking for it fails before an engine starts, naming the setting."""
    pytest.importorskip("vllm")
    tokenizer = build_tokenizer()
    with pytest.raises(ValueError, match="rollout.vllm_sleep=false"):
        make_backend("vllm", build_model(tokenizer), tokenizer, kv_cache_gib=0.125, sleep=True)
