"""The `remix` command line.

    remix train --preset toy --algorithm remix-grpo --steps 100 --seed 0 --output runs/demo
    remix train --resume runs/demo

Other packages add subcommands (`remix studio`, `remix worker`) through the `remix.commands`
entry-point group, so the engine never imports them. Bad arguments exit with code 2 and one line.
"""

from __future__ import annotations

import argparse
import logging
import sys
from importlib.metadata import entry_points
from pathlib import Path

from remix_engine.alerts import RULES
from remix_engine.config import ALGORITHMS, PRESETS, ConfigError, build_config
from remix_engine.sinks import JsonlSink, MultiSink, Sink


class UsageError(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    """argparse that reports errors as one line (exit code 2) instead of a usage dump."""

    def error(self, message: str):  # noqa: D401
        raise UsageError(message)


class ProgressSink(Sink):
    """A tqdm progress bar over training steps, showing reward and held-out accuracy."""

    def __init__(self, total: int, initial: int = 0):
        from tqdm import tqdm

        self.bar = tqdm(total=total, initial=initial, unit="step", dynamic_ncols=True, file=sys.stderr)
        self.acc: float | None = None

    def on_start(self, info):
        for split, report in (info.get("data") or {}).items():
            if report["dropped_overlong"]:
                self.bar.write(f"data.{split}: {report['kept']} of {report['problems']} problems kept, "
                               f"{report['dropped_overlong']} longer than data.max_prompt_tokens dropped")

    def on_step(self, step, metrics):
        if "eval/heldout/pass@1" in metrics:
            self.acc = metrics["eval/heldout/pass@1"]
        if step == 0:
            self.bar.set_postfix(acc=f"{self.acc:.3f}" if self.acc is not None else "-")
            return
        self.bar.update(1)
        self.bar.set_postfix(reward=f"{metrics.get('critic/score/mean', 0):.3f}",
                             acc=f"{self.acc:.3f}" if self.acc is not None else "-",
                             rollouts=f"{int(metrics.get('cost/rollouts', 0)):,}")

    def on_alert(self, step, alert):
        if alert.status == "firing" and alert.first_step == step:  # once per episode, when it opens
            self.bar.write(f"alert at step {step}: {RULES[alert.rule].title} ({alert.detail})")

    def on_end(self, summary):
        self.bar.close()


def _cmd_train(args: argparse.Namespace) -> int:
    from remix_engine.distributed import env_rank, env_world_size, launch_command
    from remix_engine.trainer import latest_checkpoint, train

    if args.nproc is not None and args.nproc < 1:
        raise UsageError(f"--nproc {args.nproc}: needs at least 1 process")
    if args.nproc and args.nproc > 1 and env_world_size() == 1:
        # Re-run this same command in N processes (torch.distributed.run, which accelerate launch uses too).
        import subprocess

        argv = _without_nproc(sys.argv[1:] if args.argv is None else args.argv)
        return subprocess.call(launch_command(args.nproc, ["-m", "remix_engine.cli", *argv]))
    if env_rank() != 0:  # only rank 0 writes metrics, rollouts and the progress bar
        args.quiet_rank = True
    if args.resume:
        out = Path(args.resume)
        if not (out / "config.yaml").is_file():
            raise UsageError(f"--resume {out}: no config.yaml there (not a run directory)")
        from remix_engine.config import load_saved_config

        cfg = load_saved_config(out / "config.yaml")
        ckpt = latest_checkpoint(out)
        start = int(ckpt.name.split("_")[-1]) if ckpt else None
        sink = Sink() if getattr(args, "quiet_rank", False) else MultiSink(
            JsonlSink(out, resume_step=start if start is not None else None), ProgressSink(cfg.trainer.steps, start or 0))
        summary = train(cfg, out, sink, resume=True)
    else:
        cfg = build_config(args.preset, args.algorithm, file=args.config, overrides=args.set,
                           steps=args.steps, seed=args.seed)
        out = Path(args.output or f"runs/{cfg.algorithm}-seed{cfg.trainer.seed}")
        sink = Sink() if getattr(args, "quiet_rank", False) else MultiSink(JsonlSink(out), ProgressSink(cfg.trainer.steps))
        summary = train(cfg, out, sink)
    if getattr(args, "quiet_rank", False):
        return 0 if summary["status"] in ("completed", "cancelled") else 1
    final = summary.get("final_eval", {}).get("eval/heldout/pass@1")
    initial = (summary.get("initial_eval") or {}).get("eval/heldout/pass@1")
    procs = f" on {summary['world_size']} processes" if summary.get("world_size", 1) > 1 else ""
    print(f"{summary['status']}{procs}: {summary['steps']} steps, {summary['cost/rollouts']} rollouts, "
          f"held-out pass@1 {initial if initial is not None else float('nan'):.3f} -> "
          f"{final if final is not None else float('nan'):.3f}; output in {out}")
    return 0 if summary["status"] in ("completed", "cancelled") else 1


def _without_nproc(argv: list[str]) -> list[str]:
    out, skip = [], False
    for a in argv:
        if skip:
            skip = False
        elif a == "--nproc":
            skip = True
        elif not a.startswith("--nproc="):
            out.append(a)
    return out


def _cmd_eval(args: argparse.Namespace) -> int:
    from remix_engine.benchmarks import BENCHMARKS, EvaluationError
    from remix_engine.eval_report import JsonlSampleSink, format_table, write_results
    from remix_engine.evaluate import evaluate

    names = [b.strip() for item in (args.benchmarks or BENCHMARKS) for b in item.split(",") if b.strip()]
    out = Path(args.output)
    sink = JsonlSampleSink(out / "samples.jsonl")
    bar = None

    def progress(name: str, done: int, total: int) -> None:
        nonlocal bar
        from tqdm import tqdm

        if bar is None or bar.desc != name:
            if bar is not None:
                bar.close()
            bar = tqdm(total=total, desc=name, unit="sample", dynamic_ncols=True, file=sys.stderr)
        bar.update(done - bar.n)

    try:
        results = evaluate(args.model, names, mode=args.mode, temperature=args.temperature, samples=args.samples,
                           max_new_tokens=args.max_tokens, limit=args.limit, prompt_template=args.prompt_template,
                           use_chat_template=False if args.no_chat_template else None, max_prompt_tokens=args.max_prompt_tokens,
                           mathverify=not args.no_mathverify, backend=args.backend, dtype=args.dtype, seed=args.seed,
                           batch_size=args.batch_size, sink=sink, progress=progress, keep_samples=False,
                           torch_threads=args.threads, top_p=args.top_p, bootstrap_resamples=args.bootstrap)
    except EvaluationError as exc:
        raise UsageError(str(exc)) from None
    finally:
        sink.close()
        if bar is not None:
            bar.close()
    path = write_results(results, out)
    print(format_table(results))
    print(f"grader {results['grader']}, mode {results['mode_label']}; results in {path}, samples in {sink.path}")
    return 0


def _cmd_config(args: argparse.Namespace) -> int:
    """Every setting with its value in the chosen preset/algorithm, its default and its help text."""
    import json

    from remix_engine.config import config_fields, config_to_dict

    cfg = config_to_dict(build_config(args.preset, args.algorithm))
    for field in config_fields():
        key = field["key"]
        if args.keys and not any(key.startswith(k) for k in args.keys):
            continue
        value = cfg
        for part in key.split("."):
            value = value[part]
        shown = json.dumps(value)
        note = "" if value == field["default"] else f"   (default {json.dumps(field['default'])})"
        limits = ", ".join(f"{name.replace('_', ' ')} {field[name]}" for name in
                           ("minimum", "exclusive_minimum", "maximum", "exclusive_maximum") if name in field)
        print(f"{key} = {shown}{note}\n    {field['type']}{f' ({limits})' if limits else ''}: {field['description']}")
    return 0


def _cmd_prepare(args: argparse.Namespace) -> int:
    """Build the preset's policy once so later runs start at once (the toy warm start is cached)."""
    import time

    import torch

    from remix_engine.models import load_policy

    torch.set_num_threads(1)
    for seed in args.seeds:
        cfg = build_config(args.preset, seed=seed)
        start = time.perf_counter()
        load_policy(cfg.model, cfg.warm_start, seed, task=cfg.data.train)
        print(f"{args.preset} policy for seed {seed} ready in {time.perf_counter() - start:.1f} s")
    return 0


def _cmd_make_model(args: argparse.Namespace) -> int:
    """Save an offline stand-in of a released checkpoint (its architecture, few layers, random weights)."""
    from remix_engine.models import REAL_SHAPES, build_real_shape_model, n_parameters

    if args.shape not in REAL_SHAPES:
        raise UsageError(f"--shape: unknown shape '{args.shape}' (choose from {', '.join(REAL_SHAPES)})")
    if args.layers < 1:
        raise UsageError("--layers: must be at least 1")
    model, tokenizer = build_real_shape_model(args.shape, args.layers, args.seed)
    model.save_pretrained(args.output)
    tokenizer.save_pretrained(args.output)
    print(f"saved {args.shape} with {args.layers} layer(s), {n_parameters(model) / 1e6:.0f}M parameters, to {args.output}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="remix", description="ReMix off-policy RL fine-tuning engine and studio")
    sub = parser.add_subparsers(dest="command", parser_class=_Parser)

    tr = sub.add_parser("train", help="train a policy with grpo / remix-grpo / ppo / remix-ppo",
                        epilog="Every setting, its default and its meaning: remix config [--preset P] [--algorithm A]")
    tr.add_argument("--preset", default="toy", help=f"one of: {', '.join(PRESETS)}")
    tr.add_argument("--algorithm", choices=ALGORITHMS, default=None)
    tr.add_argument("--steps", type=int, default=None)
    tr.add_argument("--seed", type=int, default=None)
    tr.add_argument("--output", default=None, help="run directory (metrics.jsonl, rollouts.jsonl, checkpoints/)")
    tr.add_argument("--config", default=None, help="YAML file with config sections")
    tr.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="dotted override, repeatable")
    tr.add_argument("--resume", default=None, metavar="DIR", help="resume the run in DIR from its last checkpoint")
    tr.add_argument("--nproc", type=int, default=None, metavar="N",
                    help="train in N processes (one per GPU; gloo processes on a CPU machine), FSDP2-sharded "
                         "through accelerate; a run resumes with any N")
    tr.set_defaults(func=_cmd_train, argv=None)

    co = sub.add_parser("config", help="list every setting of a run config: value, default and help text")
    co.add_argument("--preset", default="toy", help=f"one of: {', '.join(PRESETS)}")
    co.add_argument("--algorithm", choices=ALGORITHMS, default=None)
    co.add_argument("keys", nargs="*", metavar="KEY", help="only settings starting with these (e.g. remix actor.lr)")
    co.set_defaults(func=_cmd_config)

    pr = sub.add_parser("prepare", help="build and cache the preset's starting policy (the toy warm start)")
    pr.add_argument("--preset", default="toy", help=f"one of: {', '.join(PRESETS)}")
    pr.add_argument("--seeds", type=int, nargs="+", default=[0])
    pr.set_defaults(func=_cmd_prepare)

    mm = sub.add_parser("make-model", help="save an offline stand-in of a released model: its architecture "
                                           "with few layers and random weights (for CPU runs of the paper presets)")
    mm.add_argument("--shape", default="r1-distill-1.5b", help="r1-distill-1.5b, r1-distill-7b or qwen2.5-0.5b")
    mm.add_argument("--layers", type=int, default=2)
    mm.add_argument("--seed", type=int, default=0)
    mm.add_argument("--output", required=True, help="directory to save the model and tokenizer in")
    mm.set_defaults(func=_cmd_make_model)

    ev = sub.add_parser("eval", help="evaluate a model or checkpoint on math benchmarks (paper protocol)")
    ev.add_argument("--model", required=True, help="checkpoint dir, run dir (newest checkpoint), or hub id")
    ev.add_argument("--benchmarks", action="append", default=None, metavar="NAMES",
                    help="comma-separated names (aime24,amc23,math500,minerva,olympiadbench), .jsonl paths or "
                         "hf:<dataset>; repeatable (default: all five)")
    ev.add_argument("--mode", choices=("greedy", "sample"), default="greedy")
    ev.add_argument("--temperature", type=float, default=None, help="sample mode only (default 0.1)")
    ev.add_argument("--samples", type=int, default=None,
                    help="k per problem in sample mode (default: 32 for aime24/amc23, 1 otherwise)")
    ev.add_argument("--top-p", type=float, default=1.0, help="nucleus sampling in sample mode (default 1.0)")
    ev.add_argument("--max-tokens", type=int, default=8192, help="max new tokens per response (default 8192)")
    ev.add_argument("--max-prompt-tokens", type=int, default=None, help="keep the last N prompt tokens")
    ev.add_argument("--limit", type=int, default=None, help="first N problems of each benchmark")
    ev.add_argument("--prompt-template", default=None, help="user turn with {problem} (default: as the checkpoint's "
                                                             "run trained; other models: the paper's)")
    ev.add_argument("--no-chat-template", action="store_true", help="use the bare prompt text")
    ev.add_argument("--no-mathverify", action="store_true", help="skip the math-verify second opinion")
    ev.add_argument("--backend", choices=("hf", "vllm"), default="hf")
    ev.add_argument("--dtype", choices=("float32", "bfloat16", "float16"), default="float32")
    ev.add_argument("--seed", type=int, default=0)
    ev.add_argument("--batch-size", type=int, default=64, help="sequences per generate call")
    ev.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    ev.add_argument("--bootstrap", type=int, default=1000, metavar="N",
                    help="resamples of the 95%% bootstrap intervals over problems (seeded; default 1000)")
    ev.add_argument("--output", required=True, help="directory for results.json and samples.jsonl")
    ev.set_defaults(func=_cmd_eval)

    for ep in entry_points(group="remix.commands"):
        try:
            register = ep.load()
        except ImportError as exc:  # the optional part (the studio extra) is not installed
            _register_missing(sub, ep.name, exc)
            continue
        register(sub)
    return parser


def _missing_extra(command: str, exc: ImportError) -> UsageError:
    return UsageError(f"'remix {command}' needs {exc.name or 'a package'}, which is not installed here "
                      "(the studio extra): run `make setup`, or pip install -e '.[studio]'")


def _register_missing(sub, name: str, exc: ImportError) -> None:  # noqa: ANN001
    """`remix <name>` still exists and says what to install, instead of argparse's 'invalid choice'."""
    def missing(_args: argparse.Namespace) -> int:
        raise _missing_extra(name, exc)

    cmd = sub.add_parser(name, help=f"(not installed: needs the studio extra) {name}", add_help=False)
    cmd.add_argument("rest", nargs=argparse.REMAINDER)
    cmd.set_defaults(func=missing)


ENGINE_COMMANDS = (_cmd_train, _cmd_prepare, _cmd_eval, _cmd_config, _cmd_make_model)


def _show_engine_logs() -> None:
    """The engine reports long waits (warm start, evaluation) through `logging`: print them."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    for name in ("remix_engine", "remix"):
        logger = logging.getLogger(name)
        if not logger.handlers:
            logger.addHandler(handler)
            logger.setLevel(logging.INFO)
            logger.propagate = False


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        if getattr(args, "func", None) is _cmd_train:
            args.argv = argv
        if not getattr(args, "func", None):
            raise UsageError("choose a command: " + ", ".join(sorted(parser._subparsers._group_actions[0].choices)))
        if args.func in ENGINE_COMMANDS:
            _show_engine_logs()
            return args.func(args)
        try:  # a plugin (the studio, the worker): configures its own logging, imports its extra lazily
            return args.func(args)
        except ModuleNotFoundError as exc:
            raise _missing_extra(args.command, exc) from None
    except (UsageError, ConfigError) as exc:
        print(f"remix: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("remix: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
