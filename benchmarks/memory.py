"""Peak memory of one training step (rollout aside) for each algorithm, against a bare step.

For each model size (a real Qwen2 architecture with few layers and random weights, built offline
by `remix make-model`'s code) and each algorithm, one fresh process builds the trainer with the
paper preset's precision (fp32 master weights, bf16 compute, bf16 inference copies) and token
budget, generates the step's rollouts, resets the peak-memory counter, and runs the rest of the
step: reward, the no-grad log-prob passes (π_k, anchor, precedent), the critic (PPO) and the
update. A second fresh process runs the bare baseline on exactly the same tokens: the same model
in fp32 with AdamW, bf16 autocast, the same micro-batches, the standard Hugging Face causal-LM
loss (`model(..., labels=...)`), backward, one optimizer step.

Peak memory is the process's peak resident set on CPU (/proc/self/status VmHWM, reset through
/proc/self/clear_refs) minus what the process held after its imports; on a GPU it is
torch.cuda.max_memory_allocated. Targets (issue 11): remix-grpo ≤ 1.3x the bare step,
remix-ppo ≤ 2.3x (it also trains a critic).

    python benchmarks/memory.py                        # the default three sizes, all algorithms
    python benchmarks/memory.py --sizes r1-distill-1.5b:1 --algorithms grpo,remix-grpo
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

ALGORITHMS = ("grpo", "remix-grpo", "ppo", "remix-ppo")
TARGETS = {"remix-grpo": 1.3, "remix-ppo": 2.3}
DEFAULT_SIZES = "qwen2.5-0.5b:2,qwen2.5-0.5b:8,r1-distill-1.5b:1"


# ----------------------------------------------------------------------------- memory counters
def _rss_peak_bytes() -> int:
    return int(re.search(r"VmHWM:\s+(\d+) kB", Path("/proc/self/status").read_text()).group(1)) * 1024


def reset_peak(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    else:
        Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current resident set


def read_peak(device) -> int:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated()
    return _rss_peak_bytes()


# ----------------------------------------------------------------------------- workers (one process each)
def _step_overrides(args, algorithm: str, model_dir: str) -> dict:
    ppo = algorithm.endswith("ppo")
    over = {
        "model.name_or_path": model_dir, "rollout.backend": "hf", "data.train": "toy", "data.heldout": "toy",
        "data.heldout_size": 1, "data.max_prompt_tokens": 128, "rollout.max_new_tokens": args.response_tokens,
        "rollout.prompts_per_step": args.prompts * (args.group_size if ppo else 1),
        "actor.max_tokens_per_microbatch": args.microbatch_tokens,
        "actor.logprob_max_tokens_per_microbatch": args.microbatch_tokens,
        "trainer.log_rollouts": False, "trainer.torch_threads": args.threads,
    }
    if ppo:
        over["critic.max_tokens_per_microbatch"] = args.microbatch_tokens
    else:
        over["rollout.group_size"] = args.group_size
    if algorithm.startswith("remix-"):
        over["remix.schedule.start"] = 0  # λ < 1 from step 1, so the precedent pass runs too
    return over


def worker_trainer(args) -> dict:
    import torch

    from remix_engine.config import build_config
    from remix_engine.sinks import Sink
    from remix_engine.trainer import Trainer

    base = read_peak(torch.device("cpu"))
    cfg = build_config("r1-distill-1.5b", args.algorithm, overrides=_step_overrides(args, args.algorithm, args.model_dir))
    with tempfile.TemporaryDirectory() as out:
        trainer = Trainer(cfg, Path(out), Sink())
        device = trainer.device
        if device.type == "cuda":
            base = 0
        generate = trainer.backend.generate

        def generate_then_reset(*a, **k):
            result = generate(*a, **k)
            reset_peak(device)  # rollout aside: the peak of what follows
            return result

        captured = {}
        update = trainer._update

        def capture(batch, lam, utd):
            captured["prompts"], captured["responses"] = batch.prompts, batch.responses
            return update(batch, lam, utd)

        trainer.backend.generate = generate_then_reset
        trainer._update = capture
        try:
            tick = time.perf_counter()
            trainer._train_step(1)
            seconds = time.perf_counter() - tick
            peak = read_peak(device)
        finally:
            trainer.close()
    Path(args.batch_file).write_text(json.dumps(captured))
    n_params = sum(p.numel() for p in {id(p): p for p in trainer.model.parameters()}.values())
    return {"peak": peak - base, "params": n_params, "seconds": seconds,
            "tokens": sum(len(p) + len(r) for p, r in zip(captured["prompts"], captured["responses"], strict=True))}


def worker_bare(args) -> dict:
    import torch

    from remix_engine.logprobs import autocast, make_token_batch, token_budget_split
    from remix_engine.models import load_pretrained

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.set_num_threads(args.threads)
    base = 0 if device.type == "cuda" else read_peak(device)
    batch = json.loads(Path(args.batch_file).read_text())
    prompts, responses = batch["prompts"], batch["responses"]
    model, tokenizer = load_pretrained(args.model_dir, "float32")
    model.to(device).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-6)
    reset_peak(device)
    tick = time.perf_counter()
    groups = token_budget_split([len(p) for p in prompts], [len(r) for r in responses], list(range(len(prompts))),
                                args.microbatch_tokens)
    optimizer.zero_grad(set_to_none=True)
    for rows in groups:
        mb = make_token_batch([prompts[i] for i in rows], [responses[i] for i in rows], tokenizer.pad_token_id)
        labels = torch.full_like(mb.input_ids, -100)
        labels[:, mb.prompt_width:] = torch.where(mb.response_mask.bool(), mb.response_ids, -100)
        mb = mb.to(device)
        with autocast(device, "bf16"):
            loss = model(input_ids=mb.input_ids, attention_mask=mb.attention_mask, position_ids=mb.position_ids,
                         labels=labels.to(device), use_cache=False).loss
        (loss / len(groups)).backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    optimizer.step()
    seconds = time.perf_counter() - tick
    return {"peak": read_peak(device) - base, "seconds": seconds}


# ----------------------------------------------------------------------------- driver
def _run_worker(kind: str, args, algorithm: str, model_dir: str, batch_file: str) -> dict:
    cmd = [sys.executable, __file__, "--worker", kind, "--algorithm", algorithm, "--model-dir", model_dir,
           "--batch-file", batch_file, "--prompts", str(args.prompts), "--group-size", str(args.group_size),
           "--response-tokens", str(args.response_tokens), "--microbatch-tokens", str(args.microbatch_tokens),
           "--threads", str(args.threads)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{kind} worker for {algorithm} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default=DEFAULT_SIZES, help="comma list of SHAPE:LAYERS (shapes: remix_engine.models.REAL_SHAPES)")
    ap.add_argument("--algorithms", default=",".join(ALGORITHMS))
    ap.add_argument("--prompts", type=int, default=2, help="fresh prompts in the step (GRPO); PPO gets prompts x group size")
    ap.add_argument("--group-size", type=int, default=4)
    ap.add_argument("--response-tokens", type=int, default=48)
    ap.add_argument("--microbatch-tokens", type=int, default=340, help="token budget of every micro-batch")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--worker", choices=("trainer", "bare"), help=argparse.SUPPRESS)
    ap.add_argument("--algorithm", help=argparse.SUPPRESS)
    ap.add_argument("--model-dir", help=argparse.SUPPRESS)
    ap.add_argument("--batch-file", help=argparse.SUPPRESS)
    args = ap.parse_args()

    if args.worker:
        result = worker_trainer(args) if args.worker == "trainer" else worker_bare(args)
        print(json.dumps(result))
        return 0

    from remix_engine.models import build_real_shape_model

    algorithms = [a for a in args.algorithms.split(",") if a]
    rows = []
    print(f"one training step, rollout aside: {args.prompts} prompts x {args.group_size} responses (GRPO; PPO "
          f"{args.prompts * args.group_size} x 1), {args.response_tokens} response tokens, micro-batches of "
          f"<= {args.microbatch_tokens} tokens, bf16 compute over fp32 masters, threads={args.threads}", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        for size in args.sizes.split(","):
            shape, layers = size.split(":")
            model_dir = os.path.join(tmp, f"{shape}-{layers}")
            model, tokenizer = build_real_shape_model(shape, int(layers), seed=0)
            model.save_pretrained(model_dir)
            tokenizer.save_pretrained(model_dir)
            del model
            for algorithm in algorithms:
                batch_file = os.path.join(tmp, f"{shape}-{layers}-{algorithm}.json")
                ours = _run_worker("trainer", args, algorithm, model_dir, batch_file)
                bare = _run_worker("bare", args, algorithm, model_dir, batch_file)
                row = {"size": size, "algorithm": algorithm, "params_m": ours["params"] / 1e6,
                       "ours_gb": ours["peak"] / 2**30, "bare_gb": bare["peak"] / 2**30,
                       "ratio": ours["peak"] / bare["peak"], "bf16_model_gb": ours["params"] * 2 / 2**30,
                       "tokens": ours["tokens"], "step_s": ours["seconds"]}
                rows.append(row)
                print(json.dumps(row), flush=True)
    print()
    head = (f"{'model':<22} {'params':>7} {'algorithm':<11} {'tokens':>6} {'step GB':>8} {'bare GB':>8} "
            f"{'ratio':>6} {'target':>7} {'x bf16 model':>13}")
    print(head)
    print("-" * len(head))
    for r in rows:
        target = TARGETS.get(r["algorithm"])
        verdict = "" if target is None else ("ok" if r["ratio"] <= target else "OVER")
        print(f"{r['size']:<22} {r['params_m']:>6.0f}M {r['algorithm']:<11} {r['tokens']:>6} {r['ours_gb']:>8.2f} "
              f"{r['bare_gb']:>8.2f} {r['ratio']:>6.2f} {('<=' + str(target)) if target else '':>7} "
              f"{r['ours_gb'] / r['bf16_model_gb']:>12.1f}x {verdict}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
