"""Health alerts (remix_engine/alerts.py): each rule fires on the pattern it names and stays quiet
on a healthy run; episodes open, go on and resolve; a monitor rebuilt from a saved history
continues the same episodes."""

from __future__ import annotations

import pytest

from remix_engine.alerts import RULES, WINDOW, AlertMonitor, detect
from remix_engine.config import AlertsConfig

DEFAULTS = AlertsConfig().model_dump()


def series(**columns: list[float]) -> dict[str, list[tuple[int, float]]]:
    """Metric key (with '__' for '/') → values at steps 1, 2, …"""
    return {key.replace("__", "/"): [(i + 1, v) for i, v in enumerate(values)] for key, values in columns.items()}


def fired(s, **thresholds) -> set[str]:
    return {a.rule for a in detect(s, {**DEFAULTS, **thresholds})}


HEALTHY = series(
    actor__entropy=[1.0, 0.98, 0.97, 0.95, 0.93, 0.92, 0.9, 0.9],
    critic__frac_reward_zero_std=[0.3, 0.2, 0.25, 0.3, 0.2, 0.3, 0.25, 0.2],
    response_length__clip_ratio=[0.0, 0.02, 0.0, 0.01, 0.0, 0.0, 0.02, 0.0],
    response_length__mean=[50, 52, 55, 54, 57, 60, 58, 61],
    behavior__self_reflection_rate=[0.4, 0.42, 0.38, 0.41, 0.45, 0.4, 0.43, 0.44],
    rollout_corr__kl_k3=[1e-4, 2e-4, 1e-4, 1.5e-4, 2e-4, 1e-4, 2e-4, 1e-4],
    replay__age_1__ratio_max=[1.5, 2.0, 1.8, 2.2, 1.9, 2.5, 2.0, 2.1],
    replay__age_1__clipfrac=[0.05, 0.08, 0.06, 0.1, 0.07, 0.05, 0.09, 0.06],
    replay__age_0__ratio_max=[50.0] * 8,  # fresh data (age 0) is not replayed data
)


def test_a_healthy_run_raises_nothing():
    assert fired(HEALTHY) == set()


@pytest.mark.parametrize("rule, column, values", [
    ("entropy_collapse", "actor__entropy", [1.0, 1.0, 1.0, 0.5, 0.1, 0.05, 0.05, 0.05]),
    ("zero_variance_groups", "critic__frac_reward_zero_std", [0.3, 0.3, 0.3, 0.9, 0.95, 0.9, 1.0, 1.0]),
    ("truncation", "response_length__clip_ratio", [0.0, 0.0, 0.0, 0.3, 0.4, 0.5, 0.5, 0.5]),
    ("mismatch_growth", "rollout_corr__kl_k3", [1e-3, 1e-3, 1e-3, 2e-3, 5e-3, 8e-3, 1e-2, 1e-2]),
    ("ratio_blowup", "replay__age_2__ratio_max", [1.5, 2.0, 1.8, 2.2, 1.9, 2.5, 2.0, 37.5]),
    ("replay_clipfrac", "replay__age_1__clipfrac", [0.05, 0.08, 0.06, 0.1, 0.07, 0.05, 0.09, 0.6]),
    ("length_runaway", "response_length__mean", [50, 52, 55, 80, 120, 150, 160, 170]),
    ("length_runaway", "response_length__mean", [300, 310, 290, 200, 120, 100, 90, 80]),  # the whipping direction
    ("reflection_collapse", "behavior__self_reflection_rate", [0.9, 0.95, 1.0, 0.6, 0.4, 0.3, 0.3, 0.3]),
])
def test_each_rule_fires_on_its_pattern(rule, column, values):
    s = dict(HEALTHY)
    s.update(series(**{column: values}))
    assert fired(s) == {rule}
    assert fired(s, **{rule: None}) == set(), "null turns the rule off"


def test_relative_rules_wait_for_a_start_that_does_not_overlap_the_recent_window():
    # entropy dropping from step 1 on: no baseline until 2 × WINDOW values exist
    falling = series(actor__entropy=[1.0, 0.1, 0.05, 0.05, 0.05, 0.05])
    alerts = detect(falling, DEFAULTS)
    assert [(a.rule, a.first_step) for a in alerts] == [("entropy_collapse", 2 * WINDOW)]


def test_an_episode_opens_goes_on_keeps_its_worst_value_and_resolves():
    monitor = AlertMonitor(DEFAULTS)
    emitted = []
    for step, share in enumerate([0.9, 0.9, 0.9, 1.0, 0.9, 0.1, 0.1, 0.1, 0.1], start=1):
        emitted += [(step, a) for a in monitor.observe(step, {"critic/frac_reward_zero_std": share})]
    steps_and_status = [(step, a.status, a.first_step, a.last_step) for step, a in emitted]
    # windows of 3: mean ≥ 0.8 at steps 3–6 (0.9, 0.933, 0.933, 0.667 → fires at 3, 4, 5; resolves at 6)
    assert steps_and_status == [(3, "firing", 3, 3), (4, "firing", 3, 4), (5, "firing", 3, 5), (6, "resolved", 3, 5)]
    worst = emitted[-1][1]
    assert worst.value == pytest.approx((0.9 + 0.9 + 1.0) / 3) and worst.metric == "critic/frac_reward_zero_std"
    assert "groups had one reward" in worst.detail and worst.threshold == 0.8


def test_a_monitor_rebuilt_from_its_history_continues_the_open_episode():
    steps = [{"response_length/clip_ratio": v} for v in (0.5, 0.5, 0.5, 0.6, 0.5)]
    straight = AlertMonitor(DEFAULTS)
    for step, m in enumerate(steps, start=1):
        straight.observe(step, m)
    first = AlertMonitor(DEFAULTS)
    for step, m in enumerate(steps[:3], start=1):
        first.observe(step, m)
    resumed = AlertMonitor(DEFAULTS, {k: list(v) for k, v in first.history.items()})  # as from a checkpoint
    assert resumed.open == first.open and resumed.open["truncation"].first_step == 3
    for step, m in enumerate(steps[3:], start=4):
        resumed.observe(step, m)
    assert resumed.open == straight.open and resumed.history == straight.history


def test_every_rule_explains_itself_and_has_a_threshold_setting():
    assert set(RULES) == set(DEFAULTS)
    for rule in RULES.values():
        assert len(rule.explanation) > 150 and rule.title and rule.metric
        assert AlertsConfig.model_fields[rule.name].description
