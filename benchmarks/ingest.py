"""Ingest benchmark for the studio's SQL sink (worker/sink.py), side by side in one run.

1. Ingest speed: synthetic trainer events (rollouts with texts, their uses, ~60 metrics and a
   checkpoint every few steps, exactly the hooks the trainer calls) pushed through SqlSink into
   SQLite (WAL file) and PostgreSQL; rollouts/s from the first hook until everything is committed.
2. Training slowdown: the toy trainer for a few steps with no sink, with SqlSink → SQLite and with
   SqlSink → PostgreSQL, interleaved (a, b, c, a, b, c, ...) so background load hits all variants
   alike. Reported: median step time (wall time between consecutive on_step calls, checkpoint
   flushes included), median CPU time of the whole worker process per step (trainer + the sink's
   writer thread; less sensitive to other load on the machine than wall time) and the time the
   training thread itself spends inside the sink's hooks.

    python benchmarks/ingest.py                       # both databases
    python benchmarks/ingest.py --no-postgres         # SQLite only
    python benchmarks/ingest.py --json results.json   # also write the numbers

PostgreSQL: a temporary database is created through REMIX_TEST_POSTGRES_URL (admin connection,
default postgresql://postgres@127.0.0.1:5432/postgres) and dropped afterwards.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from remix_engine.sinks import MultiSink, Sink  # noqa: E402
from studio.db import make_engine, session_scope  # noqa: E402
from studio.migrate import upgrade_database  # noqa: E402
from studio.models import Run  # noqa: E402
from studio.settings import Settings  # noqa: E402
from worker.sink import SqlSink  # noqa: E402

PG_ADMIN_URL = os.environ.get("REMIX_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")


# ------------------------------------------------------------------------------------- databases
class Database:
    def __init__(self, kind: str, root: Path):
        self.kind = kind
        self.pg_name: str | None = None
        if kind == "sqlite":
            self.settings = Settings(data_dir=root / "sqlite")
        else:
            import psycopg

            self.pg_name = f"remix_bench_{uuid.uuid4().hex[:8]}"
            with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
                conn.execute(f'CREATE DATABASE "{self.pg_name}"')
            base, _, _ = PG_ADMIN_URL.rpartition("/")
            self.settings = Settings(data_dir=root / "pg", database_url=f"{base}/{self.pg_name}")
        self.engine = make_engine(self.settings.sqlalchemy_url)
        upgrade_database(self.settings, self.engine)

    def new_run(self, name: str) -> int:
        with session_scope(self.engine) as s:
            run = Run(name=name, preset="toy", algorithm="remix-grpo", config={}, request={}, status="running")
            s.add(run)
            s.flush()
            return run.id

    def close(self) -> None:
        self.engine.dispose()
        if self.pg_name:
            import psycopg

            with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{self.pg_name}" WITH (FORCE)')


# ------------------------------------------------------------------------------------- 1. ingest
def synthetic_events(steps: int, groups: int, group_size: int, response_chars: int, replayed_groups: int):
    """Yield (hook, args) in the trainer's order: rollouts, uses, step metrics, checkpoint."""
    filler = ("Let me compute step by step. 12 + 7 = 19, then 19 - 4 = 15. Wait, check again: 15. " * 200)
    for t in range(1, steps + 1):
        rows = []
        for g in range(groups):
            gid = f"s{t:06d}-g{g:03d}"
            for j in range(group_size):
                rows.append({
                    "uid": f"{gid}-r{j}", "step": t, "policy_version": t, "group_id": gid, "prompt_id": f"p{t}-{g}",
                    "prompt": f"Compute {t}+{g}-{j}. Put the final answer in \\boxed{{}}.",
                    "response": "<think>" + filler[: max(0, response_chars - 30)] + "</think> \\boxed{15}",
                    "extracted": "15", "reference": "15", "reward": float((g + j) % 2), "correct": (g + j) % 2 == 1,
                    "format_ok": True, "reason": "ok", "length": response_chars // 3, "truncated": False,
                    "advantage": 0.5 - ((g + j) % 2),
                })
        yield "on_rollouts", (t, rows)
        uses = [{"rollout_uid": r["uid"], "step": t, "age": 0, "ratio_mean": 1.0, "ratio_max": 1.0, "clipfrac": 0.0,
                 "kl_to_behavior": 0.0} for r in rows]
        for age in (1, 2):
            if t - age >= 1:
                for g in range(min(replayed_groups, groups)):
                    for j in range(group_size):
                        uses.append({"rollout_uid": f"s{t - age:06d}-g{g:03d}-r{j}", "step": t, "age": age,
                                     "ratio_mean": 1.01, "ratio_max": 1.3, "clipfrac": 0.05, "kl_to_behavior": 0.002})
        yield "on_rollout_uses", (t, uses)
        metrics = {f"bench/metric_{k:02d}": float(k * t) for k in range(56)}
        metrics.update({"cost/rollouts": float(t * groups * group_size), "cost/tokens": float(t * 1000),
                        "timing_s/elapsed": t * 0.5, "critic/score/mean": 0.5})
        yield "on_step", (t, metrics)
        if t % 10 == 0:
            yield "on_checkpoint", (t, f"/nonexistent/step_{t:06d}",
                                    {"step": t, "policy_version": t + 1, "path": f"/nonexistent/step_{t:06d}"})


def bench_ingest(db: Database, *, steps: int, groups: int, group_size: int, response_chars: int) -> dict[str, Any]:
    run_id = db.new_run(f"ingest {response_chars} chars")
    events = list(synthetic_events(steps, groups, group_size, response_chars, replayed_groups=groups // 3))
    n_rollouts = steps * groups * group_size
    sink = SqlSink(run_id, engine=db.engine)
    sink.on_start({"resumed_from": None})
    hook_time = 0.0
    t0 = time.perf_counter()
    for hook, args in events:
        h0 = time.perf_counter()
        getattr(sink, hook)(*args)
        hook_time += time.perf_counter() - h0
    sink.on_end({})
    sink.close()
    wall = time.perf_counter() - t0
    return {"db": db.kind, "rollouts": n_rollouts, "response_chars": response_chars, "rows": sink.rows_written,
            "writer_cpu_s": round(sink.write_cpu_seconds, 3),
            "seconds": round(wall, 3), "rollouts_per_s": round(n_rollouts / wall, 1),
            "rows_per_s": round(sink.rows_written / wall, 1), "writer_busy_s": round(sink.write_seconds, 3),
            "hook_s_on_caller": round(hook_time, 3)}


# ------------------------------------------------------------------------------------- 2. training
class HookTimer(Sink):
    """Wraps a sink: times every hook call made by the training thread, records on_step times."""

    def __init__(self, inner: Sink | None):
        self.inner = inner
        self.in_hooks = 0.0
        self.step_times: list[float] = []
        self.cpu_times: list[float] = []

    def _call(self, name: str, *args) -> Any:
        if self.inner is None:
            return None
        t0 = time.perf_counter()
        try:
            return getattr(self.inner, name)(*args)
        finally:
            self.in_hooks += time.perf_counter() - t0

    def on_start(self, info):
        self._call("on_start", info)

    def on_step(self, step, metrics):
        self._call("on_step", step, metrics)
        self.step_times.append(time.perf_counter())
        self.cpu_times.append(time.process_time())  # all threads of this process (trainer + writer)

    def on_rollouts(self, step, rollouts):
        self._call("on_rollouts", step, rollouts)

    def on_rollout_uses(self, step, uses):
        self._call("on_rollout_uses", step, uses)

    def on_checkpoint(self, step, path, info):
        self._call("on_checkpoint", step, path, info)

    def on_end(self, summary):
        self._call("on_end", summary)

    def should_stop(self):
        return bool(self._call("should_stop")) if self.inner is not None else False


def train_once(cfg, out_dir: Path, make_sink: Callable[[], Sink | None]) -> dict[str, float]:
    from remix_engine.trainer import train

    inner = make_sink()
    timer = HookTimer(inner)
    t0 = time.perf_counter()
    train(cfg, out_dir, sink=MultiSink(timer), resume=False)
    total = time.perf_counter() - t0
    writer_cpu = 0.0
    if isinstance(inner, SqlSink):
        inner.close()
        writer_cpu = inner.write_cpu_seconds
    steps = [b - a for a, b in zip(timer.step_times[1:], timer.step_times[2:], strict=False)]  # steps 2..N
    cpu = [b - a for a, b in zip(timer.cpu_times[1:], timer.cpu_times[2:], strict=False)]
    return {"median_step_s": statistics.median(steps), "mean_step_s": statistics.fmean(steps),
            "median_cpu_step_s": statistics.median(cpu),
            "writer_cpu_s_per_step": writer_cpu / max(1, len(timer.step_times)),
            "hooks_s_per_step": timer.in_hooks / max(1, len(timer.step_times) - 1), "total_s": total}


def bench_training(dbs: list[Database], *, steps: int, repeats: int, root: Path) -> list[dict[str, Any]]:
    from remix_engine.config import build_config

    overrides = {"rollout.prompts_per_step": 8, "rollout.group_size": 4, "rollout.max_new_tokens": 48,
                 "data.heldout_size": 16, "warm_start.steps": 0, "trainer.eval_every": 5,
                 "trainer.checkpoint_every": 5, "trainer.torch_threads": 1}
    cfg = build_config("toy", "remix-grpo", overrides=overrides, steps=steps, seed=0)
    variants: list[tuple[str, Callable[[], Sink | None]]] = [("no sink", lambda: None)]
    for db in dbs:
        variants.append((f"SqlSink → {db.kind}", lambda db=db: SqlSink(db.new_run("train bench"), engine=db.engine)))
    results: dict[str, list[dict[str, float]]] = {name: [] for name, _ in variants}
    train_once(cfg, root / "warmup", lambda: None)  # imports, caches
    for rep in range(repeats):
        for name, make in variants:
            res = train_once(cfg, root / f"train-{rep}-{len(results[name])}-{uuid.uuid4().hex[:6]}", make)
            results[name].append(res)
            print(f"  repeat {rep + 1}/{repeats} {name:<22} median step {res['median_step_s'] * 1000:7.1f} ms  "
                  f"(CPU {res['median_cpu_step_s'] * 1000:7.1f} ms)  hooks {res['hooks_s_per_step'] * 1000:6.2f} ms/step  "
                  f"writer CPU {res['writer_cpu_s_per_step'] * 1000:6.2f} ms/step",
                  flush=True)
    base = statistics.median(r["median_step_s"] for r in results["no sink"])
    base_cpu = statistics.median(r["median_cpu_step_s"] for r in results["no sink"])
    table = []
    for name, runs in results.items():
        med = statistics.median(r["median_step_s"] for r in runs)
        cpu = statistics.median(r["median_cpu_step_s"] for r in runs)
        table.append({"variant": name, "median_step_ms": round(med * 1000, 1),
                      "slowdown_pct": round((med / base - 1) * 100, 1),
                      "median_cpu_step_ms": round(cpu * 1000, 1),
                      "cpu_overhead_pct": round((cpu / base_cpu - 1) * 100, 1),
                      "hooks_ms_per_step": round(statistics.median(r["hooks_s_per_step"] for r in runs) * 1000, 2),
                      "writer_cpu_ms_per_step": round(statistics.median(r["writer_cpu_s_per_step"] for r in runs) * 1000,
                                                      2),
                      "repeats": len(runs)})
    return table


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--no-postgres", action="store_true")
    p.add_argument("--ingest-steps", type=int, default=50)
    p.add_argument("--groups", type=int, default=16, help="prompts per step (each with --group-size responses)")
    p.add_argument("--group-size", type=int, default=8)
    p.add_argument("--train-steps", type=int, default=12)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--skip-training", action="store_true")
    p.add_argument("--json", help="write the results to this file")
    args = p.parse_args()

    load = os.getloadavg()
    print(f"host: {platform.node()} {os.cpu_count()} CPUs, load average {load[0]:.1f} {load[1]:.1f} {load[2]:.1f}")
    out: dict[str, Any] = {"load_average": load, "cpus": os.cpu_count()}
    with tempfile.TemporaryDirectory(prefix="remix-ingest-") as tmp:
        root = Path(tmp)
        dbs = [Database("sqlite", root)]
        if not args.no_postgres:
            dbs.append(Database("postgresql", root))
        try:
            print(f"\n1. ingest: {args.ingest_steps} steps × {args.groups} prompts × {args.group_size} responses "
                  "(+ uses, 60 metrics/step, a checkpoint every 10 steps)")
            ingest = []
            for chars in (200, 4000):
                for db in dbs:
                    res = bench_ingest(db, steps=args.ingest_steps, groups=args.groups, group_size=args.group_size,
                                       response_chars=chars)
                    ingest.append(res)
                    print(f"  {db.kind:<10} responses of {chars:>5} chars: {res['rollouts_per_s']:>8.0f} rollouts/s "
                          f"({res['rows_per_s']:.0f} rows/s, {res['seconds']:.2f} s, writer CPU "
                          f"{res['writer_cpu_s']:.2f} s)", flush=True)
            out["ingest"] = ingest
            if not args.skip_training:
                print(f"\n2. toy training, {args.train_steps} steps (8 prompts × 4 responses, 48 new tokens), "
                      f"{args.repeats} interleaved repeats")
                table = bench_training(dbs, steps=args.train_steps, repeats=args.repeats, root=root)
                out["training"] = table
                print(f"\n  {'variant':<22} {'median step':>12} {'slowdown':>9} {'CPU/step':>11} {'CPU extra':>10} "
                      f"{'in hooks':>10} {'writer CPU':>11}")
                for row in table:
                    print(f"  {row['variant']:<22} {row['median_step_ms']:>9.1f} ms {row['slowdown_pct']:>+8.1f}% "
                          f"{row['median_cpu_step_ms']:>8.1f} ms {row['cpu_overhead_pct']:>+9.1f}% "
                          f"{row['hooks_ms_per_step']:>7.2f} ms {row['writer_cpu_ms_per_step']:>8.2f} ms")
                print("  (in hooks: time the training thread spends in the sink per step, checkpoint flushes"
                      " included; writer CPU: the sink's background thread per step)")
        finally:
            for db in dbs:
                db.close()
    out["load_average_after"] = os.getloadavg()
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
