"""The studio's data layer at scale (issue 17): build a studio database through the worker's own
write path (worker/sink.py SqlSink), then time every endpoint a dashboard user hits.

    python benchmarks/data_scale.py --rollouts 1000000 --backend sqlite --data-dir /tmp/ds1m
    python benchmarks/data_scale.py --rollouts 1000000 --backend postgres --reuse
    remix studio --data-dir /tmp/ds1m            # serves the SQLite database built above

The database: --runs runs with rollouts (--rollouts in all, over --steps steps; responses of
500–4,000 characters, their uses: every rollout once fresh, a third of the groups replayed at
ages 1 and 2) and --metric-runs runs in all with --keys metrics per step (the run page's 14 keys
among them). --reuse keeps a database that already holds this size (SQLite: in --data-dir;
PostgreSQL: the database remix_data_scale_<rollouts>).

Printed, in one table: p50/p95 (ms) of each endpoint over --requests sequential requests through
the real FastAPI app (starlette's TestClient, in process) after --warmup requests, beside its
target; ingest rollouts/s of the sink (one more run of rollouts, deleted afterwards), of the same
rollouts written into the studio's own tables by the driver alone (the floor for this schema: same
indexes, compressed texts, search index) and of a bare executemany (SQLite) / COPY (PostgreSQL) of
the same rows into index-less tables; the database's
size; and the sink's cost to a toy training step (benchmarks/ingest.py, with and without the sink,
interleaved).
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

PG_ADMIN_URL = os.environ.get("REMIX_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
# the run page's charts (frontend/static/charts.js STANDARD_CHARTS, and replay/reincarnated)
RUN_PAGE_KEYS = ["eval/heldout/pass@1", "critic/score/mean", "response_length/mean", "eval/heldout/response_length",
                 "behavior/self_reflection_rate", "eval/heldout/self_reflection_rate", "actor/ppo_kl",
                 "actor/kl_anchor", "actor/kl_convex", "actor/pg_clipfrac", "actor/entropy",
                 "actor/importance_ratio_mean", "actor/importance_ratio_max", "replay/reincarnated"]
GROUP_SIZE = 5
RARE_WORD = "zygote"  # in ~0.2 % of responses: a search with few hits
_WORDS = ("wait let me check the answer again so we have then compute sum of squares hmm actually no that is wrong "
          "because denominator term factor step therefore final result first second next multiply divide add "
          "subtract equation solve value both sides simplify expression integer prime number remainder modulo "
          "verify recheck consider case otherwise triangle angle side length area perimeter circle radius").split()


# ------------------------------------------------------------------------------------------ data
class Corpus:
    """A pool of responses drawn once (generating 1M texts would cost more than storing them)."""

    def __init__(self, seed: int = 0, size: int = 4096):
        rng = random.Random(seed)
        self.responses = []
        for i in range(size):
            target = rng.randint(500, 4000)
            words: list[str] = []
            n = 0
            while n < target:
                w = rng.choice(_WORDS) if rng.random() > 0.05 else str(rng.randint(0, 999))
                if w == "wait" and i % 5 >= 2:  # "wait" in ~40 % of the responses
                    w = "hmm"
                words.append(w)
                n += len(w) + 1
            if i % 500 == 0:
                words.insert(len(words) // 2, RARE_WORD)
            self.responses.append(" ".join(words)[:target] + f" \\boxed{{{i % 97}}}")


def rollout_rows(corpus: Corpus, run_index: int, step: int, per_step: int) -> list[dict[str, Any]]:
    rows = []
    for j in range(per_step):
        g, k = divmod(j, GROUP_SIZE)
        gid = f"r{run_index}-s{step:06d}-g{g:03d}"
        h = (run_index * 1_000_003 + step * 1009 + j * 7919) % 1_000_000_007
        resp = corpus.responses[h % len(corpus.responses)]
        correct = h % 20 < 9
        rows.append({
            "uid": f"{gid}-{k}", "step": step, "policy_version": max(0, step - h % 3), "group_id": gid,
            "prompt_id": f"p{h % 5000}", "prompt": f"Problem {h % 5000}: compute {g} + {k}. Box the answer.",
            "response": resp, "extracted": str(h % 97) if correct else str(h % 89 + 1), "reference": str(h % 97),
            "reward": 1.0 if correct else 0.0, "correct": correct, "format_ok": correct or h % 10 != 0,
            "reason": "ok", "length": len(resp) // 4, "truncated": h % 20 == 19, "advantage": 0.5 if correct else -0.5,
        })
    return rows


def use_rows(step: int, rows_by_step: dict[int, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    uses = [{"rollout_uid": r["uid"], "step": step, "age": 0, "ratio_mean": 1.0, "ratio_max": 1.0, "clipfrac": 0.0,
             "kl_to_behavior": 0.0} for r in rows_by_step[step]]
    for age in (1, 2):
        for r in rows_by_step.get(step - age, [])[: len(rows_by_step[step]) // 3]:
            uses.append({"rollout_uid": r["uid"], "step": step, "age": age, "ratio_mean": 1.0 + 0.01 * age,
                         "ratio_max": 1.2 + 0.1 * age, "clipfrac": 0.02 * age, "kl_to_behavior": 0.001 * age})
    return uses


def step_metrics(step: int, n_keys: int, per_step: int) -> dict[str, float]:
    values = {k: 0.5 + 0.4 * ((step * (i + 3)) % 101) / 101 for i, k in enumerate(RUN_PAGE_KEYS)}
    values["cost/rollouts"] = float(step * per_step)
    for i in range(max(0, n_keys - len(values))):
        values[f"bench/metric_{i:02d}"] = float((step * (i + 1)) % 997)
    return values


def feed_run(sink, corpus: Corpus, run_index: int, steps: int, per_step: int, n_keys: int) -> int:  # noqa: ANN001
    """Push one run's events through the sink in the trainer's order; returns rollouts sent."""
    sink.on_start({"resumed_from": None})
    recent: dict[int, list[dict[str, Any]]] = {}
    sent = 0
    for step in range(1, steps + 1):
        if per_step:
            recent[step] = rollout_rows(corpus, run_index, step, per_step)
            recent.pop(step - 3, None)
            sink.on_rollouts(step, recent[step])
            sink.on_rollout_uses(step, use_rows(step, recent))
            sent += per_step
        metrics = step_metrics(step, n_keys, per_step)
        sink.on_step(step, metrics)
        if step % 100 == 0:
            sink.on_checkpoint(step, f"/nonexistent/step_{step:06d}",
                               {"step": step, "policy_version": step, "path": f"/nonexistent/step_{step:06d}"})
    sink.on_end({})
    return sent


# ------------------------------------------------------------------------------------------ database
def prepare_database(args: argparse.Namespace) -> tuple[Any, str]:
    """Point the studio's settings at the benchmark database (created if needed); returns
    (settings, description)."""
    if args.backend == "sqlite":
        data_dir = Path(args.data_dir or tempfile.mkdtemp(prefix="remix-data-scale-"))
        os.environ["REMIX_DATA_DIR"] = str(data_dir)
        os.environ.pop("REMIX_DATABASE_URL", None)
        where = str(data_dir / "studio.db")
    else:
        import psycopg

        name = f"remix_data_scale_{args.rollouts}"
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
            exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
            if exists and not args.reuse:
                conn.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
            if not exists or not args.reuse:
                conn.execute(f'CREATE DATABASE "{name}"')
        base, _, _ = PG_ADMIN_URL.rpartition("/")
        os.environ["REMIX_DATABASE_URL"] = f"{base}/{name}"
        os.environ["REMIX_DATA_DIR"] = args.data_dir or tempfile.mkdtemp(prefix="remix-data-scale-")
        where = f"PostgreSQL database {name}"
    os.environ["REMIX_REAPER_ENABLED"] = "false"
    from studio.migrate import upgrade_database
    from studio.settings import get_settings, reset_settings_cache

    reset_settings_cache()
    settings = get_settings()
    if args.backend == "sqlite" and not args.reuse:
        for suffix in ("", "-wal", "-shm"):
            Path(str(settings.data_path / "studio.db") + suffix).unlink(missing_ok=True)
    upgrade_database(settings)
    return settings, where


def new_run(name: str, steps: int) -> int:
    from studio.db import session_scope
    from studio.models import Run

    with session_scope() as s:
        run = Run(name=name, preset="toy", algorithm="remix-grpo", config={"actor": {"advantage": "grpo"}},
                  request={}, status="running", steps_total=steps)
        s.add(run)
        s.flush()
        return run.id


def finish_run(run_id: int) -> None:
    from studio.db import session_scope
    from studio.models import Run

    with session_scope() as s:
        s.get(Run, run_id).status = "succeeded"


def existing_rollouts() -> int:
    from sqlalchemy import func, select

    from studio.db import session_scope
    from studio.models import Rollout

    with session_scope() as s:
        return s.execute(select(func.count()).select_from(Rollout)).scalar_one()


def build(args: argparse.Namespace, corpus: Corpus) -> list[float]:
    """The runs with rollouts, then the metric-only runs; returns the sink's rollouts/s per run."""
    from studio.db import get_engine
    from worker.sink import SqlSink

    per_step = args.rollouts // args.runs // args.steps
    rates = []
    for i in range(args.metric_runs):
        with_rollouts = i < args.runs
        run_id = new_run(f"data-scale {i}", args.steps)
        sink = SqlSink(run_id, engine=get_engine())
        t0 = time.perf_counter()
        sent = feed_run(sink, corpus, i, args.steps, per_step if with_rollouts else 0, args.keys)
        sink.close()
        wall = time.perf_counter() - t0
        finish_run(run_id)
        if with_rollouts:
            rates.append(sent / wall)
            print(f"  run {run_id}: {sent:,} rollouts in {wall:.1f} s ({sent / wall:,.0f} rollouts/s)", flush=True)
        elif i % 20 == 0:
            print(f"  run {run_id}: metrics only ({wall:.1f} s)", flush=True)
    analyze()
    return rates


def analyze() -> None:
    """Planner statistics and PostgreSQL's visibility map (index-only scans), as autovacuum leaves
    them some time after a build; SQLite's sink refreshes its statistics at the end of each run."""
    from sqlalchemy import text

    from studio.db import get_engine

    engine = get_engine()
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text("VACUUM ANALYZE" if engine.dialect.name == "postgresql" else "ANALYZE"))


# ------------------------------------------------------------------------------------------ ingest
def ingest_probe(args: argparse.Namespace, corpus: Corpus) -> dict[str, float]:
    """One more run of rollouts through the sink, then the same rows through a bare bulk insert;
    the run is deleted afterwards (so --reuse measures the same database again)."""
    from studio import jobs
    from studio.db import get_engine, session_scope
    from studio.models import Run
    from worker.sink import SqlSink

    per_step = args.rollouts // args.runs // args.steps
    steps = max(1, min(args.steps, args.probe_rollouts // max(1, per_step)))
    run_id = new_run("data-scale ingest probe", steps)
    sink = SqlSink(run_id, engine=get_engine())
    t0 = time.perf_counter()
    sent = feed_run(sink, corpus, 10_000 + run_id, steps, per_step, args.keys)
    sink.close()
    sink_rate = sent / (time.perf_counter() - t0)
    rows = [r for step in range(1, steps + 1) for r in rollout_rows(corpus, 10_000 + run_id, step, per_step)]
    bare_rate = bare_insert(rows, run_id)
    floor_run = new_run("data-scale ingest floor", steps)
    floor_rate = floor_insert(rows, floor_run)
    for rid in (run_id, floor_run):
        finish_run(rid)
        with session_scope() as s:
            jobs.delete_run(s, s.get(Run, rid))
    return {"sink": sink_rate, "floor": floor_rate, "bare": bare_rate, "rollouts": sent}


def floor_insert(rows: list[dict[str, Any]], run_id: int) -> float:
    """The same rollouts into the studio's own tables (all their indexes, the search index) with
    the per-row work the sink cannot skip (a compressed text, search terms) through the driver's
    bulk path, in transactions of 2,500 rollouts: no uses, metrics, upserts or record objects. What
    any writer of this schema pays on this machine. Returns rollouts/s."""
    from studio import rollout_text
    from studio.db import get_engine
    from worker.sink import _ROLLOUT_COLS, _UNUSED

    def row(r: dict[str, Any]) -> tuple:
        return (run_id, r["uid"], r["step"], r["policy_version"], r["group_id"], r["prompt_id"], r["extracted"],
                r["reference"], r["reward"], r["correct"], r["format_ok"], r["reason"], r["length"], r["truncated"],
                r["advantage"], time.time(), *_UNUSED)

    engine = get_engine()
    raw = engine.raw_connection()
    try:
        cur = raw.cursor()
        t0 = time.perf_counter()
        for start in range(0, len(rows), 2500):
            chunk = rows[start:start + 2500]
            docs = [rollout_text.document(r["prompt"], r["response"], r["extracted"]) for r in chunk]
            bodies = [rollout_text.pack(r["prompt"], r["response"]) for r in chunk]
            if engine.dialect.name == "postgresql":
                ids = [i for (i,) in cur.execute("SELECT nextval(pg_get_serial_sequence('rollouts', 'id')) "
                                                 "FROM generate_series(1, %s)", (len(chunk),))]
                with cur.copy(f"COPY rollouts (id, {', '.join(_ROLLOUT_COLS)}) FROM STDIN") as copy:
                    for i, r in zip(ids, chunk, strict=True):
                        copy.write_row((i, *row(r)))
                with cur.copy("COPY rollout_texts (rollout_id, body, terms) FROM STDIN") as copy:
                    for i, body, doc in zip(ids, bodies, docs, strict=True):
                        copy.write_row((i, body, rollout_text.tsvector_literal(rollout_text.terms(doc))))
            else:
                first = (cur.execute("SELECT max(id) FROM rollouts").fetchone()[0] or 0) + 1
                ids = list(range(first, first + len(chunk)))
                marks = ", ".join("?" * (len(_ROLLOUT_COLS) + 1))
                cur.executemany(f"INSERT INTO rollouts (id, {', '.join(_ROLLOUT_COLS)}) VALUES ({marks})",
                                [(i, *row(r)) for i, r in zip(ids, chunk, strict=True)])
                cur.executemany("INSERT INTO rollout_texts (rollout_id, body) VALUES (?, ?)", list(zip(ids, bodies, strict=True)))
                cur.executemany(f"INSERT INTO {rollout_text.SEARCH_TABLE}(rowid, terms) VALUES (?, ?)",
                                list(zip(ids, docs, strict=True)))
            raw.commit()
        return len(rows) / (time.perf_counter() - t0)
    finally:
        raw.close()


def bare_insert(rows: list[dict[str, Any]], run_id: int) -> float:
    """The same rollouts (texts uncompressed) into two index-less temporary tables: the driver's
    own bulk path, executemany on SQLite and COPY on PostgreSQL. Returns rollouts/s."""
    from studio.db import get_engine

    engine = get_engine()
    cols = ["uid", "step", "policy_version", "group_id", "prompt_id", "extracted", "reference", "reward", "correct",
            "format_ok", "reason", "length", "truncated", "advantage"]
    raw = engine.raw_connection()
    try:
        cur = raw.cursor()
        cur.execute("CREATE TEMP TABLE bare_rollouts (id INTEGER, run_id INTEGER, uid TEXT, step INTEGER, "
                    "policy_version INTEGER, group_id TEXT, prompt_id TEXT, extracted TEXT, reference TEXT, "
                    "reward DOUBLE PRECISION, correct BOOLEAN, format_ok BOOLEAN, reason TEXT, length INTEGER, "
                    "truncated BOOLEAN, advantage DOUBLE PRECISION)")
        cur.execute("CREATE TEMP TABLE bare_texts (rollout_id INTEGER, prompt TEXT, response TEXT)")
        t0 = time.perf_counter()
        if engine.dialect.name == "postgresql":
            with cur.copy(f"COPY bare_rollouts (id, run_id, {', '.join(cols)}) FROM STDIN") as copy:
                for i, r in enumerate(rows):
                    copy.write_row([i, run_id, *(r[c] for c in cols)])
            with cur.copy("COPY bare_texts (rollout_id, prompt, response) FROM STDIN") as copy:
                for i, r in enumerate(rows):
                    copy.write_row([i, r["prompt"], r["response"]])
        else:
            marks = ", ".join("?" * (len(cols) + 2))
            cur.executemany(f"INSERT INTO bare_rollouts VALUES ({marks})",
                            [(i, run_id, *(r[c] for c in cols)) for i, r in enumerate(rows)])
            cur.executemany("INSERT INTO bare_texts VALUES (?, ?, ?)",
                            [(i, r["prompt"], r["response"]) for i, r in enumerate(rows)])
        raw.commit()
        rate = len(rows) / (time.perf_counter() - t0)
        cur.execute("DROP TABLE bare_rollouts")
        cur.execute("DROP TABLE bare_texts")
        raw.commit()
        return rate
    finally:
        raw.close()


def database_bytes(settings) -> int:  # noqa: ANN001
    from sqlalchemy import text

    from studio.db import get_engine

    engine = get_engine()
    if engine.dialect.name == "postgresql":
        with engine.connect() as conn:
            return int(conn.execute(text("SELECT pg_database_size(current_database())")).scalar_one())
    with engine.connect() as conn:
        conn.execute(text("PRAGMA wal_checkpoint(TRUNCATE)"))
    db = settings.data_path / "studio.db"
    return sum(p.stat().st_size for p in (db, Path(f"{db}-wal")) if p.exists())


ROLLOUT_TABLES = ("rollouts", "rollout_texts", "rollout_uses", "offpolicy_steps")


def rollout_bytes() -> int | None:
    """The rollout tables with their indexes (PostgreSQL: and TOAST; SQLite: and the FTS5 table),
    None where SQLite lacks the dbstat table."""
    from sqlalchemy import text
    from sqlalchemy.exc import OperationalError

    from studio.db import get_engine
    from studio.rollout_text import SEARCH_TABLE

    engine = get_engine()
    tables = ", ".join(f"'{t}'" for t in ROLLOUT_TABLES)
    with engine.connect() as conn:
        if engine.dialect.name == "postgresql":
            return int(conn.execute(text(f"SELECT sum(pg_total_relation_size(c)) FROM unnest(ARRAY[{tables}]"
                                         "::regclass[]) c")).scalar_one())
        try:
            return int(conn.execute(text(
                f"SELECT sum(pgsize) FROM dbstat WHERE name IN (SELECT name FROM sqlite_master WHERE tbl_name IN "
                f"({tables}) OR name LIKE '{SEARCH_TABLE}%')")).scalar_one())
        except OperationalError:
            return None


# ------------------------------------------------------------------------------------------ endpoints
def endpoints(client, args: argparse.Namespace) -> list[tuple[str, str, float | None]]:  # noqa: ANN001
    """(label, URL, target p95 in ms or None) for one run with rollouts, as the dashboard asks."""
    runs = client.get("/api/v1/runs", params={"limit": 500}).json()["data"]
    with_rollouts = sorted(r["id"] for r in runs if r["rollouts_generated"] > 0)
    all_ids = sorted(r["id"] for r in runs)
    rid = with_rollouts[len(with_rollouts) // 2]
    page = client.get(f"/api/v1/runs/{rid}/rollouts", params={"correct": "true", "limit": 50}).json()
    first = page["data"][0]
    mid_version = args.steps // 2
    r = f"/api/v1/runs/{rid}"
    keys = ",".join(RUN_PAGE_KEYS)
    many = ",".join(map(str, all_ids[:100]))
    return [
        ("runs list + latest metrics", "/api/v1/runs?limit=100&metrics=eval/heldout/pass@1,critic/score/mean", None),
        ("run detail", r, None),
        ("trace page (no filter)", f"{r}/rollouts?limit=50", 50),
        ("trace search q=wait", f"{r}/rollouts?limit=50&q=wait", 50),
        (f"trace search q={RARE_WORD}", f"{r}/rollouts?limit=50&q={RARE_WORD}", 50),
        ("trace search q=wait&correct=true", f"{r}/rollouts?limit=50&q=wait&correct=true", 50),
        ("trace correct=true", f"{r}/rollouts?limit=50&correct=true", 50),
        ("trace correct=true, page 2", f"{r}/rollouts?limit=50&correct=true&cursor={page['next_cursor']}", 50),
        ("trace wrong answer", f"{r}/rollouts?limit=50&correct=false&format_ok=true", 50),
        ("trace truncated=true", f"{r}/rollouts?limit=50&truncated=true", 50),
        (f"trace policy_version={mid_version}", f"{r}/rollouts?limit=50&policy_version={mid_version}", 50),
        ("metrics: run page (14 keys)", f"{r}/metrics?keys={keys}&x=step&max_points=600", 50),
        ("metrics: default keys", f"{r}/metrics", None),
        (f"metrics: {min(100, len(all_ids))} runs x 1 key", f"/api/v1/runs/metrics?runs={many}&keys=critic/score/mean"
                                                            "&x=rollouts", 100),
        ("off-policy view", f"{r}/offpolicy", 100),
        ("group", f"{r}/groups/{first['group_id']}", None),
        ("rollout detail", f"/api/v1/rollouts/{first['id']}", None),
        ("leaderboard", "/api/v1/leaderboard", None),
    ]


def time_endpoints(args: argparse.Namespace) -> list[dict[str, Any]]:
    from fastapi.testclient import TestClient

    from backend.api.read_cache import ReadCache
    from backend.app import create_app

    out = []
    with TestClient(create_app()) as client:
        listed = endpoints(client, args)
        # the API's read cache answers a repeated read of these from memory while the run's version
        # holds: time them also as a first read (cache emptied before each request)
        cold = [(f"{label} (not cached)", url, target, True) for label, url, target in listed
                if url.startswith("/api/v1/runs") and "/rollouts" not in url and "/offpolicy" not in url]
        for label, url, target, empty_cache in [(*e, False) for e in listed] + cold:
            times = []
            for i in range(args.warmup + args.requests):
                if empty_cache:
                    client.app.state.read_cache = ReadCache()
                t0 = time.perf_counter()
                resp = client.get(url)
                elapsed = (time.perf_counter() - t0) * 1000
                if resp.status_code != 200:
                    raise SystemExit(f"{label}: {url} answered {resp.status_code}: {resp.text[:300]}")
                if i >= args.warmup:
                    times.append(elapsed)
            times.sort()
            p50 = statistics.median(times)
            p95 = times[min(len(times) - 1, int(round(0.95 * (len(times) - 1))))]
            out.append({"endpoint": label, "p50": p50, "p95": p95, "target": target, "bytes": len(resp.content),
                        "met": target is None or p95 <= target})
    return out


# ------------------------------------------------------------------------------------------ step cost
def step_cost(args: argparse.Namespace) -> list[dict[str, Any]]:
    from benchmarks.ingest import bench_training
    from studio.db import get_engine

    class Db:  # what bench_training needs of benchmarks/ingest.py's Database
        kind = args.backend
        engine = get_engine()

        @staticmethod
        def new_run(name: str) -> int:
            return new_run(name, args.train_steps)

    with tempfile.TemporaryDirectory(prefix="remix-data-scale-train-") as tmp:
        return bench_training([Db()], steps=args.train_steps, repeats=args.train_repeats, root=Path(tmp))


# ------------------------------------------------------------------------------------------ main
def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rollouts", type=int, default=1_000_000)
    p.add_argument("--backend", choices=("sqlite", "postgres"), default="sqlite")
    p.add_argument("--data-dir", help="SQLite: keep the database here (serve it with remix studio --data-dir)")
    p.add_argument("--reuse", action="store_true", help="keep a database already built for this size")
    p.add_argument("--runs", type=int, default=20, help="runs with rollouts")
    p.add_argument("--metric-runs", type=int, default=100, help="runs in all (the others record metrics only)")
    p.add_argument("--steps", type=int, default=1000)
    p.add_argument("--keys", type=int, default=60, help="metric keys per step")
    p.add_argument("--requests", type=int, default=30, help="timed requests per endpoint")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--probe-rollouts", type=int, default=20_000, help="rollouts of the ingest probe run")
    p.add_argument("--train-steps", type=int, default=12)
    p.add_argument("--train-repeats", type=int, default=3)
    p.add_argument("--skip-step-cost", action="store_true")
    args = p.parse_args()
    args.metric_runs = max(args.metric_runs, args.runs)

    settings, where = prepare_database(args)
    load = os.getloadavg()
    print(f"host: {platform.node()}, {os.cpu_count()} CPUs, load {load[0]:.1f}; {args.backend}: {where}", flush=True)
    corpus = Corpus()
    have = existing_rollouts()
    if args.reuse and have >= args.rollouts:
        print(f"reusing {have:,} rollouts", flush=True)
        build_rates: list[float] = []
    else:
        print(f"building {args.rollouts:,} rollouts ({args.runs} runs x {args.steps} steps) and "
              f"{args.metric_runs} runs x {args.steps} steps x {args.keys} metrics through SqlSink", flush=True)
        t0 = time.perf_counter()
        build_rates = build(args, corpus)
        print(f"built in {time.perf_counter() - t0:.0f} s", flush=True)
    size = database_bytes(settings)
    probe = ingest_probe(args, corpus)
    analyze()
    print("timing endpoints ...", flush=True)
    table = time_endpoints(args)
    cost = [] if args.skip_step_cost else step_cost(args)

    print(f"\n== {args.backend}, {existing_rollouts():,} rollouts, {args.metric_runs} runs x {args.steps} steps x "
          f"{args.keys} metrics; {args.requests} requests per endpoint after {args.warmup} warm-up; "
          f"{os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}")
    print(f"{'endpoint':<36} {'p50 ms':>8} {'p95 ms':>8} {'target p95':>11} {'bytes':>9}  met")
    for row in table:
        target = f"<= {row['target']:.0f}" if row["target"] else "-"
        print(f"{row['endpoint']:<36} {row['p50']:>8.1f} {row['p95']:>8.1f} {target:>11} {row['bytes']:>9}  "
              f"{'yes' if row['met'] else 'NO'}")
    bare = "COPY" if args.backend == "postgres" else "executemany"
    print(f"{'ingest: SqlSink (probe run)':<36} {probe['sink']:>8,.0f} rollouts/s   target >= 20,000  "
          f"{'yes' if probe['sink'] >= 20_000 else 'NO'}")
    if build_rates:
        print(f"{'ingest: SqlSink (building, median)':<36} {statistics.median(build_rates):>8,.0f} rollouts/s")
    print(f"{'ingest: floor (own tables, ' + bare + ')':<36} {probe['floor']:>8,.0f} rollouts/s   "
          "(the rollouts and texts alone; no uses or metrics)")
    print(f"{'ingest: bare ' + bare + ' (same rows)':<36} {probe['bare']:>8,.0f} rollouts/s   "
          "(index-less temporary tables, texts as they are)")
    extra = rollout_bytes()
    print(f"{'storage: whole database':<36} {size / 1e9:>8.2f} GB" + (
        f"   rollout tables {extra / 1e9:.2f} GB" if extra else "") + "   target <= 2 GB for the rollouts")
    for row in cost:
        print(f"step cost: {row['variant']:<26} median step {row['median_step_ms']:>7.1f} ms  "
              f"{row['slowdown_pct']:>+6.1f}%  (CPU {row['cpu_overhead_pct']:+.1f}%)")
    if cost:
        worst = max(row["slowdown_pct"] for row in cost)
        print(f"step cost target <= 3%: {'yes' if worst <= 3 else 'NO'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
