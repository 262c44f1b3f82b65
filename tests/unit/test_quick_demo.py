"""The dashboard's quick-demo settings (frontend/static/new_run.js) show the method within the demo."""

import re
from pathlib import Path

from remix_engine.algorithms import kl_convex_lambda
from remix_engine.config import build_config

JS = Path(__file__).resolve().parents[2] / "frontend" / "static" / "new_run.js"
DEMO_STEPS = 20  # the button sets steps to 20


def _lines(name: str) -> list[str]:
    block = re.search(rf"const {name} = \[(.*?)\];", JS.read_text(), re.S).group(1)
    return re.findall(r'"([^"]+)"', block)


def test_quick_demo_reaches_replay_kl_convex_and_reincarnation():
    cfg = build_config("toy", "remix-grpo", steps=DEMO_STEPS, overrides=_lines("QUICK_DEMO") + _lines("QUICK_DEMO_REMIX"))
    rc, s = cfg.remix, cfg.remix.schedule
    assert rc.replay_share > 0 and rc.window >= 1
    lambdas = [kl_convex_lambda(t, start=s.start, interval=s.interval, decay=s.decay, floor=s.floor)
               for t in range(1, DEMO_STEPS + 1)]
    assert lambdas[0] == 1.0 and min(lambdas) == s.floor  # λ falls to its floor within the demo
    assert rc.reincarnate_at is not None and 1 < rc.reincarnate_at < DEMO_STEPS  # and the anchor is reset in it
    assert rc.reincarnate_at > lambdas.index(min(lambdas)) + 1  # after λ has settled, as in the paper's order


def test_quick_demo_plain_settings_are_valid_for_every_algorithm():
    for algorithm in ("grpo", "ppo", "remix-grpo", "remix-ppo"):
        build_config("toy", algorithm, steps=DEMO_STEPS, overrides=_lines("QUICK_DEMO"))
