"""A few real training steps at the paper's scale: the R1-Distill-Qwen-1.5B architecture (random
weights, built offline), the `r1-distill-1.5b` preset's precision and token budgets, long responses.

Prints, per step: rollout tokens/s, update tokens/s, the update's model-FLOPs utilisation (MFU:
6 · parameters · tokens trained per second, over the device's peak bf16 FLOP/s) and peak device
memory. Meant for one GPU (scripts/gpu_check.sh runs it); it also runs on CPU with small settings
as a smoke test:

    python benchmarks/scale_step.py                                   # GPU: 28 layers, 2k-token responses
    python benchmarks/scale_step.py --layers 1 --response-tokens 16 --prompts 2 --group-size 2 --steps 1
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

# Dense bf16 peak FLOP/s by device name (vendor data sheets); MFU is left blank for others.
PEAK_BF16_FLOPS = {"H200": 989e12, "H100": 989e12, "A100": 312e12, "L40S": 362e12, "A10G": 70e12}


def peak_flops(device_name: str) -> float | None:
    return next((v for k, v in PEAK_BF16_FLOPS.items() if k in device_name), None)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shape", default="r1-distill-1.5b")
    ap.add_argument("--layers", type=int, default=None, help="default: the real depth")
    ap.add_argument("--algorithm", default="remix-grpo")
    ap.add_argument("--backend", default="hf", choices=("hf", "vllm"))
    ap.add_argument("--prompts", type=int, default=16, help="prompts per step (fresh share applies)")
    ap.add_argument("--group-size", type=int, default=8)
    ap.add_argument("--response-tokens", type=int, default=2048)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="extra config overrides")
    ap.add_argument("--json", default=None, help="also write the rows here")
    args = ap.parse_args()

    import torch

    from remix_engine.config import build_config
    from remix_engine.models import REAL_SHAPES, build_real_shape_model, n_parameters
    from remix_engine.sinks import Sink
    from remix_engine.trainer import Trainer

    layers = args.layers or REAL_SHAPES[args.shape]["num_hidden_layers"]
    cuda = torch.cuda.is_available()
    device_name = torch.cuda.get_device_name() if cuda else "cpu"
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        model, tokenizer = build_real_shape_model(args.shape, layers, seed=0)
        n_params = n_parameters(model)
        model.save_pretrained(f"{tmp}/model")
        tokenizer.save_pretrained(f"{tmp}/model")
        del model
        overrides = [f"model.name_or_path={tmp}/model", f"rollout.backend={args.backend}", "data.train=toy",
                     "data.heldout=toy", "data.heldout_size=1", f"rollout.prompts_per_step={args.prompts}",
                     f"rollout.group_size={args.group_size}", f"rollout.max_new_tokens={args.response_tokens}",
                     "trainer.log_rollouts=false", *args.set]
        cfg = build_config("r1-distill-1.5b", args.algorithm, overrides=overrides)
        trainer = Trainer(cfg, Path(tmp) / "run", Sink())
        seen = {}
        update = trainer._update

        def counting_update(batch, lam, utd):  # tokens the update trains on: (prompt + response) x epochs
            seen["tokens"] = utd * sum(len(p) + len(r) for p, r in zip(batch.prompts, batch.responses, strict=True))
            return update(batch, lam, utd)

        trainer._update = counting_update
        try:
            for t in range(1, args.steps + 1):
                if cuda:
                    torch.cuda.reset_peak_memory_stats()
                generated = trainer.state.cost_tokens
                tick = time.perf_counter()
                m = trainer._train_step(t)
                wall = time.perf_counter() - tick
                gen_tokens = trainer.state.cost_tokens - generated
                update_flops = 6 * n_params * seen["tokens"]
                peak = peak_flops(device_name)
                row = {
                    "step": t, "params_m": round(n_params / 1e6), "wall_s": round(wall, 2),
                    "gen_s": round(m["timing_s/gen"], 2), "rollout_tok_s": round(gen_tokens / m["timing_s/gen"], 1),
                    "logprob_s": round(m["timing_s/old_log_prob"], 2), "update_s": round(m["timing_s/update"], 2),
                    "update_tok_s": round(seen["tokens"] / m["timing_s/update"], 1),
                    "update_mfu": round(update_flops / m["timing_s/update"] / peak, 4) if peak else None,
                    "peak_mem_gb": round(torch.cuda.max_memory_allocated() / 2**30, 2) if cuda else None,
                    "response_len": round(m["response_length/mean"], 1),
                }
                rows.append(row)
                print(json.dumps(row), flush=True)
        finally:
            trainer.close()
    print(f"\n{args.algorithm} on {device_name}: {args.shape} x {layers} layers ({n_params / 1e6:.0f}M), "
          f"{args.prompts} prompts x {args.group_size}, {args.response_tokens}-token responses, "
          f"{cfg.model.mixed_precision} compute, micro-batches <= {cfg.actor.max_tokens_per_microbatch} tokens")
    head = f"{'step':>4} {'gen s':>7} {'rollout tok/s':>13} {'logprob s':>9} {'update s':>8} {'update tok/s':>12} {'MFU':>6} {'peak GB':>8}"
    print(head)
    print("-" * len(head))
    for r in rows:
        mfu = f"{r['update_mfu']:.1%}" if r["update_mfu"] is not None else "-"
        mem = f"{r['peak_mem_gb']:.1f}" if r["peak_mem_gb"] is not None else "-"
        print(f"{r['step']:>4} {r['gen_s']:>7.1f} {r['rollout_tok_s']:>13.0f} {r['logprob_s']:>9.1f} {r['update_s']:>8.1f} "
              f"{r['update_tok_s']:>12.0f} {mfu:>6} {mem:>8}")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
