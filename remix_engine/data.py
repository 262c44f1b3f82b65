"""Prompt sources and prompt rendering.

Sources (`load_problems`):

* ``"toy"``, ``"toy-long"`` — the synthetic arithmetic tasks (remix_engine/toy.py);
* a file: ``.jsonl`` (one ``{"id", "problem", "answer"}`` object per line), ``.json`` (one array of
  such objects, as DeepScaleR-Preview's ``deepscaler.json``) or ``.parquet``; extra keys go to
  `meta`, a missing ``id`` becomes ``<file stem>-<line or index>``, a missing ``answer`` is taken from
  the last ``\\boxed{}`` of ``solution``. Minerva-style rows whose ``meta.answers_raw`` is a list get
  that list (whitespace-trimmed) as their answer, so a response matching any accepted string is
  correct;
* a benchmark name — ``aime24``, ``amc23``, ``math500``, ``minerva``, ``olympiadbench`` (or any
  ``<name>.jsonl``) in the directory named by ``$REMIX_BENCHMARKS_DIR``, by default
  ``../shared/data/benchmarks`` next to the repository when it exists (the lookup is
  benchmarks.py's; `load_benchmark` loads one for evaluation, with its file's version stamp);
* ``"hf:<dataset id>[:split]"`` — a Hugging Face dataset through the optional `datasets` package.

Prompts (`render_prompt`, `encode_prompts`, `tokenize_problems`) follow remix_algorithm.md §6.1: the problem plus the
DeepScaleR instruction as one user turn, rendered with the tokenizer's chat template
(add_generation_prompt=True), then tokenised *without* adding special tokens again (the template
already holds the BOS token, as verl does).
"""

from __future__ import annotations

import json
import os
from array import array
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from remix_engine.benchmarks import (
    BENCHMARKS,
    Benchmark,
    EvaluationError,
    file_sha,
    resolve_benchmark,
    resolve_benchmark_spec,
)
from remix_engine.problem import DataError, Problem
from remix_engine.prompts import render_user_turn
from remix_engine.reward.grader import last_boxed_content
from remix_engine.toy import TASKS as TOY_TASKS
from remix_engine.toy import toy_problems

TOY_DEFAULT_SIZE = {"train": 10_000, "heldout": 500}

def _answer_from_row(row: dict[str, Any], where: str) -> str | list[str]:
    meta = row.get("meta")
    raw_list = meta.get("answers_raw") if isinstance(meta, dict) else None
    if isinstance(raw_list, list) and raw_list:
        answers = [str(a).strip() for a in raw_list if str(a).strip()]
        if answers:
            return answers
    if "answer" not in row:
        raise DataError(f"{where}: row has no 'answer'")
    ans = row["answer"]
    if isinstance(ans, list):
        answers = [_scalar_answer(a, where) for a in ans]
        if not answers:
            raise DataError(f"{where}: 'answer' is an empty list")
        return answers if len(answers) > 1 else answers[0]
    return _scalar_answer(ans, where)


def _scalar_answer(ans: Any, where: str) -> str:
    if ans is None or isinstance(ans, (dict, list)):
        raise DataError(f"{where}: 'answer' must be a string or number, got {type(ans).__name__}")
    if isinstance(ans, bool):
        raise DataError(f"{where}: 'answer' must be a string or number, got a boolean")
    if isinstance(ans, float) and ans.is_integer():
        return str(int(ans))
    text = str(ans).strip()
    if not text:
        raise DataError(f"{where}: 'answer' is empty")
    return text


def _problem_from_row(row: Any, where: str, default_id: str) -> Problem:
    """One problem from a row of any source. The problem text comes from the first of
    `PROBLEM_KEYS` present; the answer from ``answer`` (or its aliases), else the last \\boxed{} of a
    ``solution`` (DeepScaleR-Preview rows carry ``problem``/``answer``/``solution``). Other keys go
    to `meta`."""
    if not isinstance(row, dict):
        raise DataError(f"{where}: expected a JSON object, got {type(row).__name__}")
    pkey = next((k for k in PROBLEM_KEYS if k in row), "problem")
    problem = row.get(pkey)
    if not isinstance(problem, str) or not problem.strip():
        raise DataError(f"{where}: row needs a non-empty string '{pkey}'")
    row = dict(row)
    # Columnar sources (parquet, hf:) hold a null where a row has no answer.
    akey = next((k for k in ANSWER_KEYS if row.get(k) is not None), None)
    if akey is not None:
        row["answer"] = row[akey]
    elif isinstance(row.get("solution"), str) and (boxed := last_boxed_content(row["solution"])):
        row["answer"] = boxed
    answer = _answer_from_row(row, where)
    meta = dict(row["meta"]) if isinstance(row.get("meta"), dict) else {}
    for key, value in row.items():
        if key not in ("id", pkey, "answer", "meta") and _jsonable(value):
            meta.setdefault(key, value)
    pid = row.get("id")
    return Problem(id=str(pid) if pid not in (None, "") else default_id, problem=problem, answer=answer, meta=meta)


def _problems_from_rows(rows, name: str, where, limit: int | None) -> list[Problem]:
    """Problems from an iterable of (position, row); ids must be unique (the first use is named)."""
    out: list[Problem] = []
    seen: dict[str, str] = {}
    if limit == 0:
        return out
    for position, row in rows:
        problem = _problem_from_row(row, where(position), f"{name}-{position}")
        if problem.id in seen:
            raise DataError(f"{where(position)}: duplicate id '{problem.id}' (first at {seen[problem.id]})")
        seen[problem.id] = where(position)
        out.append(problem)
        if limit is not None and len(out) >= limit:
            break  # before reading (and validating) the next row
    return out


def _jsonl_rows(path: Path):
    with path.open(encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                yield lineno, json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError(f"{path}:{lineno}: not valid JSON ({exc.msg})") from None


def _json_array_rows(path: Path):
    try:
        rows = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno})") from None
    if not isinstance(rows, list):
        raise DataError(f"{path}: expected a JSON array of problems, got a JSON {type(rows).__name__} "
                        "(one object per line is a .jsonl file)")
    return enumerate(rows)


def _parquet_rows(path: Path):
    try:
        import pyarrow.parquet as pq  # noqa: PLC0415 - optional extra
    except ImportError:
        raise DataError(f"{path}: reading parquet needs pyarrow: pip install 'remix-studio[datasets]'") from None
    try:
        table = pq.read_table(path)
    except Exception as exc:  # pyarrow raises its own error types for corrupt or non-parquet files
        raise DataError(f"{path}: not a readable parquet file ({type(exc).__name__}: {exc})") from None
    return enumerate(table.to_pylist())


_FILE_READERS = {".jsonl": (_jsonl_rows, "line"), ".json": (_json_array_rows, "item"),
                 ".parquet": (_parquet_rows, "row")}
DATA_FILE_SUFFIXES = tuple(_FILE_READERS)


def load_file(path: str | Path, limit: int | None = None) -> list[Problem]:
    """Problems from a .jsonl, .json (one array of objects) or .parquet file; a bad row raises
    DataError naming the file and the line (JSONL) or the 0-based item/row index."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise DataError(f"data file not found: {path}")
    if path.suffix not in _FILE_READERS:
        raise DataError(f"{path}: unknown data file type '{path.suffix}' (use {', '.join(DATA_FILE_SUFFIXES)})")
    reader, unit = _FILE_READERS[path.suffix]
    out = _problems_from_rows(reader(path), path.stem, lambda pos: f"{path}:{pos}" if unit == "line"
                              else f"{path} {unit} {pos}", limit)
    if not out and limit != 0:
        raise DataError(f"{path}: no problems in file")
    return out



PROBLEM_KEYS = ("problem", "question", "prompt", "query")
ANSWER_KEYS = ("answer", "final_answer", "ground_truth")


def load_hf(spec: str, split: str = "train", limit: int | None = None, seed: int = 0) -> list[Problem]:
    """'hf:<dataset id>[:split]' through `datasets` (optional dependency, imported lazily)."""
    body = spec.removeprefix("hf:")
    dataset_id, _, split_override = body.partition(":")
    if not dataset_id:
        raise DataError(f"'{spec}': expected hf:<dataset id>[:split]")
    # The engine asks for split "heldout"; Hugging Face datasets call that "test".
    split = split_override or ("test" if split == "heldout" else split)
    try:
        import datasets  # noqa: PLC0415 - optional extra
    except ImportError:
        raise DataError(
            f"'{spec}' needs the Hugging Face `datasets` package: pip install 'remix-studio[datasets]'"
        ) from None
    try:
        ds = datasets.load_dataset(dataset_id, split=split)
    except Exception as exc:  # network, auth, unknown id or split: all surface the same way
        raise DataError(
            f"could not load Hugging Face dataset '{dataset_id}' (split '{split}'): {type(exc).__name__}: {exc}. "
            "Is the hub reachable (HF_HUB_OFFLINE, proxy) or the dataset cached locally?"
        ) from None
    columns = list(ds.column_names)
    if not any(k in columns for k in PROBLEM_KEYS) or not any(k in columns for k in (*ANSWER_KEYS, "solution")):
        raise DataError(f"hf:{dataset_id}: need a problem column ({'/'.join(PROBLEM_KEYS)}) and an "
                        f"answer column ({'/'.join(ANSWER_KEYS)}, or a solution with \\boxed{{}}); "
                        f"columns are {columns}")
    if limit is not None:
        ds = ds.select(range(min(limit, len(ds))))
    return _problems_from_rows(enumerate(ds), f"{dataset_id}-{split}",
                               lambda i: f"hf:{dataset_id}[{split}] row {i}", None)


def _jsonable(v: Any) -> bool:
    return isinstance(v, (str, int, float, bool, type(None), list, dict))


def load_problems(source: str, split: str = "train", limit: int | None = None, seed: int = 0) -> list[Problem]:
    """Problems from `source` (see the module docstring).

    `split` matters for ``toy`` ('train' or 'heldout') and ``hf:`` sources; files and benchmarks
    are single lists. `limit` keeps the first `limit` problems (file order). `seed` only changes
    the toy training problems (held-out toy problems are a fixed list).
    """
    if limit is not None and limit < 0:
        raise DataError("limit must be >= 0")
    source = source.strip()
    if source in TOY_TASKS:
        if split not in ("train", "heldout"):
            raise DataError(f"{source}: split must be 'train' or 'heldout', got '{split}'")
        return toy_problems(split, TOY_DEFAULT_SIZE[split] if limit is None else limit, seed,  # type: ignore[arg-type]
                            task=source)
    if source.startswith("hf:"):
        return load_hf(source, split=split, limit=limit, seed=seed)
    path = Path(source).expanduser()
    looks_like_path = source.endswith(DATA_FILE_SUFFIXES) or os.sep in source or path.is_file()
    if looks_like_path:
        return load_file(path, limit)
    if source.isidentifier() or source.replace("-", "_").isidentifier():
        return load_file(resolve_benchmark(source), limit)
    raise DataError(f"unknown data source '{source}': use {' or '.join(map(repr, TOY_TASKS))}, a .jsonl/.json/.parquet "
                    f"path, a benchmark name ({', '.join(BENCHMARKS)}) or hf:<dataset id>[:split]")


def load_benchmark(spec: str, limit: int | None = None) -> Benchmark:
    """Problems of one benchmark (the first `limit` in file order)."""
    name, source = resolve_benchmark_spec(spec)
    try:
        if source.startswith("hf:"):
            _, dataset_id, split = source.split(":", 2)
            problems = load_hf(f"hf:{dataset_id}", split=split, limit=limit)
            return Benchmark(name, source, problems, None)
        problems = load_file(source, limit)
    except DataError as exc:
        raise EvaluationError(f"benchmark '{spec}': {exc}") from None
    return Benchmark(name, source, problems, file_sha(Path(source)))


# --------------------------------------------------------------------------------------------
# Prompts
# --------------------------------------------------------------------------------------------


def render_prompt(tokenizer, problem_text: str, data_cfg, use_chat_template: bool) -> str:
    """The prompt text: problem + ``data_cfg.prompt_suffix`` as one user turn (prompts.render_user_turn)."""
    return render_user_turn(tokenizer, problem_text + (data_cfg.prompt_suffix or ""), use_chat_template)


class PromptTooLongError(DataError):
    pass


def encode_prompts(
    tokenizer,
    texts: list[str],
    max_prompt_tokens: int,
    *,
    overflow: Literal["error", "truncate_left"] = "error",
    add_special_tokens: bool = False,
) -> list[list[int]]:
    """Token ids of rendered prompts, unpadded.

    Special tokens are not added (the chat template already holds BOS). A prompt longer than
    `max_prompt_tokens` raises PromptTooLongError (``overflow="error"``, the default, naming the
    prompt and its length) or keeps its *last* `max_prompt_tokens` tokens (``"truncate_left"``:
    the generation prompt at the end survives, the beginning of the problem is lost).
    """
    if not texts:
        return []
    ids = tokenizer(list(texts), add_special_tokens=add_special_tokens)["input_ids"]
    out: list[list[int]] = []
    for i, row in enumerate(ids):
        row = list(row)
        if len(row) > max_prompt_tokens:
            if overflow == "error":
                preview = texts[i][:60].replace("\n", " ")
                raise PromptTooLongError(
                    f"prompt {i} has {len(row)} tokens > data.max_prompt_tokens={max_prompt_tokens} "
                    f"('{preview}...'); raise the limit or filter long problems"
                )
            row = row[-max_prompt_tokens:]
        out.append(row)
    return out


@dataclass
class TokenizedProblems:
    """Problems whose rendered prompt fits ``data.max_prompt_tokens``, with their token ids.

    `dropped` counts the problems left out as too long: filtering at load time (verl's
    ``filter_overlong_prompts``) means a long problem can never stop a run mid-way.
    """

    problems: list[Problem]
    prompt_ids: list[array]  # one per kept problem; array('l') holds 40k prompts in a few MB
    dropped: int

    def report(self, source: str) -> dict[str, Any]:
        return {"source": source, "problems": len(self.problems) + self.dropped,
                "kept": len(self.problems), "dropped_overlong": self.dropped}


def tokenize_problems(tokenizer, problems: list[Problem], data_cfg, use_chat_template: bool,
                      chunk: int = 1024) -> TokenizedProblems:
    """Render and tokenise every problem once, in batches, dropping the over-long ones."""
    kept: list[Problem] = []
    ids_out: list[array] = []
    for start in range(0, len(problems), chunk):
        part = problems[start : start + chunk]
        texts = [render_prompt(tokenizer, p.problem, data_cfg, use_chat_template) for p in part]
        for problem, ids in zip(part, tokenizer(texts, add_special_tokens=False)["input_ids"], strict=True):
            if len(ids) <= data_cfg.max_prompt_tokens:
                kept.append(problem)
                ids_out.append(array("l", ids))
    return TokenizedProblems(kept, ids_out, len(problems) - len(kept))
