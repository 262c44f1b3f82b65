"""GRPO vs ReMix-GRPO on the toy preset: held-out accuracy against cumulative rollouts.

    python benchmarks/sample_efficiency.py --seeds 0 1 2 --jobs 2

Prints (1) accuracy at equal rollout budgets, (2) final accuracy, rollouts and wall time,
(3) rollouts each method needed to reach on-policy GRPO's final accuracy (mean over seeds).
All runs are made in this invocation with the same preset, seeds and evaluation set.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from remix_engine.config import parse_override  # noqa: E402

from runs import RunSpec, accuracy_at, markdown_table, mean_std, run_all  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--steps", type=int, default=None, help="default: the preset's")
    ap.add_argument("--jobs", type=int, default=2, help="runs in parallel (one torch thread each)")
    ap.add_argument("--output", default="runs/sample_efficiency")
    ap.add_argument("--set", action="append", default=[], help="override applied to both methods")
    args = ap.parse_args()
    overrides = dict(parse_override(o) for o in args.set)

    algorithms = ["grpo", "remix-grpo"]
    specs = [RunSpec(a, a, s, overrides, args.steps) for a in algorithms for s in args.seeds]
    results = run_all(specs, Path(args.output), jobs=args.jobs)
    by_algo = {a: [r for r in results if r.spec.algorithm == a] for a in algorithms}

    target = statistics.fmean(r.final for r in by_algo["grpo"])
    max_budget = max(r.rollouts for r in results)
    budgets = sorted({int(max_budget * f) for f in (0.1, 0.2, 0.3, 0.5, 0.75, 1.0)})

    print(f"\nHeld-out greedy pass@1 against cumulative rollouts (mean ± std over seeds {args.seeds})\n")
    print(markdown_table(["rollouts"] + algorithms,
                         [[str(b)] + [mean_std([accuracy_at(r, b) for r in by_algo[a]]) for a in algorithms]
                          for b in budgets]))
    print(f"\nFinal accuracy and cost; target = GRPO's mean final accuracy {target:.3f}\n")
    rows = []
    for a in algorithms:
        reach = [r.rollouts_to_reach(target) for r in by_algo[a]]
        reached = [x for x in reach if x is not None]
        rows.append([
            a, mean_std([r.initial for r in by_algo[a]]), mean_std([r.final for r in by_algo[a]]),
            f"{statistics.fmean(r.rollouts for r in by_algo[a]):.0f}",
            (f"{statistics.fmean(reached):.0f} ({len(reached)}/{len(reach)} seeds)" if reached else "not reached"),
            f"{statistics.fmean(r.wall_s for r in by_algo[a]):.0f}",
        ])
    print(markdown_table(["algorithm", "step-0 pass@1", "final pass@1", "rollouts used",
                          "rollouts to reach target", "wall s / run"], rows))
    print("\nper seed (final pass@1, rollouts to reach target):")
    for a in algorithms:
        print(f"  {a}: " + ", ".join(f"seed {r.spec.seed}: {r.final:.3f} / {r.rollouts_to_reach(target)}"
                                     for r in by_algo[a]))


if __name__ == "__main__":
    main()
