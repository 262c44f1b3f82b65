"""SqlSink: the trainer's events → SQL rows, batched on a writer thread (off the training hot path).

Hooks only enqueue plain dicts; a background thread drains the queue and writes each batch in one
transaction. `on_checkpoint` and `on_end` are barriers: they return only when everything emitted
before them is committed, so every step up to a checkpoint recorded in SQL is in SQL too (a resumed
job starts from the newest checkpoint SQL knows about, see worker/tasks.py).

Idempotent ingestion: metrics upsert on (run, key, step), rollouts on (run, uid), uses and token
statistics on (run, rollout uid, step), checkpoints on (run, step), alert episodes on (run, rule,
first step). On start the sink deletes the run's rows after the step the trainer resumed from
(everything for a fresh start), so a re-delivered or resumed job ends with exactly one row per step
and rollout.

When the sink belongs to a job it is fenced: each batch first refreshes the job's heartbeat with
`WHERE id = job AND attempt = ours AND status = running` (studio.jobs.fence, in the batch's own
transaction); if that matches nothing the job was taken from us (re-queued after a stall, or
finished) and the batch is dropped and `fenced` is set. Job and run progress go through
studio.jobs too.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict
from typing import Any

from sqlalchemy import ARRAY, String, Table, any_, case, delete, func, literal, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Engine

from remix_engine.events import (
    AlertRecord,
    CheckpointRecord,
    RolloutRecord,
    RolloutUseRecord,
    StepMetrics,
    TokenStatsRecord,
)
from remix_engine.jsonsafe import finite_or_none
from remix_engine.sinks import Sink
from studio import jobs
from studio.db import get_engine, retrying
from studio.models import (
    Alert,
    Checkpoint,
    LatestMetric,
    Metric,
    Rollout,
    RolloutText,
    RolloutTokenStats,
    RolloutUse,
    utcnow,
)

log = logging.getLogger("remix.sink")

_IN_CHUNK = 500
_ALERTS: Table = Alert.__table__
_METRICS: Table = Metric.__table__
_LATEST: Table = LatestMetric.__table__
_CKPTS: Table = Checkpoint.__table__
_ROLLOUTS: Table = Rollout.__table__
_TEXTS: Table = RolloutText.__table__
_USES: Table = RolloutUse.__table__
_TOKEN_STATS: Table = RolloutTokenStats.__table__  # ids per IN (...) list (SQLite's bound-parameter limit)


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
                 should_abort: Callable[[], bool] | None = None,
                 on_progress: Callable[[int, dict[str, float]], None] | None = None,
                 batch_rows: int = 5000, max_queue: int = 512):
        self.run_id = run_id
        self.engine = engine or get_engine()
        self.job_id = job_id
        self.attempt = attempt
        self._should_stop = should_stop
        self._should_abort = should_abort
        self._on_progress = on_progress
        self.batch_rows = batch_rows
        self._q: queue.Queue = queue.Queue(maxsize=max_queue)
        self._error: BaseException | None = None
        self.fenced = False
        self.resumed_from: int | None = None
        self.rows_written = 0
        self.write_seconds = 0.0  # wall time of the writer's transactions
        self.write_cpu_seconds = 0.0  # CPU time of the writer thread (client side)
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

    # Records may also come as dicts holding exactly their fields (benchmarks/ingest.py builds them).
    def on_step(self, step: int, metrics: dict[str, float]) -> None:
        self._put(("step", int(step), StepMetrics(int(step), dict(metrics)), time.time()))

    def on_rollouts(self, step: int, rollouts: list[RolloutRecord]) -> None:
        if rollouts:
            self._put(("rollouts", int(step), [RolloutRecord.coerce(r) for r in rollouts], time.time()))

    def on_rollout_uses(self, step: int, uses: list[RolloutUseRecord]) -> None:
        if uses:
            self._put(("uses", int(step), [RolloutUseRecord.coerce(u) for u in uses], time.time()))

    def on_token_stats(self, step: int, rows: list[TokenStatsRecord]) -> None:
        if rows:
            self._put(("tokens", int(step), [TokenStatsRecord.coerce(r) for r in rows], time.time()))

    def on_alert(self, step: int, alert: AlertRecord) -> None:
        self._put(("alert", int(step), AlertRecord.coerce(alert), time.time()))

    def on_checkpoint(self, step: int, path: str, info: CheckpointRecord) -> None:
        self._put(("checkpoint", int(step), CheckpointRecord.coerce(info), time.time()))
        self.flush()

    def on_end(self, summary: dict[str, Any]) -> None:
        self.flush()

    def should_stop(self) -> bool:
        self._raise_if_failed()
        if self.fenced:
            return True
        return bool(self._should_stop and self._should_stop())

    def on_phase(self, phase: str | None) -> None:
        if self.job_id is not None and self.attempt is not None:
            jobs.set_phase(self.job_id, self.attempt, phase)

    def should_abort(self) -> bool:
        return self.fenced or bool(self._should_abort and self._should_abort())

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
                started, cpu_started = time.perf_counter(), time.thread_time()
                try:
                    retrying(lambda ev=events: self._write(ev), attempts=6)
                    self.write_seconds += time.perf_counter() - started
                    self.write_cpu_seconds += time.thread_time() - cpu_started
                except BaseException as exc:  # noqa: BLE001 (reported to the training thread)
                    log.exception("SqlSink: writing a batch for run %s failed", self.run_id)
                    self._error = exc
                if self._on_progress is not None and self._error is None and not self.fenced:
                    steps = [e for e in events if e[0] == "step"]
                    if steps:
                        try:
                            self._on_progress(steps[-1][1], dict(steps[-1][2].values))
                        except Exception:  # progress reporting is best effort
                            log.debug("progress callback failed", exc_info=True)
            for b in batch:
                if b[0] == "barrier":
                    b[2].done.set()
            if any(b[0] == "close" for b in batch):
                return

    def _write(self, events: list[tuple]) -> None:
        # Core statements on one connection: no ORM unit-of-work on the ingest path.
        with self.engine.connect() as conn:
            if self.job_id is not None and not self._fence(conn):
                conn.rollback()
                self.fenced = True
                log.warning("SqlSink: job %s attempt %s is no longer ours; dropping its events",
                            self.job_id, self.attempt)
                return
            written = 0
            last_step: StepMetrics | None = None
            use_steps: set[int] = set()
            for kind, step, payload, wall in events:
                if kind == "truncate":
                    self._truncate(conn, step)
                elif kind == "rollouts":
                    written += self._write_rollouts(conn, payload, wall)
                elif kind == "uses":
                    written += self._write_uses(conn, payload)
                    use_steps.add(step)
                elif kind == "step":
                    written += self._write_metrics(conn, payload, wall)
                    last_step = payload
                elif kind == "checkpoint":
                    self._write_checkpoint(conn, step, payload)
                    written += 1
                elif kind == "alert":
                    self._write_alert(conn, payload)
                    written += 1
                elif kind == "tokens":
                    written += self._write_token_stats(conn, payload)
            if use_steps:
                used = select(_USES.c.rollout_id).where(_USES.c.run_id == self.run_id, _USES.c.step.in_(sorted(use_steps)),
                                                        _USES.c.rollout_id.is_not(None))
                self._refresh_use_stats(conn, used)
            if last_step is not None:
                self._update_counters(conn, last_step)
            conn.commit()
            self.rows_written += written

    def _fence(self, conn: Connection) -> bool:
        return jobs.fence(conn, self.job_id, self.attempt)

    def _insert(self, table: Table):
        return (postgresql.insert if self._dialect == "postgresql" else sqlite.insert)(table)

    def _ids_of(self, conn: Connection, uids: list[str]) -> dict[str, int]:
        id_of: dict[str, int] = {}
        if self._dialect == "postgresql":
            # one array parameter: an IN list of hundreds of parameters costs ~20 ms of client-side
            # statement handling per call on psycopg, `= ANY(array)` about 1 ms
            chunks: Iterable[list[str]] = [uids]
            match = lambda chunk: _ROLLOUTS.c.uid == any_(literal(chunk, ARRAY(String())))  # noqa: E731
        else:
            chunks = _chunks(uids)
            match = _ROLLOUTS.c.uid.in_  # noqa: E731
        for chunk in chunks:
            id_of.update({uid: rid for rid, uid in conn.execute(
                select(_ROLLOUTS.c.id, _ROLLOUTS.c.uid).where(_ROLLOUTS.c.run_id == self.run_id, match(chunk)))})
        return id_of

    # ----------------------------------------------------------------------------- row writers
    def _truncate(self, conn: Connection, after_step: int) -> None:
        """Forget everything after `after_step` (−1: everything) before a (re)start re-emits it."""
        rid = self.run_id
        touched = [r for (r,) in conn.execute(select(_USES.c.rollout_id).where(
            _USES.c.run_id == rid, _USES.c.step > after_step, _USES.c.rollout_id.is_not(None)).distinct())]
        conn.execute(delete(_USES).where(_USES.c.run_id == rid, _USES.c.step > after_step))
        conn.execute(delete(_TOKEN_STATS).where(_TOKEN_STATS.c.run_id == rid, _TOKEN_STATS.c.step > after_step))
        doomed = select(_ROLLOUTS.c.id).where(_ROLLOUTS.c.run_id == rid, _ROLLOUTS.c.step > after_step)
        conn.execute(delete(_TEXTS).where(_TEXTS.c.rollout_id.in_(doomed)))
        conn.execute(delete(_ROLLOUTS).where(_ROLLOUTS.c.run_id == rid, _ROLLOUTS.c.step > after_step))
        conn.execute(delete(_METRICS).where(_METRICS.c.run_id == rid, _METRICS.c.step > after_step))
        conn.execute(delete(_CKPTS).where(_CKPTS.c.run_id == rid, _CKPTS.c.step > after_step))
        # alerts: episodes that began later go; one still open at `after_step` is open again there
        conn.execute(delete(_ALERTS).where(_ALERTS.c.run_id == rid, _ALERTS.c.first_step > after_step))
        conn.execute(update(_ALERTS).where(_ALERTS.c.run_id == rid, _ALERTS.c.last_step > after_step)
                     .values(last_step=after_step, status="firing"))
        for chunk in _chunks(touched):
            conn.execute(update(_ROLLOUTS).where(_ROLLOUTS.c.id.in_(chunk)).values(
                use_count=0, reuse_count=0, max_age=None, ratio_mean=None, ratio_max=None, clipfrac=None,
                kl_to_behavior=None))
            self._refresh_use_stats(conn, chunk)
        # latest_metrics: rebuild from what is left
        conn.execute(delete(_LATEST).where(_LATEST.c.run_id == rid))
        last = (select(_METRICS.c.key, func.max(_METRICS.c.step).label("step"))
                .where(_METRICS.c.run_id == rid).group_by(_METRICS.c.key).subquery())
        rows = conn.execute(select(_METRICS.c.key, _METRICS.c.step, _METRICS.c.value, _METRICS.c.wall_time)
                            .join(last, (_METRICS.c.key == last.c.key) & (_METRICS.c.step == last.c.step))
                            .where(_METRICS.c.run_id == rid)).all()
        if rows:
            conn.execute(self._insert(_LATEST), [
                {"run_id": rid, "key": k, "step": st, "value": v, "wall_time": w} for k, st, v, w in rows])
        jobs.record_progress(conn, run_id=rid, job_id=None, step=max(after_step, 0))

    def _write_rollouts(self, conn: Connection, rows: list[RolloutRecord], wall: float) -> int:
        values = []
        texts: dict[str, tuple[str, str]] = {}
        for r in rows:
            values.append({
                "run_id": self.run_id, "uid": r.uid, "step": r.step, "policy_version": r.policy_version,
                "group_id": r.group_id, "prompt_id": r.prompt_id, "extracted": r.extracted,
                # several accepted answers are stored as their list's text
                "reference": r.reference if isinstance(r.reference, str) else str(r.reference),
                "reward": finite_or_none(r.reward), "correct": r.correct, "format_ok": r.format_ok,
                "reason": r.reason, "length": r.length, "truncated": r.truncated,
                "advantage": finite_or_none(r.advantage), "use_count": 0, "reuse_count": 0, "wall_time": wall,
            })
            texts[r.uid] = (r.prompt, r.response)
        stmt = self._insert(_ROLLOUTS)
        updatable = ("step", "policy_version", "group_id", "prompt_id", "extracted", "reference", "reward", "correct",
                     "format_ok", "reason", "length", "truncated", "advantage", "wall_time")
        stmt = stmt.on_conflict_do_update(index_elements=["run_id", "uid"],
                                          set_={c: stmt.excluded[c] for c in updatable})
        # executemany (a pipeline on psycopg 3) and one id lookup: cheaper than INSERT … RETURNING
        # over a multi-row VALUES statement, which the driver would parse anew every time.
        conn.execute(stmt, values)
        id_of = self._ids_of(conn, list(texts))
        text_rows = [{"rollout_id": id_of[uid], "prompt": p, "response": r} for uid, (p, r) in texts.items()]
        if text_rows:
            tstmt = self._insert(_TEXTS)
            tstmt = tstmt.on_conflict_do_update(index_elements=["rollout_id"],
                                                set_={"prompt": tstmt.excluded.prompt, "response": tstmt.excluded.response})
            conn.execute(tstmt, text_rows)
        return len(values)

    def _write_uses(self, conn: Connection, rows: list[RolloutUseRecord]) -> int:
        id_of = self._ids_of(conn, sorted({u.rollout_uid for u in rows}))
        values = [{
            "run_id": self.run_id, "rollout_id": id_of.get(u.rollout_uid), "rollout_uid": u.rollout_uid,
            "step": u.step, "age": u.age, "ratio_mean": finite_or_none(u.ratio_mean),
            "ratio_max": finite_or_none(u.ratio_max), "clipfrac": finite_or_none(u.clipfrac),
            "kl_to_behavior": finite_or_none(u.kl_to_behavior),
        } for u in rows]
        stmt = self._insert(_USES)
        stmt = stmt.on_conflict_do_update(
            index_elements=["run_id", "rollout_uid", "step"],
            set_={c: stmt.excluded[c] for c in ("rollout_id", "age", "ratio_mean", "ratio_max", "clipfrac",
                                                 "kl_to_behavior")})
        conn.execute(stmt, values)
        return len(values)

    def _refresh_use_stats(self, conn: Connection, rollout_ids) -> None:  # noqa: ANN001
        """Recompute use/reuse counts and importance statistics of the given rollouts (a list of ids
        or a subquery) from their uses, in one UPDATE … FROM (PostgreSQL, SQLite ≥ 3.33)."""
        if isinstance(rollout_ids, list) and not rollout_ids:
            return
        u = _USES.c
        agg = (select(u.rollout_id.label("rid"), func.count().label("n"),
                      func.sum(case((u.age > 0, 1), else_=0)).label("reused"), func.max(u.age).label("max_age"),
                      func.avg(u.ratio_mean).label("rmean"), func.max(u.ratio_max).label("rmax"),
                      func.avg(u.clipfrac).label("clip"), func.avg(u.kl_to_behavior).label("kl"))
               .where(u.rollout_id.in_(rollout_ids)).group_by(u.rollout_id).subquery("agg"))
        conn.execute(update(_ROLLOUTS).where(_ROLLOUTS.c.id == agg.c.rid).values(
            use_count=agg.c.n, reuse_count=agg.c.reused, max_age=agg.c.max_age, ratio_mean=agg.c.rmean,
            ratio_max=agg.c.rmax, clipfrac=agg.c.clip, kl_to_behavior=agg.c.kl))

    def _write_metrics(self, conn: Connection, metrics: StepMetrics, wall: float) -> int:
        step, rollouts = metrics.step, metrics.rollouts
        values = [{"run_id": self.run_id, "step": step, "key": str(k)[:250], "value": finite_or_none(v),
                   "rollouts": int(rollouts) if rollouts is not None else None, "elapsed_s": metrics.elapsed_s,
                   "wall_time": wall} for k, v in metrics.values.items()]
        if not values:
            return 0
        stmt = self._insert(_METRICS)
        stmt = stmt.on_conflict_do_update(
            index_elements=["run_id", "key", "step"],
            set_={c: stmt.excluded[c] for c in ("value", "rollouts", "elapsed_s", "wall_time")})
        conn.execute(stmt, values)
        lstmt = self._insert(_LATEST)
        lstmt = lstmt.on_conflict_do_update(
            index_elements=["run_id", "key"],
            set_={"step": lstmt.excluded.step, "value": lstmt.excluded.value, "wall_time": lstmt.excluded.wall_time},
            where=_LATEST.c.step <= lstmt.excluded.step)
        conn.execute(lstmt, [{"run_id": v["run_id"], "key": v["key"], "step": step, "value": v["value"],
                              "wall_time": wall} for v in values])
        return len(values)

    def _write_checkpoint(self, conn: Connection, step: int, ckpt: CheckpointRecord) -> None:
        stmt = self._insert(_CKPTS)
        values = {"run_id": self.run_id, "step": step, "policy_version": ckpt.policy_version, "path": ckpt.path,
                  "policy_path": ckpt.policy_path, "info": asdict(ckpt), "created_at": utcnow()}
        stmt = stmt.on_conflict_do_update(index_elements=["run_id", "step"],
                                          set_={c: stmt.excluded[c] for c in ("policy_version", "path", "policy_path",
                                                                              "info", "created_at")})
        conn.execute(stmt, values)
        jobs.record_checkpoint(conn, self.job_id, step)

    def _write_token_stats(self, conn: Connection, rows: list[TokenStatsRecord]) -> int:
        stmt = self._insert(_TOKEN_STATS)
        stmt = stmt.on_conflict_do_update(index_elements=["run_id", "rollout_uid", "step"],
                                          set_={"age": stmt.excluded.age, "payload": stmt.excluded.payload})
        conn.execute(stmt, [{"run_id": self.run_id, "rollout_uid": r.rollout_uid, "step": r.step, "age": r.age,
                             "payload": RolloutTokenStats.pack(r)} for r in rows])
        return len(rows)

    def _write_alert(self, conn: Connection, alert: AlertRecord) -> None:
        stmt = self._insert(_ALERTS)
        values = {"run_id": self.run_id, **{f: getattr(alert, f) for f in AlertRecord.field_names()}}
        values["value"] = finite_or_none(alert.value)
        values["detail"] = alert.detail[:500]
        stmt = stmt.on_conflict_do_update(
            index_elements=["run_id", "rule", "first_step"],
            set_={c: stmt.excluded[c] for c in ("status", "last_step", "value", "threshold", "detail", "metric")})
        conn.execute(stmt, values)

    def _update_counters(self, conn: Connection, metrics: StepMetrics) -> None:
        values: dict[str, Any] = {}
        if metrics.rollouts is not None:
            values["rollouts_generated"] = int(metrics.rollouts)
        if metrics.tokens is not None:
            values["tokens_generated"] = int(metrics.tokens)
        if metrics.elapsed_s is not None:
            values["elapsed_s"] = metrics.elapsed_s
        jobs.record_progress(conn, run_id=self.run_id, job_id=self.job_id, step=metrics.step, counters=values)


def _rows_in(item: tuple) -> int:
    kind, _step, payload, _wall = item
    if kind in ("rollouts", "uses", "tokens"):
        return len(payload)
    if kind == "step":
        return len(payload.values)
    return 1

