"""Analytic SQL behind the dashboard's views, apart from the routes so that tests call it without
HTTP (tests/unit/test_queries.py). Each function takes a session and returns plain data; the
routes wrap it in their response schemas."""

from __future__ import annotations

from typing import Any

import numpy as np
from sqlalchemy import Select, func, literal, literal_column, select, tuple_
from sqlalchemy.sql.elements import ColumnElement
from sqlmodel import Session

from remix_engine.jsonsafe import finite_or_none
from studio import metric_chunks as mc
from studio import rollout_text
from studio.db import fetch_binary
from studio.models import LatestMetric, MetricChunk, OffPolicyStep, Rollout, RolloutText

# x axes of a metric series: training step, rollouts generated so far, training seconds
X_FIELDS = {"step": mc.STEP, "rollouts": mc.ROLLOUTS, "time": mc.ELAPSED_S}
# Counts of matching rollouts stop here: past it a page says "10,000+" (total_capped) instead of
# counting a whole run on every request.
COUNT_CAP = 10_000
SEARCH_COUNT_CAP = 1_000  # a search count checks each hit's run and filters: fewer


# ------------------------------------------------------------------------------------------ rollouts
def rollout_page(session: Session, run_id: int, cond: list[ColumnElement], q: str | None,
                 after: tuple[int, int] | None, order: str, limit: int) -> tuple[list[Rollout], int | None, bool]:
    """One page of a run's rollouts matching `cond` (which includes the run) and, with `q`, the text
    search: (up to `limit` + 1 rollouts, the capped count or None on later pages, whether capped).

    Pages are in (step, id) order, keyset-paginated after `after`. A search walks the search index
    in rollout id order instead (the same order within a run: the sink writes a run's steps in
    order, and a resume deletes the later steps before writing them again with new ids), so a page
    stops after `limit` + 1 hits instead of sorting all of them; its count stops at SEARCH_COUNT_CAP."""
    desc = order == "desc"
    query = rollout_text.search_query(session.get_bind().dialect.name, q) if q else None
    if query is None:
        base = select(Rollout).where(*cond)
        ordering = [Rollout.step, Rollout.id]
        key = tuple_(Rollout.step, Rollout.id)
        cursor = None if after is None else (key < tuple_(*after) if desc else key > tuple_(*after))
        cap = COUNT_CAP
    else:
        base, id_col = _search(session, run_id, query, select(Rollout).where(*cond))
        ordering = [id_col]
        cursor = None if after is None else (id_col < after[1] if desc else id_col > after[1])
        cap = SEARCH_COUNT_CAP
    count, capped = (None, False) if after is not None else _capped_count(session, base, cap)
    page = base.where(cursor) if cursor is not None else base
    rows = session.execute(page.order_by(*[c.desc() if desc else c.asc() for c in ordering])
                           .limit(limit + 1)).scalars().all()
    return list(rows), count, capped


def _search(session: Session, run_id: int, query: str, base: Select) -> tuple[Select, ColumnElement]:
    """`base` limited to the rollouts matching `query`, and the id column to order by. Both backends
    bound the search index to the run's id range: without it PostgreSQL may merge-join the run's
    rollouts with every text from the table's first id (0.65–1.4 s for a common word in the middle
    run of 1M rollouts), and FTS5 would read a common word's doclist for every run."""
    lo, hi = session.execute(select(func.min(Rollout.id), func.max(Rollout.id)).where(Rollout.run_id == run_id)).one()
    # as literals in the SQL: psycopg prepares a statement after its fifth run, and PostgreSQL's
    # generic plan for a parameter range went back to the merge join (250 ms)
    lo, hi = literal(lo or 0, literal_execute=True), literal(hi or 0, literal_execute=True)
    if session.get_bind().dialect.name == "postgresql":
        hit = select(RolloutText.rollout_id).where(RolloutText.rollout_id == Rollout.id,
                                                    RolloutText.rollout_id.between(lo, hi),
                                                    RolloutText.terms.op("@@")(func.to_tsquery("simple", query)))
        return base.where(hit.exists()), Rollout.id
    # SQLite: the FTS5 table drives the join (it seeks its doclists by rowid)
    fts = rollout_text.SEARCH
    return (base.join_from(fts, Rollout, Rollout.id == fts.c.rowid)
            .where(literal_column(rollout_text.SEARCH_TABLE).op("MATCH")(query),
                   fts.c.rowid.between(lo, hi)), fts.c.rowid)


def _capped_count(session: Session, base: Select, cap: int) -> tuple[int, bool]:
    """(rows of `base` up to `cap`, whether there are more)."""
    n = session.execute(select(func.count()).select_from(
        base.with_only_columns(literal(1)).limit(cap + 1).subquery())).scalar_one()
    return min(n, cap), n > cap


def rollout_texts(session: Session, rollout_ids: list[int]) -> dict[int, tuple[str, str]]:
    """(prompt, response) by rollout id, decompressed."""
    return {rid: rollout_text.unpack(body) for rid, body in _bodies(session, rollout_ids)}


def rollout_previews(session: Session, rollout_ids: list[int]) -> dict[int, str]:
    """The response's preview by rollout id (only the head of each blob is decompressed)."""
    return {rid: rollout_text.response_preview(body) for rid, body in _bodies(session, rollout_ids)}


def _bodies(session: Session, rollout_ids: list[int]) -> list[tuple[int, bytes]]:
    if not rollout_ids:
        return []
    return fetch_binary(session, select(RolloutText.rollout_id, RolloutText.body)
                        .where(RolloutText.rollout_id.in_(rollout_ids)))


# ------------------------------------------------------------------------------------------ metrics
def metric_series(session: Session, run_ids: list[int], keys: list[str], x: str, max_points: int,
                  step_min: int | None = None, step_max: int | None = None) -> dict[int, list[dict[str, Any]]]:
    """Per run and key: the series, and if it has more than `max_points` points, split it (ordered
    by step) into (max_points − 2) / 2 equal-count buckets keeping each bucket's minimum and maximum,
    plus the first and last point: spikes survive, the line spans the whole range.

    One range read of metric_chunks' primary key per series: a blob per 100 steps, which numpy
    reads in place (studio/metric_chunks.py). Points without a value or an x are left out."""
    if not keys or not run_ids:
        return {rid: [] for rid in run_ids}
    c = MetricChunk
    cond = [c.run_id.in_(run_ids), c.key.in_(keys)]
    if step_min is not None:
        cond.append(c.chunk >= mc.chunk_of(step_min))
    if step_max is not None:
        cond.append(c.chunk <= mc.chunk_of(step_max))
    blobs: dict[tuple[int, str], list[bytes]] = {}
    for rid, key, blob in fetch_binary(session, select(c.run_id, c.key, c.points).where(*cond)
                                       .order_by(c.run_id, c.key, c.chunk)):
        blobs.setdefault((rid, key), []).append(blob)
    out: dict[int, dict[str, dict[str, Any]]] = {rid: {} for rid in run_ids}
    x_field = X_FIELDS[x]
    for (rid, key), series in blobs.items():
        pts = mc.concat(series)
        keep = np.isfinite(pts[mc.VALUE]) & np.isfinite(pts[x_field])
        if step_min is not None:
            keep &= pts[mc.STEP] >= step_min
        if step_max is not None:
            keep &= pts[mc.STEP] <= step_max
        pts = pts[:, keep]
        out[rid][key] = _downsampled(key, pts[mc.STEP], pts[mc.VALUE], pts[x_field], max_points)
    empty = {"total": 0, "downsampled": False, "x": [], "y": [], "step": []}
    return {rid: [out[rid].get(k) or {"key": k, **empty} for k in keys] for rid in run_ids}


def _downsampled(key: str, steps: np.ndarray, values: np.ndarray, xs: np.ndarray, max_points: int) -> dict[str, Any]:
    n = len(values)
    if n > max_points:
        buckets = max(1, (max_points - 2) // 2)
        bucket = np.arange(n) * buckets // n  # equal-count buckets, in step order
        # first row of each bucket after sorting by (bucket, value[, position]): its minimum; by
        # (bucket, −value): its maximum; the earliest point wins ties
        first = lambda order: order[np.r_[True, np.diff(bucket[order]) != 0]]  # noqa: E731
        keep = np.zeros(n, dtype=bool)
        keep[[0, n - 1]] = True
        keep[first(np.lexsort((values, bucket)))] = True
        keep[first(np.lexsort((-values, bucket)))] = True
        steps, values, xs = steps[keep], values[keep], xs[keep]
    return {"key": key, "total": n, "downsampled": n > max_points, "x": xs.tolist(), "y": values.tolist(),
            "step": steps.astype(np.int64).tolist()}


def latest_metrics(session: Session, run_ids: list[int], keys: list[str] | None) -> dict[int, dict[str, float | None]]:
    """Last value of `keys` (None: every key) per run, from latest_metrics."""
    out: dict[int, dict[str, float | None]] = {rid: {} for rid in run_ids}
    if not run_ids:
        return out
    cond = [LatestMetric.run_id.in_(run_ids)]
    if keys is not None:
        cond.append(LatestMetric.key.in_(keys))
    for rid, key, value in session.execute(select(LatestMetric.run_id, LatestMetric.key, LatestMetric.value)
                                           .where(*cond).order_by(LatestMetric.run_id, LatestMetric.key)):
        out[rid][key] = value
    return out


# ------------------------------------------------------------------------------------------ off-policy
def offpolicy(session: Session, run_id: int, step_min: int | None = None, step_max: int | None = None) -> dict[str, Any]:
    """Off-policy reuse of a run: uses per step (fresh vs replayed), uses per policy age with their
    importance ratio, clip fraction and KL, the step × age staleness grid, how often rollouts were
    replayed, and totals. Steps are the consuming steps (uses) or generating steps (rollouts).

    Uses come from offpolicy_steps (the sink's per step × age aggregate, a few rows per step), so
    the cost does not grow with the number of uses."""
    o = OffPolicyStep
    cond = [o.run_id == run_id]
    if step_min is not None:
        cond.append(o.step >= step_min)
    if step_max is not None:
        cond.append(o.step <= step_max)
    cells = session.execute(select(o.step, o.age, o.uses, o.ratio_mean_sum, o.ratio_mean_n, o.ratio_max,
                                   o.clipfrac_sum, o.clipfrac_n, o.kl_sum, o.kl_n)
                            .where(*cond).order_by(o.step, o.age)).all()
    steps: dict[int, list[int]] = {}
    ages: dict[int, list[Any]] = {}
    for step, age, n, rm_s, rm_n, rmax, cf_s, cf_n, kl_s, kl_n in cells:
        per_step = steps.setdefault(step, [0, 0])
        per_step[0] += n
        per_step[1] += n if age > 0 else 0
        a = ages.setdefault(age, [0, 0.0, 0, None, 0.0, 0, 0.0, 0])
        a[0] += n
        a[1] += rm_s or 0.0
        a[2] += rm_n
        a[3] = rmax if a[3] is None or (rmax is not None and rmax > a[3]) else a[3]
        a[4] += cf_s or 0.0
        a[5] += cf_n
        a[6] += kl_s or 0.0
        a[7] += kl_n
    reuse_by_step = [{"step": s, "uses": n, "fresh": n - rep, "replayed": rep, "reuse_ratio": rep / n if n else 0.0}
                     for s, (n, rep) in sorted(steps.items())]
    mean = lambda total, n: finite_or_none(total / n) if n else None  # noqa: E731
    by_age = [{"age": age, "count": a[0], "ratio_mean": mean(a[1], a[2]), "ratio_max": finite_or_none(a[3]),
               "clipfrac": mean(a[4], a[5]), "kl_to_behavior": mean(a[6], a[7])} for age, a in sorted(ages.items())]
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
            "staleness_by_step": [{"step": s, "age": a, "count": n} for s, a, n, *_ in cells],
            "rollout_reuse_histogram": [{"reuse_count": rc, "rollouts": n} for rc, n in reuse_hist],
            "totals": totals}


def cost_at_step(session: Session, run_id: int, step: int) -> int | None:
    """The run's cumulative `cost/rollouts` at `step`, else the rollout count recorded with the
    step's metrics, if any."""
    c = MetricChunk
    points = {key: mc.unpack(blob) for key, blob in fetch_binary(
        session, select(c.key, c.points).where(c.run_id == run_id, c.chunk == mc.chunk_of(step)))}
    at_step = {key: pts[:, pts[mc.STEP] == step] for key, pts in points.items()}
    cost = at_step.get("cost/rollouts")
    if cost is not None and cost.shape[1] and np.isfinite(cost[mc.VALUE, 0]):
        return int(cost[mc.VALUE, 0])
    counts = [pts[mc.ROLLOUTS, 0] for pts in at_step.values() if pts.shape[1] and np.isfinite(pts[mc.ROLLOUTS, 0])]
    return int(max(counts)) if counts else None
