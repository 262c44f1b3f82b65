"""Fixtures for the vLLM backend tests.

These tests need the separate vLLM environment (`bash scripts/setup_vllm_env.sh`, then
`make test-vllm`). In an environment without vLLM the engine tests are skipped; the pure-function
tests (rollout_corr metrics, the import error) still run.

One engine is shared per test module (start-up costs seconds on 2 cores).
"""

from __future__ import annotations

import pytest
import torch
from vllm_testlib import STOP_PROMPT, build_model, build_tokenizer


def pytest_collection_modifyitems(config, items):
    for item in items:
        if "tests/vllm/" in str(item.fspath).replace("\\", "/"):
            item.add_marker(pytest.mark.vllm)


@pytest.fixture(scope="module")
def toy():
    """(model, tokenizer) where greedy decoding of STOP_PROMPT stops early on a stop token.

    The random model rarely emits <eos>, so the token that greedy decoding of STOP_PROMPT emits at
    position 4 (one not emitted before it) is added to the generation config's EOS ids; both
    backends stop on the tokenizer's and the generation config's EOS ids.
    """
    tokenizer = build_tokenizer()
    model = build_model(tokenizer)
    ids = torch.tensor([tokenizer.encode(STOP_PROMPT)])
    with torch.no_grad():
        row = model.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False, max_new_tokens=12,
                             eos_token_id=None, pad_token_id=tokenizer.pad_token_id)[0, ids.shape[1]:].tolist()
    stop = next((t for i, t in enumerate(row) if i >= 3 and t not in row[:i] and t != tokenizer.pad_token_id), None)
    assert stop is not None, f"no usable stop token in {row}"
    model.generation_config.eos_token_id = [tokenizer.eos_token_id, stop]
    return model, tokenizer


@pytest.fixture(scope="module")
def vllm_backend(toy):
    pytest.importorskip("vllm")
    from remix_engine.rollout import make_backend

    model, tokenizer = toy
    backend = make_backend("vllm", model, tokenizer, kv_cache_gib=0.25)
    yield backend
    backend.close()


@pytest.fixture(scope="module")
def hf_backend(toy):
    from remix_engine.rollout import make_backend

    model, tokenizer = toy
    return make_backend("hf", model, tokenizer)
