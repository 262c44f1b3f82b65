"""The benchmarks: which ones the paper reports (one list, served to the dashboard by the API),
where their files are found, how a spec names one, and the version stamp of a benchmark file.

A spec is a name (``aime24``, ``amc23``, ``math500``, ``minerva``, ``olympiadbench`` or any
``<name>.jsonl``) looked up in ``$REMIX_BENCHMARKS_DIR``, else in ``../shared/data/benchmarks`` next to
the repository; a JSONL path (``{"problem", "answer"}`` rows); or a Hugging Face dataset
(``hf:<id>[:split]`` or a bare ``owner/name`` that is not a local path; split ``test`` by default).
Loading the problems is data.py's job (`load_benchmark`).
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from remix_engine.problem import DataError, Problem

# The paper's five benchmarks (remix_algorithm.md §8.1), in its table order, with their column labels.
BENCHMARKS = ("aime24", "amc23", "math500", "minerva", "olympiadbench")
LABELS = {"aime24": "AIME24", "amc23": "AMC23", "math500": "MATH500", "minerva": "Minerva",
          "olympiadbench": "Olympiad"}

_REPO_ROOT = Path(__file__).resolve().parent.parent


class EvaluationError(ValueError):
    """Bad evaluation input (benchmark, model, option); the message names it."""


def benchmark_search_dirs() -> list[Path]:
    """Folders searched for ``<name>.jsonl``: $REMIX_BENCHMARKS_DIR (if set), then ../shared/data/benchmarks.

    (Not REMIX_DATA_DIR: that is the studio's folder for its database and runs.)
    """
    dirs = [Path(env).expanduser()] if (env := os.environ.get("REMIX_BENCHMARKS_DIR")) else []
    return dirs + [_REPO_ROOT.parent / "shared" / "data" / "benchmarks"]


def find_benchmark_file(name: str) -> Path | None:
    """The first ``<name>.jsonl`` in the search folders, if any."""
    for directory in benchmark_search_dirs():
        if (directory / f"{name}.jsonl").is_file():
            return directory / f"{name}.jsonl"
    return None


def resolve_benchmark(name: str) -> Path:
    """The JSONL file of benchmark `name` (e.g. 'math500'); DataError if it is not there."""
    found = find_benchmark_file(name)
    if found is not None:
        return found
    searched = benchmark_search_dirs()
    have = sorted({p.stem for d in searched if d.is_dir() for p in d.glob("*.jsonl")})
    raise DataError(
        f"benchmark '{name}': no {name}.jsonl in {', '.join(map(str, searched))}"
        + (f" (available: {', '.join(have)})" if have else "; set REMIX_BENCHMARKS_DIR to the folder holding it")
    )


@dataclass
class Benchmark:
    name: str  # short name used as the metric key (file stem or dataset id)
    source: str  # resolved path or hf:<id>:<split>
    problems: list[Problem]
    sha256: str | None = None  # first 16 hex digits of the file (version stamp), None for hub data


def file_sha(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:16]


def resolve_benchmark_spec(spec: str) -> tuple[str, str]:
    """``spec`` -> (short name, source): a JSONL path or ``hf:<id>:<split>``. Raises EvaluationError."""
    spec = spec.strip()
    if not spec:
        raise EvaluationError("benchmark: empty name")
    if spec.startswith("hf:"):
        body = spec[3:]
        dataset_id, _, split = body.partition(":")
        if not dataset_id:
            raise EvaluationError(f"benchmark '{spec}': expected hf:<dataset id>[:split]")
        return dataset_id.rsplit("/", 1)[-1], f"hf:{dataset_id}:{split or 'test'}"
    path = Path(spec).expanduser()
    if path.is_file():
        return path.stem, str(path.resolve())
    if spec.endswith(".jsonl") or spec.startswith((".", "/", "~")):
        raise EvaluationError(f"benchmark '{spec}': file not found")
    if re.fullmatch(r"[A-Za-z0-9_.\-]+", spec):
        found = find_benchmark_file(spec)
        if found is not None:
            return spec, str(found.resolve())
        where = ", ".join(str(d) for d in benchmark_search_dirs())
        raise EvaluationError(f"benchmark '{spec}': no {spec}.jsonl in {where} (set REMIX_BENCHMARKS_DIR, "
                              f"pass a .jsonl path or hf:<dataset id>; known names: {', '.join(BENCHMARKS)})")
    if re.fullmatch(r"[A-Za-z0-9_.\-]+/[A-Za-z0-9_.\-]+", spec):  # owner/name: a hub dataset id
        return spec.rsplit("/", 1)[-1], f"hf:{spec}:test"
    raise EvaluationError(f"benchmark '{spec}': not a benchmark name, .jsonl path or Hugging Face dataset id")


def unique_names(specs: Sequence[str]) -> list[str]:
    """Short names of `specs`, made unique (``name``, ``name_2``, ...) for metric keys."""
    out: list[str] = []
    for spec in specs:
        base = resolve_benchmark_spec(spec)[0]
        name, i = base, 2
        while name in out:
            name, i = f"{base}_{i}", i + 1
        out.append(name)
    return out


