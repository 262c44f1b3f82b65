"""Two training processes, each with its own vLLM engine (vLLM's external_launcher executor inside
the trainer's gloo world), reproduce the one-process vLLM run: every prompt is sampled from its own
seeded stream on whichever rank's engine serves it, and each rank's engine receives the policy
gathered from the FSDP2 shards in memory after every update (no files)."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest
from vllm_testlib import TOY_TRAINING

pytestmark = pytest.mark.vllm

STEPS = 3
# entropy_coef > 0: the untrained toy policy gets a gradient even when every reward is 0, so the
# weights change every step and step 2's rollouts show whether each engine received them
ARGS = ["train", "--preset", "toy", "--algorithm", "remix-grpo", "--steps", str(STEPS), "--seed", "0",
        *[a for o in [*TOY_TRAINING, "rollout.backend=vllm", "actor.entropy_coef=0.01", "actor.lr=1e-3"]
          for a in ("--set", o)]]


def _train(out, *extra: str) -> None:
    pytest.importorskip("vllm")
    done = subprocess.run([sys.executable, "-m", "remix_engine.cli", *ARGS, *extra, "--output", str(out)],
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-6000:]


def _rows(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_one_engine_per_rank_matches_one_process(tmp_path):
    _train(tmp_path / "one")
    _train(tmp_path / "two", "--nproc", "2")
    one, two = tmp_path / "one", tmp_path / "two"
    assert {r["uid"]: r["response"] for r in _rows(one / "rollouts.jsonl")} == \
        {r["uid"]: r["response"] for r in _rows(two / "rollouts.jsonl")}
    m1, m2 = _rows(one / "metrics.jsonl"), _rows(two / "metrics.jsonl")
    assert [m["step"] for m in m2] == list(range(STEPS + 1))
    assert all(m["actor/grad_norm"] > 0 for m in m1[1:]), "the policy must move, or the sync is not tested"
    for a, b in zip(m1, m2, strict=True):
        for key in ("critic/score/mean", "actor/entropy", "actor/pg_loss", "response_length/mean"):
            if key in a:
                assert math.isclose(a[key], b[key], rel_tol=1e-4, abs_tol=1e-5), (a["step"], key, a[key], b[key])
    assert json.loads((two / "summary.json").read_text())["world_size"] == 2
