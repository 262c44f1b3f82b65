"""One definition of a group's reward statistics (remix_engine/group_stats.py): the tensor kernels
the trainer uses agree with it, and the API's group header (mean, std, formula) reproduces the
advantages stored for a group."""

from __future__ import annotations

import random

import pytest
import torch
from fastapi.testclient import TestClient

from remix_engine import algorithms as A
from remix_engine.group_stats import GRPO_EPS, advantage, group_stats
from studio.db import session_scope
from studio.models import Rollout, Run

KERNELS = {"grpo": A.grpo_advantages, "drgrpo": A.drgrpo_advantages, "rloo": A.rloo_advantages}


@pytest.mark.parametrize("kind", sorted(KERNELS))
def test_scalar_advantage_matches_the_tensor_kernels(kind):
    rng = random.Random(0)
    groups = [[1.0, 0.0, 0.0, 0.0], [1.0, 1.0, 1.0], [0.5], [0.0, 1.0], [0.1, 0.1, 0.1],
              [rng.choice([0.0, 1.0, 0.25]) for _ in range(8)], [rng.random() for _ in range(5)]]
    rewards = torch.tensor([r for g in groups for r in g], dtype=torch.float64)
    ids = [gi for gi, g in enumerate(groups) for _ in g]
    expected = KERNELS[kind](rewards, ids).tolist()
    got = [advantage(r, group_stats(g), kind) for g in groups for r in g]
    assert got == pytest.approx(expected, abs=1e-12)


def test_group_stats_uses_the_sample_std():
    st = group_stats([1.0, 0.0, 0.0, 0.0])
    assert st.mean == 0.25 and st.std == pytest.approx(0.5)  # not the population std 0.433
    assert advantage(1.0, st) == pytest.approx(0.75 / (0.5 + GRPO_EPS))
    assert group_stats([]).mean is None and group_stats([2.0]).degenerate


def _seed_group(kind: str, rewards: list[float]) -> tuple[int, str]:
    adv = KERNELS[kind](torch.tensor(rewards, dtype=torch.float32), [0] * len(rewards))
    with session_scope() as s:
        run = Run(name=f"group {kind}", preset="toy", algorithm="grpo", status="succeeded", request={},
                  config={"actor": {"advantage": kind}, "rollout": {"group_size": len(rewards)}})
        s.add(run)
        s.flush()
        for j, (r, a) in enumerate(zip(rewards, adv.tolist(), strict=True)):
            s.add(Rollout(run_id=run.id, uid=f"s000001-g000-r{j}", step=1, policy_version=1, group_id="s000001-g000",
                          prompt_id="p0", reference="2", reward=r, correct=r == 1.0, format_ok=True, length=5,
                          advantage=a, wall_time=0.0))
        return run.id, "s000001-g000"


@pytest.mark.parametrize(("kind", "rewards"), [("grpo", [1.0, 0.0, 0.0, 0.0]), ("grpo", [1.0, 0.0, 1.0, 0.0, 0.0]),
                                               ("rloo", [1.0, 0.0, 0.0, 0.0]), ("grpo", [1.0, 1.0, 1.0, 1.0])])
def test_group_header_reproduces_the_stored_advantages(studio_env, kind, rewards):
    from backend.app import create_app

    run_id, gid = _seed_group(kind, rewards)
    client = TestClient(create_app(studio_env))  # no `with`: no reaper thread
    g = client.get(f"/api/v1/runs/{run_id}/groups/{gid}").json()
    assert g["advantage_kind"] == kind
    mean, std = g["reward_mean"], g["reward_std"]
    assert mean == pytest.approx(sum(rewards) / len(rewards))
    for x in g["rollouts"]:
        if g["zero_variance"]:
            assert x["advantage"] == 0.0
        elif kind == "grpo":
            assert (x["reward"] - mean) / (std + g["advantage_eps"]) == pytest.approx(x["advantage"], rel=1e-6)
        else:
            n = g["size"]
            assert n / (n - 1) * (x["reward"] - mean) == pytest.approx(x["advantage"], rel=1e-6)
    if kind == "grpo":
        assert "n − 1" in g["advantage_formula"] and "1e-6" in g["advantage_formula"]
        assert g["advantage_eps"] == GRPO_EPS
    if rewards == [1.0, 0.0, 0.0, 0.0] and kind == "grpo":  # the example: 1.5 / −0.5 with std 0.5
        assert std == pytest.approx(0.5) and sorted(round(x["advantage"], 4) for x in g["rollouts"]) == [-0.5, -0.5, -0.5, 1.5]
