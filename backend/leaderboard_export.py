"""Leaderboard exports: json, csv (the import format: ``<bench>_<mode>`` columns, so an export can
be re-imported), md (GitHub table) and latex (booktabs tabular), from the table that
`studio.leaderboard.leaderboard` returns.

Every format carries each row's protocol stamp and 95% intervals (issue 18): csv has
``<bench>_<mode>_ci_low/_ci_high`` columns (not score columns for the importer), ``protocol_key``,
``protocol`` (the stamp as JSON) and ``rank`` (inside its protocol group); md and latex print
``score [lo, hi]`` cells, a rank and a protocol column, and list the protocols under the table."""

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
    ci_cols = [f"{c}_{mode}_ci_{end}" for c in [*table["benchmarks"], "avg"] for end in ("low", "high")]
    header = ["size", "model", "source", *bench_cols, f"avg_{mode}", "cost_rollouts", "cost_rollouts_count",
              "run_id", "checkpoint_step", "reference", "rank", "protocol_key", "protocol", *ci_cols]
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(header)
    for e in table["rows"]:
        cis = [*[e.get("ci95", {}).get(b) for b in table["benchmarks"]], e.get("average_ci95")]
        w.writerow([_csv_text(e["size"] or ""), _csv_text(e["model"]), _csv_text(e["source"]),
                    *[_repr(e["scores"].get(b)) for b in table["benchmarks"]], _repr(e["average"]),
                    _csv_text(e["cost_text"]), "" if e["cost_rollouts"] is None else e["cost_rollouts"],
                    "" if e["run_id"] is None else e["run_id"],
                    "" if e["checkpoint_step"] is None else e["checkpoint_step"], _csv_text(e["reference"] or ""),
                    e.get("rank", ""), _csv_text(e.get("protocol_key") or ""),
                    _csv_text(json.dumps(e["protocol"], sort_keys=True) if e.get("protocol") else ""),
                    *[_repr(ci[i]) if ci else "" for ci in cis for i in (0, 1)]])
    return buf.getvalue()


def _cell(value: float | None, ci: list[float] | None, dash: str) -> str:
    """'52.10' or '52.10 [48.31, 55.90]' (the 95% interval when the row has one)."""
    text = _num(value) or dash
    return f"{text} [{ci[0]:.2f}, {ci[1]:.2f}]" if ci and value is not None else text


def _protocol_legend(table: dict[str, Any]) -> list[str]:
    return [f"{g['key']}: {g['label']} ({g['count']} rows)" for g in table.get("protocol_groups", [])]


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
    head = ["#", "Model", "Source", "Size", *[table["labels"][c] for c in cols], "Cost", "Protocol"]
    lines = [f"Leaderboard: {table['metric']}, mode {table['mode']}, size {table['size']} "
             f"(published rows are the authors' numbers, measured rows this studio's; [lo, hi]: 95% bootstrap "
             f"interval; # ranks rows only within the same protocol)", "",
             "| " + " | ".join(head) + " |",
             "|" + "|".join(["---:", ":---", ":---", ":---", *["---:"] * len(cols), "---:", ":---"]) + "|"]
    for e in table["rows"]:
        vals = [_cell(e["scores"].get(c), e.get("ci95", {}).get(c), "-") if c != AVERAGE
                else _cell(e["average"], e.get("average_ci95"), "-") for c in cols]
        lines.append("| " + " | ".join([str(e.get("rank", "")), _md_cell(e["model"]), e["source"],
                                        _md_cell(e["size"] or "-"), *vals, _md_cell(e["cost_text"]),
                                        _md_cell(e.get("protocol_key") or "-")]) + " |")
    legend = _protocol_legend(table)
    if legend:
        lines += ["", "Protocols:", ""] + [f"* {_md_cell(x)}" for x in legend]
    return "\n".join(lines) + "\n"


_TEX = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_", "{": r"\{",
        "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}", ">": r"$>$", "<": r"$<$"}


def tex_escape(text: Any) -> str:
    return "".join(_TEX.get(ch, ch) for ch in ("" if text is None else str(text)))


def to_latex(table: dict[str, Any]) -> str:
    cols = [*table["benchmarks"], AVERAGE]
    head = ["#", "Model", "Source", "Size", *[table["labels"][c] for c in cols], "Cost", "Protocol"]
    lines = [f"% ReMix Studio leaderboard: {table['metric']}, mode {table['mode']}, size {table['size']}",
             "% [lo, hi]: 95% bootstrap interval; # ranks rows only within the same protocol",
             *[f"% {line}" for line in _protocol_legend(table)],
             "% requires \\usepackage{booktabs}",
             "\\begin{tabular}{rlll" + "r" * len(cols) + "rl}", "\\toprule",
             " & ".join(tex_escape(h) for h in head) + r" \\", "\\midrule"]
    for e in table["rows"]:
        vals = [tex_escape(_cell(e["scores"].get(c), e.get("ci95", {}).get(c), "--")) if c != AVERAGE
                else tex_escape(_cell(e["average"], e.get("average_ci95"), "--")) for c in cols]
        lines.append(" & ".join([str(e.get("rank", "")), tex_escape(e["model"]), e["source"],
                                 tex_escape(e["size"] or "--"), *vals, tex_escape(e["cost_text"]),
                                 tex_escape(e.get("protocol_key") or "--")]) + r" \\")
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
