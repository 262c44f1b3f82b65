"""Shared helpers for the multi-run studies: run configs in parallel processes, read their curves.

Each run is an ordinary `remix train` run directory, so any of them can be inspected or resumed.
"""

from __future__ import annotations

import json
import math
import multiprocessing as mp
import statistics
from dataclasses import dataclass, field
from pathlib import Path

from remix_engine.config import build_config, load_saved_config
from remix_engine.sinks import JsonlSink
from remix_engine.trainer import CHECKPOINT_PREFIX, latest_checkpoint, train

ACC = "eval/heldout/pass@1"


@dataclass
class RunSpec:
    label: str
    algorithm: str
    seed: int
    overrides: dict = field(default_factory=dict)
    steps: int | None = None
    preset: str = "toy"


@dataclass
class RunResult:
    spec: RunSpec
    out: Path
    curve: list[tuple[float, float]]  # (cumulative rollouts, held-out pass@1) at each evaluation
    rows: list[dict]
    wall_s: float

    @property
    def initial(self) -> float:
        return self.curve[0][1]

    @property
    def final(self) -> float:
        return self.curve[-1][1]

    @property
    def rollouts(self) -> float:
        return self.curve[-1][0]

    def rollouts_to_reach(self, target: float) -> float | None:
        """Cumulative rollouts at the first evaluation whose accuracy reaches `target` (None if never)."""
        for rollouts, acc in self.curve:
            if acc >= target - 1e-9:
                return rollouts
        return None

    def mean_of(self, key: str, last: int | None = None) -> float:
        vals = [r[key] for r in self.rows if key in r]
        vals = vals[-last:] if last else vals
        return statistics.fmean(vals) if vals else math.nan


def _run_one(args: tuple[RunSpec, str]) -> tuple[str, float]:
    """Train one spec; a finished run is reused and an interrupted one resumed, so a long study
    that was stopped picks up where it left off. Wall time is the trainer's own (carried across
    resumes), so a resumed run reports the time it would have taken uninterrupted."""
    spec, out = args
    cfg = build_config(spec.preset, spec.algorithm, overrides=spec.overrides, seed=spec.seed, steps=spec.steps)
    saved = Path(out) / "config.yaml"
    if saved.is_file() and not _same_run(load_saved_config(saved), cfg):
        raise ValueError(f"{out} holds a run with a different config: choose another --output")
    summary_path = Path(out) / "summary.json"
    summary = json.loads(summary_path.read_text()) if summary_path.is_file() else {}
    if summary.get("status") != "completed":  # never started, killed, or cancelled
        ckpt = latest_checkpoint(out)
        resume_step = int(ckpt.name.removeprefix(CHECKPOINT_PREFIX)) if ckpt else None
        summary = train(cfg, out, JsonlSink(out, resume_step=resume_step), resume=ckpt is not None)
    return out, summary["elapsed_s"]


def _same_run(a, b) -> bool:  # noqa: ANN001 - two RunConfigs
    """Equal configs, apart from settings that do not change what is computed: the warm start's
    process count (bitwise the same weights, see remix_engine/warmstart.py)."""
    def norm(c):  # noqa: ANN001, ANN202
        return c.model_copy(update={"warm_start": c.warm_start.model_copy(update={"processes": 1})})
    return norm(a) == norm(b)


def load_result(spec: RunSpec, out: Path, wall_s: float) -> RunResult:
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if line.strip()]
    curve = [(r["cost/rollouts"], r[ACC]) for r in rows if ACC in r]
    return RunResult(spec, out, curve, rows, wall_s)


def run_all(specs: list[RunSpec], root: Path, jobs: int = 2) -> list[RunResult]:
    """Train every spec (in `jobs` processes) under root/<label>/seed<k>; returns results in order."""
    root.mkdir(parents=True, exist_ok=True)
    work = [(s, str(root / s.label / f"seed{s.seed}")) for s in specs]
    ctx = mp.get_context("spawn")  # fresh interpreters: no inherited torch threads
    with ctx.Pool(jobs) as pool:
        done = pool.map(_run_one, work, chunksize=1)
    return [load_result(s, Path(out), wall) for s, (out, wall) in zip(specs, done, strict=True)]


def mean_std(values: list[float]) -> str:
    values = [v for v in values if v is not None and not math.isnan(v)]
    if not values:
        return "n/a"
    if len(values) == 1:
        return f"{values[0]:.3f}"
    return f"{statistics.fmean(values):.3f} ± {statistics.stdev(values):.3f}"


def accuracy_at(result: RunResult, budget: float) -> float:
    """Accuracy of the last evaluation made with at most `budget` rollouts."""
    best = result.curve[0][1]
    for rollouts, acc in result.curve:
        if rollouts <= budget + 1e-9:
            best = acc
    return best


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)
