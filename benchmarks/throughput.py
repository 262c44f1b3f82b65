"""Rollout / update / weight-sync throughput of our code against the raw libraries, in one run.

(a) rollout tokens/s: our `hf` backend against a raw `model.generate`, and our `vllm` backend against
    a raw `LLM.generate` (same engine, plain SamplingParams without log-probs) and against a raw
    `LLM.generate` that asks for the sampled token's log-prob (`+lp`), on the same prompts with the
    same sampling settings and seeds (so the same tokens). Target: ours >= 0.95x raw.
(b) update tokens/s: the trainer's update (`Trainer._update`: Mix-PPG loss + KL-Convex + grad clip
    + AdamW, metrics included) against a bare torch step (forward, log-softmax of the response
    tokens, masked mean, backward, AdamW) over the same mini-batches of the same tokens, from the
    same initial weights. Target: ours >= 0.9x bare.
(c) weight sync seconds per step: `backend.sync_weights(model)` (hf: shares the module, free).

Runs in the main environment (hf rows only) or in the vLLM one (`.venv-vllm/bin/python`, all rows):

    .venv-vllm/bin/python benchmarks/throughput.py                          # CPU, toy model
    .venv-vllm/bin/python benchmarks/throughput.py --json runs/throughput.json
    python benchmarks/throughput.py --model qwen2-0.5b --device cuda --dtype bfloat16 \
        --prompts 32 --n 8 --max-new-tokens 256 --prompt-len 128            # GPU (scripts/gpu_check.sh)

Models: `toy` (remix_engine.models' toy Qwen2, random init) or `qwen2-0.5b` (Qwen2-0.5B's shape
built from a config, random init, 151,936-token vocabulary with a synthetic tokenizer; no download).
Tokens/s count generated response tokens up to and including EOS. Each side runs --warmup untimed
times, then --repeats times interleaved with the other side; tok/s and "ratio" use the fastest run of
each side (the least disturbed by other load on a shared machine), "median" the median runs, and
"cpu" the median CPU time of this process (with one torch thread, the work itself; this one decides
ok/BELOW on CPU, where the wall clock of a shared 2-core machine mostly measures the neighbours).
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import random
import statistics
import sys
import time
import traceback
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from remix_engine.rollout.base import SamplingParams  # noqa: E402
from remix_engine.rollout.hf import HFRolloutBackend, left_pad, split_response  # noqa: E402

QWEN2_05B_SHAPE = dict(vocab_size=151936, hidden_size=896, intermediate_size=4864, num_hidden_layers=24,
                       num_attention_heads=14, num_key_value_heads=2, rope_theta=1_000_000.0, rms_norm_eps=1e-6,
                       tie_word_embeddings=True)


# ----------------------------------------------------------------------------- models
def synthetic_tokenizer(vocab_size: int):
    """A real fast tokenizer over `vocab_size` made-up word tokens (<pad>=0, <eos>=1)."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"<pad>": 0, "<eos>": 1, "<unk>": 2}
    vocab.update({f"w{i}": i for i in range(3, vocab_size)})
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="<pad>", eos_token="<eos>",
                                   unk_token="<unk>", padding_side="left")


def build_model(name: str, device: str, dtype: torch.dtype, seed: int, max_len: int):
    from transformers import Qwen2Config, Qwen2ForCausalLM

    if name == "toy":
        from remix_engine.models import build_toy_model, build_toy_tokenizer

        tokenizer = build_toy_tokenizer()
        model = build_toy_model(tokenizer, seed)
    elif name == "qwen2-0.5b":
        tokenizer = synthetic_tokenizer(QWEN2_05B_SHAPE["vocab_size"])
        config = Qwen2Config(**QWEN2_05B_SHAPE, max_position_embeddings=max(max_len, 512),
                             eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
                             bos_token_id=None)
        torch.manual_seed(seed)
        with torch.device(device):
            model = Qwen2ForCausalLM(config)
        model.generation_config.eos_token_id = tokenizer.eos_token_id
        model.generation_config.pad_token_id = tokenizer.pad_token_id
    else:
        raise SystemExit(f"--model: unknown model '{name}' (toy, qwen2-0.5b)")
    model = model.to(device=device, dtype=dtype).eval()
    return model, tokenizer


def make_prompts(tokenizer, count: int, length: int, seed: int) -> list[list[int]]:
    """Random prompts of length//2 .. length tokens, drawn from the non-special tokens."""
    rng = random.Random(seed)
    special = set(tokenizer.all_special_ids)
    pool = [i for i in range(len(tokenizer)) if i not in special]
    return [[rng.choice(pool) for _ in range(rng.randint(max(1, length // 2), length))] for _ in range(count)]


# ----------------------------------------------------------------------------- timing helpers
def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def timed(fn, device: str):
    """(wall seconds, this process's CPU seconds, result)."""
    _sync(device)
    start, cpu_start = time.perf_counter(), time.process_time()
    result = fn()
    _sync(device)
    return time.perf_counter() - start, time.process_time() - cpu_start, result


WARMUP = 2


def alternate(sides: dict, repeats: int, device: str) -> dict[str, dict]:
    """Warm each side up (WARMUP runs, alternating), then run them in turn `repeats` times; median
    seconds per side. (vLLM's CPU kernels build per-shape state during the first calls.)"""
    out = {name: {"times": [], "cpu_times": [], "result": None} for name in sides}
    for _ in range(WARMUP):
        for name, fn in sides.items():
            _, _, out[name]["result"] = timed(fn, device)
    for _ in range(repeats):
        for name, fn in sides.items():
            seconds, cpu_seconds, result = timed(fn, device)
            out[name]["times"].append(seconds)
            out[name]["cpu_times"].append(cpu_seconds)
            out[name]["result"] = result
    for name in sides:
        out[name]["median_s"] = statistics.median(out[name]["times"])
        out[name]["best_s"] = min(out[name]["times"])
        out[name]["median_cpu_s"] = statistics.median(out[name]["cpu_times"])
    return out


def _speed_row(part: str, name: str, baseline: str, res: dict, ours_key: str, base_key: str,
               our_tokens: float, base_tokens: float, target: float, same: bool) -> dict:
    """Throughputs from the best (fastest) of the interleaved runs, plus two more ratios:
    of the median runs, and of the median CPU time of this process (on a shared CPU machine the
    wall clock mostly measures the neighbours; the CPU time the process itself spent does not)."""
    ours, base = res[ours_key], res[base_key]
    return {"part": part, "name": name, "baseline": baseline,
            "ours_tok_s": our_tokens / ours["best_s"], "raw_tok_s": base_tokens / base["best_s"],
            "ratio": (our_tokens / ours["best_s"]) / (base_tokens / base["best_s"]),
            "ratio_median": (our_tokens / ours["median_s"]) / (base_tokens / base["median_s"]),
            "ratio_cpu": (our_tokens / ours["median_cpu_s"]) / (base_tokens / base["median_cpu_s"]),
            "target": target, "tokens": int(our_tokens), "same_tokens": same,
            "ours_s": ours["times"], "raw_s": base["times"],
            "ours_cpu_s": ours["cpu_times"], "raw_cpu_s": base["cpu_times"]}


# ----------------------------------------------------------------------------- (a) rollout
def bench_hf_rollout(model, tokenizer, prompts, params: SamplingParams, repeats: int, device: str) -> dict:
    ours = HFRolloutBackend(model, tokenizer)
    eos = ours.eos_ids
    expanded = [p for p in prompts for _ in range(params.n)]

    def raw():
        input_ids, attention_mask = left_pad(expanded, ours.pad_id)
        torch.manual_seed(params.seed)
        with torch.no_grad():
            seq = model.generate(input_ids=input_ids.to(device), attention_mask=attention_mask.to(device),
                                 do_sample=params.temperature > 0, temperature=params.temperature, top_p=params.top_p,
                                 top_k=0, max_new_tokens=params.max_new_tokens, pad_token_id=ours.pad_id,
                                 eos_token_id=sorted(eos))
        rows = seq[:, input_ids.shape[1]:].tolist()
        return [split_response(r, eos)[0] for r in rows]

    res = alternate({"raw": raw, "ours": lambda: ours.generate(prompts, params).response_ids}, repeats, device)
    return _rollout_row("hf", "model.generate", res)


def bench_vllm_rollout(backend, prompts, params: SamplingParams, repeats: int, device: str) -> list[dict]:
    """Two baselines on the same engine: plain LLM.generate, and LLM.generate asking for the sampled
    token's log-prob (logprobs=0), which any RL rollout needs; the second isolates our wrapper's cost."""
    from vllm import SamplingParams as VSamplingParams
    from vllm.inputs import TokensPrompt

    from remix_engine.rollout.base import request_seeds

    eos = set(backend.eos_ids)
    requests = [TokensPrompt(prompt_token_ids=p) for p in prompts]
    seeds = request_seeds(params.seed, len(prompts), params.n)

    def raw_params(**extra):
        return [VSamplingParams(n=params.n, temperature=params.temperature, top_p=params.top_p,
                                max_tokens=params.max_new_tokens, seed=s, stop_token_ids=sorted(eos),
                                detokenize=False, **extra) for s in seeds]

    plain, with_lp = raw_params(), raw_params(logprobs=0, flat_logprobs=True)

    def run(sampling):
        outs = backend.llm.generate(requests, sampling, use_tqdm=False)
        return [split_response(list(c.token_ids), eos)[0] for o in outs for c in sorted(o.outputs, key=lambda c: c.index)]

    res = alternate({"raw": lambda: run(plain), "raw_lp": lambda: run(with_lp),
                     "ours": lambda: backend.generate(prompts, params).response_ids}, repeats, device)
    rows = []
    for key, label in (("raw", "LLM.generate"), ("raw_lp", "LLM.generate+lp")):
        base_tokens = sum(len(r) for r in res[key]["result"])
        our_tokens = sum(len(r) for r in res["ours"]["result"])
        rows.append(_speed_row("rollout", "vllm", label, res, "ours", key, our_tokens, base_tokens, 0.95,
                               res[key]["result"] == res["ours"]["result"]))
    return rows


def _rollout_row(name: str, raw_name: str, res: dict) -> dict:
    raw_tokens = sum(len(r) for r in res["raw"]["result"])
    our_tokens = sum(len(r) for r in res["ours"]["result"])
    return _speed_row("rollout", name, raw_name, res, "ours", "raw", our_tokens, raw_tokens, 0.95,
                      res["raw"]["result"] == res["ours"]["result"])


# ----------------------------------------------------------------------------- (b) update
def bench_update(model, tokenizer, prompts, responses, repeats: int, device: str, mini_batch: int, utd: int) -> dict:
    from remix_engine import algorithms as algo
    from remix_engine.config import build_config
    from remix_engine.logprobs import make_token_batch, sequence_logprobs
    from remix_engine.trainer import Trainer, UpdateBatch, _pad_rows

    # group_size 1: actor.mini_batch_size (prompts x group size) then counts responses, as --mini-batch does
    cfg = build_config("toy", "remix-grpo", overrides=[f"actor.mini_batch_size={mini_batch}", f"remix.utd={utd}",
                                                       "actor.entropy_coef=0.001"])
    cfg.rollout.group_size = 1
    temp = cfg.rollout.temperature
    pad_id = tokenizer.pad_token_id
    trainable = copy.deepcopy(model).float() if device == "cpu" else copy.deepcopy(model)
    bare_model = copy.deepcopy(trainable)
    lr = cfg.actor.lr

    old_lp = _pad_rows(sequence_logprobs(trainable, prompts, responses, temp, pad_id)).to(device)
    width = old_lp.shape[1]
    gen = torch.Generator().manual_seed(0)
    behavior_lp = old_lp - 0.01 * torch.rand(old_lp.shape, generator=gen).to(device)
    anchor_lp = old_lp - 0.02 * torch.rand(old_lp.shape, generator=gen).to(device)
    precedent_lp = old_lp - 0.01 * torch.rand(old_lp.shape, generator=gen).to(device)
    batch = make_token_batch(prompts, responses, pad_id).to(device)
    assert batch.response_ids.shape[1] == width
    advantages = algo.broadcast_to_tokens(torch.randn(len(prompts), generator=gen).to(device), batch.response_mask)
    tokens = float(batch.response_mask.sum()) * utd

    trainer = object.__new__(Trainer)  # only the update's state: no data, grader or rollout backend
    trainer.cfg = cfg
    trainer.device = torch.device(device)
    trainer.pad_id = pad_id
    trainer.model = trainable
    trainer.optimizer = torch.optim.AdamW(trainable.parameters(), lr=lr, weight_decay=cfg.actor.weight_decay)
    trainer.rng = random.Random(0)
    trainer.critic = None  # GRPO family: no value model
    trainer.critic_optimizer = None

    update_batch = UpdateBatch(prompts, responses, batch.response_mask.cpu(), old_lp.cpu(), behavior_lp.cpu(),
                               advantages.cpu(), anchor_lp.cpu(), precedent_lp.cpu())

    def ours():
        trainer._update(update_batch, 0.8, utd)

    bare_opt = torch.optim.AdamW(bare_model.parameters(), lr=lr, weight_decay=cfg.actor.weight_decay)
    order_rng = random.Random(0)

    def bare():
        bare_model.train()
        size = batch.input_ids.shape[0]
        for _ in range(utd):
            order = list(range(size))
            order_rng.shuffle(order)
            for lo in range(0, size, mini_batch):
                rows = order[lo: lo + mini_batch]
                mb = make_token_batch([prompts[i] for i in rows], [responses[i] for i in rows], pad_id).to(device)
                logits = bare_model(input_ids=mb.input_ids, attention_mask=mb.attention_mask,
                                    position_ids=mb.position_ids, use_cache=False).logits
                r_width = mb.response_ids.shape[1]
                logits = logits[:, mb.prompt_width - 1: mb.prompt_width - 1 + r_width].float() / temp
                logp = torch.log_softmax(logits, dim=-1).gather(-1, mb.response_ids.unsqueeze(-1)).squeeze(-1)
                loss = -(logp * mb.response_mask).sum() / mb.response_mask.sum().clamp(min=1)
                bare_opt.zero_grad(set_to_none=True)
                loss.backward()
                bare_opt.step()

    res = alternate({"bare": bare, "ours": ours}, repeats, device)
    return _speed_row("update", "trainer update", "bare fwd/bwd+AdamW", res, "ours", "bare", tokens, tokens, 0.9, True)


# ----------------------------------------------------------------------------- (c) sync
def bench_sync(backend, model, repeats: int, device: str) -> dict:
    times = []
    for _ in range(repeats + 1):
        _sync(device)
        times.append(backend.sync_weights(model))
    times = times[1:]
    n_bytes = sum(t.numel() * t.element_size() for t in model.state_dict().values())
    return {"part": "sync", "name": backend.name, "median_s": statistics.median(times), "times_s": times,
            "megabytes": n_bytes / 1e6}


# ----------------------------------------------------------------------------- main
def environment(device: str) -> dict:
    env = {"python": platform.python_version(), "torch": torch.__version__, "threads": torch.get_num_threads(),
           "cpu_count": os.cpu_count(), "machine": platform.machine(),
           "load_avg_1m_at_start": os.getloadavg()[0]}
    try:
        import transformers

        env["transformers"] = transformers.__version__
    except ImportError:  # pragma: no cover
        pass
    try:
        import vllm

        env["vllm"] = vllm.__version__
    except ImportError:
        env["vllm"] = None
    if device.startswith("cuda"):
        env["gpu"] = torch.cuda.get_device_name()
    return env


def print_table(rows: list[dict], args, env: dict) -> None:
    print()
    print("tok/s and 'ratio' from the fastest of the interleaved runs; 'median': ratio of the median runs; 'cpu': "
          "ratio of this process's median CPU time (decides ok/BELOW on CPU; the wall clock on GPU)")
    print(f"model={args.model} device={args.device} dtype={args.dtype} prompts={args.prompts} n={args.n} "
          f"max_new_tokens={args.max_new_tokens} prompt_len<={args.prompt_len} T={args.temperature} "
          f"repeats={args.repeats} threads={env['threads']}"
          + (f" gpu={env['gpu']}" if env.get("gpu") else "")
          + f" torch={env['torch']} vllm={env.get('vllm')} load1m={env['load_avg_1m_at_start']:.1f}")
    head = (f"{'part':<8} {'ours':<15} {'baseline':<20} {'ours tok/s':>11} {'base tok/s':>11} {'ratio':>6} "
            f"{'median':>6} {'cpu':>6} {'target':>7} {'tokens':>7}  same")
    print(head)
    print("-" * len(head))
    for r in rows:
        if r["part"] == "sync":
            continue
        # On CPU the process-CPU-time ratio decides (immune to the neighbours' load); on GPU the wall clock.
        decisive = r["ratio"] if args.device.startswith("cuda") else r["ratio_cpu"]
        ok = "ok" if decisive >= r["target"] else "BELOW"
        print(f"{r['part']:<8} {r['name']:<15} {r['baseline']:<20} {r['ours_tok_s']:>11.1f} {r['raw_tok_s']:>11.1f} "
              f"{r['ratio']:>6.3f} {r['ratio_median']:>6.3f} {r['ratio_cpu']:>6.3f} {'>=' + str(r['target']):>7} "
              f"{r['tokens']:>7}  "
              f"{'yes' if r['same_tokens'] else 'NO'} {ok}")
    for r in rows:
        if r["part"] == "sync":
            print(f"{'sync':<8} {r['name']:<15} weight sync per step: median {r['median_s'] * 1000:.1f} ms "
                  f"({r['megabytes']:.1f} MB state dict)")
    print()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="toy", choices=["toy", "qwen2-0.5b"])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--dtype", default=None, help="float32 (CPU default) or bfloat16 (GPU default)")
    ap.add_argument("--backends", default="hf,vllm", help="comma list; vllm is skipped where it is not installed")
    ap.add_argument("--prompts", type=int, default=16)
    ap.add_argument("--n", type=int, default=8)
    ap.add_argument("--max-new-tokens", type=int, default=96)
    ap.add_argument("--prompt-len", type=int, default=48)
    ap.add_argument("--temperature", type=float, default=1.0)
    ap.add_argument("--top-p", type=float, default=1.0)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=2, help="untimed runs of each side first")
    ap.add_argument("--mini-batch", type=int, default=64)
    ap.add_argument("--utd", type=int, default=1)
    ap.add_argument("--sync-repeats", type=int, default=5)
    ap.add_argument("--kv-cache-gib", type=float, default=1.0, help="vLLM KV cache on CPU")
    ap.add_argument("--gpu-memory-utilization", type=float, default=0.35)
    ap.add_argument("--skip-update", action="store_true")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=None,
                    help="torch threads (default on CPU: 1; on a shared, loaded machine 2+ OpenMP threads can run "
                         "10x slower, which makes timings meaningless)")
    ap.add_argument("--json", default=None, help="also write the rows and settings to this file")
    args = ap.parse_args(argv)
    global WARMUP
    WARMUP = max(1, args.warmup)
    if args.threads is None and not args.device.startswith("cuda"):
        args.threads = 1
    if args.threads:
        torch.set_num_threads(args.threads)
    args.dtype = args.dtype or ("bfloat16" if args.device.startswith("cuda") else "float32")
    dtype = getattr(torch, args.dtype)
    backends = [b.strip() for b in args.backends.split(",") if b.strip()]

    env = environment(args.device)
    max_len = args.prompt_len + args.max_new_tokens
    model, tokenizer = build_model(args.model, args.device, dtype, args.seed, max_len)
    prompts = make_prompts(tokenizer, args.prompts, args.prompt_len, args.seed + 1)
    params = SamplingParams(n=args.n, temperature=args.temperature, top_p=args.top_p,
                            max_new_tokens=args.max_new_tokens, seed=args.seed + 2)
    rows: list[dict] = []
    errors: list[str] = []

    def save() -> None:
        if args.json:
            Path(args.json).parent.mkdir(parents=True, exist_ok=True)
            Path(args.json).write_text(json.dumps({"settings": vars(args), "environment": env, "rows": rows,
                                                   "errors": errors}, indent=1))

    def run_part(label: str, fn) -> None:
        """One part failing (say, out of memory) still leaves the others' numbers."""
        try:
            fn()
        except Exception as exc:  # noqa: BLE001 - reported, and the exit status says so
            errors.append(f"{label}: {type(exc).__name__}: {exc}")
            traceback.print_exc()
            print(f"[{label}] FAILED: {type(exc).__name__}: {exc}", flush=True)
        save()

    def hf_part() -> None:
        row = bench_hf_rollout(model, tokenizer, prompts, params, args.repeats, args.device)
        rows.append(row)
        print(f"[rollout hf] ours {row['ours_tok_s']:.1f} tok/s, raw {row['raw_tok_s']:.1f} tok/s", flush=True)
        rows.append({"part": "sync", "name": "hf", "median_s": 0.0, "times_s": [0.0], "megabytes": 0.0})

    def vllm_part() -> None:
        from remix_engine.rollout.vllm_backend import VLLMRolloutBackend

        backend = VLLMRolloutBackend(model, tokenizer, max_model_len=max_len + 8, kv_cache_gib=args.kv_cache_gib,
                                     gpu_memory_utilization=args.gpu_memory_utilization)
        try:
            for row in bench_vllm_rollout(backend, prompts, params, args.repeats, args.device):
                rows.append(row)
                print(f"[rollout vllm] ours {row['ours_tok_s']:.1f} tok/s, {row['baseline']} {row['raw_tok_s']:.1f} "
                      f"tok/s (engine start {backend.startup_s:.1f} s)", flush=True)
            rows.append(bench_sync(backend, model, args.sync_repeats, args.device))
        finally:
            backend.close()

    def update_part() -> None:
        sample = HFRolloutBackend(model, tokenizer).generate(prompts, params)
        row = bench_update(model, tokenizer, sample.prompt_ids, sample.response_ids, args.repeats,
                           args.device, args.mini_batch, args.utd)
        rows.append(row)
        print(f"[update] ours {row['ours_tok_s']:.1f} tok/s, bare {row['raw_tok_s']:.1f} tok/s", flush=True)

    if "hf" in backends:
        run_part("rollout hf", hf_part)
    if "vllm" in backends:
        if env["vllm"] is None:
            print("[rollout vllm] skipped: vllm is not installed in this environment", flush=True)
        else:
            run_part("rollout vllm", vllm_part)
    if not args.skip_update:
        if args.device.startswith("cuda"):
            torch.cuda.empty_cache()
        run_part("update", update_part)

    print_table(rows, args, env)
    for err in errors:
        print(f"FAILED {err}")
    save()
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
