"""Where the trainer's events go. The CLI writes JSONL files; the studio worker writes SQL.

A sink receives the typed records of remix_engine/events.py (rollouts, rollout uses, checkpoints)
and each step's metrics dict, so the engine never imports web or SQL code. Rollout records carry a
stable `uid` (unique within a run) so a re-delivered job can upsert.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

from remix_engine.events import (
    AlertRecord,
    CheckpointRecord,
    RolloutRecord,
    RolloutUseRecord,
    TokenStatsRecord,
)


class StopRequested(Exception):
    """Raised inside a long phase (warm start, generation, evaluation) when `Sink.should_abort`
    turned true: the phase is dropped instead of finished, and the run ends cancelled at the last
    completed step (checkpointed; an interrupted warm start leaves nothing)."""


class Sink:
    """Base sink: every hook is a no-op. Subclass and override what you need."""

    def on_start(self, info: dict[str, Any]) -> None: ...

    def on_step(self, step: int, metrics: dict[str, float]) -> None: ...

    def on_rollouts(self, step: int, rollouts: list[RolloutRecord]) -> None: ...

    def on_rollout_uses(self, step: int, uses: list[RolloutUseRecord]) -> None: ...

    def on_checkpoint(self, step: int, path: str, info: CheckpointRecord) -> None: ...

    def on_end(self, summary: dict[str, Any]) -> None: ...

    def on_phase(self, phase: str | None) -> None:
        """What the trainer does outside its steps (a warm-start progress line), None once it trains."""

    def on_alert(self, step: int, alert: AlertRecord) -> None:
        """A health-alert episode opened, went on or resolved at `step` (remix_engine/alerts.py)."""

    def on_token_stats(self, step: int, rows: list[TokenStatsRecord]) -> None:
        """Per-token statistics of the sampled rollouts used at `step` (trainer.token_stats_every)."""

    def should_stop(self) -> bool:
        """Polled between steps: True asks the trainer to checkpoint and stop (a cancel, or a worker
        shutting down that re-queues the run)."""
        return False

    def should_abort(self) -> bool:
        """Polled often during the long phases (every warm-start step, every generated token): True
        when the work in progress may be thrown away (a cancel, unlike a shutdown); the phase then
        raises StopRequested and the run ends at its last completed step. Keep it cheap."""
        return False


class MultiSink(Sink):
    def __init__(self, *sinks: Sink):
        self.sinks = [s for s in sinks if s is not None]

    def on_start(self, info):
        for s in self.sinks:
            s.on_start(info)

    def on_step(self, step, metrics):
        for s in self.sinks:
            s.on_step(step, metrics)

    def on_rollouts(self, step, rollouts):
        for s in self.sinks:
            s.on_rollouts(step, rollouts)

    def on_rollout_uses(self, step, uses):
        for s in self.sinks:
            s.on_rollout_uses(step, uses)

    def on_checkpoint(self, step, path, info):
        for s in self.sinks:
            s.on_checkpoint(step, path, info)

    def on_end(self, summary):
        for s in self.sinks:
            s.on_end(summary)

    def on_phase(self, phase):
        for s in self.sinks:
            s.on_phase(phase)

    def on_alert(self, step, alert):
        for s in self.sinks:
            s.on_alert(step, alert)

    def on_token_stats(self, step, rows):
        for s in self.sinks:
            s.on_token_stats(step, rows)

    def should_stop(self):
        return any(s.should_stop() for s in self.sinks)

    def should_abort(self):
        return any(s.should_abort() for s in self.sinks)


class JsonlSink(Sink):
    """Writes DIR/metrics.jsonl, DIR/rollouts.jsonl, DIR/rollout_uses.jsonl, DIR/token_stats.jsonl,
    DIR/alerts.jsonl and DIR/summary.json.

    On resume the files are truncated to the resumed step first, so no step appears twice.
    """

    def __init__(self, out_dir: str | Path, resume_step: int | None = None):
        self.dir = Path(out_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.paths = {name: self.dir / f"{name}.jsonl" for name in ("metrics", "rollouts", "rollout_uses", "alerts",
                                                                      "token_stats")}
        if resume_step is not None:
            for path in self.paths.values():
                _truncate_after_step(path, resume_step)
        else:
            for path in self.paths.values():
                path.write_text("")

    def _append(self, name: str, rows: list[dict[str, Any]]) -> None:
        with self.paths[name].open("a") as fh:
            for row in rows:
                fh.write(json.dumps(row) + "\n")

    def on_step(self, step, metrics):
        self._append("metrics", [{"step": step, **metrics}])

    def on_rollouts(self, step, rollouts):
        self._append("rollouts", [asdict(r) for r in rollouts])

    def on_rollout_uses(self, step, uses):
        self._append("rollout_uses", [asdict(u) for u in uses])

    def on_token_stats(self, step, rows):
        self._append("token_stats", [asdict(r) for r in rows])

    def on_alert(self, step, alert):
        self._append("alerts", [{"step": step, **asdict(alert)}])  # the last row of an episode is its state

    def on_end(self, summary):
        (self.dir / "summary.json").write_text(json.dumps(summary, indent=2))


def _truncate_after_step(path: Path, step: int) -> None:
    if not path.exists():
        return
    kept = [line for line in path.read_text().splitlines() if line.strip() and json.loads(line).get("step", 0) <= step]
    path.write_text("".join(line + "\n" for line in kept))
