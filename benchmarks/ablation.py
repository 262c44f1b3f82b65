"""The toy-scale reproduction study: PPO/GRPO vs ReMix and the ReMix-PPO ablations (paper Table 3).

    python benchmarks/ablation.py --seeds 0 1 2 --jobs 2 --output runs/ablation

Every configuration trains on the toy preset until the same rollout budget is spent, for each
seed. Prints a table (final held-out pass@1 mean ± std, rollouts to reach on-policy PPO's final
accuracy, wall time, mean response length, self-reflection rate) and writes Plotly figures as
HTML and PNG: accuracy vs cumulative rollouts, and response length vs step for replay shares
0.1…0.5 of plain Mix-PPG (the paper's "whipping effect"; first seed only; the share of "w/o all
three" reuses that run). Re-running a command reuses its finished runs and resumes interrupted
ones, so a stopped study continues where it was. docs/results.md has the command behind its table.

    python benchmarks/ablation.py --study beta --betas 1 0.1 0.01 0.001 --seeds 0 1 2 --output runs/beta

`--study beta` is the KL-Convex sweep (issue 19): full remix-ppo against remix-ppo with
`remix.kl_convex=false` at each KL weight β (`actor.kl_coef`), every seed, the same budget. It
prints, per β, the final pass@1 of both, their paired difference per seed, the KL terms and λ.

    python benchmarks/ablation.py --study long --seeds 0 1 --steps 60 --output runs/long

`--study long` is the long-horizon study (issue 19) on the `toy-long` preset (3x longer responses
that correct and re-check themselves): on-policy PPO, and Mix-PPG made strongly off-policy (replay
share `--share`, UTD `--utd`, no KL-Convex) without and with reincarnation at `--reincarnate-at`,
each for the same number of steps. It prints accuracy (final and peak),
response length and self-reflection at the start and the end, and writes figures of the three
against the step: the paper's signs of off-policy damage are a late accuracy decline, shrinking
responses and collapsing self-reflection.
"""

from __future__ import annotations

import argparse
import math
import os
import shutil
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from remix_engine.config import build_config, parse_override  # noqa: E402

from runs import RunResult, RunSpec, markdown_table, mean_std, run_all  # noqa: E402

OFF_UTD = {"remix.utd": 1}
OFF_KLC = {"remix.kl_convex": False}
OFF_REINC = {"remix.reincarnate_at": None}
MIX_PPG = {**OFF_UTD, **OFF_KLC, **OFF_REINC}  # ReMix-PPO without all three = plain Mix-PPG
MIX_PPG_LABEL = "remix-ppo w/o all three"
STUDY = [
    ("ppo", "ppo", {}),
    ("remix-ppo", "remix-ppo", {}),
    ("grpo", "grpo", {}),
    ("remix-grpo", "remix-grpo", {}),
    ("remix-ppo w/o UTD", "remix-ppo", OFF_UTD),
    ("remix-ppo w/o KL-Convex", "remix-ppo", OFF_KLC),
    ("remix-ppo w/o reincarnation", "remix-ppo", OFF_REINC),
    (MIX_PPG_LABEL, "remix-ppo", MIX_PPG),
]
WHIP_SHARES = (0.1, 0.2, 0.3, 0.4, 0.5)
BETAS = (1.0, 0.1, 0.01, 0.001)
LONG_PRESET = "toy-long"


def _slug(label: str) -> str:
    return label.replace(" ", "_").replace("/", "").replace("-", "_")


def write_figures(study: dict[str, list[RunResult]], whip: dict[float, RunResult], out: Path) -> list[Path]:
    import plotly.graph_objects as go

    acc = go.Figure()
    for label, results in study.items():
        # mean curve over seeds at each evaluation index (all seeds share the eval schedule)
        n = min(len(r.curve) for r in results)
        xs = [statistics.fmean(r.curve[i][0] for r in results) for i in range(n)]
        ys = [statistics.fmean(r.curve[i][1] for r in results) for i in range(n)]
        acc.add_trace(go.Scatter(x=xs, y=ys, mode="lines+markers", name=label))
    acc.update_layout(title="Held-out pass@1 vs cumulative rollouts (toy preset, mean over seeds)",
                      xaxis_title="rollouts generated", yaxis_title="greedy pass@1", template="plotly_white")
    length = go.Figure()
    for share, result in whip.items():
        steps = [r["step"] for r in result.rows if "response_length/mean" in r]
        lens = [r["response_length/mean"] for r in result.rows if "response_length/mean" in r]
        length.add_trace(go.Scatter(x=steps, y=lens, mode="lines", name=f"Mix-PPG p={share}"))
    length.update_layout(title="Response length vs step for replay shares (plain Mix-PPG, toy preset)",
                         xaxis_title="step", yaxis_title="mean response tokens", template="plotly_white")
    return save_figures({"accuracy_vs_rollouts": acc, "response_length_vs_step": length}, out)


def save_figures(figures: dict, out: Path, size: tuple[int, int] = (1000, 560)) -> list[Path]:
    """Each figure as a standalone HTML file and, where kaleido finds a Chromium, a PNG."""
    written: list[Path] = []
    for name, fig in figures.items():
        html = out / f"{name}.html"
        fig.write_html(html, include_plotlyjs=True)
        written.append(html)
        try:
            if shutil.which("chromium") and "BROWSER_PATH" not in os.environ:
                os.environ["BROWSER_PATH"] = shutil.which("chromium")
            png = out / f"{name}.png"
            fig.write_image(png, width=size[0], height=size[1])
            written.append(png)
        except Exception as exc:  # kaleido needs a Chromium; the HTML is still written
            print(f"PNG export skipped for {name}: {exc}")
    return written


def mean_curve(runs: list[RunResult], key: str) -> tuple[list[int], list[float]]:
    """The steps every run logged `key` at, and its mean over the runs there."""
    by_step: dict[int, list[float]] = {}
    for r in runs:
        for row in r.rows:
            if key in row:
                by_step.setdefault(row["step"], []).append(row[key])
    steps = sorted(s for s, v in by_step.items() if len(v) == len(runs))
    return steps, [statistics.fmean(by_step[s]) for s in steps]


def write_beta_figures(arms: dict[float, tuple[list[RunResult], list[RunResult]]], out: Path) -> list[Path]:
    """Final pass@1 against β (mean ± std over seeds), and per β the mean held-out curve and the KL
    to the anchor against step, KL-Convex on (solid) and off (dashed)."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    betas = sorted(arms)
    final = go.Figure()
    for i, (arm, dash) in enumerate((("KL-Convex on", None), ("KL-Convex off", "dash"))):
        finals = [[r.final for r in arms[b][i]] for b in betas]
        final.add_trace(go.Scatter(
            x=betas, y=[statistics.fmean(f) for f in finals], name=arm, mode="lines+markers", line={"dash": dash},
            error_y={"type": "data", "array": [statistics.stdev(f) if len(f) > 1 else 0 for f in finals]}))
    final.update_layout(title="Final held-out pass@1 vs β (remix-ppo, toy; mean ± std over seeds)",
                        xaxis={"type": "log", "title": "β (actor.kl_coef)"}, yaxis_title="greedy pass@1",
                        template="plotly_white")
    curves = make_subplots(rows=2, cols=len(betas), subplot_titles=[f"β = {b:g}" for b in betas], shared_xaxes=True,
                           vertical_spacing=0.12)
    for col, beta in enumerate(betas, start=1):
        for i, (arm, dash) in enumerate((("on", None), ("off", "dash"))):
            for row, key, color in ((1, "eval/heldout/pass@1", "#1f77b4"), (2, "actor/kl_anchor", "#d62728")):
                steps, ys = mean_curve(arms[beta][i], key)
                curves.add_trace(go.Scatter(x=steps, y=ys, mode="lines", line={"dash": dash, "color": color},
                                            name=f"{key.split('/')[-1]}, KL-Convex {arm}",
                                            showlegend=col == 1), row=row, col=col)
        curves.update_yaxes(type="log", row=2, col=col)
    curves.update_yaxes(title_text="held-out pass@1", row=1, col=1)
    curves.update_yaxes(title_text="KL to the anchor", row=2, col=1)
    curves.update_xaxes(title_text="step", row=2)
    curves.update_layout(title="KL-Convex on (solid) vs off (dashed): accuracy and KL to the anchor, mean over seeds",
                         template="plotly_white")
    return (save_figures({"beta_final_accuracy": final}, out)
            + save_figures({"beta_curves": curves}, out, size=(1400, 700)))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--budget", type=int, default=10_240, help="rollouts per run (equal for every config)")
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--output", default="runs/ablation")
    ap.add_argument("--no-whip", action="store_true", help="skip the replay-share sweep")
    ap.add_argument("--set", action="append", default=[], help="override applied to every run")
    ap.add_argument("--remix-set", action="append", default=[], help="override applied to the remix-* runs only")
    ap.add_argument("--study", choices=("table3", "beta", "long"), default="table3",
                    help="table3: the eight configurations and the replay-share sweep; beta: the KL-Convex sweep; "
                         "long: off-policy damage and reincarnation on the toy-long preset")
    ap.add_argument("--betas", type=float, nargs="+", default=list(BETAS),
                    help="(--study beta) KL weights, trained in this order")
    ap.add_argument("--steps", type=int, default=60, help="(--study long) training steps of every run")
    ap.add_argument("--share", type=float, default=0.5, help="(--study long) replay share p of the Mix-PPG runs")
    ap.add_argument("--utd", type=int, default=4, help="(--study long) update epochs m of the Mix-PPG runs")
    ap.add_argument("--reincarnate-at", type=int, default=30, help="(--study long) T of the runs that reincarnate")
    args = ap.parse_args()
    common = dict(parse_override(o) for o in args.set)
    remix_common = dict(parse_override(o) for o in args.remix_set)
    if args.study == "long":
        long_study(args, common, remix_common, Path(args.output))
        return
    # Enough steps for the slowest spender (Phase-1 ReMix generates 60% of a batch per step).
    budget = {"trainer.max_rollouts": args.budget, "trainer.steps": 10_000}
    out = Path(args.output)
    if args.study == "beta":
        beta_study(args, {**common, **budget, **remix_common}, out)
        return

    specs = [RunSpec(_slug(label), algo, seed,
                     {**common, **budget, **(remix_common if algo.startswith("remix-") else {}), **extra})
             for label, algo, extra in STUDY for seed in args.seeds]
    # "w/o all three" is plain Mix-PPG at the preset's share: the sweep reuses its first seed there.
    default_share = build_config("toy", "remix-ppo", overrides={**common, **remix_common}).remix.replay_share
    whip_shares = [] if args.no_whip else [s for s in WHIP_SHARES if s != default_share]
    specs += [RunSpec(f"mixppg_p{share}", "remix-ppo", args.seeds[0],
                      {**common, **budget, **remix_common, **MIX_PPG, "remix.replay_share": share})
              for share in whip_shares]
    results = run_all(specs, out, jobs=args.jobs)

    study = {label: [r for r in results if r.spec.label == _slug(label)] for label, _, _ in STUDY}
    whip = {share: next(r for r in results if r.spec.label == f"mixppg_p{share}") for share in whip_shares}
    if not args.no_whip and default_share in WHIP_SHARES:
        whip[default_share] = study[MIX_PPG_LABEL][0]
    whip = dict(sorted(whip.items()))
    target = statistics.fmean(r.final for r in study["ppo"])

    rows = []
    for label, runs in study.items():
        reach = [r.rollouts_to_reach(target) for r in runs]
        got = [x for x in reach if x is not None]
        rows.append([
            label, mean_std([r.initial for r in runs]), mean_std([r.final for r in runs]),
            f"{statistics.fmean(got):.0f} ({len(got)}/{len(runs)})" if got else "not reached",
            f"{statistics.fmean(r.wall_s for r in runs):.0f}",
            f"{statistics.fmean(r.mean_of('response_length/mean', last=10) for r in runs):.1f}",
            mean_std([r.mean_of("eval/heldout/self_reflection_rate", last=1) for r in runs]),
        ])
    header = ["configuration", "step-0 pass@1", "final pass@1", f"rollouts to reach PPO final ({target:.3f})",
              "wall s / run", "response length (last 10 steps)", "self-reflection rate (final eval)"]
    print(f"\nToy preset, budget {args.budget} rollouts per run, seeds {args.seeds}\n")
    print(markdown_table(header, rows))
    print("\nper seed (final pass@1 / rollouts to reach PPO final):")
    for label, runs in study.items():
        print(f"  {label}: " + ", ".join(f"seed {r.spec.seed}: {r.final:.3f} / {r.rollouts_to_reach(target)}"
                                         for r in runs))
    if whip:
        print("\nReplay-share sweep (plain Mix-PPG, seed", args.seeds[0], "): mean response length first/last 10 steps")
        print(markdown_table(["p", "first 10 steps", "last 10 steps", "final pass@1"], [
            [str(share), f"{statistics.fmean(r['response_length/mean'] for r in res.rows[1:11]):.1f}",
             f"{res.mean_of('response_length/mean', last=10):.1f}", f"{res.final:.3f}"]
            for share, res in whip.items()]))
    for path in write_figures(study, whip, out):
        print("wrote", path)


def beta_study(args: argparse.Namespace, overrides: dict, out: Path) -> None:
    """Full remix-ppo vs w/o KL-Convex at each β; seeds paired (same warm start, same data order)."""
    specs = [RunSpec(f"beta{beta:g}_{arm}", "remix-ppo", seed,
                     {**overrides, "actor.kl_coef": beta, **({} if arm == "klc_on" else OFF_KLC)})
             for beta in args.betas for arm in ("klc_on", "klc_off") for seed in args.seeds]
    results = {(r.spec.label, r.spec.seed): r for r in run_all(specs, out, jobs=args.jobs)}
    arms = {beta: ([results[(f"beta{beta:g}_klc_on", s)] for s in args.seeds],
                   [results[(f"beta{beta:g}_klc_off", s)] for s in args.seeds]) for beta in args.betas}
    rows, per_seed = [], []
    for beta, (on, off) in arms.items():
        diff = [a.final - b.final for a, b in zip(on, off, strict=True)]
        same = sum(a.curve == b.curve for a, b in zip(on, off, strict=True))
        rows.append([
            f"{beta:g}", mean_std([r.final for r in on]), mean_std([r.final for r in off]), mean_std(diff),
            f"{same}/{len(on)}", f"{statistics.fmean(r.rollouts for r in on):.0f}",
            f"{statistics.fmean(r.mean_of('actor/kl_anchor') for r in on):.2e}",
            f"{statistics.fmean(r.mean_of('actor/kl_convex') for r in on):.2e}",
            f"{statistics.fmean(r.mean_of('actor/kl_anchor') for r in off):.2e}",
            f"{statistics.fmean(r.mean_of('actor/kl_lambda', last=1) for r in on):.2f}",
        ])
        per_seed.append(f"  β = {beta:g}: " + ", ".join(
            f"seed {a.spec.seed}: on " + "/".join(f"{acc:.3f}" for _, acc in a.curve)
            + " · off " + "/".join(f"{acc:.3f}" for _, acc in b.curve) for a, b in zip(on, off, strict=True)))
    header = ["β (actor.kl_coef)", "final pass@1, KL-Convex on", "off", "on − off (paired)",
              "identical curves", "rollouts / run", "KL to anchor (on)", "KL-Convex term (on)",
              "KL to anchor (off)", "λ at the end"]
    print(f"\nKL-Convex vs β, remix-ppo on the toy preset, budget {args.budget} rollouts, seeds {args.seeds}\n")
    print(markdown_table(header, rows))
    print("\nper seed, held-out pass@1 at each evaluation:")
    print("\n".join(per_seed))
    for path in write_beta_figures(arms, out):
        print("wrote", path)


def long_study(args: argparse.Namespace, common: dict, remix_common: dict, out: Path) -> None:
    """On-policy PPO against strongly off-policy Mix-PPG, without and with reincarnation, on
    toy-long, all for `args.steps` steps (the paper compares them per step)."""
    off_policy = {**OFF_KLC, "remix.replay_share": args.share, "remix.utd": args.utd}
    reinc = {"remix.reincarnate_at": args.reincarnate_at}
    arms = [
        ("ppo", "ppo", {}),
        (f"mix-ppg p={args.share:g} m={args.utd}", "remix-ppo", {**off_policy, **OFF_REINC}),
        (f"mix-ppg p={args.share:g} m={args.utd} + reincarnation", "remix-ppo", {**off_policy, **reinc}),
    ]
    specs = [RunSpec(_slug(label), algo, seed, {**common, **(remix_common if algo.startswith("remix-") else {}),
                                                **extra, "trainer.steps": args.steps}, preset=LONG_PRESET)
             for label, algo, extra in arms for seed in args.seeds]
    results = run_all(specs, out, jobs=args.jobs)
    study = {label: [r for r in results if r.spec.label == _slug(label)] for label, _, _ in arms}

    def at(r: RunResult, key: str, first: bool) -> float:
        vals = [row[key] for row in r.rows if key in row]
        part = vals[:10] if first else vals[-10:]
        return statistics.fmean(part) if part else math.nan

    rows = []
    for label, runs in study.items():
        # (step, pass@1) of each run's best evaluation, the earliest on ties
        peaks = [max(((row["step"], row[ACC]) for row in r.rows if ACC in row), key=lambda e: (e[1], -e[0]))
                 for r in runs]
        rows.append([
            label, mean_std([r.initial for r in runs]), mean_std([r.final for r in runs]),
            mean_std([acc for _, acc in peaks]) + " @ " + "/".join(str(step) for step, _ in peaks),
            f"{statistics.fmean(r.rollouts for r in runs):.0f}",
            f"{statistics.fmean(at(r, LENGTH, True) for r in runs):.1f} → "
            f"{statistics.fmean(at(r, LENGTH, False) for r in runs):.1f}",
            f"{statistics.fmean(at(r, REFLECT, True) for r in runs):.2f} → "
            f"{statistics.fmean(at(r, REFLECT, False) for r in runs):.2f}",
            f"{statistics.fmean(r.mean_of(RATIO) for r in runs):.4f}",
        ])
    header = ["configuration", "step-0 pass@1", "final pass@1", "peak pass@1 @ step (per seed)", "rollouts / run",
              "response length, first → last 10 steps", "self-reflection rate, first → last 10 steps",
              "importance ratio (run mean)"]
    print(f"\nLong-horizon toy ({LONG_PRESET} preset), {args.steps} steps per run, seeds {args.seeds}\n")
    print(markdown_table(header, rows))
    print("\nper seed, held-out pass@1 at each evaluation:")
    for label, runs in study.items():
        print(f"  {label}: " + " · ".join(f"seed {r.spec.seed}: " + "/".join(f"{acc:.3f}" for _, acc in r.curve)
                                          for r in runs))
    for path in write_long_figures(study, out):
        print("wrote", path)


ACC = "eval/heldout/pass@1"
LENGTH = "response_length/mean"
REFLECT = "behavior/self_reflection_rate"
RATIO = "actor/importance_ratio_mean"


def write_long_figures(study: dict[str, list[RunResult]], out: Path) -> list[Path]:
    """Held-out pass@1, response length and self-reflection rate against the step, mean over seeds."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    keys = ((ACC, "held-out pass@1"), (LENGTH, "mean response tokens"), (REFLECT, "self-reflection rate"))
    fig = make_subplots(rows=len(keys), cols=1, shared_xaxes=True, vertical_spacing=0.06)
    palette = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e")
    for color, (label, runs) in zip(palette, study.items(), strict=False):
        for row, (key, title) in enumerate(keys, start=1):
            steps, ys = mean_curve(runs, key)
            fig.add_trace(go.Scatter(x=steps, y=ys, mode="lines", name=label, line={"color": color},
                                     showlegend=row == 1), row=row, col=1)
            fig.update_yaxes(title_text=title, row=row, col=1)
    fig.update_xaxes(title_text="step", row=len(keys), col=1)
    fig.update_layout(title=f"Long-horizon toy ({LONG_PRESET}): accuracy, length and self-reflection per step "
                            "(mean over seeds)", template="plotly_white")
    return save_figures({"long_horizon_curves": fig}, out, size=(1100, 900))


if __name__ == "__main__":
    main()
