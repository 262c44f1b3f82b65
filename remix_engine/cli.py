"""The `remix` command line.

    remix train --preset toy --algorithm remix-grpo --steps 100 --seed 0 --output runs/demo
    remix train --resume runs/demo

Other packages add subcommands (`remix studio`, `remix worker`) through the `remix.commands`
entry-point group, so the engine never imports them. Bad arguments exit with code 2 and one line.
"""

from __future__ import annotations

import argparse
import sys
from importlib.metadata import entry_points
from pathlib import Path

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

    def on_step(self, step, metrics):
        if "eval/heldout/pass@1" in metrics:
            self.acc = metrics["eval/heldout/pass@1"]
        if step == 0:
            self.bar.set_postfix(acc=f"{self.acc:.3f}" if self.acc is not None else "-")
            return
        self.bar.update(1)
        self.bar.set_postfix(reward=f"{metrics.get('critic/score/mean', 0):.3f}",
                             acc=f"{self.acc:.3f}" if self.acc is not None else "-",
                             rollouts=int(metrics.get("cost/rollouts", 0)))

    def on_end(self, summary):
        self.bar.close()


def _cmd_train(args: argparse.Namespace) -> int:
    from remix_engine.trainer import latest_checkpoint, train

    if args.resume:
        out = Path(args.resume)
        if not (out / "config.yaml").is_file():
            raise UsageError(f"--resume {out}: no config.yaml there (not a run directory)")
        from remix_engine.config import load_saved_config

        cfg = load_saved_config(out / "config.yaml")
        ckpt = latest_checkpoint(out)
        start = int(ckpt.name.split("_")[-1]) if ckpt else None
        sink = MultiSink(JsonlSink(out, resume_step=start if start is not None else None),
                         ProgressSink(cfg.trainer.steps, start or 0))
        summary = train(cfg, out, sink, resume=True)
    else:
        cfg = build_config(args.preset, args.algorithm, file=args.config, overrides=args.set,
                           steps=args.steps, seed=args.seed)
        out = Path(args.output or f"runs/{cfg.algorithm}-seed{cfg.trainer.seed}")
        sink = MultiSink(JsonlSink(out), ProgressSink(cfg.trainer.steps))
        summary = train(cfg, out, sink)
    final = summary.get("final_eval", {}).get("eval/heldout/pass@1")
    initial = (summary.get("initial_eval") or {}).get("eval/heldout/pass@1")
    print(f"{summary['status']}: {summary['steps']} steps, {summary['cost/rollouts']} rollouts, "
          f"held-out pass@1 {initial if initial is not None else float('nan'):.3f} -> "
          f"{final if final is not None else float('nan'):.3f}; output in {out}")
    return 0 if summary["status"] in ("completed", "cancelled") else 1


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="remix", description="ReMix off-policy RL fine-tuning engine and studio")
    sub = parser.add_subparsers(dest="command", parser_class=_Parser)

    tr = sub.add_parser("train", help="train a policy with grpo / remix-grpo / ppo / remix-ppo")
    tr.add_argument("--preset", default="toy", help=f"one of: {', '.join(PRESETS)}")
    tr.add_argument("--algorithm", choices=ALGORITHMS, default=None)
    tr.add_argument("--steps", type=int, default=None)
    tr.add_argument("--seed", type=int, default=None)
    tr.add_argument("--output", default=None, help="run directory (metrics.jsonl, rollouts.jsonl, checkpoints/)")
    tr.add_argument("--config", default=None, help="YAML file with config sections")
    tr.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="dotted override, repeatable")
    tr.add_argument("--resume", default=None, metavar="DIR", help="resume the run in DIR from its last checkpoint")
    tr.set_defaults(func=_cmd_train)

    for ep in entry_points(group="remix.commands"):
        try:
            register = ep.load()
        except ImportError:  # the optional part (e.g. the studio extra) is not installed
            continue
        register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        if not getattr(args, "func", None):
            raise UsageError("choose a command: " + ", ".join(sorted(parser._subparsers._group_actions[0].choices)))
        return args.func(args)
    except (UsageError, ConfigError) as exc:
        print(f"remix: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("remix: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
