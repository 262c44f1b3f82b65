"""The leaderboard store: published rows (shipped and imported) and measured rows from evaluation jobs.

Storage: one `leaderboard_entries` row per (entry, benchmark, mode). An *entry* is one line of the
table, named by `entry_key`:

* ``published:<dataset>:<size>:<model>`` — a published result. The ReMix README tables ship with
  the engine (`remix_engine/leaderboard_data`, dataset ``remix-readme-v3``) and are seeded by
  migration 0002; users import more (CSV or JSON, same columns). `source` = ``published``.
* ``eval:<job id>`` — an evaluation job of this studio. `source` = ``measured``
  (`measured_entries`, written by the worker's evaluation job, worker/evaluation.py).

Scores are percentages (pass@1 × 100), as in the paper's tables; the `average` benchmark row holds
the published average (published entries) or the unweighted mean over the evaluated benchmarks
(measured entries). Modes are ``greedy`` and ``t<temperature>`` (``t0.1``: the paper's sampled
numbers, avg@32 on AIME/AMC). Costs are rollouts generated in training: published ones keep their
text (``0.079M``, ``>3.584M`` with `cost_lower_bound`, ``N/A``) next to the number; measured ones
are the run's ``cost/rollouts`` at the evaluated checkpoint.

Measured rows carry their protocol stamp (`protocol`, remix_engine/eval_protocol.py) and the 95%
interval of their score (`ci_low`, `ci_high`; migration 0006). The query groups rows by protocol and
ranks them only inside their group (`_ranked_by_protocol`): different protocols are never ranked as
if equal. Published rows form one group per dataset.

Exports (json, csv, md, latex) are the API's business: backend/leaderboard_export.py.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import delete, func, select
from sqlmodel import Session

from remix_engine.benchmarks import BENCHMARKS
from remix_engine.benchmarks import LABELS as BENCHMARK_LABELS
from remix_engine.eval_protocol import entry_protocol, protocol_key, protocol_label
from remix_engine.eval_stats import combine_ci
from studio.models import Evaluation, Job, JobStatus, LeaderboardEntry, as_utc, utcnow

log = logging.getLogger("remix.leaderboard")

STANDARD_BENCHMARKS = BENCHMARKS  # the engine's list: one list for the engine, the store and the dashboard
AVERAGE = "average"
LABELS = {**BENCHMARK_LABELS, AVERAGE: "Avg"}
PUBLISHED = "published"
MEASURED = "measured"
SHIPPED_DATASET = "remix-readme-v3"

_MODE_RE = r"greedy|t\d+(?:\.\d+)?"
_SCORE_COLUMN = re.compile(rf"^(?P<bench>.+)_(?P<mode>{_MODE_RE})$")


class LeaderboardError(ValueError):
    """Bad import data or query; the message names the row/column."""


# ------------------------------------------------------------------------------------------ costs
@dataclass(frozen=True)
class Cost:
    rollouts: int | None  # number of rollouts (lower bound when `lower_bound`)
    text: str | None  # as published ("0.079M", ">3.584M", "N/A", "-")
    lower_bound: bool = False

    @property
    def millions(self) -> float | None:
        return None if self.rollouts is None else self.rollouts / 1e6


_COST_RE = re.compile(r"^(?P<gt>>=?|≥)?\s*(?P<num>\d+(?:\.\d+)?(?:[eE][+-]?\d+)?)\s*(?P<unit>[MmKk])?$")


def parse_cost(raw: Any) -> Cost:
    """'0.079M' -> 79,000 rollouts; '>3.584M' -> lower bound; 'N/A', '-', '' -> unknown."""
    if raw is None:
        return Cost(None, None)
    if isinstance(raw, (int, float)) and not isinstance(raw, bool):
        return Cost(int(round(raw)), None) if math.isfinite(raw) else Cost(None, None)
    text = str(raw).strip()
    if text in ("", "N/A", "n/a", "NA", "-", "–", "—", "None", "null"):
        return Cost(None, text or None)
    m = _COST_RE.match(text)
    if not m:
        raise LeaderboardError(f"cost '{text}': expected a number of rollouts, '<x>M' (millions) or '>x' (lower bound)")
    value = float(m.group("num"))
    unit = (m.group("unit") or "").upper()
    scale = 1e6 if unit == "M" else 1e3 if unit == "K" else 1.0
    return Cost(int(round(value * scale)), text, lower_bound=bool(m.group("gt")))


def format_cost(rollouts: int | None, text: str | None = None, lower_bound: bool = False) -> str:
    """Display text: the published text when there is one, else millions (truncated, as the paper does)."""
    if text:
        return text
    if rollouts is None:
        return "-"
    millions = rollouts / 1e6
    if millions >= 0.001:
        shown = f"{math.floor(millions * 1000) / 1000:.3f}M"
    else:
        shown = f"{millions:.6f}M".rstrip("0")
    return (">" if lower_bound else "") + shown


# ------------------------------------------------------------------------------------------ import
def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:60] or "imported"


def entry_key_published(dataset: str, size: str, model: str) -> str:
    return f"published:{dataset}:{size}:{model}"[:255]


def wide_rows_to_entries(rows: Iterable[dict[str, Any]], *, dataset: str, reference: str | None,
                         where: str = "row") -> list[dict[str, Any]]:
    """Wide published rows (size, model, <bench>_<mode>..., avg_<mode>, cost_rollouts[, reference])
    -> one dict per (entry, benchmark, mode), ready for `leaderboard_entries`."""
    out: list[dict[str, Any]] = []
    seen: set[tuple[str, str]] = set()
    for i, row in enumerate(rows, start=1):
        here = f"{where} {i}"
        if not isinstance(row, dict):
            raise LeaderboardError(f"{here}: expected an object with size, model and score columns")
        row = {str(k).strip(): v for k, v in row.items() if k is not None}
        if str(row.get("source", "")).strip().lower() == MEASURED:
            continue  # an export's measured rows are not published results
        size = str(row.get("size") or "").strip()
        model = str(row.get("model") or "").strip()
        if not size or not model:
            raise LeaderboardError(f"{here}: 'size' and 'model' are required")
        if (size, model) in seen:
            raise LeaderboardError(f"{here}: model '{model}' ({size}) appears twice")
        seen.add((size, model))
        try:
            cost = parse_cost(row.get("cost_rollouts", row.get("cost")))
        except LeaderboardError as exc:
            raise LeaderboardError(f"{here}: {exc}") from None
        ref = str(row.get("reference") or "").strip() or reference
        if not ref:
            raise LeaderboardError(f"{here}: published rows need a reference (a 'reference' column or parameter)")
        scores = 0
        for column, raw in row.items():
            m = _SCORE_COLUMN.match(column)
            if not m:
                continue
            bench = m.group("bench").strip().lower()
            bench = AVERAGE if bench in ("avg", "average", "mean") else bench
            if raw is None or (isinstance(raw, str) and raw.strip() in ("", "-", "N/A", "–")):
                continue
            try:
                score = float(raw)
            except (TypeError, ValueError):
                raise LeaderboardError(f"{here}, column '{column}': '{raw}' is not a number") from None
            if not math.isfinite(score) or not 0 <= score <= 100:
                raise LeaderboardError(f"{here}, column '{column}': {score} is not a percentage in [0, 100]")
            out.append({
                "entry_key": entry_key_published(dataset, size, model), "source": PUBLISHED, "dataset": dataset,
                "size": size[:32], "model": model[:200], "method": "", "benchmark": bench[:128],
                "mode": m.group("mode"), "metric": "pass@1", "score": score, "cost_rollouts": cost.rollouts,
                "cost_text": cost.text, "cost_lower_bound": cost.lower_bound, "reference": ref,
                "notes": str(row.get("notes") or "").strip() or None,
            })
            scores += 1
        if not scores:
            raise LeaderboardError(f"{here}: no score columns (expected names like math500_greedy, avg_t0.1)")
    if not out:
        raise LeaderboardError("no published rows found")
    return out


def parse_import(body: bytes | str, content_type: str | None, *, reference: str | None,
                 dataset: str | None) -> list[dict[str, Any]]:
    """CSV (text/csv) or JSON (a list of rows, or {"reference", "dataset", "rows"}) -> entries."""
    text = body.decode("utf-8-sig") if isinstance(body, bytes) else body
    kind = (content_type or "").split(";")[0].strip().lower()
    stripped = text.lstrip()
    is_json = kind.endswith("json") or (not kind.endswith("csv") and stripped[:1] in ("[", "{"))
    if is_json:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise LeaderboardError(f"JSON body: {exc.msg} (line {exc.lineno})") from None
        if isinstance(data, dict):
            reference = reference or data.get("reference")
            dataset = dataset or data.get("dataset")
            data = data.get("rows")
        if not isinstance(data, list):
            raise LeaderboardError("JSON body: expected a list of rows or {\"reference\": ..., \"rows\": [...]}")
        rows, where = data, "row"
    else:
        lines = [ln for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
        reader = csv.DictReader(lines)
        if not reader.fieldnames or "model" not in reader.fieldnames or "size" not in reader.fieldnames:
            raise LeaderboardError("CSV: the header must have 'size' and 'model' columns")
        rows, where = [{k: _csv_unescape(v) for k, v in row.items()} for row in reader], "CSV data row"
    dataset = _slug(dataset or reference or "imported")
    if dataset == SHIPPED_DATASET:
        raise LeaderboardError(f"dataset '{SHIPPED_DATASET}' is the shipped table; choose another name")
    return wide_rows_to_entries(rows, dataset=dataset, reference=reference, where=where)


# Cells a spreadsheet would run as a formula; exports put a "'" in front of them (OWASP).
CSV_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def _csv_unescape(value: Any) -> Any:
    if isinstance(value, str) and value.startswith("'") and value[1:].startswith(CSV_FORMULA_STARTS):
        return value[1:]
    return value


def shipped_entries() -> list[dict[str, Any]]:
    """The ReMix README tables shipped in remix_engine/leaderboard_data, as entries."""
    from remix_engine.leaderboard_data import published_csv_text, published_source

    src = published_source()
    rows = list(csv.DictReader(published_csv_text().splitlines()))
    return wide_rows_to_entries(rows, dataset=src["dataset"], reference=src["reference"],
                                where=f"{src['file']} data row")


def store_entries(session: Session, entries: list[dict[str, Any]]) -> dict[str, int]:
    """Replace the stored rows of every entry key in `entries` (idempotent)."""
    keys = sorted({e["entry_key"] for e in entries})
    replaced = 0
    for lo in range(0, len(keys), 500):
        res = session.execute(delete(LeaderboardEntry).where(LeaderboardEntry.entry_key.in_(keys[lo:lo + 500])))
        replaced += res.rowcount or 0
    now = utcnow()
    session.add_all([LeaderboardEntry(**e, created_at=now) for e in entries])
    session.flush()
    return {"entries": len(keys), "rows": len(entries), "replaced_rows": replaced}


def seed_published(session: Session) -> dict[str, int]:
    """(Re)load the shipped published rows; migration 0002 does this once per database."""
    return store_entries(session, shipped_entries())


# ------------------------------------------------------------------------------------------ query
def leaderboard(session: Session, *, size: str | None = None, mode: str = "greedy", source: str | None = None,
                sort: str = "average", order: str = "desc") -> dict[str, Any]:
    """The wide table for one mode: one row per entry, one column per benchmark."""
    if not re.fullmatch(_MODE_RE, mode):
        raise LeaderboardError(f"mode: '{mode}' is not 'greedy' or 't<temperature>' such as t0.1")
    if source not in (None, "", "all", PUBLISHED, MEASURED):
        raise LeaderboardError(f"source: '{source}' is not all, published or measured")
    cond = [LeaderboardEntry.mode == mode]
    if size and size != "all":
        cond.append(LeaderboardEntry.size == size)
    if source == PUBLISHED:
        cond.append(LeaderboardEntry.source == PUBLISHED)
    elif source == MEASURED:
        cond.append(LeaderboardEntry.source != PUBLISHED)
    rows = session.execute(select(LeaderboardEntry).where(*cond).order_by(LeaderboardEntry.id)).scalars().all()
    entries: dict[str, dict[str, Any]] = {}
    extra: set[str] = set()
    for r in rows:
        key = r.entry_key or f"entry:{r.id}"
        e = entries.get(key)
        if e is None:
            e = entries[key] = {
                "key": key, "model": r.model, "source": PUBLISHED if r.source == PUBLISHED else MEASURED,
                "size": r.size, "mode": r.mode, "method": r.method or None, "dataset": r.dataset,
                "reference": r.reference, "notes": r.notes, "run_id": r.run_id, "checkpoint_step": r.checkpoint_step,
                "evaluation_job_id": _job_of_key(key), "temperature": r.temperature, "k": r.k, "grader": r.grader,
                "cost_rollouts": r.cost_rollouts, "cost_millions": None if r.cost_rollouts is None else r.cost_rollouts / 1e6,
                "cost_text": format_cost(r.cost_rollouts, r.cost_text, r.cost_lower_bound),
                "cost_lower_bound": bool(r.cost_lower_bound), "scores": {}, "mathverify": {}, "ci95": {},
                "_protocols": {},
                "created_at": as_utc(r.created_at).isoformat() if r.created_at else None,
            }
        e["scores"][r.benchmark] = r.score
        if r.ci_low is not None and r.ci_high is not None:
            e["ci95"][r.benchmark] = [r.ci_low, r.ci_high]
        if r.benchmark != AVERAGE:
            e["_protocols"][r.benchmark] = r.protocol
        if r.mathverify is not None:
            e["mathverify"][r.benchmark] = r.mathverify
        if r.benchmark not in STANDARD_BENCHMARKS and r.benchmark != AVERAGE:
            extra.add(r.benchmark)
    benchmarks = list(STANDARD_BENCHMARKS) + sorted(extra)
    out_rows = []
    for e in entries.values():
        e["average"] = e["scores"].pop(AVERAGE, None)
        std = [e["scores"].get(b) for b in STANDARD_BENCHMARKS]
        e["average_of_five"] = sum(std) / len(std) if all(v is not None for v in std) else None
        e["mathverify_average"] = e["mathverify"].pop(AVERAGE, None)
        e["average_ci95"] = e["ci95"].pop(AVERAGE, None)
        _stamp_protocol(e)
        out_rows.append(e)
    out_rows, groups = _ranked_by_protocol(_sorted(out_rows, sort, order, benchmarks))
    return {"mode": mode, "size": size or "all", "source": source or "all", "metric": "pass@1 (%)",
            "benchmarks": benchmarks, "columns": [*benchmarks, AVERAGE], "labels": {b: LABELS.get(b, b) for b in
                                                                                  [*benchmarks, AVERAGE]},
            "sort": sort, "order": order, "count": len(out_rows), "rows": out_rows, "protocol_groups": groups,
            "sources": _sources(session),
            "sizes": sorted(x for x in session.execute(select(LeaderboardEntry.size).distinct()).scalars() if x),
            "modes": sorted(session.execute(select(LeaderboardEntry.mode).distinct()).scalars(),
                            key=lambda m: (m != "greedy", m))}


def _stamp_protocol(e: dict[str, Any]) -> None:
    """An entry's protocol (eval_protocol.entry_protocol of its benchmarks' stamps), its key and label.

    Published rows share their dataset's protocol (the authors', not stamped): key
    ``published:<dataset>``. Measured rows from before stamps existed get ``unstamped:<entry>`` —
    comparable to nothing, so ranked alone."""
    stamps = e.pop("_protocols")
    if e["source"] == PUBLISHED:
        e["protocol"], e["protocol_key"] = None, f"published:{e['dataset']}"
        e["protocol_label"] = f"as published ({e['dataset']}; protocol not stamped)"
        return
    proto = entry_protocol(stamps)
    e["protocol"] = proto
    e["protocol_key"] = protocol_key(proto) or f"unstamped:{e['key']}"
    e["protocol_label"] = protocol_label(proto) if proto else "protocol unknown (evaluated before stamps)"


def _ranked_by_protocol(rows: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Rows with different protocols are never ranked as if equal: the sorted rows are grouped by
    protocol key (groups in the order of their best row), each row gets its ``rank`` inside its
    group, and the groups are listed with their label and size."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for e in rows:
        groups.setdefault(e["protocol_key"], []).append(e)
    out, listed = [], []
    for key, members in groups.items():
        for i, e in enumerate(members, start=1):
            e["rank"] = i
        out.extend(members)
        listed.append({"key": key, "label": members[0]["protocol_label"], "protocol": members[0]["protocol"],
                       "count": len(members)})
    return out, listed


def _job_of_key(key: str) -> int | None:
    if key.startswith("eval:"):
        try:
            return int(key.split(":", 1)[1])
        except ValueError:
            return None
    return None


def _sorted(rows: list[dict[str, Any]], sort: str, order: str, benchmarks: list[str]) -> list[dict[str, Any]]:
    if order not in ("asc", "desc"):
        raise LeaderboardError(f"order: '{order}' is not asc or desc")

    def value(e: dict[str, Any]) -> Any:
        if sort in ("average", AVERAGE):
            return e["average"]
        if sort == "cost":
            return e["cost_rollouts"]
        if sort in ("model", "source", "size"):
            return (e[sort] or "").lower()
        if sort in benchmarks:
            return e["scores"].get(sort)
        raise LeaderboardError(f"sort: '{sort}' is not average, cost, model, source, size or a benchmark")

    present = [e for e in rows if value(e) is not None]
    missing = [e for e in rows if value(e) is None]
    present.sort(key=lambda e: (value(e), e["model"].lower()), reverse=(order == "desc"))
    return present + sorted(missing, key=lambda e: e["model"].lower())


def _sources(session: Session) -> list[dict[str, Any]]:
    rows = session.execute(
        select(LeaderboardEntry.dataset, LeaderboardEntry.reference, func.count(func.distinct(LeaderboardEntry.entry_key)))
        .where(LeaderboardEntry.source == PUBLISHED)
        .group_by(LeaderboardEntry.dataset, LeaderboardEntry.reference)
        .order_by(LeaderboardEntry.dataset)).all()
    return [{"dataset": d, "reference": r, "entries": int(n)} for d, r, n in rows]


def delete_entry(session: Session, key: str) -> int:
    return session.execute(delete(LeaderboardEntry).where(LeaderboardEntry.entry_key == key)).rowcount or 0


# ------------------------------------------------------------------------------------------ measured rows
_SIZE_IN_NAME = re.compile(r"(?<![\w.])(\d+(?:\.\d+)?)\s*[Bb](?![A-Za-z])")


def size_label(model_name: str, n_params: int | None = None) -> str | None:
    """'…-1.5B' -> '1.5B' from the name; else from the parameter count ('0.8M', '7.6B')."""
    m = _SIZE_IN_NAME.search(model_name or "")
    if m:
        return f"{m.group(1)}B"
    if n_params:
        return f"{n_params / 1e9:.1f}B" if n_params >= 1e9 else f"{n_params / 1e6:.1f}M"
    return None


def measured_entries(job: Job, evaluations: list[Evaluation]) -> list[dict[str, Any]]:
    """Leaderboard rows of a finished evaluation job: one per benchmark plus the average."""
    params = job.params or {}
    done = [ev for ev in evaluations if ev.status == JobStatus.SUCCEEDED.value and ev.pass_at_1 is not None]
    if not done:
        return []
    key = f"eval:{job.id}"
    mode = params["mode_label"]  # EvalOptions.mode_label, recorded when the job was created
    limit = params.get("limit")
    notes = [f"evaluation job {job.id}"]
    if limit:
        notes.append(f"first {limit} problems per benchmark")
    base = {"entry_key": key, "source": MEASURED, "dataset": None, "size": params.get("size"),
            "model": (params.get("name") or params.get("model") or "model")[:200], "method": params.get("method") or "",
            "metric": "pass@1", "mode": mode, "run_id": params.get("run_id"),
            "checkpoint_step": params.get("step"), "cost_rollouts": params.get("cost_rollouts"), "cost_text": None,
            "cost_lower_bound": False, "reference": None, "notes": "; ".join(notes),
            "temperature": params.get("temperature"), "grader": params.get("grader")}
    out = []
    for ev in done:
        ci = _pct_ci((ev.metrics or {}).get("ci95"))
        out.append({**base, "benchmark": ev.benchmark, "score": 100.0 * ev.pass_at_1, "evaluation_id": ev.id,
                    "k": ev.k, "mathverify": None if ev.mathverify is None else 100.0 * ev.mathverify,
                    "protocol": (ev.metrics or {}).get("protocol"), "ci_low": ci[0], "ci_high": ci[1]})
    mv = [ev.mathverify for ev in done if ev.mathverify is not None]
    avg_ci = combine_ci([(100.0 * ev.pass_at_1, _ci_or_none(_pct_ci((ev.metrics or {}).get("ci95"))))
                         for ev in done])
    out.append({**base, "benchmark": AVERAGE, "score": 100.0 * sum(ev.pass_at_1 for ev in done) / len(done),
                "evaluation_id": None, "k": None,
                "mathverify": 100.0 * sum(mv) / len(mv) if len(mv) == len(done) else None,
                "protocol": entry_protocol({ev.benchmark: (ev.metrics or {}).get("protocol") for ev in done}),
                "ci_low": avg_ci[0] if avg_ci else None, "ci_high": avg_ci[1] if avg_ci else None})
    if len(done) != len(evaluations):
        for e in out:
            e["notes"] += f"; average of {len(done)} of {len(evaluations)} benchmarks"
    return out


def _pct_ci(ci: Any) -> tuple[float | None, float | None]:
    """A [lo, hi] fraction interval from evaluation metrics as percentages (or (None, None))."""
    ok = _ci_or_none(ci)
    return (100.0 * ok[0], 100.0 * ok[1]) if ok else (None, None)


def _ci_or_none(ci: Any) -> tuple[float, float] | None:
    if isinstance(ci, (list, tuple)) and len(ci) == 2 and all(isinstance(v, (int, float)) for v in ci):
        return float(ci[0]), float(ci[1])
    return None
