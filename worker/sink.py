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

from sqlalchemy import (
    ARRAY,
    String,
    Table,
    any_,
    case,
    delete,
    func,
    literal,
    select,
    update,
)
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
from studio import jobs, rollout_text
from studio import metric_chunks as mc
from studio.db import get_engine, refresh_statistics, retrying
from studio.models import (
    Alert,
    Checkpoint,
    LatestMetric,
    MetricChunk,
    OffPolicyStep,
    Rollout,
    RolloutText,
    RolloutTokenStats,
    RolloutUse,
    utcnow,
)

log = logging.getLogger("remix.sink")

_IN_CHUNK = 500  # ids per IN (...) list (SQLite's bound-parameter limit)
_ALERTS: Table = Alert.__table__
_CHUNKS: Table = MetricChunk.__table__
_LATEST: Table = LatestMetric.__table__
_CKPTS: Table = Checkpoint.__table__
_ROLLOUTS: Table = Rollout.__table__
_TEXTS: Table = RolloutText.__table__
_USES: Table = RolloutUse.__table__
_TOKEN_STATS: Table = RolloutTokenStats.__table__
_OFFPOLICY: Table = OffPolicyStep.__table__
_ROWS_PER_INSERT = 500  # rows per multi-row INSERT … RETURNING (23 parameters each; SQLite allows 32,766)
# a rollout's use statistics, recomputed from its uses (_refresh_use_stats) or, for a new row, from the
# uses that follow it in the same batch (_use_stats)
_USE_STATS = ("use_count", "reuse_count", "max_age", "ratio_mean", "ratio_max", "clipfrac", "kl_to_behavior")
_ROLLOUT_COLS = ("run_id", "uid", "step", "policy_version", "group_id", "prompt_id", "extracted", "reference", "reward",
                 "correct", "format_ok", "reason", "length", "truncated", "advantage", "wall_time",
                 *_USE_STATS)
_ROLLOUT_UPDATABLE = tuple(c for c in _ROLLOUT_COLS if c not in ("run_id", "uid", *_USE_STATS))
_USE_COLS = ("run_id", "rollout_id", "rollout_uid", "step", "age", "ratio_mean", "ratio_max", "clipfrac", "kl_to_behavior")
_ID_CACHE = 200_000  # uid → id of the newest rollouts: their uses (fresh and replayed) need no look-up


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
        self._id_of: dict[str, int] = {}  # insertion-ordered: the oldest entries go first
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
        refresh_statistics(self.engine)  # a finished run is what the dashboard reads next

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
            # explicitly: SQLAlchemy's autobegin sees only its own statements, not the driver-level
            # COPYs below, and commit() would not commit a batch that began with one
            conn.begin()
            if self.job_id is not None and not self._fence(conn):
                conn.rollback()
                self.fenced = True
                log.warning("SqlSink: job %s attempt %s is no longer ours; dropping its events",
                            self.job_id, self.attempt)
                return
            written = 0
            last_step: StepMetrics | None = None
            use_steps: set[int] = set()
            stats_at = _use_stats_of_new_rollouts(events)
            # rows inserted by this batch get their use statistics with the insert: the UPDATE below
            # then rewrites only older rows (on PostgreSQL each UPDATE leaves a dead row version)
            newest_before_batch = (conn.execute(select(func.max(_ROLLOUTS.c.id))).scalar() or 0
                                   if stats_at and any(e[0] == "uses" for e in events) else None)
            # the batch's metric points by (key, step), written after the events (and before a
            # truncate, which must not see them): a later copy of a point replaces an earlier one
            metric_rows: dict[tuple[str, int], tuple] = {}
            for i, (kind, step, payload, wall) in enumerate(events):
                if kind == "truncate":
                    self._write_metrics(conn, metric_rows)
                    metric_rows.clear()
                    self._truncate(conn, step)
                elif kind == "rollouts":
                    written += self._write_rollouts(conn, payload, wall, stats_at[i])
                elif kind == "uses":
                    written += self._write_uses(conn, payload)
                    use_steps.add(step)
                elif kind == "step":
                    written += _collect_metrics(payload, wall, metric_rows)
                    last_step = payload
                elif kind == "checkpoint":
                    self._write_checkpoint(conn, step, payload)
                    written += 1
                elif kind == "alert":
                    self._write_alert(conn, payload)
                    written += 1
                elif kind == "tokens":
                    written += self._write_token_stats(conn, payload)
            self._write_metrics(conn, metric_rows)
            if use_steps:
                used = select(_USES.c.rollout_id).where(_USES.c.run_id == self.run_id, _USES.c.step.in_(sorted(use_steps)),
                                                        _USES.c.rollout_id.is_not(None))
                if newest_before_batch is not None:
                    used = used.where(_USES.c.rollout_id <= newest_before_batch)
                self._refresh_use_stats(conn, used)
                self._aggregate_uses(conn, sorted(use_steps))
            if last_step is not None:
                self._update_counters(conn, last_step)
            conn.commit()
            self.rows_written += written

    def _fence(self, conn: Connection) -> bool:
        return jobs.fence(conn, self.job_id, self.attempt)

    def _insert(self, table: Table):
        return (postgresql.insert if self._dialect == "postgresql" else sqlite.insert)(table)

    def _ids_of(self, conn: Connection, uids: list[str]) -> dict[str, int]:
        """Rollout ids by uid: from the cache of rollouts this sink wrote, else one look-up."""
        id_of = {uid: self._id_of[uid] for uid in uids if uid in self._id_of}
        missing = [uid for uid in uids if uid not in id_of]
        if not missing:
            return id_of
        if self._dialect == "postgresql":
            # one array parameter: an IN list of hundreds of parameters costs ~20 ms of client-side
            # statement handling per call on psycopg, `= ANY(array)` about 1 ms
            chunks: Iterable[list[str]] = [missing]
            match = lambda chunk: _ROLLOUTS.c.uid == any_(literal(chunk, ARRAY(String())))  # noqa: E731
        else:
            chunks = _chunks(missing)
            match = _ROLLOUTS.c.uid.in_  # noqa: E731
        for chunk in chunks:
            id_of.update({uid: rid for rid, uid in conn.execute(
                select(_ROLLOUTS.c.id, _ROLLOUTS.c.uid).where(_ROLLOUTS.c.run_id == self.run_id, match(chunk)))})
        return id_of

    def _remember_ids(self, pairs: Iterable[tuple[int, str]]) -> None:
        for rid, uid in pairs:
            self._id_of.pop(uid, None)
            self._id_of[uid] = rid
        for uid in list(self._id_of)[:max(0, len(self._id_of) - _ID_CACHE)]:
            del self._id_of[uid]

    # ----------------------------------------------------------------------------- row writers
    def _truncate(self, conn: Connection, after_step: int) -> None:
        """Forget everything after `after_step` (−1: everything) before a (re)start re-emits it."""
        rid = self.run_id
        touched = [r for (r,) in conn.execute(select(_USES.c.rollout_id).where(
            _USES.c.run_id == rid, _USES.c.step > after_step, _USES.c.rollout_id.is_not(None)).distinct())]
        conn.execute(delete(_USES).where(_USES.c.run_id == rid, _USES.c.step > after_step))
        conn.execute(delete(_TOKEN_STATS).where(_TOKEN_STATS.c.run_id == rid, _TOKEN_STATS.c.step > after_step))
        doomed = select(_ROLLOUTS.c.id).where(_ROLLOUTS.c.run_id == rid, _ROLLOUTS.c.step > after_step)
        rollout_text.forget_search(conn, doomed)
        conn.execute(delete(_TEXTS).where(_TEXTS.c.rollout_id.in_(doomed)))
        conn.execute(delete(_OFFPOLICY).where(_OFFPOLICY.c.run_id == rid, _OFFPOLICY.c.step > after_step))
        self._id_of.clear()
        conn.execute(delete(_ROLLOUTS).where(_ROLLOUTS.c.run_id == rid, _ROLLOUTS.c.step > after_step))
        self._truncate_metrics(conn, after_step)
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
        jobs.record_progress(conn, run_id=rid, job_id=None, step=max(after_step, 0))

    def _truncate_metrics(self, conn: Connection, after_step: int) -> None:
        """Metric points after `after_step` go (whole chunks, and the tail of the chunk holding
        it); latest_metrics is rebuilt from each key's last point left."""
        rid, c = self.run_id, _CHUNKS.c
        last = mc.chunk_of(after_step)
        conn.execute(delete(_CHUNKS).where(c.run_id == rid, c.chunk > last))
        for key, blob in conn.execute(select(c.key, c.points).where(c.run_id == rid, c.chunk == last)).all():
            kept = mc.until(blob, after_step)
            where = (c.run_id == rid) & (c.key == key) & (c.chunk == last)
            conn.execute(delete(_CHUNKS).where(where) if kept is None else update(_CHUNKS).where(where).values(points=kept))
        conn.execute(delete(_LATEST).where(_LATEST.c.run_id == rid))
        newest = select(c.key, func.max(c.chunk).label("chunk")).where(c.run_id == rid).group_by(c.key).subquery()
        rows = []
        for key, blob in conn.execute(select(c.key, c.points).join(newest, (c.key == newest.c.key)
                                                                    & (c.chunk == newest.c.chunk)).where(c.run_id == rid)):
            point = mc.unpack(blob)[:, -1]
            rows.append({"run_id": rid, "key": key, "step": int(point[mc.STEP]),
                         "value": finite_or_none(float(point[mc.VALUE])), "wall_time": float(point[mc.WALL_TIME])})
        if rows:
            conn.execute(self._insert(_LATEST), rows)

    # The hot paths below send plain SQL through the driver (executemany, COPY, or one multi-row
    # INSERT … RETURNING per chunk on SQLite): building SQLAlchemy statements and processing
    # parameters per row cost the writer thread more than the database's own work.
    def _upsert_sql(self, table: Table, cols: tuple[str, ...], conflict: tuple[str, ...], update: tuple[str, ...],
                    rows: int = 1, returning: str = "", casts: dict[str, str] | None = None) -> str:
        mark = "%s" if self._dialect == "postgresql" else "?"
        one = "(" + ", ".join(f"CAST({mark} AS {casts[c]})" if casts and c in casts else mark for c in cols) + ")"
        sql = (f"INSERT INTO {table.name} ({', '.join(cols)}) VALUES {', '.join([one] * rows)} "
               f"ON CONFLICT ({', '.join(conflict)}) DO UPDATE SET " + ", ".join(f"{c} = excluded.{c}" for c in update))
        return sql + (f" RETURNING {returning}" if returning else "")

    def _upsert_rows(self, conn: Connection, table: Table, cols: tuple[str, ...], conflict: tuple[str, ...],
                     update: tuple[str, ...], rows: list[tuple], where: str = "") -> None:
        """Upsert many rows: multi-row statements on SQLite (its executemany runs one statement per
        row); psycopg's executemany pipelines, which beats planning a multi-row statement."""
        suffix = f" WHERE {where}" if where else ""
        if self._dialect != "sqlite":
            conn.exec_driver_sql(self._upsert_sql(table, cols, conflict, update) + suffix, rows)
            return
        for chunk in _chunks(rows, _ROWS_PER_INSERT):
            conn.exec_driver_sql(self._upsert_sql(table, cols, conflict, update, len(chunk)) + suffix,
                                 tuple(v for row in chunk for v in row))

    def _write_rollouts(self, conn: Connection, rows: list[RolloutRecord], wall: float,
                        use_stats: dict[str, tuple]) -> int:
        # one statement may not touch a row twice: a uid repeated within the batch keeps its last record
        by_uid = {r.uid: r for r in rows}
        rid = self.run_id
        values = [(
            rid, r.uid, r.step, r.policy_version, r.group_id, r.prompt_id, r.extracted,
            # several accepted answers are stored as their list's text
            r.reference if isinstance(r.reference, str) or r.reference is None else str(r.reference),
            finite_or_none(r.reward), bool(r.correct), bool(r.format_ok), r.reason, r.length, bool(r.truncated),
            finite_or_none(r.advantage), wall, *use_stats.get(r.uid, _UNUSED),
        ) for r in by_uid.values()]
        # ids only grow, so a returned id at or below the largest before the insert is a re-delivery
        # (only SQLite's FTS5 needs to know: PostgreSQL keeps the terms in the text's own row)
        newest_before = (conn.exec_driver_sql(f"SELECT max(id) FROM {_ROLLOUTS.name}").scalar() or 0
                         if self._dialect == "sqlite" else 0)
        ids: list[tuple[int, str]] = []
        # the ids come back with the insert (RETURNING), no second query
        if self._dialect == "postgresql":
            ids = self._upsert_by_copy(conn, _ROLLOUTS, _ROLLOUT_COLS, ("run_id", "uid"), _ROLLOUT_UPDATABLE, values,
                                       "id, uid")
        else:
            for chunk in _chunks(values, _ROWS_PER_INSERT):
                sql = self._upsert_sql(_ROLLOUTS, _ROLLOUT_COLS, ("run_id", "uid"), _ROLLOUT_UPDATABLE, len(chunk),
                                       "id, uid")
                ids += conn.exec_driver_sql(sql, tuple(v for row in chunk for v in row)).all()
        self._remember_ids(ids)
        self._write_texts(conn, [(i, by_uid[uid]) for i, uid in ids], [i for i, _ in ids if i <= newest_before])
        return len(values)

    def _write_texts(self, conn: Connection, rows: list[tuple[int, RolloutRecord]], redelivered: list[int]) -> None:
        ids = [rid for rid, _ in rows]
        # a re-delivered rollout already has a text: FTS5 must forget its old terms first
        if redelivered:
            rollout_text.forget_search(conn, redelivered)
        docs = [(rid, rollout_text.document(r.prompt, r.response, r.extracted)) for rid, r in rows]
        bodies = [rollout_text.pack(r.prompt, r.response) for _, r in rows]
        if self._dialect == "postgresql":
            self._upsert_by_copy(conn, _TEXTS, ("rollout_id", "body", "terms"), ("rollout_id",), ("body", "terms"),
                                 [(rid, body, rollout_text.tsvector_literal(rollout_text.terms(doc)))
                                  for (rid, doc), body in zip(docs, bodies, strict=True)])
            return
        conn.exec_driver_sql(self._upsert_sql(_TEXTS, ("rollout_id", "body", "terms"), ("rollout_id",),
                                              ("body", "terms")),
                             [(rid, body, None) for rid, body in zip(ids, bodies, strict=True)])
        rollout_text.index_search(conn, docs)

    def _write_uses(self, conn: Connection, rows: list[RolloutUseRecord]) -> int:
        by_key = {(u.rollout_uid, u.step): u for u in rows}  # a use sent twice in one event: the last one
        id_of = self._ids_of(conn, sorted({uid for uid, _ in by_key}))
        rid = self.run_id
        values = [(rid, id_of.get(u.rollout_uid), u.rollout_uid, u.step, u.age, finite_or_none(u.ratio_mean),
                   finite_or_none(u.ratio_max), finite_or_none(u.clipfrac), finite_or_none(u.kl_to_behavior))
                  for u in by_key.values()]
        upsert = self._upsert_by_copy if self._dialect == "postgresql" else self._upsert_rows
        upsert(conn, _USES, _USE_COLS, ("run_id", "rollout_uid", "step"), _USE_COLS[4:] + ("rollout_id",), values)
        return len(values)

    def _upsert_by_copy(self, conn: Connection, table: Table, cols: tuple[str, ...], conflict: tuple[str, ...],
                        update: tuple[str, ...], rows: list[tuple], returning: str = "") -> list[tuple]:
        """PostgreSQL: COPY the rows into a session-local staging table, then one set-based
        INSERT … SELECT … ON CONFLICT DO UPDATE: the upsert's idempotency at COPY's speed. (For the
        rollouts it replaced multi-row VALUES of 500 rows × 24 parameters: 1.95–2.09k → 2.26–2.47k
        rollouts/s, back to back; for texts and uses a DELETE + COPY, at the same speed.) `rows`
        must not repeat a conflict key."""
        names = ", ".join(cols)
        staging = f"sink_{table.name}_in"
        with conn.connection.driver_connection.cursor() as cur:
            cur.execute(f"CREATE TEMP TABLE IF NOT EXISTS {staging} ON COMMIT DELETE ROWS AS "
                        f"SELECT {names} FROM {table.name} WITH NO DATA")
            with cur.copy(f"COPY {staging} ({names}) FROM STDIN") as copy:
                for row in rows:
                    copy.write_row(row)
            cur.execute(f"INSERT INTO {table.name} ({names}) SELECT {names} FROM {staging} "
                        f"ON CONFLICT ({', '.join(conflict)}) DO UPDATE SET "
                        + ", ".join(f"{c} = excluded.{c}" for c in update) + (f" RETURNING {returning}" if returning else ""))
            out = cur.fetchall() if returning else []
            cur.execute(f"DELETE FROM {staging}")  # the next call in this transaction starts empty
        return out

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

    def _aggregate_uses(self, conn: Connection, steps: list[int]) -> None:
        """offpolicy_steps of these consuming steps, recomputed from their uses (so a re-delivered
        use is counted once)."""
        u = _USES.c
        conn.execute(delete(_OFFPOLICY).where(_OFFPOLICY.c.run_id == self.run_id, _OFFPOLICY.c.step.in_(steps)))
        agg = (select(u.run_id, u.step, u.age, func.count(), func.sum(u.ratio_mean), func.count(u.ratio_mean),
                      func.max(u.ratio_max), func.sum(u.clipfrac), func.count(u.clipfrac), func.sum(u.kl_to_behavior),
                      func.count(u.kl_to_behavior))
               .where(u.run_id == self.run_id, u.step.in_(steps)).group_by(u.run_id, u.step, u.age))
        conn.execute(_OFFPOLICY.insert().from_select(
            ["run_id", "step", "age", "uses", "ratio_mean_sum", "ratio_mean_n", "ratio_max", "clipfrac_sum",
             "clipfrac_n", "kl_sum", "kl_n"], agg))

    def _write_metrics(self, conn: Connection, rows: dict[tuple[str, int], tuple]) -> None:
        if not rows:
            return
        # each touched chunk: read once, the batch's points merged in, written back in one upsert
        points: dict[tuple[str, int], list[tuple]] = {}
        for (k, st), point in rows.items():
            points.setdefault((k, mc.chunk_of(st)), []).append((st, *point))
        c = _CHUNKS.c
        stored = {(k, ch): blob for k, ch, blob in conn.execute(select(c.key, c.chunk, c.points).where(
            c.run_id == self.run_id, c.chunk.in_(sorted({ch for _, ch in points})))) if (k, ch) in points}
        self._upsert_rows(conn, _CHUNKS, ("run_id", "key", "chunk", "points"), ("run_id", "key", "chunk"), ("points",),
                          [(self.run_id, k, ch, mc.merge(stored.get((k, ch)), mc.points(pts)))
                           for (k, ch), pts in points.items()])
        # latest_metrics: each key's newest step in the batch, once; never back to an older step than
        # the stored one (a late re-delivery)
        latest: dict[str, tuple] = {}
        for (k, st), (v, _, _, w) in rows.items():
            if k not in latest or latest[k][2] <= st:
                latest[k] = (self.run_id, k, st, v, w)
        self._upsert_rows(conn, _LATEST, ("run_id", "key", "step", "value", "wall_time"), ("run_id", "key"),
                          ("step", "value", "wall_time"), list(latest.values()),
                          where="latest_metrics.step <= excluded.step")

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


def _collect_metrics(metrics: StepMetrics, wall: float, rows: dict[tuple[str, int], tuple]) -> int:
    """Add a step's metric points to the batch's `rows`: (key, step) → the point's FIELDS after the
    step (studio/metric_chunks.py). Keys cut to 250 characters may collide: the last one wins.
    Returns how many keys the step had."""
    rollouts = int(metrics.rollouts) if metrics.rollouts is not None else None
    keys = set()
    for k, v in metrics.values.items():
        key = str(k)[:250]
        keys.add(key)
        rows[(key, metrics.step)] = (finite_or_none(v), rollouts, metrics.elapsed_s, wall)
    return len(keys)


_UNUSED = (0, 0, None, None, None, None, None)  # _USE_STATS of a rollout with no use yet


def _use_stats_of_new_rollouts(events: list[tuple]) -> dict[int, dict[str, tuple]]:
    """For each rollouts event (by its index in the batch): uid → _USE_STATS from the uses that come
    after it in the batch, as _refresh_use_stats computes them (a use sent twice counts once, the
    later copy). A rollout row that already existed keeps its statistics on insert and is refreshed
    by the UPDATE instead."""
    out: dict[int, dict[str, tuple]] = {}
    later: dict[str, dict[int, RolloutUseRecord]] = {}  # uid → step → the batch's last copy of that use
    for i in range(len(events) - 1, -1, -1):
        kind, _step, payload, _wall = events[i]
        if kind == "uses":
            for u in reversed(payload):
                later.setdefault(u.rollout_uid, {}).setdefault(u.step, u)
        elif kind == "rollouts":
            out[i] = {r.uid: _use_stats(list(later[r.uid].values())) for r in payload if r.uid in later}
    return out


def _use_stats(uses: list[RolloutUseRecord]) -> tuple:
    def mean(values: list[float | None]) -> float | None:
        kept = [v for v in values if v is not None]
        return sum(kept) / len(kept) if kept else None

    ratio_max = [v for u in uses if (v := finite_or_none(u.ratio_max)) is not None]
    return (len(uses), sum(1 for u in uses if u.age > 0), max(u.age for u in uses),
            mean([finite_or_none(u.ratio_mean) for u in uses]), max(ratio_max) if ratio_max else None,
            mean([finite_or_none(u.clipfrac) for u in uses]), mean([finite_or_none(u.kl_to_behavior) for u in uses]))


def _rows_in(item: tuple) -> int:
    kind, _step, payload, _wall = item
    if kind in ("rollouts", "uses", "tokens"):
        return len(payload)
    if kind == "step":
        return len(payload.values)
    return 1

