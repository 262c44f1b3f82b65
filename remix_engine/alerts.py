"""Health alerts: rules over a run's metric series that say what went wrong and what to try.

Each rule reads a few per-step metrics (docs/algorithm.md names them) and fires while its condition
holds. A firing period is one *episode* (first step, last step, worst value); when the condition
stops holding the episode is resolved. The trainer feeds every step's metrics to an `AlertMonitor`
(rank 0) and emits the episodes that opened, changed or resolved to its sinks, so the CLI prints
them, `alerts.jsonl` keeps them and the studio stores them (GET /api/v1/runs/{id}/alerts).

Conditions are smoothed over the last `WINDOW` steps; "relative" rules compare that recent mean
with the run's own start (the mean of its first `WINDOW` values), so a rule needs at least
2 × `WINDOW` steps of the metric before it can fire. Thresholds are settings (config section
`alerts`); each rule's text below is what the dashboard shows beside the alert.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace

from remix_engine.events import AlertRecord

WINDOW = 3  # steps averaged before comparing (one noisy step is not an alert)
MISMATCH_FLOOR = 1e-3  # k3 KL per token below which engine/trainer mismatch is numerical noise

Series = dict[str, list[tuple[int, float]]]  # metric key → [(step, value)] in step order
Check = Callable[[Series, float], "tuple[float, str] | None"]  # (value, detail) while firing


@dataclass(frozen=True)
class Rule:
    name: str
    title: str
    metric: str  # the chart the alert marks on the run page
    explanation: str  # what it means and what to try (one paragraph)
    check: Check
    traces: str = ""  # extra trace-page filter for the rollouts behind it (query string)


def _values(series: Series, key: str) -> list[float]:
    return [v for _, v in series.get(key, ())]


def _recent(series: Series, key: str) -> float | None:
    vals = _values(series, key)
    return sum(vals[-WINDOW:]) / WINDOW if len(vals) >= WINDOW else None


def _start(series: Series, key: str) -> float | None:
    """Mean of the first WINDOW values, once the recent window no longer overlaps them."""
    vals = _values(series, key)
    return sum(vals[:WINDOW]) / WINDOW if len(vals) >= 2 * WINDOW else None


def _latest_at_step(series: Series, key: str, step: int) -> float | None:
    points = series.get(key)
    return points[-1][1] if points and points[-1][0] == step else None


def _replay_ages(series: Series, stat: str) -> list[tuple[int, str]]:
    """(age, key) of the replayed ages (≥ 1) that recorded `stat`."""
    ages = []
    for key in series:
        m = re.fullmatch(rf"replay/age_(\d+)/{stat}", key)
        if m and int(m.group(1)) >= 1:
            ages.append((int(m.group(1)), key))
    return sorted(ages)


def _worst_replayed(series: Series, stat: str, threshold: float) -> tuple[float, str] | None:
    """The largest per-age `stat` of replayed data at the latest step, when it exceeds `threshold`."""
    last = max((pts[-1][0] for pts in series.values() if pts), default=None)
    if last is None:
        return None
    values = [(v, age) for age, key in _replay_ages(series, stat)
              if (v := _latest_at_step(series, key, last)) is not None]
    if not values:
        return None
    value, age = max(values)
    return (value, f"age {age}: {value:.3g} > {threshold:g}") if value > threshold else None


def _entropy_collapse(s: Series, t: float) -> tuple[float, str] | None:
    now, start = _recent(s, "actor/entropy"), _start(s, "actor/entropy")
    if now is None or start is None or start <= 0:
        return None
    ratio = now / start
    return (ratio, f"entropy {now:.3g} is {ratio:.0%} of its start {start:.3g}") if ratio < t else None


def _zero_variance(s: Series, t: float) -> tuple[float, str] | None:
    share = _recent(s, "critic/frac_reward_zero_std")
    return (share, f"{share:.0%} of groups had one reward for every response") if share is not None and share >= t else None


def _truncation(s: Series, t: float) -> tuple[float, str] | None:
    rate = _recent(s, "response_length/clip_ratio")
    return (rate, f"{rate:.0%} of responses hit max_new_tokens") if rate is not None and rate >= t else None


def _mismatch_growth(s: Series, t: float) -> tuple[float, str] | None:
    now, start = _recent(s, "rollout_corr/kl_k3"), _start(s, "rollout_corr/kl_k3")
    if now is None or start is None or now < MISMATCH_FLOOR:
        return None
    growth = now / max(start, MISMATCH_FLOOR / t)
    return (growth, f"engine–trainer KL {now:.3g} per token, {growth:.1f}x its start {start:.3g}") if growth >= t else None


def _length_runaway(s: Series, t: float) -> tuple[float, str] | None:
    now, start = _recent(s, "response_length/mean"), _start(s, "response_length/mean")
    if now is None or not start:
        return None
    ratio = now / start
    if ratio >= t:
        return ratio, f"mean length {now:.0f} tokens, {ratio:.1f}x its start {start:.0f}"
    if ratio <= 1 / t:
        return ratio, f"mean length {now:.0f} tokens, shrunk to {ratio:.0%} of its start {start:.0f}"
    return None


def _reflection_collapse(s: Series, t: float) -> tuple[float, str] | None:
    now, start = _recent(s, "behavior/self_reflection_rate"), _start(s, "behavior/self_reflection_rate")
    if now is None or start is None or start < 0.05:  # a policy that never reflected cannot collapse
        return None
    ratio = now / start
    return (ratio, f"self-reflection rate {now:.0%}, {ratio:.0%} of its start {start:.0%}") if ratio < t else None


RULES: dict[str, Rule] = {r.name: r for r in (
    Rule("entropy_collapse", "Entropy collapse", "actor/entropy",
         "The policy's token entropy fell far below where the run started: it now samples nearly the same "
         "response every time, so GRPO groups stop differing and exploration ends. Usual causes are a "
         "learning rate that is too high or a clip range that only lets probabilities rise. Try a lower "
         "actor.lr, an asymmetric clip (actor.clip_eps_high above clip_eps, DAPO's clip-higher), a small "
         "actor.entropy_coef, a higher rollout.temperature, or a stronger KL to the anchor (actor.kl_coef).",
         _entropy_collapse),
    Rule("zero_variance_groups", "Zero-variance groups", "critic/frac_reward_zero_std",
         "Most GRPO groups gave every response the same reward (all right or all wrong), so their advantages "
         "are zero and they teach nothing; the step's gradient comes from the few remaining groups. The "
         "prompts are too easy or too hard for the policy (or the reward is broken: check the grader's "
         "reasons on the trace page). Try a larger rollout.group_size, a higher temperature, or training "
         "prompts matched to the policy's level.",
         _zero_variance),
    Rule("truncation", "Truncated responses", "response_length/clip_ratio",
         "Many responses ran into rollout.max_new_tokens before a final answer, so they score zero whatever "
         "their reasoning was; long reasoning is punished and the length distribution is cut. Raise "
         "rollout.max_new_tokens, or look at the truncated traces for repetition loops (a sign of a "
         "degenerate policy rather than a short budget).",
         _truncation, "&truncated=true"),
    Rule("mismatch_growth", "Train–inference mismatch growing", "rollout_corr/kl_k3",
         "The generation engine's log-probs drift away from the trainer's for the same tokens (k3 KL per "
         "token, rollout_corr/*), so the samples are more off-policy than the importance ratios assume. "
         "Usual causes are precision differences (bf16 engine vs fp32 trainer), a stale weight sync, or "
         "sampling settings the trainer does not reproduce. Check rollout.behavior_logprobs=recompute, the "
         "engine's dtype and the sync; truncated importance sampling bounds the damage.",
         _mismatch_growth),
    Rule("ratio_blowup", "Importance ratios blow up on replayed data", "actor/importance_ratio_max",
         "On rollouts replayed from older policies the largest importance ratio π_θ/π_b is large: the "
         "policy has moved far from the one that generated them, and a few tokens dominate the update. "
         "Try a smaller remix.window (replay only recent policies), a lower remix.replay_share or "
         "remix.utd, or a dual clip (actor.dual_clip_c).",
         lambda s, t: _worst_replayed(s, "ratio_max", t)),
    Rule("replay_clipfrac", "Replayed data mostly clipped", "actor/pg_clipfrac",
         "A large share of the tokens of replayed rollouts is clipped, so replay adds compute but little "
         "gradient: the data is too stale for the trust region. Try a smaller remix.window, a lower "
         "remix.utd, or reincarnating earlier (remix.reincarnate_at).",
         lambda s, t: _worst_replayed(s, "clipfrac", t)),
    Rule("length_runaway", "Response length runaway", "response_length/mean",
         "Mean response length moved far from its start, up or down. Shrinking responses under heavy "
         "replay is the 'whipping effect' of off-policy RL (long responses dominate a token-mean loss and "
         "get pushed shorter) and usually comes with a fall in self-reflection and accuracy; exploding "
         "length often means repetition. Lower remix.utd or remix.replay_share, keep KL-Convex on, or "
         "reincarnate earlier; read the longest and shortest traces.",
         _length_runaway),
    Rule("reflection_collapse", "Self-reflection collapse", "behavior/self_reflection_rate",
         "The share of responses that re-check their work (wait, verify, double-check…) fell well below its "
         "start: the policy stops self-correcting, which the ReMix paper ties to high off-policy "
         "update-to-data ratios and accuracy decline. Lower remix.utd or remix.replay_share, or reincarnate "
         "earlier (remix.reincarnate_at).",
         _reflection_collapse),
)}
WATCHED_PREFIXES = ("actor/entropy", "critic/frac_reward_zero_std", "response_length/clip_ratio",
                    "rollout_corr/kl_k3", "response_length/mean", "behavior/self_reflection_rate",
                    "replay/age_")


def _watched(key: str) -> bool:
    return key.startswith(WATCHED_PREFIXES) and (not key.startswith("replay/age_")
                                                 or key.endswith(("/ratio_max", "/clipfrac")))


class AlertMonitor:
    """Feeds one step at a time; `observe` returns the episodes that opened, changed or resolved.

    `history` (the watched metrics so far) is the only state: the trainer keeps it in its
    checkpointed state, and a monitor built on a restored history resumes the same open episodes.
    """

    def __init__(self, thresholds: Mapping[str, float | None], history: Series | None = None):
        self.thresholds = {name: t for name, t in thresholds.items() if name in RULES and t is not None}
        self.history: Series = {}
        self.open: dict[str, AlertRecord] = {}
        for step, metrics in _by_step(history or {}):  # replay a restored history: same open episodes
            self.observe(step, metrics)

    def observe(self, step: int, metrics: Mapping[str, float]) -> list[AlertRecord]:
        for key, value in metrics.items():
            if _watched(key) and value == value:  # NaN carries no signal
                self.history.setdefault(key, []).append((step, float(value)))
        changed = []
        for name, threshold in self.thresholds.items():
            rule = RULES[name]
            hit = rule.check(self.history, threshold)
            current = self.open.get(name)
            if hit is not None:
                value, detail = hit
                worse = current is None or _worse(value, current.value, threshold)
                episode = AlertRecord(
                    rule=name, status="firing", first_step=current.first_step if current else step, last_step=step,
                    value=value if worse else current.value, threshold=threshold,
                    detail=detail if worse else current.detail, metric=rule.metric)
                self.open[name] = episode
                changed.append(episode)
            elif current is not None:
                changed.append(replace(current, status="resolved"))
                del self.open[name]
        return changed


def _worse(value: float, old: float, threshold: float) -> bool:
    """Is `value` further past the threshold than `old`? (Rules fire above or below it.)"""
    return abs(value - threshold) > abs(old - threshold)


def _by_step(series: Series) -> list[tuple[int, dict[str, float]]]:
    steps: dict[int, dict[str, float]] = {}
    for key, points in series.items():
        for step, value in points:
            steps.setdefault(step, {})[key] = value
    return sorted(steps.items())


def detect(series: Series, thresholds: Mapping[str, float | None]) -> list[AlertRecord]:
    """Every episode in a finished metric series (e.g. a run directory's metrics.jsonl)."""
    monitor = AlertMonitor(thresholds)
    episodes: dict[tuple[str, int], AlertRecord] = {}
    for step, metrics in _by_step(series):
        for alert in monitor.observe(step, metrics):
            episodes[(alert.rule, alert.first_step)] = alert
    return sorted(episodes.values(), key=lambda a: (a.first_step, a.rule))
