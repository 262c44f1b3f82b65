"""SqlSink: the trainer's events → SQL rows, batched on a writer thread (off the training hot path).

Hooks only enqueue plain dicts; a background thread drains the queue and writes each batch in one
transaction. `on_checkpoint` and `on_end` are barriers: they return only when everything emitted
before them is committed, so every step up to a checkpoint recorded in SQL is in SQL too (a resumed
job starts from the newest checkpoint SQL knows about, see worker/tasks.py).

Idempotent ingestion: metrics upsert on (run, key, step), rollouts on (run, uid), uses on
(run, rollout uid, step), checkpoints on (run, step). On start the sink deletes the run's rows after
the step the trainer resumed from (everything for a fresh start), so a re-delivered or resumed job
ends with exactly one row per step and rollout.

When the sink belongs to a job it is fenced: each batch first refreshes the job's heartbeat with
`WHERE id = job AND attempt = ours AND status = running`; if that matches nothing the job was taken
from us (re-queued after a stall, or finished) and the batch is dropped and `fenced` is set.
"""

from __future__ import annotations

import logging
import math
import queue
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

from sqlalchemy import bindparam, case, delete, func, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Engine
from sqlmodel import Session

from backend.db import get_engine, retrying
from backend.models import (
    Checkpoint,
    Job,
    JobStatus,
    LatestMetric,
    Metric,
    Rollout,
    RolloutText,
    RolloutUse,
    Run,
    utcnow,
)
from remix_engine.sinks import Sink

log = logging.getLogger("remix.sink")

_IN_CHUNK = 500  # ids per IN (...) list (SQLite's bound-parameter limit)


def _finite(value: Any) -> float | None:
    try:
        f = float(value)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def _chunks(items: list, n: int = _IN_CHUNK) -> Iterable[list]:
    for i in range(0, len(items), n):
        yield items[i:i + n]


class _Barrier:
    def __init__(self) -> None:
        self.done = threading.Event()


class SinkError(RuntimeError):
    """The writer thread could not store the trainer's events."""


class SqlSink(Sink):
    def __init__(self, run_id: int, *, engine: Engine | None = None, job_id: int | None = None,
                 attempt: int | None = None, should_stop: Callable[[], bool] | None = None,
                 on_progress: Callable[[int, dict[str, float]], None] | None = None,
                 batch_rows: int = 5000, max_queue: int = 512):
        self.run_id = run_id
        self.engine = engine or get_engine()
        self.job_id = job_id
        self.attempt = attempt
        self._should_stop = should_stop
        self._on_progress = on_progress
        self.batch_rows = batch_rows
        self._q: queue.Queue = queue.Queue(maxsize=max_queue)
        self._error: BaseException | None = None
        self.fenced = False
        self.resumed_from: int | None = None
        self.rows_written = 0
        self.write_seconds = 0.0
        self._dialect = self.engine.dialect.name
        self._thread = threading.Thread(target=self._writer, name=f"sql-sink-run{run_id}", daemon=True)
        self._closed = False
        self._thread.start()

    # ----------------------------------------------------------------------------- sink hooks
    def on_start(self, info: dict[str, Any]) -> None:
        resumed = info.get("resumed_from")
        self.resumed_from = int(resumed) if resumed is not None else None
        self._put(("truncate", self.resumed_from if self.resumed_from is not None else -1, None, time.time()))
        self.flush()

    def on_step(self, step: int, metrics: dict[str, float]) -> None:
        self._put(("step", int(step), dict(metrics), time.time()))

    def on_rollouts(self, step: int, rollouts: list[dict[str, Any]]) -> None:
        if rollouts:
            self._put(("rollouts", int(step), list(rollouts), time.time()))

    def on_rollout_uses(self, step: int, uses: list[dict[str, Any]]) -> None:
        if uses:
            self._put(("uses", int(step), list(uses), time.time()))

    def on_checkpoint(self, step: int, path: str, info: dict[str, Any]) -> None:
        self._put(("checkpoint", int(step), {"path": str(path), **info}, time.time()))
        self.flush()

    def on_end(self, summary: dict[str, Any]) -> None:
        self.flush()

    def should_stop(self) -> bool:
        self._raise_if_failed()
        if self.fenced:
            return True
        return bool(self._should_stop and self._should_stop())

    # ----------------------------------------------------------------------------- control
    def flush(self, timeout: float | None = None) -> None:
        """Block until everything enqueued so far is committed (or the writer failed)."""
        barrier = _Barrier()
        self._put(("barrier", 0, barrier, 0.0))
        barrier.done.wait(timeout)
        self._raise_if_failed()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._q.put(("close", 0, None, 0.0))
        self._thread.join()

    def _put(self, item: tuple) -> None:
        self._raise_if_failed()
        if self._closed:
            raise SinkError("sink is closed")
        self._q.put(item)

    def _raise_if_failed(self) -> None:
        if self._error is not None:
            raise SinkError(f"storing training events failed: {self._error}") from self._error

    # ----------------------------------------------------------------------------- writer thread
    def _writer(self) -> None:
        while True:
            item = self._q.get()
            batch = [item]
            rows = _rows_in(item)
            while rows < self.batch_rows and item[0] not in ("close",):
                try:
                    item = self._q.get_nowait()
                except queue.Empty:
                    break
                batch.append(item)
                rows += _rows_in(item)
            events = [b for b in batch if b[0] not in ("barrier", "close")]
            if events and self._error is None and not self.fenced:
                started = time.perf_counter()
                try:
                    retrying(lambda ev=events: self._write(ev), attempts=6)
                    self.write_seconds += time.perf_counter() - started
                except BaseException as exc:  # noqa: BLE001 (reported to the training thread)
                    log.exception("SqlSink: writing a batch for run %s failed", self.run_id)
                    self._error = exc
                if self._on_progress is not None and self._error is None and not self.fenced:
                    steps = [e for e in events if e[0] == "step"]
                    if steps:
                        try:
                            self._on_progress(steps[-1][1], steps[-1][2])
                        except Exception:  # progress reporting is best effort
                            log.debug("progress callback failed", exc_info=True)
            for b in batch:
                if b[0] == "barrier":
                    b[2].done.set()
            if any(b[0] == "close" for b in batch):
                return

    def _write(self, events: list[tuple]) -> None:
        with Session(self.engine) as s:
            if self.job_id is not None and not self._fence(s):
                s.rollback()
                self.fenced = True
                log.warning("SqlSink: job %s attempt %s is no longer ours; dropping its events",
                            self.job_id, self.attempt)
                return
            written = 0
            last_step: tuple[int, dict] | None = None
            for kind, step, payload, wall in events:
                if kind == "truncate":
                    self._truncate(s, step)
                elif kind == "rollouts":
                    written += self._write_rollouts(s, payload, wall)
                elif kind == "uses":
                    written += self._write_uses(s, payload)
                elif kind == "step":
                    written += self._write_metrics(s, step, payload, wall)
                    last_step = (step, payload)
                elif kind == "checkpoint":
                    self._write_checkpoint(s, step, payload)
                    written += 1
            if last_step is not None:
                self._update_counters(s, *last_step)
            s.commit()
            self.rows_written += written

    def _fence(self, s: Session) -> bool:
        res = s.execute(update(Job).where(Job.id == self.job_id, Job.attempt == self.attempt,
                                          Job.status == JobStatus.RUNNING.value).values(heartbeat_at=utcnow()))
        return bool(res.rowcount)

    def _insert(self, model):
        return (postgresql.insert if self._dialect == "postgresql" else sqlite.insert)(model)

    # ----------------------------------------------------------------------------- row writers
    def _truncate(self, s: Session, after_step: int) -> None:
        """Forget everything after `after_step` (−1: everything) before a (re)start re-emits it."""
        rid = self.run_id
        touched = [r for (r,) in s.execute(select(RolloutUse.rollout_id).where(
            RolloutUse.run_id == rid, RolloutUse.step > after_step, RolloutUse.rollout_id.is_not(None)).distinct())]
        s.execute(delete(RolloutUse).where(RolloutUse.run_id == rid, RolloutUse.step > after_step))
        doomed = select(Rollout.id).where(Rollout.run_id == rid, Rollout.step > after_step)
        s.execute(delete(RolloutText).where(RolloutText.rollout_id.in_(doomed)))
        s.execute(delete(Rollout).where(Rollout.run_id == rid, Rollout.step > after_step))
        s.execute(delete(Metric).where(Metric.run_id == rid, Metric.step > after_step))
        s.execute(delete(Checkpoint).where(Checkpoint.run_id == rid, Checkpoint.step > after_step))
        self._refresh_use_stats(s, touched)
        # latest_metrics: rebuild from what is left
        s.execute(delete(LatestMetric).where(LatestMetric.run_id == rid))
        last = (select(Metric.key, func.max(Metric.step).label("step"))
                .where(Metric.run_id == rid).group_by(Metric.key).subquery())
        rows = s.execute(select(Metric.key, Metric.step, Metric.value, Metric.wall_time)
                         .join(last, (Metric.key == last.c.key) & (Metric.step == last.c.step))
                         .where(Metric.run_id == rid)).all()
        if rows:
            s.execute(self._insert(LatestMetric), [
                {"run_id": rid, "key": k, "step": st, "value": v, "wall_time": w} for k, st, v, w in rows])
        s.execute(update(Run).where(Run.id == rid).values(steps_done=max(after_step, 0), updated_at=utcnow()))

    def _write_rollouts(self, s: Session, rows: list[dict[str, Any]], wall: float) -> int:
        values = []
        texts: dict[str, tuple[str, str]] = {}
        for r in rows:
            uid = str(r["uid"])
            values.append({
                "run_id": self.run_id, "uid": uid, "step": int(r.get("step", 0)),
                "policy_version": int(r.get("policy_version", r.get("step", 0))),
                "group_id": str(r.get("group_id", "")), "prompt_id": str(r.get("prompt_id", "")),
                "extracted": None if r.get("extracted") is None else str(r["extracted"]),
                "reference": None if r.get("reference") is None else str(r["reference"]),
                "reward": _finite(r.get("reward")), "correct": bool(r.get("correct", False)),
                "format_ok": bool(r.get("format_ok", False)),
                "reason": None if r.get("reason") is None else str(r["reason"]),
                "length": int(r.get("length", 0) or 0), "truncated": bool(r.get("truncated", False)),
                "advantage": _finite(r.get("advantage")), "use_count": 0, "reuse_count": 0, "wall_time": wall,
            })
            texts[uid] = (str(r.get("prompt", "") or ""), str(r.get("response", "") or ""))
        stmt = self._insert(Rollout)
        updatable = ("step", "policy_version", "group_id", "prompt_id", "extracted", "reference", "reward", "correct",
                     "format_ok", "reason", "length", "truncated", "advantage", "wall_time")
        stmt = stmt.on_conflict_do_update(index_elements=["run_id", "uid"],
                                          set_={c: stmt.excluded[c] for c in updatable})
        ids = s.execute(stmt.returning(Rollout.id, Rollout.uid), values).all()
        text_rows = [{"rollout_id": rid, "prompt": texts[uid][0], "response": texts[uid][1]} for rid, uid in ids]
        if text_rows:
            tstmt = self._insert(RolloutText)
            tstmt = tstmt.on_conflict_do_update(index_elements=["rollout_id"],
                                                set_={"prompt": tstmt.excluded.prompt, "response": tstmt.excluded.response})
            s.execute(tstmt, text_rows)
        return len(values)

    def _write_uses(self, s: Session, rows: list[dict[str, Any]]) -> int:
        uids = sorted({str(r["rollout_uid"]) for r in rows})
        id_of: dict[str, int] = {}
        for chunk in _chunks(uids):
            id_of.update({uid: rid for rid, uid in s.execute(
                select(Rollout.id, Rollout.uid).where(Rollout.run_id == self.run_id, Rollout.uid.in_(chunk)))})
        values = [{
            "run_id": self.run_id, "rollout_id": id_of.get(str(r["rollout_uid"])), "rollout_uid": str(r["rollout_uid"]),
            "step": int(r["step"]), "age": int(r.get("age", 0)), "ratio_mean": _finite(r.get("ratio_mean")),
            "ratio_max": _finite(r.get("ratio_max")), "clipfrac": _finite(r.get("clipfrac")),
            "kl_to_behavior": _finite(r.get("kl_to_behavior")),
        } for r in rows]
        stmt = self._insert(RolloutUse)
        stmt = stmt.on_conflict_do_update(
            index_elements=["run_id", "rollout_uid", "step"],
            set_={c: stmt.excluded[c] for c in ("rollout_id", "age", "ratio_mean", "ratio_max", "clipfrac",
                                                 "kl_to_behavior")})
        s.execute(stmt, values)
        self._refresh_use_stats(s, sorted({v["rollout_id"] for v in values if v["rollout_id"] is not None}))
        return len(values)

    def _refresh_use_stats(self, s: Session, rollout_ids: list[int]) -> None:
        """Recompute a rollout's use/reuse counts and importance statistics from its uses."""
        if not rollout_ids:
            return
        updates = []
        for chunk in _chunks(rollout_ids):
            agg = {row[0]: row[1:] for row in s.execute(
                select(RolloutUse.rollout_id, func.count(), func.sum(case((RolloutUse.age > 0, 1), else_=0)),
                       func.max(RolloutUse.age), func.avg(RolloutUse.ratio_mean), func.max(RolloutUse.ratio_max),
                       func.avg(RolloutUse.clipfrac), func.avg(RolloutUse.kl_to_behavior))
                .where(RolloutUse.rollout_id.in_(chunk)).group_by(RolloutUse.rollout_id))}
            for rid in chunk:
                n, reused, max_age, rmean, rmax, clip, kl = agg.get(rid, (0, 0, None, None, None, None, None))
                updates.append({"b_id": rid, "use_count": int(n or 0), "reuse_count": int(reused or 0),
                                "max_age": max_age, "ratio_mean": _finite(rmean), "ratio_max": _finite(rmax),
                                "clipfrac": _finite(clip), "kl_to_behavior": _finite(kl)})
        stmt = (update(Rollout.__table__).where(Rollout.__table__.c.id == bindparam("b_id"))
                .values(use_count=bindparam("use_count"), reuse_count=bindparam("reuse_count"),
                        max_age=bindparam("max_age"), ratio_mean=bindparam("ratio_mean"),
                        ratio_max=bindparam("ratio_max"), clipfrac=bindparam("clipfrac"),
                        kl_to_behavior=bindparam("kl_to_behavior")))
        s.connection().execute(stmt, updates)

    def _write_metrics(self, s: Session, step: int, metrics: dict[str, Any], wall: float) -> int:
        rollouts = _finite(metrics.get("cost/rollouts"))
        elapsed = _finite(metrics.get("timing_s/elapsed"))
        if elapsed is None and step == 0:
            elapsed = 0.0
        values = [{"run_id": self.run_id, "step": step, "key": str(k)[:250], "value": _finite(v),
                   "rollouts": int(rollouts) if rollouts is not None else None, "elapsed_s": elapsed,
                   "wall_time": wall} for k, v in metrics.items()]
        if not values:
            return 0
        stmt = self._insert(Metric)
        stmt = stmt.on_conflict_do_update(
            index_elements=["run_id", "key", "step"],
            set_={c: stmt.excluded[c] for c in ("value", "rollouts", "elapsed_s", "wall_time")})
        s.execute(stmt, values)
        lstmt = self._insert(LatestMetric)
        lstmt = lstmt.on_conflict_do_update(
            index_elements=["run_id", "key"],
            set_={"step": lstmt.excluded.step, "value": lstmt.excluded.value, "wall_time": lstmt.excluded.wall_time},
            where=LatestMetric.__table__.c.step <= lstmt.excluded.step)
        s.execute(lstmt, [{"run_id": v["run_id"], "key": v["key"], "step": step, "value": v["value"],
                           "wall_time": wall} for v in values])
        return len(values)

    def _write_checkpoint(self, s: Session, step: int, info: dict[str, Any]) -> None:
        path = str(info.get("path", ""))
        stmt = self._insert(Checkpoint)
        values = {"run_id": self.run_id, "step": step, "policy_version": int(info.get("policy_version", step)),
                  "path": path, "policy_path": info.get("policy_path"),
                  "info": {k: v for k, v in info.items() if isinstance(v, (str, int, float, bool, type(None)))},
                  "created_at": utcnow()}
        stmt = stmt.on_conflict_do_update(index_elements=["run_id", "step"],
                                          set_={c: stmt.excluded[c] for c in ("policy_version", "path", "policy_path",
                                                                              "info", "created_at")})
        s.execute(stmt, values)
        if self.job_id is not None:
            s.execute(update(Job).where(Job.id == self.job_id).values(last_checkpoint_step=step))

    def _update_counters(self, s: Session, step: int, metrics: dict[str, Any]) -> None:
        values: dict[str, Any] = {"steps_done": step, "updated_at": utcnow()}
        for key, col in (("cost/rollouts", "rollouts_generated"), ("cost/tokens", "tokens_generated")):
            v = _finite(metrics.get(key))
            if v is not None:
                values[col] = int(v)
        elapsed = _finite(metrics.get("timing_s/elapsed"))
        if elapsed is not None:
            values["elapsed_s"] = elapsed
        s.execute(update(Run).where(Run.id == self.run_id).values(**values))
        if self.job_id is not None:
            s.execute(update(Job).where(Job.id == self.job_id).values(progress_step=step))


def _rows_in(item: tuple) -> int:
    kind, _step, payload, _wall = item
    if kind in ("rollouts", "uses"):
        return len(payload)
    if kind == "step":
        return len(payload)
    return 1

