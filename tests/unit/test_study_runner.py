"""The multi-run study runner (benchmarks/runs.py) survives a stop: finished runs are reused,
interrupted ones resumed from their last checkpoint, and a directory holding another config is refused."""

import json
import re
import sys
from pathlib import Path

import pytest
from test_trainer import TINY, StopAfter

from remix_engine import toy
from remix_engine.config import build_config
from remix_engine.trainer import train

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
from runs import RunSpec, _run_one, load_result  # noqa: E402


def test_interrupted_run_is_resumed_then_reused(tmp_path):
    spec = RunSpec("grpo", "grpo", 0, TINY, steps=4)
    out = tmp_path / "grpo" / "seed0"
    cfg = build_config("toy", "grpo", overrides=TINY, steps=4, seed=0)
    assert train(cfg, out, StopAfter(out, 2))["status"] == "cancelled"
    first_steps = (out / "metrics.jsonl").read_text().splitlines()[:3]  # steps 0-2, timings included

    _, wall = _run_one((spec, str(out)))
    result = load_result(spec, out, wall)
    assert [r["step"] for r in result.rows] == [0, 1, 2, 3, 4]  # no step lost, none twice
    # resumed from step 2, not retrained: the rows of steps 0-2 (with their timings) are untouched
    assert (out / "metrics.jsonl").read_text().splitlines()[:3] == first_steps
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["steps"] == 4 and wall > 0

    before = (out / "metrics.jsonl").stat().st_mtime_ns
    assert _run_one((spec, str(out)))[1] == wall  # finished: reused, not retrained
    assert (out / "metrics.jsonl").stat().st_mtime_ns == before

    other = RunSpec("grpo", "grpo", 0, {**TINY, "actor.lr": 1e-4}, steps=4)
    with pytest.raises(ValueError, match="different config"):
        _run_one((other, str(out)))


def test_a_spec_trains_on_its_preset(tmp_path):
    """The long-horizon study's runs use the toy-long preset: its problems, its demonstrations."""
    spec = RunSpec("ppo", "ppo", 0, {**TINY, "warm_start.steps": 0}, steps=1, preset="toy-long")
    out = tmp_path / "ppo" / "seed0"
    _, wall = _run_one((spec, str(out)))
    assert wall > 0
    saved = (out / "config.yaml").read_text()
    assert "preset: toy-long" in saved and "train: toy-long" in saved
    rollouts = [json.loads(line) for line in (out / "rollouts.jsonl").read_text().splitlines()]
    problems = [re.search(r"Compute \d+(?:[+-]\d)+\.", r["prompt"]).group(0) for r in rollouts]
    assert problems and all(len(toy.parse_problem(p).terms) >= toy.TASKS["toy-long"].terms[0] for p in problems)
