"""Leaderboard exports: json, csv (the import format: ``<bench>_<mode>`` columns, so an export can
be re-imported), md (GitHub table) and latex (booktabs tabular), from the table that
`studio.leaderboard.leaderboard` returns."""

from __future__ import annotations

import csv
import io
import json
from typing import Any

from studio.leaderboard import AVERAGE, CSV_FORMULA_STARTS, LeaderboardError

FORMATS = ("json", "csv", "md", "latex")


def _num(v: float | None) -> str:
    return "" if v is None else f"{v:.2f}"


def to_csv(table: dict[str, Any]) -> str:
    """The import format: size, model, source, <bench>_<mode>..., avg_<mode>, cost_rollouts, ..."""
    mode = table["mode"]
    bench_cols = [f"{b}_{mode}" for b in table["benchmarks"]]
    header = ["size", "model", "source", *bench_cols, f"avg_{mode}", "cost_rollouts", "cost_rollouts_count",
              "run_id", "checkpoint_step", "reference"]
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(header)
    for e in table["rows"]:
        w.writerow([_csv_text(e["size"] or ""), _csv_text(e["model"]), _csv_text(e["source"]),
                    *[_repr(e["scores"].get(b)) for b in table["benchmarks"]], _repr(e["average"]),
                    _csv_text(e["cost_text"]), "" if e["cost_rollouts"] is None else e["cost_rollouts"],
                    "" if e["run_id"] is None else e["run_id"],
                    "" if e["checkpoint_step"] is None else e["checkpoint_step"], _csv_text(e["reference"] or "")])
    return buf.getvalue()


def _csv_text(text: Any) -> str:
    """A text cell that a spreadsheet will not run as a formula (OWASP CSV injection): text led by
    = + - @ (or tab / CR) gets a "'" in front, unless it is a lone sign or a plain number; the
    leaderboard import removes the "'" again."""
    text = "" if text is None else str(text)
    if len(text) < 2 or not text.startswith(CSV_FORMULA_STARTS):
        return text
    try:
        float(text)
        return text
    except ValueError:
        return "'" + text


def _repr(v: float | None) -> str:
    return "" if v is None else repr(float(v))


def _md_cell(text: Any) -> str:
    s = "" if text is None else str(text)
    for ch in ("\\", "|", "*", "_", "`"):
        s = s.replace(ch, "\\" + ch)
    return s.replace("\n", " ")


def to_markdown(table: dict[str, Any]) -> str:
    cols = [*table["benchmarks"], AVERAGE]
    head = ["Model", "Source", "Size", *[table["labels"][c] for c in cols], "Cost"]
    lines = [f"Leaderboard: {table['metric']}, mode {table['mode']}, size {table['size']} "
             f"(published rows are the authors' numbers, measured rows this studio's)", "",
             "| " + " | ".join(head) + " |",
             "|" + "|".join([":---", ":---", ":---", *["---:"] * len(cols), "---:"]) + "|"]
    for e in table["rows"]:
        vals = [_num(e["scores"].get(c) if c != AVERAGE else e["average"]) or "-" for c in cols]
        lines.append("| " + " | ".join([_md_cell(e["model"]), e["source"], _md_cell(e["size"] or "-"), *vals,
                                        _md_cell(e["cost_text"])]) + " |")
    return "\n".join(lines) + "\n"


_TEX = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_", "{": r"\{",
        "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}", ">": r"$>$", "<": r"$<$"}


def tex_escape(text: Any) -> str:
    return "".join(_TEX.get(ch, ch) for ch in ("" if text is None else str(text)))


def to_latex(table: dict[str, Any]) -> str:
    cols = [*table["benchmarks"], AVERAGE]
    head = ["Model", "Source", "Size", *[table["labels"][c] for c in cols], "Cost"]
    lines = [f"% ReMix Studio leaderboard: {table['metric']}, mode {table['mode']}, size {table['size']}",
             "% requires \\usepackage{booktabs}",
             "\\begin{tabular}{lll" + "r" * len(cols) + "r}", "\\toprule",
             " & ".join(tex_escape(h) for h in head) + r" \\", "\\midrule"]
    for e in table["rows"]:
        vals = [_num(e["scores"].get(c) if c != AVERAGE else e["average"]) or "--" for c in cols]
        lines.append(" & ".join([tex_escape(e["model"]), e["source"], tex_escape(e["size"] or "--"), *vals,
                                 tex_escape(e["cost_text"])]) + r" \\")
    lines += ["\\bottomrule", "\\end{tabular}"]
    return "\n".join(lines) + "\n"


def render(table: dict[str, Any], fmt: str) -> tuple[str, str]:
    """(body, media type) of an export."""
    if fmt == "json":
        return json.dumps(table, indent=2), "application/json"
    if fmt == "csv":
        return to_csv(table), "text/csv; charset=utf-8"
    if fmt == "md":
        return to_markdown(table), "text/markdown; charset=utf-8"
    if fmt == "latex":
        return to_latex(table), "application/x-latex; charset=utf-8"
    raise LeaderboardError(f"format: '{fmt}' is not one of {', '.join(FORMATS)}")
