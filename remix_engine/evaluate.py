"""Benchmark evaluation with the ReMix paper's protocol (remix_algorithm.md §6.1, §8).

    evaluate("runs/demo/checkpoints/step_000100/policy", ["aime24", "math500"], mode="greedy")

* **Prompt**: the training prompt (prompts.py: the problem plus the DeepScaleR instruction as one
  user turn in the chat template, §6.1). Configurable through ``prompt_template`` (must contain
  ``{problem}``) and ``use_chat_template``.
* **Decoding** (§8.2): ``mode="greedy"`` is temperature 0 with one sample per problem (the
  headline Pass@1). ``mode="sample"`` defaults to temperature 0.1, top_p 1, and — unless
  ``samples`` is given — the paper's sample counts: 32 for AIME 2024 and AMC 2023 (avg@32), one
  for the other benchmarks.
* **Grading**: the project's DeepScaleR grader (tag ``deepscaler-v1``) in a :class:`GraderPool`,
  with answer correctness regardless of ``</think>`` (``require_think=False``; the paper's
  ``is_correct_finalanswer``). math-verify 0.9.0 runs in the same pool with its own timeouts
  disabled and is reported as an extra column (``mathverify``), never as the score.
* **Metrics** per benchmark: ``pass@1`` (mean correctness over all samples; with k samples this
  is avg@k, the paper's T=0.1 number), ``avg@k`` and ``k``, ``pass@k`` (a problem counts when any
  of its k samples is correct), ``mathverify``, format/truncation rates, mean response length,
  problem and sample counts, and the benchmark file's sha256. ``average`` is the unweighted mean
  over the benchmarks (§8.1).
* **Error bars** (eval_stats.py): ``estimates`` holds the unbiased pass@k for k = 1, 2, 4, …, n,
  maj@n and avg@n, each ``{"value", "ci95"}`` (95% bootstrap over problems, seeded, 1,000
  resamples by default); ``ci95`` is pass@1's interval. ``protocol`` is the result's protocol stamp
  (eval_protocol.py: n, temperature, top_p, max new tokens, grader, require_think, benchmark
  file hash, problem count); results with different stamps are not ranked together.
* **Benchmarks**: names, paths or hub ids, looked up by benchmarks.py and loaded by
  data.load_benchmark.

Greedy evaluation is deterministic; sampled evaluation is seeded (``seed``) per benchmark and batch.

`evaluate_policy` is the small variant the trainer calls during training (scheduled benchmark
evaluation): it reuses the trainer's model, tokenizer, rollout backend and grader pool and returns
flat ``eval/<benchmark>/pass@1`` metrics. What `remix eval` writes: eval_report.py.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from remix_engine import eval_protocol, eval_stats
from remix_engine.benchmarks import (
    BENCHMARKS,
    Benchmark,
    EvaluationError,
    unique_names,
)
from remix_engine.data import load_benchmark
from remix_engine.prompts import DEFAULT_TEMPLATE, fill_template, read_prompt_settings, render_user_turn
from remix_engine.reward.grader import GRADER_TAG, normalize_mathd

log = logging.getLogger("remix.evaluate")

# §8.2: T=0.1 numbers are avg@32 for AIME and AMC, one run for the others.
PAPER_SAMPLES = {"aime24": 32, "amc23": 32}
PAPER_SAMPLE_TEMPERATURE = 0.1
PAPER_MAX_NEW_TOKENS = 8192



class EvaluationCancelled(RuntimeError):
    """`should_stop` asked the evaluation to stop between batches."""


# --------------------------------------------------------------------------------------------
# Benchmarks
# --------------------------------------------------------------------------------------------


# --------------------------------------------------------------------------------------------
# Models
# --------------------------------------------------------------------------------------------


def resolve_model_path(model: str | os.PathLike) -> str:
    """A checkpoint directory, a trainer checkpoint (``step_N`` holding ``policy/``), a run directory
    (its newest checkpoint) or a hub id (returned unchanged)."""
    text = str(model)
    path = Path(text).expanduser()
    if text == "toy" and not path.exists():
        raise EvaluationError("model 'toy': the toy preset is not a checkpoint; evaluate a toy run instead "
                              "(RUN or RUN/checkpoints/step_NNNNNN)")
    if not path.exists():
        return text
    if (path / "config.json").is_file():
        return str(path)
    if (path / "policy" / "config.json").is_file():
        return str(path / "policy")
    ckpts = sorted(p for p in (path / "checkpoints").glob("step_*") if (p / "policy" / "config.json").is_file()) \
        if (path / "checkpoints").is_dir() else []
    if ckpts:
        return str(ckpts[-1] / "policy")
    raise EvaluationError(f"model '{text}': no config.json there, nor a policy/ or checkpoints/step_*/policy below it")


def load_eval_model(model: str | os.PathLike, dtype: str = "float32", *, trust_remote_code: bool = False):
    """(model, tokenizer, resolved path) for evaluation, through `models.load_pretrained`.

    Toy checkpoints keep their character-level tokenizer (load_pretrained reads it with
    ``PreTrainedTokenizerFast``; ``AutoTokenizer`` would turn it into a byte-level Qwen2 tokenizer
    that drops spaces, newlines and unknown characters). A test guards this.
    """
    from remix_engine.models import ModelLoadError, load_pretrained

    path = resolve_model_path(model)
    try:
        net, tokenizer = load_pretrained(path, dtype, trust_remote_code=trust_remote_code)
    except ModelLoadError as exc:
        raise EvaluationError(f"model: {exc}") from None
    return net, tokenizer, path


# --------------------------------------------------------------------------------------------
# Options
# --------------------------------------------------------------------------------------------


@dataclass
class EvalOptions:
    mode: Literal["greedy", "sample"] = "greedy"
    temperature: float | None = None  # greedy: 0; sample: 0.1 unless set
    samples: int | None = None  # k per problem; None: 1 (greedy) or the paper's counts (sample)
    top_p: float = 1.0
    max_new_tokens: int = PAPER_MAX_NEW_TOKENS
    max_prompt_tokens: int | None = None  # None: whatever the model's context leaves
    # None: as the checkpoint was trained (its remix_prompt.json), else the paper's template / True
    prompt_template: str | None = None
    use_chat_template: bool | None = None
    require_think: bool = False  # False: correctness regardless of </think> (the paper's Pass@1)
    mathverify: bool = True
    batch_size: int = 64  # sequences per generate call
    seed: int = 0
    # resamples of the 95% bootstrap intervals over problems (eval_stats; seeded, deterministic)
    bootstrap_resamples: int = eval_stats.DEFAULT_RESAMPLES

    def __post_init__(self) -> None:
        if self.mode not in ("greedy", "sample"):
            raise EvaluationError(f"mode: must be 'greedy' or 'sample' (got {self.mode!r})")
        if self.mode == "greedy":
            if self.temperature not in (None, 0, 0.0):
                raise EvaluationError("temperature: greedy decoding has temperature 0; use mode='sample' for T > 0")
            self.temperature = 0.0
        else:
            self.temperature = PAPER_SAMPLE_TEMPERATURE if self.temperature is None else float(self.temperature)
            if not self.temperature > 0:
                raise EvaluationError("temperature: sampling needs a temperature > 0 (greedy is mode='greedy')")
        if self.samples is not None and self.samples < 1:
            raise EvaluationError("samples: must be at least 1")
        if self.mode == "greedy" and self.samples not in (None, 1):
            raise EvaluationError("samples: greedy decoding gives one answer per problem; use mode='sample' for k > 1")
        if self.max_new_tokens < 1:
            raise EvaluationError("max_new_tokens: must be at least 1")
        if self.max_prompt_tokens is not None and self.max_prompt_tokens < 1:
            raise EvaluationError("max_prompt_tokens: must be at least 1")
        if self.prompt_template is not None and "{problem}" not in self.prompt_template:
            raise EvaluationError("prompt_template: must contain {problem}")
        if self.batch_size < 1:
            raise EvaluationError("batch_size: must be at least 1")
        if not 0 < self.top_p <= 1:
            raise EvaluationError("top_p: must be in (0, 1]")
        if self.bootstrap_resamples < 1:
            raise EvaluationError("bootstrap_resamples: must be at least 1")

    def with_prompt_of(self, model_path: str | None) -> tuple[EvalOptions, str]:
        """These options with the prompt settings filled in — given ones first, then the ones saved
        with the checkpoint, then the paper's — and where the template came from."""
        saved = read_prompt_settings(model_path) if model_path else None
        fill = saved or {"prompt_template": DEFAULT_TEMPLATE, "use_chat_template": True}
        resolved = replace(self, prompt_template=self.prompt_template if self.prompt_template is not None
                           else fill["prompt_template"],
                           use_chat_template=self.use_chat_template if self.use_chat_template is not None
                           else fill["use_chat_template"])
        return resolved, "given" if self.prompt_template is not None else "checkpoint" if saved else "default"

    def k_for(self, benchmark: str) -> int:
        if self.mode == "greedy":
            return 1
        if self.samples is not None:
            return self.samples
        return PAPER_SAMPLES.get(benchmark, 1)

    @property
    def mode_label(self) -> str:
        """'greedy' or 't<temperature>' (e.g. 't0.1'), the leaderboard's mode names."""
        return "greedy" if self.mode == "greedy" else f"t{self.temperature:g}"


_CAPS_REPORTED: set[tuple[int, int]] = set()


def _context_limits(model, max_new_tokens: int, max_prompt_tokens: int | None) -> tuple[int, int | None]:
    """(max_new_tokens, prompt token cap) that fit the model's position limit (the toy has 256)."""
    limit = getattr(getattr(model, "config", None), "max_position_embeddings", None)
    if not isinstance(limit, int) or limit <= 0:
        return max_new_tokens, max_prompt_tokens
    new = max_new_tokens
    if new > limit // 2:
        new_capped = limit // 2
        if new_capped < new and (new, limit) not in _CAPS_REPORTED:  # once, not once per benchmark
            _CAPS_REPORTED.add((new, limit))
            log.warning("max_new_tokens %d does not fit the model's %d positions: responses are capped at %d tokens",
                        new, limit, new_capped)
        new = new_capped
    cap = limit - new
    return new, cap if max_prompt_tokens is None else min(cap, max_prompt_tokens)


def _encode(tokenizer, texts: list[str], cap: int | None) -> tuple[list[list[int]], list[bool]]:
    """Token ids of rendered prompts; prompts over `cap` keep their last `cap` tokens (flagged)."""
    ids = tokenizer(list(texts), add_special_tokens=False, verbose=False)["input_ids"]
    out, cut = [], []
    for row in ids:
        row = list(row)
        too_long = cap is not None and len(row) > cap
        out.append(row[-cap:] if too_long else row)
        cut.append(too_long)
    return out, cut


def _reference_text(answer: str | list[str]) -> str:
    return answer if isinstance(answer, str) else json.dumps(answer, ensure_ascii=False)


def _mean(values: Iterable[float]) -> float | None:
    vals = list(values)
    return sum(vals) / len(vals) if vals else None


# --------------------------------------------------------------------------------------------
# The core: generate, grade, aggregate one benchmark
# --------------------------------------------------------------------------------------------


@dataclass
class BenchmarkResult:
    name: str
    metrics: dict[str, Any]
    samples: list[dict[str, Any]] = field(default_factory=list)


def run_benchmark(
    benchmark: Benchmark,
    *,
    model,
    tokenizer,
    backend,
    grader,
    options: EvalOptions,
    seed_offset: int = 0,
    on_samples: Callable[[list[dict[str, Any]]], None] | None = None,
    progress: Callable[[str, int, int], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    keep_samples: bool = True,
) -> BenchmarkResult:
    """Generate k responses per problem, grade them and aggregate (see the module docstring)."""
    from remix_engine.rollout import SamplingParams

    name = benchmark.name
    k = options.k_for(name)
    max_new, prompt_cap = _context_limits(model, options.max_new_tokens, options.max_prompt_tokens)
    problems = benchmark.problems
    per_call = max(1, options.batch_size // k)
    total = len(problems) * k
    correct_by_problem: dict[str, int] = {}
    verdicts: dict[str, list[bool]] = {}  # per problem, in sample order: for pass@k / maj@k / avg@k
    votes: dict[str, list[str | None]] = {}
    rows_all: list[dict[str, Any]] = []
    n_correct = n_format = n_trunc = n_prompt_cut = 0
    lengths = 0
    mv_values: list[bool] = []
    agree = 0
    done = 0
    tick = time.perf_counter()
    for b, lo in enumerate(range(0, len(problems), per_call)):
        if should_stop is not None and should_stop():
            raise EvaluationCancelled(f"stopped during {name} after {done} of {total} samples")
        chunk = problems[lo: lo + per_call]
        texts = [render_user_turn(tokenizer, fill_template(options.prompt_template, p.problem), options.use_chat_template)
                 for p in chunk]
        prompt_ids, cut = _encode(tokenizer, texts, prompt_cap)
        seed = None if options.mode == "greedy" else options.seed + 1_000_003 * seed_offset + 7919 * b
        result = backend.generate(prompt_ids, SamplingParams(
            n=k, temperature=options.temperature, top_p=options.top_p, max_new_tokens=max_new, seed=seed))
        pairs = [(result.texts[i], chunk[i // k].answer) for i in range(len(result))]
        grades = grader.grade_many(pairs, require_think=options.require_think)
        mv = grader.mathverify_many(pairs) if options.mathverify else [None] * len(pairs)
        rows = []
        for i, g in enumerate(grades):
            p = chunk[i // k]
            correct_by_problem[p.id] = correct_by_problem.get(p.id, 0) + int(g.correct)
            verdicts.setdefault(p.id, []).append(bool(g.correct))
            votes.setdefault(p.id, []).append(vote_key(g.extracted))
            n_correct += int(g.correct)
            n_format += int(g.format_ok)
            n_trunc += int(result.truncated[i])
            n_prompt_cut += int(cut[i // k])
            lengths += len(result.response_ids[i])
            if mv[i] is not None:
                mv_values.append(bool(mv[i]))
                agree += int(bool(mv[i]) == g.correct)
            rows.append({
                "benchmark": name, "problem_id": p.id, "sample_index": i % k, "prompt": texts[i // k],
                "response": result.texts[i], "extracted": g.extracted, "reference": _reference_text(p.answer),
                "correct": bool(g.correct), "mathverify": None if mv[i] is None else bool(mv[i]),
                "format_ok": bool(g.format_ok), "reason": g.reason, "length": len(result.response_ids[i]),
                "truncated": bool(result.truncated[i]), "prompt_truncated": bool(cut[i // k]),
            })
        done += len(rows)
        if on_samples is not None:
            on_samples(rows)
        if keep_samples:
            rows_all.extend(rows)
        if progress is not None:
            progress(name, done, total)
    n = max(done, 1)
    pass1 = n_correct / n if done else None
    order = [p.id for p in problems if p.id in verdicts]
    est = eval_stats.estimates([verdicts[i] for i in order], [votes[i] for i in order],
                               n_resamples=options.bootstrap_resamples)
    metrics: dict[str, Any] = {
        "pass@1": pass1,
        "avg@k": pass1,
        "k": k,
        "pass@k": (_mean(1.0 if c > 0 else 0.0 for c in correct_by_problem.values())),
        "mathverify": (sum(mv_values) / len(mv_values)) if mv_values else None,
        "mathverify_agreement": (agree / len(mv_values)) if mv_values else None,
        "format_ok": n_format / n if done else None,
        "truncated": n_trunc / n if done else None,
        "prompt_truncated": n_prompt_cut / n if done else None,
        "response_length": lengths / n if done else None,
        "n_problems": len(problems),
        "n_samples": done,
        "temperature": options.temperature,
        "max_new_tokens": max_new,
        "max_prompt_tokens": prompt_cap,
        "source": benchmark.source,
        "sha256": benchmark.sha256,
        "timing_s": round(time.perf_counter() - tick, 3),
        "top_p": options.top_p,
        # fractions with 95% bootstrap intervals over problems: pass@1/2/4/…/k, maj@k, avg@k
        "estimates": est,
        "ci95": (est.get("pass@1") or {}).get("ci95"),
        "protocol": eval_protocol.stamp(n=k, temperature=options.temperature, top_p=options.top_p,
                                        max_new_tokens=max_new, grader=GRADER_TAG,
                                        require_think=options.require_think, benchmark_sha256=benchmark.sha256,
                                        n_problems=len(problems)),
    }
    return BenchmarkResult(name, metrics, rows_all)


def vote_key(extracted: str | None) -> str | None:
    """What maj@k votes with: the extracted answer in the grader's MATH normal form (so "0.5" and
    " .5" vote together); correct answers are merged by eval_stats.majority_vote anyway."""
    if extracted is None:
        return None
    try:
        return normalize_mathd(extracted)
    except Exception:  # noqa: BLE001 - a normaliser failure must not fail the evaluation
        return extracted.strip()


def average_metrics(per_benchmark: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Unweighted mean over benchmarks (§8.1) of pass@1, pass@k and mathverify; ``ci95`` is the
    interval of the pass@1 mean, combined from the benchmarks' intervals (eval_stats.combine_ci)."""
    out: dict[str, Any] = {"n_benchmarks": len(per_benchmark)}
    for key in ("pass@1", "pass@k", "mathverify"):
        vals = [m[key] for m in per_benchmark.values() if m.get(key) is not None]
        out[key] = sum(vals) / len(vals) if vals and len(vals) == len(per_benchmark) else None
    parts = [(m["pass@1"], m.get("ci95")) for m in per_benchmark.values() if m.get("pass@1") is not None]
    ci = eval_stats.combine_ci(parts) if parts and len(parts) == len(per_benchmark) else None
    out["ci95"] = list(ci) if ci else None
    return out


# --------------------------------------------------------------------------------------------
# Public entry points
# --------------------------------------------------------------------------------------------


class EvalSink:
    """Receives evaluation events (all optional). The CLI writes JSONL; the studio writes SQL."""

    def on_benchmark_start(self, name: str, info: dict[str, Any]) -> None: ...

    def on_samples(self, name: str, rows: list[dict[str, Any]]) -> None: ...

    def on_benchmark_end(self, name: str, metrics: dict[str, Any]) -> None: ...

    def should_stop(self) -> bool:
        return False


class Evaluator:
    """A loaded model + rollout backend + grader pool that evaluates benchmarks one by one."""

    def __init__(self, model_or_path, options: EvalOptions | None = None, *, tokenizer=None, backend: str = "hf",
                 dtype: str = "float32", grader=None, trust_remote_code: bool = False, torch_threads: int | None = None,
                 gpu_memory_utilization: float = 0.5):
        import torch

        from remix_engine.reward.pool import GraderPool
        from remix_engine.rollout import make_backend

        options = options or EvalOptions()
        if torch_threads:
            torch.set_num_threads(torch_threads)
        if isinstance(model_or_path, (str, os.PathLike)):
            self.model, self.tokenizer, self.model_path = load_eval_model(model_or_path, dtype,
                                                                          trust_remote_code=trust_remote_code)
        else:
            if tokenizer is None:
                raise EvaluationError("tokenizer: required when a model object is passed")
            self.model, self.tokenizer, self.model_path = model_or_path, tokenizer, None
        self.options, self.prompt_source = options.with_prompt_of(self.model_path)
        if torch.cuda.is_available() and next(self.model.parameters()).device.type == "cpu" and backend == "hf":
            self.model.to("cuda")
        self.model.eval()
        self.backend_name = backend
        try:
            self.backend = make_backend(backend, self.model, self.tokenizer,
                                        gpu_memory_utilization=gpu_memory_utilization)
        except (RuntimeError, ValueError) as exc:
            raise EvaluationError(f"backend: {exc}") from None
        self._own_grader = grader is None
        self.grader = grader or GraderPool(processes=2, timeout_s=10.0)

    def close(self) -> None:
        if self._own_grader:
            self.grader.close()
        self.backend.close()

    def __enter__(self) -> Evaluator:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def run(self, benchmark: Benchmark, index: int = 0, *, sink: EvalSink | None = None,
            progress: Callable[[str, int, int], None] | None = None, keep_samples: bool = True) -> BenchmarkResult:
        sink = sink or EvalSink()
        info = {"source": benchmark.source, "sha256": benchmark.sha256, "n_problems": len(benchmark.problems),
                "k": self.options.k_for(benchmark.name), "temperature": self.options.temperature}
        sink.on_benchmark_start(benchmark.name, info)
        res = run_benchmark(benchmark, model=self.model, tokenizer=self.tokenizer, backend=self.backend,
                            grader=self.grader, options=self.options, seed_offset=index,
                            on_samples=lambda rows: sink.on_samples(benchmark.name, rows), progress=progress,
                            should_stop=sink.should_stop, keep_samples=keep_samples)
        sink.on_benchmark_end(benchmark.name, res.metrics)
        return res


def evaluate(
    model_or_path,
    benchmarks: Sequence[str] = BENCHMARKS,
    mode: Literal["greedy", "sample"] = "greedy",
    temperature: float | None = None,
    samples: int | None = None,
    max_new_tokens: int = PAPER_MAX_NEW_TOKENS,
    limit: int | None = None,
    *,
    top_p: float = 1.0,
    prompt_template: str | None = None,
    prompt_suffix: str | None = None,
    use_chat_template: bool | None = None,
    max_prompt_tokens: int | None = None,
    require_think: bool = False,
    mathverify: bool = True,
    backend: str = "hf",
    dtype: str = "float32",
    seed: int = 0,
    batch_size: int = 64,
    bootstrap_resamples: int = eval_stats.DEFAULT_RESAMPLES,
    tokenizer=None,
    grader=None,
    sink: EvalSink | None = None,
    progress: Callable[[str, int, int], None] | None = None,
    keep_samples: bool = True,
    torch_threads: int | None = None,
) -> dict[str, Any]:
    """Evaluate a model on benchmarks; returns the results dict (see the module docstring).

    `model_or_path`: a checkpoint directory, a trainer checkpoint or run directory, a hub id, or a
    model object (then pass `tokenizer`). `prompt_suffix` is a shortcut for the template
    ``"{problem}" + prompt_suffix``; without either (and without `use_chat_template`), a ReMix
    checkpoint is prompted the way its run trained, anything else the paper's way. The returned dict holds ``benchmarks`` (per-benchmark metrics),
    ``average``, the settings used, and ``samples`` (per-sample rows) when `keep_samples`.
    """
    if prompt_template is not None and prompt_suffix is not None:
        raise EvaluationError("prompt_template and prompt_suffix: give one of them")
    template = prompt_template if prompt_template is not None else (
        "{problem}" + prompt_suffix if prompt_suffix is not None else None)
    if limit is not None and limit < 1:
        raise EvaluationError("limit: must be at least 1")
    if not benchmarks:
        raise EvaluationError("benchmarks: give at least one")
    options = EvalOptions(mode=mode, temperature=temperature, samples=samples, top_p=top_p,
                          max_new_tokens=max_new_tokens,
                          max_prompt_tokens=max_prompt_tokens, prompt_template=template,
                          use_chat_template=use_chat_template, require_think=require_think, mathverify=mathverify,
                          batch_size=batch_size, seed=seed, bootstrap_resamples=bootstrap_resamples)
    names = unique_names(benchmarks)
    loaded = []
    for spec, name in zip(benchmarks, names, strict=True):
        bench = load_benchmark(spec, limit)
        bench.name = name
        loaded.append(bench)
    started = time.perf_counter()
    per: dict[str, dict[str, Any]] = {}
    samples_out: list[dict[str, Any]] = []
    with Evaluator(model_or_path, options, tokenizer=tokenizer, backend=backend, dtype=dtype, grader=grader,
                   torch_threads=torch_threads) as ev:
        mv_on = mathverify and _mathverify_installed()
        for i, bench in enumerate(loaded):
            res = ev.run(bench, i, sink=sink, progress=progress, keep_samples=keep_samples)
            per[bench.name] = res.metrics
            samples_out.extend(res.samples)
        model_label = ev.model_path or type(ev.model).__name__
        template, use_chat_template, prompt_source = (ev.options.prompt_template, ev.options.use_chat_template,
                                                      ev.prompt_source)
    out: dict[str, Any] = {
        "model": str(model_or_path) if isinstance(model_or_path, (str, os.PathLike)) else model_label,
        "model_path": model_label,
        "mode": options.mode,
        "mode_label": options.mode_label,
        "temperature": options.temperature,
        "top_p": options.top_p,
        "samples": options.samples,
        "max_new_tokens": options.max_new_tokens,
        "max_prompt_tokens": options.max_prompt_tokens,
        "limit": limit,
        "seed": seed,
        "backend": backend,
        "dtype": dtype,
        "prompt_template": template,
        "use_chat_template": use_chat_template,
        "prompt_source": prompt_source,
        "require_think": require_think,
        "grader": GRADER_TAG,
        "bootstrap_resamples": options.bootstrap_resamples,
        "mathverify_version": _mathverify_version() if mv_on else None,
        "benchmarks": per,
        "average": average_metrics(per),
        "timing_s": round(time.perf_counter() - started, 3),
    }
    if keep_samples:
        out["samples"] = samples_out
    return out


def evaluate_policy(
    model,
    tokenizer,
    backend,
    grader,
    benchmarks: Sequence[str],
    limit: int | None = None,
    max_new_tokens: int = PAPER_MAX_NEW_TOKENS,
    *,
    prompt_template: str = DEFAULT_TEMPLATE,
    use_chat_template: bool = True,
    max_prompt_tokens: int | None = None,
    require_think: bool = False,
    mathverify: bool = False,
) -> dict[str, float]:
    """Greedy pass@1 on real benchmarks for the trainer's scheduled evaluation.

    Uses the caller's model, tokenizer, rollout backend (hf or vllm) and grader pool; nothing is
    loaded except the benchmark files (cached). Returns flat metrics:
    ``eval/<name>/pass@1``, ``eval/<name>/format_ok``, ``eval/<name>/response_length``,
    ``eval/<name>/truncated`` (and ``eval/<name>/mathverify`` with `mathverify`) per benchmark, plus
    ``eval/average/pass@1`` (unweighted mean) and ``timing_s/eval_benchmarks``.
    """
    tick = time.perf_counter()
    options = EvalOptions(mode="greedy", max_new_tokens=max_new_tokens, max_prompt_tokens=max_prompt_tokens,
                          prompt_template=prompt_template, use_chat_template=use_chat_template,
                          require_think=require_think, mathverify=mathverify)
    out: dict[str, float] = {}
    scores = []
    for spec, name in zip(benchmarks, unique_names(benchmarks), strict=True):
        bench = _cached_benchmark(spec, limit)
        bench = Benchmark(name, bench.source, bench.problems, bench.sha256)
        res = run_benchmark(bench, model=model, tokenizer=tokenizer, backend=backend, grader=grader,
                            options=options, keep_samples=False)
        m = res.metrics
        for key in ("pass@1", "format_ok", "response_length", "truncated") + (("mathverify",) if mathverify else ()):
            if m.get(key) is not None:
                out[f"eval/{name}/{key}"] = float(m[key])
        if m.get("pass@1") is not None:
            scores.append(float(m["pass@1"]))
    if scores:
        out["eval/average/pass@1"] = sum(scores) / len(scores)
    out["timing_s/eval_benchmarks"] = time.perf_counter() - tick
    return out


_BENCH_CACHE: dict[tuple[str, int | None], Benchmark] = {}


def _cached_benchmark(spec: str, limit: int | None) -> Benchmark:
    key = (spec, limit)
    if key not in _BENCH_CACHE:
        _BENCH_CACHE[key] = load_benchmark(spec, limit)
    return _BENCH_CACHE[key]


def _mathverify_installed() -> bool:
    from remix_engine.reward.mathverify import mathverify_available

    return mathverify_available()


def _mathverify_version() -> str | None:
    try:
        from importlib.metadata import version

        return version("math-verify")
    except Exception:  # noqa: BLE001 - not installed
        return None
