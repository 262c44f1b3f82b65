"""The protocol stamp of an evaluation result, and when two results may be ranked together.

Every benchmark result of `remix eval` and of a studio evaluation carries ``metrics["protocol"]``:

    {"n": 8, "temperature": 0.6, "top_p": 1.0, "max_new_tokens": 256, "grader": "deepscaler-v1",
     "require_think": false, "benchmark_sha256": "1a2b…", "n_problems": 100}

``n`` is the number of samples per problem, ``max_new_tokens`` the cap actually used (after the
model's context limit), ``benchmark_sha256`` the first 16 hex digits of the benchmark file's sha256
(``None`` for hub data) and ``n_problems`` how many of its problems were evaluated (``--limit``
changes the problem set without changing the file). Two results are comparable — may share a
ranking — only when their stamps are equal field for field (`same_protocol`); a leaderboard line
(one evaluation over several benchmarks) has the protocol of all its benchmarks together
(`entry_protocol`) and `protocol_key` names it.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

PROTOCOL_FIELDS = ("n", "temperature", "top_p", "max_new_tokens", "grader", "require_think", "benchmark_sha256",
                   "n_problems")


def stamp(*, n: int, temperature: float, top_p: float, max_new_tokens: int, grader: str, require_think: bool,
          benchmark_sha256: str | None, n_problems: int) -> dict[str, Any]:
    """The protocol of one benchmark result (see the module docstring)."""
    return {"n": int(n), "temperature": float(temperature), "top_p": float(top_p),
            "max_new_tokens": int(max_new_tokens), "grader": grader, "require_think": bool(require_think),
            "benchmark_sha256": benchmark_sha256, "n_problems": int(n_problems)}


def same_protocol(a: dict[str, Any] | None, b: dict[str, Any] | None) -> bool:
    """Equal stamps (every field); a missing stamp is comparable to nothing."""
    return bool(a) and bool(b) and all(a.get(f) == b.get(f) for f in PROTOCOL_FIELDS)  # type: ignore[union-attr]


def differences(a: dict[str, Any] | None, b: dict[str, Any] | None) -> list[str]:
    """'field: a vs b' for each field where two stamps differ (for error messages)."""
    a, b = a or {}, b or {}
    return [f"{f}: {a.get(f)!r} vs {b.get(f)!r}" for f in PROTOCOL_FIELDS if a.get(f) != b.get(f)]


def entry_protocol(per_benchmark: dict[str, dict[str, Any] | None]) -> dict[str, Any] | None:
    """The protocol of a leaderboard line: the settings shared by its benchmarks, plus each
    benchmark's own (n, file hash, problem count). ``None`` when a benchmark has no stamp."""
    if not per_benchmark or any(not p for p in per_benchmark.values()):
        return None
    stamps = list(per_benchmark.values())
    shared = {f: stamps[0].get(f) for f in ("temperature", "top_p", "max_new_tokens", "grader", "require_think")}
    if any(s.get(f) != v for s in stamps for f, v in shared.items()):
        shared = {f: sorted({json.dumps(s.get(f)) for s in stamps}) for f in shared}  # mixed: keep all values
    return {**shared, "benchmarks": {name: {"n": s.get("n"), "benchmark_sha256": s.get("benchmark_sha256"),
                                            "n_problems": s.get("n_problems")}
                                     for name, s in sorted(per_benchmark.items())}}


def protocol_key(protocol: dict[str, Any] | None) -> str | None:
    """A short stable name of a protocol: ``p-`` + 10 hex digits of the sha256 of its canonical JSON."""
    if not protocol:
        return None
    canon = json.dumps(protocol, sort_keys=True, separators=(",", ":"))
    return "p-" + hashlib.sha256(canon.encode()).hexdigest()[:10]


def protocol_label(protocol: dict[str, Any] | None) -> str:
    """One line for tables: 'n=8 T=0.6 top_p=1 max=256 deepscaler-v1' (+ per-benchmark n when mixed)."""
    if not protocol:
        return "protocol unknown"
    benches = protocol.get("benchmarks") or {}
    ns = sorted({b.get("n") for b in benches.values()} - {None}) if benches else [protocol.get("n")]
    n = "/".join(str(x) for x in ns) if ns else "?"
    return (f"n={n} T={_g(protocol.get('temperature'))} top_p={_g(protocol.get('top_p'))} "
            f"max={protocol.get('max_new_tokens')} {protocol.get('grader')}"
            + (" think" if protocol.get("require_think") is True else ""))


def _g(v: Any) -> str:
    return f"{v:g}" if isinstance(v, (int, float)) else str(v)
