"""Analytic SQL behind the dashboard's views, apart from the routes so that tests call it without
HTTP (tests/unit/test_queries.py). Each function takes a session and returns plain data; the
routes wrap it in their response schemas."""

from __future__ import annotations

from typing import Any

from sqlalchemy import case, func, select
from sqlmodel import Session

from remix_engine.jsonsafe import finite_or_none
from studio.models import Metric, Rollout, RolloutUse

# x axes of a metric series: training step, rollouts generated so far, training seconds
X_COLUMNS = {"step": Metric.step, "rollouts": Metric.rollouts, "time": Metric.elapsed_s}


def downsample_metrics(session: Session, run_id: int, keys: list[str], x: str, max_points: int,
                       step_min: int | None = None, step_max: int | None = None) -> list[dict[str, Any]]:
    """Per key: if it has more than `max_points` points, split it (ordered by step) into
    (max_points − 2) / 2 equal-count buckets (NTILE) and keep each bucket's minimum and maximum,
    plus the first and last point of the series: spikes survive, the line spans the whole range."""
    if not keys:
        return []
    xcol = X_COLUMNS[x]
    buckets = max(1, (max_points - 2) // 2)
    cond = [Metric.run_id == run_id, Metric.key.in_(keys), Metric.value.is_not(None), xcol.is_not(None)]
    if step_min is not None:
        cond.append(Metric.step >= step_min)
    if step_max is not None:
        cond.append(Metric.step <= step_max)
    by_key = Metric.key
    pts = select(
        Metric.key.label("key"), Metric.step.label("step"), Metric.value.label("value"), xcol.label("x"),
        func.ntile(buckets).over(partition_by=by_key, order_by=Metric.step).label("bucket"),
        func.count().over(partition_by=by_key).label("total"),
        func.row_number().over(partition_by=by_key, order_by=Metric.step).label("rn"),
    ).where(*cond).subquery("pts")
    ranked = select(
        pts.c.key, pts.c.step, pts.c.value, pts.c.x, pts.c.total, pts.c.rn,
        func.row_number().over(partition_by=(pts.c.key, pts.c.bucket), order_by=(pts.c.value.asc(), pts.c.step)).label("rmin"),
        func.row_number().over(partition_by=(pts.c.key, pts.c.bucket), order_by=(pts.c.value.desc(), pts.c.step)).label("rmax"),
    ).subquery("ranked")
    rows = session.execute(
        select(ranked.c.key, ranked.c.step, ranked.c.value, ranked.c.x, ranked.c.total)
        .where((ranked.c.total <= max_points) | (ranked.c.rmin == 1) | (ranked.c.rmax == 1) | (ranked.c.rn == 1)
               | (ranked.c.rn == ranked.c.total))
        .order_by(ranked.c.key, ranked.c.step)).all()
    out = {k: {"key": k, "total": 0, "downsampled": False, "x": [], "y": [], "step": []} for k in keys}
    for key, step, value, xv, total in rows:
        ser = out[key]
        ser["total"] = int(total)
        ser["downsampled"] = int(total) > max_points
        ser["x"].append(float(xv))
        ser["y"].append(float(value))
        ser["step"].append(int(step))
    return [out[k] for k in keys]


def offpolicy(session: Session, run_id: int, step_min: int | None = None, step_max: int | None = None) -> dict[str, Any]:
    """Off-policy reuse of a run: uses per step (fresh vs replayed), uses per policy age with their
    importance ratio, clip fraction and KL, the step × age staleness grid, how often rollouts were
    replayed, and totals. Steps are the consuming steps (uses) or generating steps (rollouts)."""
    cond = [RolloutUse.run_id == run_id]
    if step_min is not None:
        cond.append(RolloutUse.step >= step_min)
    if step_max is not None:
        cond.append(RolloutUse.step <= step_max)
    replayed = func.sum(case((RolloutUse.age > 0, 1), else_=0))
    per_step = session.execute(select(RolloutUse.step, func.count(), replayed).where(*cond)
                               .group_by(RolloutUse.step).order_by(RolloutUse.step)).all()
    reuse_by_step = [{"step": s, "uses": n, "fresh": n - int(rep or 0), "replayed": int(rep or 0),
                      "reuse_ratio": (int(rep or 0) / n) if n else 0.0} for s, n, rep in per_step]
    per_age = session.execute(select(RolloutUse.age, func.count(), func.avg(RolloutUse.ratio_mean),
                                     func.max(RolloutUse.ratio_max), func.avg(RolloutUse.clipfrac),
                                     func.avg(RolloutUse.kl_to_behavior))
                              .where(*cond).group_by(RolloutUse.age).order_by(RolloutUse.age)).all()
    by_age = [{"age": a, "count": n, "ratio_mean": finite_or_none(rm), "ratio_max": finite_or_none(rx),
               "clipfrac": finite_or_none(cf), "kl_to_behavior": finite_or_none(kl)}
              for a, n, rm, rx, cf, kl in per_age]
    cells = session.execute(select(RolloutUse.step, RolloutUse.age, func.count()).where(*cond)
                            .group_by(RolloutUse.step, RolloutUse.age)
                            .order_by(RolloutUse.step, RolloutUse.age)).all()
    rcond = [Rollout.run_id == run_id]
    if step_min is not None:
        rcond.append(Rollout.step >= step_min)
    if step_max is not None:
        rcond.append(Rollout.step <= step_max)
    reuse_hist = session.execute(select(Rollout.reuse_count, func.count()).where(*rcond)
                                 .group_by(Rollout.reuse_count).order_by(Rollout.reuse_count)).all()
    total_uses = sum(b["uses"] for b in reuse_by_step)
    total_replayed = sum(b["replayed"] for b in reuse_by_step)
    ages_weighted = sum(b["age"] * b["count"] for b in by_age)
    totals = {"uses": float(total_uses), "replayed_uses": float(total_replayed),
              "reuse_ratio": (total_replayed / total_uses) if total_uses else 0.0,
              "mean_age": (ages_weighted / total_uses) if total_uses else 0.0,
              "max_age": float(max((b["age"] for b in by_age), default=0)),
              "rollouts": float(sum(n for _, n in reuse_hist)),
              "rollouts_replayed": float(sum(n for rc, n in reuse_hist if rc > 0))}
    return {"reuse_by_step": reuse_by_step,
            "staleness_histogram": [{"age": b["age"], "count": b["count"]} for b in by_age], "by_age": by_age,
            "staleness_by_step": [{"step": s, "age": a, "count": n} for s, a, n in cells],
            "rollout_reuse_histogram": [{"reuse_count": rc, "rollouts": n} for rc, n in reuse_hist],
            "totals": totals}


def cost_at_step(session: Session, run_id: int, step: int) -> int | None:
    """The run's cumulative `cost/rollouts` at `step` (the metrics table), if recorded."""
    value = session.execute(select(Metric.value).where(Metric.run_id == run_id, Metric.key == "cost/rollouts",
                                                       Metric.step == step)).scalar_one_or_none()
    if value is not None:
        return int(value)
    rollouts = session.execute(select(func.max(Metric.rollouts)).where(Metric.run_id == run_id,
                                                                       Metric.step == step)).scalar_one_or_none()
    return int(rollouts) if rollouts is not None else None
