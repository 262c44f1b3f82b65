"""Leaderboard: the shipped published tables, migration seeding, the query, imports and the four exports.

Runs on a real SQLite database brought to head by the Alembic migrations (the integration tests
cover PostgreSQL through the API).
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import re
from pathlib import Path

import pytest
from sqlalchemy import func, select
from sqlmodel import Session

from backend.leaderboard_export import render
from remix_engine.leaderboard_data import published_csv_text, published_source
from studio.db import make_engine
from studio.leaderboard import (
    AVERAGE,
    STANDARD_BENCHMARKS,
    Cost,
    LeaderboardError,
    format_cost,
    leaderboard,
    measured_entries,
    parse_cost,
    parse_import,
    shipped_entries,
    size_label,
    store_entries,
)
from studio.migrate import head_revision, upgrade_database
from studio.models import Evaluation, Job, JobKind, JobStatus, LeaderboardEntry
from studio.settings import Settings

REPO = Path(__file__).resolve().parents[2]
SHARED_CSV = REPO.parent / "shared" / "data" / "published" / "remix_readme_results.csv"

# Published t=0.1 averages that are not the mean of their five published cells (README as is).
T01_AVERAGE_MISMATCHES = {("1.5B", "R1-Distill-Qwen-1.5B (Base)"), ("1.5B", "Open-RS1"), ("1.5B", "Open-RS2"),
                          ("1.5B", "Open-RS3"), ("7B", "ReasonFlux-F1"), ("7B", "AceReason-Nemotron")}


@pytest.fixture
def engine(tmp_path):
    settings = Settings(data_dir=tmp_path)
    eng = make_engine(settings.sqlalchemy_url)
    assert upgrade_database(settings, eng) == head_revision()
    yield eng
    eng.dispose()


def _published(size: str, model: str, mode: str = "greedy") -> dict[str, float]:
    return {e["benchmark"]: e["score"] for e in shipped_entries()
            if e["size"] == size and e["model"] == model and e["mode"] == mode}


# ----------------------------------------------------------------------------------- shipped data
def test_shipped_table_names_its_source_and_matches_the_shared_copy():
    src = published_source()
    from importlib import resources

    raw = resources.files("remix_engine.leaderboard_data").joinpath(src["file"]).read_bytes()
    assert hashlib.sha256(raw).hexdigest() == src["sha256"]
    assert published_csv_text().startswith("size,model,aime24_greedy,aime24_t0.1")
    assert "arXiv 2507.06892 v3" in src["reference"] and "1.5B and 7B" in src["reference"]
    assert src["status"] == "published" and src["dataset"] == "remix-readme-v3"
    if SHARED_CSV.is_file():
        assert SHARED_CSV.read_bytes() == raw


def test_published_rows_reproduce_the_papers_averages():
    assert _published("1.5B", "ReMix")[AVERAGE] == 52.10
    assert _published("1.5B", "DeepScaleR")[AVERAGE] == 52.14
    assert _published("7B", "ReMix-PPO")[AVERAGE] == 64.39
    assert _published("7B", "ReMix-PPO", "t0.1")[AVERAGE] == 61.97
    # remix_algorithm.md §8.1: the average is the unweighted mean of the five benchmarks
    for size, model, avg in (("1.5B", "ReMix", 52.10), ("1.5B", "DeepScaleR", 52.14), ("7B", "ReMix-PPO", 64.39)):
        cells = _published(size, model)
        assert round(sum(cells[b] for b in STANDARD_BENCHMARKS) / 5, 2) == avg
    models = {(e["size"], e["model"]) for e in shipped_entries()}
    assert len(models) == 20 and len(shipped_entries()) == 20 * 6 * 2
    for size, model in models:
        for mode in ("greedy", "t0.1"):
            cells = _published(size, model, mode)
            mean = sum(cells[b] for b in STANDARD_BENCHMARKS) / 5
            if mode == "t0.1" and (size, model) in T01_AVERAGE_MISMATCHES:
                assert 0.03 < abs(mean - cells[AVERAGE]) < 0.6, (size, model)
            else:
                assert abs(mean - cells[AVERAGE]) <= 0.005 + 1e-9, (size, model, mode, mean)


def test_costs_keep_text_number_and_lower_bound():
    assert parse_cost("0.079M") == Cost(79_000, "0.079M", False)
    assert parse_cost(">3.584M") == Cost(3_584_000, ">3.584M", True)
    assert parse_cost("N/A") == Cost(None, "N/A") and parse_cost("-") == Cost(None, "-")
    assert parse_cost(1536).rollouts == 1536 and parse_cost("12K").rollouts == 12_000
    with pytest.raises(LeaderboardError, match="cost"):
        parse_cost("cheap")
    assert format_cost(79_360) == "0.079M"  # truncated like the paper (79,360 -> 0.079M)
    assert format_cost(16) == "0.000016M" and format_cost(None) == "-"
    by_model = {e["model"]: e for e in shipped_entries() if e["benchmark"] == AVERAGE and e["mode"] == "greedy"}
    assert by_model["AceReason-Nemotron"]["cost_lower_bound"] and by_model["AceReason-Nemotron"]["cost_rollouts"] == 3_584_000
    assert by_model["ReMix-PPO"]["cost_rollouts"] == 11_000 and not by_model["ReMix-PPO"]["cost_lower_bound"]
    assert by_model["II-Thought"]["cost_rollouts"] is None and by_model["II-Thought"]["cost_text"] == "-"


def test_size_labels():
    assert size_label("deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B") == "1.5B"
    assert size_label("Remix-R1-Distilled-Qwen-7B") == "7B"
    assert size_label("/runs/3/checkpoints/step_000004/policy", 812_416) == "0.8M"
    assert size_label("x", None) is None


# ----------------------------------------------------------------------------------- database
def test_migration_seeds_published_rows_once_and_matches_the_models(engine, tmp_path):
    with Session(engine) as s:
        n = s.execute(select(func.count()).select_from(LeaderboardEntry)).scalar_one()
        assert n == 240
        assert set(s.execute(select(LeaderboardEntry.source).distinct()).scalars()) == {"published"}
    assert upgrade_database(Settings(data_dir=tmp_path), engine) == head_revision()  # no-op at head
    with Session(engine) as s:
        assert s.execute(select(func.count()).select_from(LeaderboardEntry)).scalar_one() == 240

    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext
    from sqlmodel import SQLModel

    with engine.connect() as conn:
        diffs = compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}), SQLModel.metadata)
    mine = [d for d in diffs if any(t in repr(d) for t in ("leaderboard_entries", "evaluations", "eval_samples"))]
    assert mine == [], mine


def test_downgrade_and_upgrade_again(engine, tmp_path):
    from alembic import command

    from studio.migrate import alembic_config, current_revision

    settings = Settings(data_dir=tmp_path)
    cfg = alembic_config(settings.sqlalchemy_url)
    with engine.connect() as conn:
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, "0001_initial")
        conn.commit()
        assert current_revision(conn) == "0001_initial"
        assert conn.exec_driver_sql("SELECT count(*) FROM leaderboard_entries").scalar_one() == 0
    assert upgrade_database(settings, engine) == head_revision()
    with Session(engine) as s:
        assert s.execute(select(func.count()).select_from(LeaderboardEntry)).scalar_one() == 240


def _measured(session: Session) -> None:
    """A finished evaluation job with two benchmarks (scores as fractions, as the worker stores them)."""
    job = Job(kind=JobKind.EVAL.value, status=JobStatus.SUCCEEDED.value, params={
        "name": "toy_run | A&B >v2", "model": "x", "mode": "greedy", "mode_label": "greedy", "size": "1.5B",
        "run_id": None, "step": 40, "cost_rollouts": 79_360, "limit": 3, "grader": "deepscaler-v1"})
    session.add(job)
    session.flush()
    evs = [Evaluation(job_id=job.id, benchmark="aime24", status="succeeded", k=1, pass_at_1=1 / 3, avg_at_k=1 / 3,
                      mathverify=2 / 3),
           Evaluation(job_id=job.id, benchmark="math500", status="succeeded", k=1, pass_at_1=0.5, avg_at_k=0.5,
                      mathverify=0.5)]
    session.add_all(evs)
    session.flush()
    store_entries(session, measured_entries(job, evs))
    session.commit()


def test_query_puts_published_and_measured_rows_together(engine):
    with Session(engine) as s:
        _measured(s)
        t = leaderboard(s, size="1.5B", mode="greedy")
        assert t["count"] == 13 and t["benchmarks"] == list(STANDARD_BENCHMARKS)
        rows = {r["model"]: r for r in t["rows"]}
        m = rows["toy_run | A&B >v2"]
        assert m["source"] == "measured" and m["scores"]["aime24"] == pytest.approx(100 / 3)
        assert m["average"] == pytest.approx((100 / 3 + 50) / 2) and m["average_of_five"] is None
        assert m["cost_rollouts"] == 79_360 and m["cost_text"] == "0.079M" and m["checkpoint_step"] == 40
        assert m["mathverify"]["aime24"] == pytest.approx(200 / 3) and "first 3 problems" in m["notes"]
        assert rows["ReMix"]["source"] == "published" and rows["ReMix"]["average"] == 52.10
        assert [r["model"] for r in t["rows"][:2]] == ["DeepScaleR", "ReMix"]  # average, descending
        assert leaderboard(s, size="1.5B", source="measured")["count"] == 1
        assert leaderboard(s, size="1.5B", source="published")["count"] == 12
        assert leaderboard(s, size="7B", mode="t0.1")["count"] == 8
        assert leaderboard(s, mode="greedy")["count"] == 21
        by_cost = leaderboard(s, size="7B", sort="cost", order="asc")["rows"]
        assert by_cost[0]["model"] == "ReMix-PPO" and by_cost[-1]["cost_rollouts"] is None
        assert leaderboard(s, size="1.5B", sort="aime24")["rows"][0]["model"] == "DeepScaleR"
        for bad in ({"mode": "beam"}, {"sort": "nope"}, {"source": "mine"}):
            with pytest.raises(LeaderboardError):
                leaderboard(s, **bad)


# ----------------------------------------------------------------------------------- exports
def _from_csv(text: str, mode: str) -> dict[str, dict]:
    out = {}
    for row in csv.DictReader(io.StringIO(text)):
        cols = [*STANDARD_BENCHMARKS, "avg"]
        out[row["model"]] = {"source": row["source"], "cost": row["cost_rollouts"],
                             **{c: float(row[f"{c}_{mode}"]) if row[f"{c}_{mode}"] else None for c in cols}}
    return out


def _md_unescape(cell: str) -> str:
    return re.sub(r"\\(.)", r"\1", cell.strip())


def _from_md(text: str) -> dict[str, dict]:
    lines = [ln for ln in text.splitlines() if ln.startswith("|")]
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    out = {}
    for ln in lines[2:]:
        cells = [_md_unescape(c) for c in re.split(r"(?<!\\)\|", ln.strip()[1:-1])]
        row = dict(zip(header, cells, strict=True))
        out[row["Model"]] = row
    return out


_TEX_UNESCAPE = [(r"\textbackslash{}", "\\"), (r"\textasciitilde{}", "~"), (r"\textasciicircum{}", "^"),
                 ("$>$", ">"), ("$<$", "<"), (r"\&", "&"), (r"\%", "%"), (r"\$", "$"), (r"\#", "#"), (r"\_", "_"),
                 (r"\{", "{"), (r"\}", "}")]


def _from_latex(text: str) -> dict[str, dict]:
    body = text[text.index("\\toprule"):text.index("\\bottomrule")]
    lines = [ln.strip().removesuffix("\\\\").strip() for ln in body.splitlines()
             if ln.strip() and not ln.strip().startswith(("\\toprule", "\\midrule"))]
    split = [re.split(r"(?<!\\)&", ln) for ln in lines]

    def unescape(c: str) -> str:
        c = c.strip()
        for a, b in _TEX_UNESCAPE:
            c = c.replace(a, b)
        return c

    header = [unescape(c) for c in split[0]]
    rows = [dict(zip(header, [unescape(c) for c in cells], strict=True)) for cells in split[1:]]
    return {row["Model"]: row for row in rows}


def _num(cell: str) -> float | None:
    """The score of a cell ('52.10' or '52.10 [48.31, 55.90]': the interval follows the score)."""
    return None if cell in ("-", "--", "") else float(cell.split(" [")[0])


@pytest.mark.parametrize("size,mode", [("1.5B", "greedy"), ("1.5B", "t0.1"), ("7B", "greedy"), ("7B", "t0.1")])
def test_exports_parse_back_to_the_same_numbers(engine, size, mode):
    with Session(engine) as s:
        _measured(s)
        table = leaderboard(s, size=size, mode=mode)
    as_json = json.loads(render(table, "json")[0])
    assert as_json["rows"] == json.loads(json.dumps(table["rows"]))
    labels = as_json["labels"]
    csv_rows = _from_csv(render(table, "csv")[0], mode)
    md_rows = _from_md(render(table, "md")[0])
    tex = render(table, "latex")[0]
    assert "\\toprule" in tex and "\\midrule" in tex and "\\bottomrule" in tex and "\\begin{tabular}" in tex
    tex_rows = _from_latex(tex)
    assert set(csv_rows) == set(md_rows) == set(tex_rows) == {r["model"] for r in table["rows"]}
    for r in table["rows"]:
        values = {**{b: r["scores"].get(b) for b in STANDARD_BENCHMARKS}, AVERAGE: r["average"]}
        for b, v in values.items():
            assert csv_rows[r["model"]]["avg" if b == AVERAGE else b] == v  # csv is lossless
            for parsed in (md_rows[r["model"]], tex_rows[r["model"]]):
                got = _num(parsed[labels[b]])
                assert got == (None if v is None else round(v, 2)), (r["model"], b)
        assert md_rows[r["model"]]["Source"] == tex_rows[r["model"]]["Source"] == r["source"]
        assert md_rows[r["model"]]["Cost"] == tex_rows[r["model"]]["Cost"] == csv_rows[r["model"]]["cost"] == r["cost_text"]
    if size == "7B":
        assert csv_rows["AceReason-Nemotron"]["cost"] == ">3.584M"
    if size == "1.5B":
        assert "L1-Exact*" in md_rows
    if (size, mode) == ("1.5B", "greedy"):
        assert "toy_run | A&B >v2" in tex_rows and md_rows["toy_run | A&B >v2"]["Source"] == "measured"


# ----------------------------------------------------------------------------------- imports
def test_import_csv_and_json_are_idempotent_and_checked(engine):
    text = ("# comment lines are skipped\nsize,model,math500_greedy,avg_greedy,math500_t0.6,cost_rollouts\n"
            "1.5B,My-RL-Model,80.5,50.25,79,0.5M\n7B,Other,,60,,>1M\n")
    entries = parse_import(text, "text/csv", reference="Doe et al. 2026, Table 2", dataset=None)
    assert {(e["model"], e["benchmark"], e["mode"]) for e in entries} == {
        ("My-RL-Model", "math500", "greedy"), ("My-RL-Model", "average", "greedy"), ("My-RL-Model", "math500", "t0.6"),
        ("Other", "average", "greedy")}
    assert all(e["source"] == "published" and e["dataset"] == "doe-et-al-2026-table-2" for e in entries)
    with Session(engine) as s:
        assert store_entries(s, entries)["rows"] == 4
        s.commit()
        again = store_entries(s, parse_import(text, "text/csv", reference="Doe et al. 2026, Table 2", dataset=None))
        s.commit()
        assert again["replaced_rows"] == 4
        t = leaderboard(s, size="1.5B", mode="t0.6")
        assert [(r["model"], r["scores"]["math500"]) for r in t["rows"]] == [("My-RL-Model", 79.0)]
        other = next(r for r in leaderboard(s, size="7B")["rows"] if r["model"] == "Other")
        assert other["cost_lower_bound"] and other["cost_rollouts"] == 1_000_000 and other["scores"] == {}
        # an exported CSV re-imports (its measured rows are skipped)
        _measured(s)
        exported = render(leaderboard(s, size="1.5B"), "csv")[0]
        back = parse_import(exported, "text/csv", reference=None, dataset="roundtrip")
        assert {e["model"] for e in back} == {r["model"] for r in leaderboard(s, size="1.5B", source="published")["rows"]}
    body = {"reference": "R", "rows": [{"size": "7B", "model": "J", "aime24_greedy": 10, "avg_greedy": 11.5}]}
    assert len(parse_import(json.dumps(body), "application/json", reference=None, dataset=None)) == 2
    for bad, match in (("size,model,math500_greedy\n1.5B,A,80\n", "reference"),
                       ("size,model,math500_greedy\n1.5B,A,eighty\n", "not a number"),
                       ("size,model,math500_greedy\n1.5B,A,180\n", "percentage"),
                       ("size,model\n1.5B,A\n", "no score columns"),
                       ("model,math500_greedy\nA,1\n", "size"),
                       ("size,model,math500_greedy\n1.5B,A,1\n1.5B,A,2\n", "twice"),
                       ("[1, 2]", "expected an object")):
        with pytest.raises(LeaderboardError, match=match):
            parse_import(bad, None, reference=None if match == "reference" else "ref", dataset=None)
    with pytest.raises(LeaderboardError, match="shipped"):
        parse_import("size,model,avg_greedy\n1.5B,A,1\n", "text/csv", reference="x", dataset="remix-readme-v3")


# ----------------------------------------------------------------------------------- protocols and intervals
def _stamped(session: Session, name: str, n: int, scores: dict[str, float], temperature: float = 0.6) -> int:
    """A finished sampled evaluation whose benchmarks carry a protocol stamp and intervals."""
    from remix_engine.eval_protocol import stamp

    job = Job(kind=JobKind.EVAL.value, status=JobStatus.SUCCEEDED.value, params={
        "name": name, "model": "x", "mode": "sample", "mode_label": f"t{temperature:g}", "size": "0.8M",
        "grader": "deepscaler-v1", "temperature": temperature})
    session.add(job)
    session.flush()
    evs = []
    for bench, p in scores.items():
        proto = stamp(n=n, temperature=temperature, top_p=1.0, max_new_tokens=128, grader="deepscaler-v1",
                      require_think=False, benchmark_sha256=f"sha-{bench}", n_problems=50)
        evs.append(Evaluation(job_id=job.id, benchmark=bench, status="succeeded", k=n, pass_at_1=p, avg_at_k=p,
                              metrics={"protocol": proto, "ci95": [p - 0.1, p + 0.1]}))
    session.add_all(evs)
    session.flush()
    store_entries(session, measured_entries(job, evs))
    session.commit()
    return job.id


def test_rows_with_different_protocols_are_ranked_apart_and_exports_carry_stamps_and_intervals(engine):
    with Session(engine) as s:
        _stamped(s, "A-n8", 8, {"aime24": 0.5, "math500": 0.7})
        _stamped(s, "B-n8", 8, {"aime24": 0.4, "math500": 0.6})
        _stamped(s, "C-n4", 4, {"aime24": 0.9, "math500": 0.9})  # best score, other protocol: not rank 1 over A
        t = leaderboard(s, size="0.8M", mode="t0.6")
    rows = {r["model"]: r for r in t["rows"]}
    assert rows["A-n8"]["protocol_key"] == rows["B-n8"]["protocol_key"] != rows["C-n4"]["protocol_key"]
    assert (rows["C-n4"]["rank"], rows["A-n8"]["rank"], rows["B-n8"]["rank"]) == (1, 1, 2)
    assert [g["count"] for g in t["protocol_groups"]] == [1, 2]
    assert rows["A-n8"]["protocol"]["benchmarks"]["aime24"] == {"n": 8, "benchmark_sha256": "sha-aime24",
                                                                  "n_problems": 50}
    assert rows["A-n8"]["protocol_label"] == "n=8 T=0.6 top_p=1 max=128 deepscaler-v1"
    assert rows["A-n8"]["ci95"]["aime24"] == pytest.approx([40.0, 60.0])
    lo, hi = rows["A-n8"]["average_ci95"]  # independent benchmarks: narrower than each
    assert lo == pytest.approx(60 - 10 / 2 ** 0.5) and hi == pytest.approx(60 + 10 / 2 ** 0.5)
    csv_rows = {r["model"]: r for r in csv.DictReader(io.StringIO(render(t, "csv")[0]))}
    a = csv_rows["A-n8"]
    assert float(a["aime24_t0.6_ci_low"]) == pytest.approx(40.0) and float(a["avg_t0.6_ci_high"]) == pytest.approx(hi)
    assert a["protocol_key"] == rows["A-n8"]["protocol_key"] and json.loads(a["protocol"])["top_p"] == 1.0
    assert a["rank"] == "1" and csv_rows["B-n8"]["rank"] == "2"
    md = render(t, "md")[0]
    assert "50.00 [40.00, 60.00]" in md and rows["A-n8"]["protocol_key"] in md
    assert "n=8 T=0.6 top\\_p=1 max=128 deepscaler-v1 (2 rows)" in md and "n=4 T=0.6" in md
    tex = render(t, "latex")[0]
    assert "50.00 [40.00, 60.00]" in tex and "n=4 T=0.6" in tex
    # the CSV still re-imports (measured rows are skipped; interval columns are not score columns)
    with pytest.raises(LeaderboardError, match="no published rows"):
        parse_import(render(t, "csv")[0], "text/csv", reference="R", dataset="d")
