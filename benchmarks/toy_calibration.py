"""Calibrate a toy preset (toy, toy-long): warm-start length vs held-out accuracy, pass@k, RL headroom and time.

For each warm-start length (and seed) it builds a fresh toy model, runs the supervised warm start
(uncached: this measures it), then on the fixed held-out toy problems measures

* greedy accuracy (pass@1, exact integer match of the last ``\\boxed{}`` after ``</think>``),
* sampled accuracy at temperature T (mean over k samples per problem) and pass@k,
* ``mixed``: the share of problems whose k samples are neither all right nor all wrong (the
  prompts that give GRPO a non-zero advantage),
* the share of sampled responses using a self-reflection word, and their mean length (characters),
* ``gen128_s``: seconds to sample one GRPO batch (16 prompts x 8, KV cache) with ``model.generate``.

With ``--rl-steps N`` it then runs N steps of a minimal on-policy GRPO (16 prompts x 8 samples,
group-normalised binary reward, one AdamW step per batch, token-mean loss, no KL) and prints the
held-out greedy accuracy along the way: the check that RL has signal to climb. (This is a
calibration probe written for this script, not the engine's trainer.)

    python benchmarks/toy_calibration.py                               # the toy preset's settings
    python benchmarks/toy_calibration.py --steps 100 200 300 400 --lr 3e-3 --batch 64
    python benchmarks/toy_calibration.py --rl-steps 100 --rl-lr 3e-4 --threads 2
    python benchmarks/toy_calibration.py --preset toy-long              # the long-horizon toy

Timings depend on the machine and on whatever else runs on its cores. On a shared 2-core machine
``--threads 1`` is often faster than 2 (OpenMP threads of several processes fight for the cores).
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from remix_engine import toy  # noqa: E402
from remix_engine.data import encode_prompts  # noqa: E402
from remix_engine.models import build_toy_model, build_toy_tokenizer, n_parameters  # noqa: E402
from remix_engine.warmstart import train_on_demonstrations  # noqa: E402

REFLECTION_WORDS = ("verify", "re-examine", "double-check", "why", "root cause", "validate", "abduct",
                    "question", "check", "but", "wait", "confirm", "scrutinize", "analyze", "investigate",
                    "probe")


def _preset_defaults(preset: str) -> dict:
    """The preset's numbers (read from remix_engine.config when pydantic is importable)."""
    try:
        from remix_engine.config import build_config  # noqa: PLC0415

        c = build_config(preset)
        return {"task": c.data.train, "steps": c.warm_start.steps, "batch": c.warm_start.batch_size, "lr": c.warm_start.lr,
                "heldout": c.data.heldout_size, "temperature": c.rollout.temperature,
                "max_new_tokens": c.rollout.max_new_tokens, "prompts": c.rollout.prompts_per_step,
                "group": c.rollout.group_size, "rl_lr": c.actor.lr, "max_prompt_tokens": c.data.max_prompt_tokens,
                "processes": c.warm_start.processes}
    except ImportError:  # e.g. a machine without pydantic: the preset's values at the time of writing
        return {"task": preset, "steps": 300, "batch": 64, "lr": 3e-3, "heldout": 200, "temperature": 1.0, "max_new_tokens": 96,
                "prompts": 16, "group": 8, "rl_lr": 3e-4, "max_prompt_tokens": 64,
                "processes": 1}


def prompt_ids_for(tokenizer, problems, max_prompt_tokens: int) -> list[list[int]]:
    texts = [tokenizer.apply_chat_template([{"role": "user", "content": p.problem}], tokenize=False,
                                           add_generation_prompt=True) for p in problems]
    return encode_prompts(tokenizer, texts, max_prompt_tokens)


def _left_pad(rows: list[list[int]], pad: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(r) for r in rows)
    ids = torch.tensor([[pad] * (width - len(r)) + r for r in rows], device=device)
    mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows], device=device)
    return ids, mask


@torch.no_grad()
def sample(model, tokenizer, prompt_ids: list[list[int]], *, n: int, temperature: float, max_new_tokens: int,
           batch: int = 256) -> tuple[list[torch.Tensor], list[torch.Tensor], list[str]]:
    """Generate n responses per prompt (prompt-major); temperature 0 = greedy.

    Returns per-chunk (left-padded prompt ids, generated ids) tensors and the decoded responses.
    """
    device = next(model.parameters()).device
    rows = [ids for ids in prompt_ids for _ in range(n)]
    prompts, outs, texts = [], [], []
    for start in range(0, len(rows), batch):
        ids, mask = _left_pad(rows[start:start + batch], tokenizer.pad_token_id, device)
        kwargs = {"do_sample": False} if temperature == 0 else {
            "do_sample": True, "temperature": temperature, "top_p": 1.0, "top_k": 0}
        out = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=max_new_tokens,
                             pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
                             use_cache=True, **kwargs)
        gen = out[:, ids.shape[1]:]
        prompts.append(ids)
        outs.append(gen)
        texts += tokenizer.batch_decode(gen, skip_special_tokens=True)
    return prompts, outs, texts


def evaluate(model, tokenizer, problems, prompt_ids, *, k: int, temperature: float,
             max_new_tokens: int) -> dict:
    _, _, greedy = sample(model, tokenizer, prompt_ids, n=1, temperature=0, max_new_tokens=max_new_tokens)
    greedy_ok = [toy.grade_toy(t, p.answer) for t, p in zip(greedy, problems, strict=True)]
    out = {"greedy": sum(greedy_ok) / len(problems)}
    by_terms: dict[int, list[bool]] = {}
    for p, g in zip(problems, greedy_ok, strict=True):
        by_terms.setdefault(p.meta["carries"], []).append(g)
    out["by_terms"] = {t: sum(v) / len(v) for t, v in sorted(by_terms.items())}
    if k:
        _, _, sampled = sample(model, tokenizer, prompt_ids, n=k, temperature=temperature,
                               max_new_tokens=max_new_tokens)
        ok = [toy.grade_toy(t, problems[i // k].answer) for i, t in enumerate(sampled)]
        per_problem = [ok[i * k:(i + 1) * k] for i in range(len(problems))]
        out |= {
            "sampled": sum(ok) / len(ok),
            "pass@k": sum(any(r) for r in per_problem) / len(problems),
            "mixed": sum(0 < sum(r) < k for r in per_problem) / len(problems),
            "reflect": sum(any(w in t.lower() for w in REFLECTION_WORDS) for t in sampled) / len(sampled),
            "think": sum(toy.THINK_CLOSE in t for t in sampled) / len(sampled),
            "len": sum(len(t) for t in sampled) / len(sampled),
        }
    return out


def time_rollout_batch(model, tokenizer, prompt_ids, *, prompts: int, group: int, max_new_tokens: int,
                       repeats: int = 3) -> float:
    """Median seconds to sample `prompts` x `group` responses (one GRPO step's rollouts)."""
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        sample(model, tokenizer, prompt_ids[:prompts], n=group, temperature=1.0, max_new_tokens=max_new_tokens,
               batch=prompts * group)
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return sorted(times)[len(times) // 2]


def grpo_probe(model, tokenizer, heldout, heldout_ids, *, steps: int, lr: float, prompts: int, group: int,
               temperature: float, max_new_tokens: int, max_prompt_tokens: int, eval_every: int, seed: int,
               task: str, log) -> list[tuple[int, float, float]]:
    """Minimal on-policy GRPO; returns [(step, mean train reward, held-out greedy acc)]."""
    device = next(model.parameters()).device
    train = toy.toy_problems("train", steps * prompts, seed=10_000 + seed, task=task)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.999), weight_decay=0.0)
    curve = [(0, float("nan"), evaluate(model, tokenizer, heldout, heldout_ids, k=0, temperature=temperature,
                                        max_new_tokens=max_new_tokens)["greedy"])]
    log(f"    rl step {0:>4}  heldout greedy {curve[-1][2]:.1%}")
    rewards_window: list[float] = []
    reflect_window: list[float] = []
    t0 = time.perf_counter()
    for step in range(1, steps + 1):
        batch = train[(step - 1) * prompts:step * prompts]
        ids = prompt_ids_for(tokenizer, batch, max_prompt_tokens)
        model.eval()
        (p_ids,), (gen,), texts = sample(model, tokenizer, ids, n=group, temperature=temperature,
                                         max_new_tokens=max_new_tokens, batch=prompts * group)
        reward = torch.tensor([float(toy.grade_toy(t, batch[i // group].answer)) for i, t in enumerate(texts)],
                              device=device)
        r = reward.view(prompts, group)
        adv = ((r - r.mean(1, keepdim=True)) / (r.std(1, keepdim=True) + 1e-6)).view(-1)
        rewards_window.append(reward.mean().item())
        reflect_window.append(sum(any(w in t.lower() for w in REFLECTION_WORDS) for t in texts) / len(texts))
        # response mask: generated tokens up to and including the first EOS
        is_eos = gen == tokenizer.eos_token_id
        after_eos = (is_eos.cumsum(1) - is_eos.long()) > 0
        resp_mask = (~after_eos).float()
        full = torch.cat([p_ids, gen], 1)
        attn = torch.cat([(p_ids != tokenizer.pad_token_id).long(), resp_mask.long()], 1)
        pos = (attn.cumsum(1) - 1).clamp(min=0)
        model.train()
        logits = model(input_ids=full, attention_mask=attn, position_ids=pos).logits[:, p_ids.shape[1] - 1:-1]
        logp = torch.log_softmax(logits.float() / temperature, -1).gather(-1, gen.unsqueeze(-1)).squeeze(-1)
        loss = -(adv[:, None] * logp * resp_mask).sum() / resp_mask.sum().clamp(min=1)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if step % eval_every == 0 or step == steps:
            model.eval()
            acc = evaluate(model, tokenizer, heldout, heldout_ids, k=0, temperature=temperature,
                           max_new_tokens=max_new_tokens)["greedy"]
            mean_r = sum(rewards_window) / len(rewards_window)
            mean_refl = sum(reflect_window) / len(reflect_window)
            rewards_window, reflect_window = [], []
            curve.append((step, mean_r, acc))
            log(f"    rl step {step:>4}  train reward {mean_r:.1%}  reflect {mean_refl:.0%}  heldout greedy {acc:.1%}  "
                f"({time.perf_counter() - t0:.0f}s)")
    model.eval()
    return curve


def main(argv: list[str] | None = None) -> None:
    first = argparse.ArgumentParser(add_help=False)
    first.add_argument("--preset", default="toy", choices=sorted(toy.TASKS))
    d = _preset_defaults(first.parse_known_args(argv)[0].preset)
    task = toy.task_named(d["task"])
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                 parents=[first])
    ap.add_argument("--steps", type=int, nargs="+", default=[d["steps"]], help="warm-start lengths to compare")
    ap.add_argument("--batch", type=int, default=d["batch"])
    ap.add_argument("--lr", type=float, default=d["lr"])
    ap.add_argument("--seed", type=int, nargs="+", default=[0])
    ap.add_argument("--heldout", type=int, default=d["heldout"])
    ap.add_argument("--k", type=int, default=d["group"], help="samples per problem for pass@k")
    ap.add_argument("--temperature", type=float, default=d["temperature"])
    ap.add_argument("--max-new-tokens", type=int, default=d["max_new_tokens"])
    ap.add_argument("--forget", type=float, default=task.forget, help="demos: share of carries forgotten")
    ap.add_argument("--notice", type=float, default=task.notice, help="demos: share of those corrected")
    ap.add_argument("--slip", type=float, default=task.slip, help="demos: share with a random slip")
    ap.add_argument("--check", type=float, default=task.check, help="demos: share that re-check")
    ap.add_argument("--eval-at", type=int, nargs="*", default=[],
                    help="also print greedy accuracy at these warm-start steps (same run, no extra training)")
    ap.add_argument("--layers", type=int, default=None, help="(experiments) toy model depth override")
    ap.add_argument("--ffn", type=int, default=None, help="(experiments) toy model MLP width override")
    ap.add_argument("--rl-steps", type=int, default=0, help="run a minimal GRPO probe for this many steps")
    ap.add_argument("--rl-lr", type=float, default=d["rl_lr"])
    ap.add_argument("--rl-eval-every", type=int, default=20)
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    ap.add_argument("--processes", type=int, default=d["processes"],
                    help="data-parallel warm-start processes (same weights for the toy batch shape)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--tag", default="", help="prefix for every output line (parallel sweeps)")
    ap.add_argument("--json", default=None, help="append one JSON line per configuration to this file")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    def log(msg: str) -> None:
        print(f"{args.tag}{msg}", flush=True)

    tokenizer = build_toy_tokenizer()
    problems = toy.toy_problems("heldout", args.heldout, task=task)
    prompt_ids = prompt_ids_for(tokenizer, problems, d["max_prompt_tokens"])
    mix = {"forget": args.forget, "notice": args.notice, "slip": args.slip, "check": args.check}
    no_carry = sum(p.meta["carries"] == 0 for p in problems) / len(problems)
    log(f"held-out problems without a carrying addition: {no_carry:.1%} (greedy accuracy of a model that "
        f"always follows the demonstrator's most likely step)")
    log(f"toy task {task.version}: start {toy.START_RANGE}, terms {task.terms}; demos {mix}; "
        f"held-out {len(problems)}; k={args.k} at T={args.temperature}; max_new_tokens={args.max_new_tokens}; "
        f"device {args.device}, torch threads {torch.get_num_threads()}")
    header = (f"{'seed':>4} {'steps':>5} {'batch':>5} {'lr':>7} {'loss':>6} {'train_s':>7} {'greedy':>6} "
              f"{'sampled':>7} {'pass@k':>6} {'mixed':>5} {'reflect':>7} {'len':>5} {'gen128_s':>8}  greedy by #carries")
    log(header)
    log("-" * len(header))
    for seed in args.seed:
        for steps in args.steps:
            shape = {k: v for k, v in (("num_hidden_layers", args.layers), ("intermediate_size", args.ffn)) if v}
            model = build_toy_model(tokenizer, seed, **shape).to(args.device)

            def probe(step: int, loss: float, model=model, steps=steps) -> None:
                if step in args.eval_at and step != steps:
                    model.eval()
                    acc = evaluate(model, tokenizer, problems, prompt_ids, k=0, temperature=args.temperature,
                                   max_new_tokens=args.max_new_tokens)
                    model.train()
                    log(f"    warm-start step {step:>5}  loss {loss:.3f}  heldout greedy {acc['greedy']:.1%}")

            if steps:
                stats = train_on_demonstrations(model, tokenizer, steps=steps, batch_size=args.batch, lr=args.lr,
                                                seed=seed, demo_mix=mix, callback=probe if args.eval_at else None,
                                                processes=args.processes, task=task.name)
                loss = sum(stats["loss"][-20:]) / len(stats["loss"][-20:])
                secs = stats["seconds"]
            else:
                loss, secs = float("nan"), 0.0
            random.seed(seed)
            torch.manual_seed(seed)
            m = evaluate(model, tokenizer, problems, prompt_ids, k=args.k, temperature=args.temperature,
                         max_new_tokens=args.max_new_tokens)
            gen_s = time_rollout_batch(model, tokenizer, prompt_ids, prompts=d["prompts"], group=d["group"],
                                       max_new_tokens=args.max_new_tokens)
            terms = " ".join(f"{t}:{v:.0%}" for t, v in m["by_terms"].items())
            log(f"{seed:>4} {steps:>5} {args.batch:>5} {args.lr:>7.0e} {loss:>6.3f} {secs:>7.1f} {m['greedy']:>6.1%} "
                f"{m['sampled']:>7.1%} {m['pass@k']:>6.1%} {m['mixed']:>5.0%} {m['reflect']:>7.1%} {m['len']:>5.1f} "
                f"{gen_s:>8.2f}  {terms}")
            record = {"seed": seed, "steps": steps, "batch": args.batch, "lr": args.lr, "mix": mix,
                      "task": task.name, "loss": loss, "train_s": secs, "gen128_s": gen_s,
                      **{k: v for k, v in m.items() if k != "by_terms"}}
            if args.rl_steps:
                torch.manual_seed(seed)
                curve = grpo_probe(model, tokenizer, problems, prompt_ids, steps=args.rl_steps, lr=args.rl_lr,
                                   prompts=d["prompts"], group=d["group"], temperature=args.temperature,
                                   max_new_tokens=args.max_new_tokens, max_prompt_tokens=d["max_prompt_tokens"],
                                   eval_every=args.rl_eval_every, seed=seed, task=task.name, log=log)
                record |= {"rl_lr": args.rl_lr, "rl_curve": curve}
            if args.json:
                with open(args.json, "a") as fh:
                    fh.write(json.dumps(record) + "\n")
    log(f"model: {n_parameters(model):,} parameters")


if __name__ == "__main__":
    main()
