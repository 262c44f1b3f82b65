"""What `remix eval` writes: the per-sample JSONL, results.json and the console table."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from remix_engine.evaluate import EvalSink
from remix_engine.jsonsafe import json_safe


class JsonlSampleSink(EvalSink):
    """Streams per-sample rows to DIR/samples.jsonl as they are graded."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fh = self.path.open("w", encoding="utf-8")

    def on_samples(self, name, rows):
        for row in rows:
            self._fh.write(json.dumps(row, ensure_ascii=False) + "\n")
        self._fh.flush()

    def close(self) -> None:
        self._fh.close()


def write_results(results: dict[str, Any], out_dir: str | Path) -> Path:
    """DIR/results.json (everything except the per-sample rows)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "results.json"
    path.write_text(json.dumps(json_safe({k: v for k, v in results.items() if k != "samples"}), indent=2))
    return path


def format_table(results: dict[str, Any]) -> str:
    """A plain-text summary: one line per benchmark plus the average (percentages)."""
    def pct(v: Any) -> str:
        return f"{100 * v:6.2f}" if isinstance(v, (int, float)) else "     -"

    lines = [f"{'benchmark':<16} {'n':>5} {'k':>3} {'pass@1':>7} {'pass@k':>7} {'mv':>7} {'format':>7} {'len':>7}"]
    for name, m in results["benchmarks"].items():
        lines.append(f"{name:<16} {m['n_problems']:>5} {m['k']:>3} {pct(m['pass@1']):>7} {pct(m['pass@k']):>7} "
                     f"{pct(m['mathverify']):>7} {pct(m['format_ok']):>7} {m['response_length'] or 0:7.1f}")
    avg = results["average"]
    lines.append(f"{'average':<16} {'':>5} {'':>3} {pct(avg['pass@1']):>7} {pct(avg['pass@k']):>7} "
                 f"{pct(avg['mathverify']):>7}")
    intervals = format_intervals(results)
    return "\n".join(lines) + ("\n\n" + intervals if intervals else "")


def format_intervals(results: dict[str, Any]) -> str:
    """Per benchmark: pass@k (k = 1, 2, 4, …, n), maj@n and avg@n in percent with their 95%
    bootstrap intervals, under the protocol line that produced them (empty for greedy k=1 runs
    without estimates)."""
    from remix_engine.eval_protocol import protocol_label

    blocks = []
    for name, m in results["benchmarks"].items():
        est = m.get("estimates") or {}
        if not est:
            continue
        lines = [f"{name}: {protocol_label(m.get('protocol'))}, {m['n_problems']} problems, "
                 f"95% bootstrap CI over problems ({results.get('bootstrap_resamples', 1000)} resamples)",
                 f"  {'metric':<8} {'value':>7}   95% CI"]
        for metric, e in est.items():
            ci = e.get("ci95")
            ci_text = f"[{100 * ci[0]:6.2f}, {100 * ci[1]:6.2f}]" if ci else "-"
            lines.append(f"  {metric:<8} {100 * e['value']:7.2f}   {ci_text}")
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)
