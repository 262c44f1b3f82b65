"""The offline toy task: multi-step integer arithmetic with `<think>` demonstrations.

A problem is a chain such as ``Compute 47+5-3+8.``: a two-digit start followed by 3-5
single-digit additions or subtractions (the running value never leaves 0..99). The reference
answer is the final integer as a string, so the same DeepScaleR-style grader that scores real
math benchmarks scores the toy (``</think>`` then the last ``\\boxed{N}``).

A demonstration solves the chain one step per line, the way a reasoning model writes it, starting
right after the ``<think>`` that ends the prompt::

    47+5=52
    52-3=49
    49+8=57
    check: 57-8=49 ok
    </think> \\boxed{57}

The demonstrator has a bad habit that reinforcement learning can cure: at a *carrying addition*
(47+5, where the units overflow) it usually forgets the carry (writes ``47+5=42``); sometimes it
notices and corrects itself (``47+5=42 wait, 47+5=52``). Subtractions, borrows included, and
additions without a carry are written correctly, apart from rare random slips. A warm start that
imitates the demonstrator therefore answers about the problems without a carrying addition
correctly when decoding greedily (~31% of the held-out set), while sampling at temperature 1
still finds the right answer for most problems (pass@8 ~90%): the headroom GRPO climbs. Measured
numbers and the command that reproduces them: benchmarks/toy_calibration.py.

* ``forget`` (0.65): share of carrying additions written without the carry;
* ``notice`` (0.30): share of those corrected with "wait, ..." (else the error is kept);
* ``slip`` (0.05): share of demonstrations with one random off-by-one/two step elsewhere;
* ``check`` (0.25): share that re-check the last step backwards (``check: 57-8=49 ok``).

These are the ``toy`` task's values. ``toy-long`` (`TASKS`) has chains of 7-9 terms whose step
lines restate the terms still to come (``47+5=52 -3+8``), so responses of 100-220 tokens (3x the
toy's), and a demonstrator that corrects and re-checks itself more often: the long-horizon setting
where off-policy training can shorten responses and drop reflection (the ``toy-long`` preset).

The words used (wait, but, check, double-check, confirm) are self-reflection keywords of
remix_algorithm.md §9.1, so ``behavior/self_reflection_rate`` measures how often the policy
corrects or re-checks itself (~35% of warm-start samples). Plain steps contain no words at all.

Everything is deterministic from a seed. The problem space is split by a hash of the problem text
into a held-out part (1/8 of it) and a training part; the held-out list is one fixed stream,
independent of any training seed, and no training problem can ever be a held-out problem.
"""

from __future__ import annotations

import hashlib
import random
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from remix_engine.problem import Problem

# Shared by every toy task (part of each task's warm-start cache key).
START_RANGE = (10, 59)  # the two-digit first number
VALUE_RANGE = (0, 99)  # the running value stays inside this range
HELDOUT_BUCKETS = 8  # 1 in HELDOUT_BUCKETS of the problem space is held out
_HELDOUT_STREAM_SEED = 20250707


@dataclass(frozen=True)
class ToyTask:
    """One family of toy problems and the demonstrator of its warm start.

    `version` is hashed into the held-out split and the warm-start cache key: bump it when the
    problems, prompts or demonstrations of the task change.
    """

    name: str  # the data source that selects it (data.train / data.heldout)
    version: str
    terms: tuple[int, int]  # how many single-digit terms follow the start number
    forget: float  # carrying additions written without the carry
    notice: float  # forgotten carries that the demonstrator notices and corrects ("wait, ...")
    slip: float  # demonstrations with one random off-by-one/two slip elsewhere
    check: float  # demonstrations that re-check their last step before answering
    restate: bool = False  # step lines end with the terms still to come (see toy_demonstration)

    @property
    def demo_mix(self) -> dict[str, float | bool]:
        return {"forget": self.forget, "notice": self.notice, "slip": self.slip, "check": self.check,
                "restate": self.restate}


TASKS = {
    "toy": ToyTask("toy", "toy-arith-v2", terms=(3, 5), forget=0.65, notice=0.30, slip=0.05, check=0.25),
    # Longer chains whose lines restate what is left (responses of ~100-220 tokens: the toy model
    # could not count out the 10th term of a prompt, 23% of its copied terms were right) and whose
    # demonstrator corrects and re-checks itself more often: issue 19's long-horizon study.
    "toy-long": ToyTask("toy-long", "toy-long-v2", terms=(7, 9), forget=0.5, notice=0.6, slip=0.05,
                        check=0.5, restate=True),
}
DEFAULT_TASK = TASKS["toy"]


def task_named(source: str | ToyTask) -> ToyTask:
    """The toy task a data source names; any other source (a file, a benchmark) warm-starts on `toy`."""
    if isinstance(source, ToyTask):
        return source
    return TASKS.get(source.strip(), DEFAULT_TASK)


THINK_OPEN = "<think>"
THINK_CLOSE = "</think>"
BOXED = "\\boxed{"

_CHECK_WORDS = ("check", "double-check", "confirm")  # not "verify": it holds "if", a hypotheticals keyword
_NOTICE_WORDS = ("wait", "but wait", "wait, check")


@dataclass(frozen=True)
class Chain:
    start: int
    terms: tuple[int, ...]  # signed single digits: +5 -> 5, -3 -> -3

    @property
    def text(self) -> str:
        return f"{self.start}" + "".join(f"{t:+d}" for t in self.terms)

    def values(self) -> list[int]:
        out = [self.start]
        for t in self.terms:
            out.append(out[-1] + t)
        return out

    @property
    def answer(self) -> int:
        return self.values()[-1]

    def carries(self) -> int:
        """How many of its steps are carrying additions (see `is_carry`)."""
        return sum(is_carry(a, t) for a, t in zip(self.values()[:-1], self.terms, strict=True))


def _is_heldout(text: str, version: str = DEFAULT_TASK.version) -> bool:
    digest = hashlib.sha256(f"{version}|{text}".encode()).digest()
    return digest[0] % HELDOUT_BUCKETS == 0


def _sample_chain(rng: random.Random, terms: tuple[int, int]) -> Chain:
    value = rng.randint(*START_RANGE)
    start = value
    n = rng.randint(*terms)
    terms: list[int] = []
    lo, hi = VALUE_RANGE
    for _ in range(n):
        digit = rng.randint(1, 9)
        sign = rng.choice((1, -1))
        if not lo <= value + sign * digit <= hi:
            sign = -sign
        terms.append(sign * digit)
        value += sign * digit
    return Chain(start, tuple(terms))


def problem_text(chain: Chain) -> str:
    return f"Compute {chain.text}."


def parse_problem(text: str) -> Chain:
    """Inverse of `problem_text` (demonstrations are built from the problem text alone)."""
    m = re.fullmatch(r"Compute (\d+)((?:[+-]\d)+)\.", text.strip())
    if not m:
        raise ValueError(f"not a toy arithmetic problem: {text!r}")
    terms = tuple(int(t) for t in re.findall(r"[+-]\d", m.group(2)))
    return Chain(int(m.group(1)), terms)


def toy_problems(split: Literal["train", "heldout"], n: int, seed: int = 0,
                 task: str | ToyTask = DEFAULT_TASK) -> list[Problem]:
    """`n` distinct problems of `task` (a ToyTask or its name).

    ``train``: drawn from the training part of the problem space with `seed`.
    ``heldout``: a fixed list (the `seed` argument is ignored), so every run is evaluated on the
    same problems; ``toy_problems("heldout", 200)`` is a prefix of ``toy_problems("heldout", 500)``.
    """
    if split not in ("train", "heldout"):
        raise ValueError(f"toy split must be 'train' or 'heldout', got {split!r}")
    if n < 0:
        raise ValueError("n must be >= 0")
    task = task_named(task)
    want_heldout = split == "heldout"
    rng = random.Random(_HELDOUT_STREAM_SEED if want_heldout else seed)
    out: list[Problem] = []
    seen: set[str] = set()
    attempts = 0
    while len(out) < n:
        attempts += 1
        if attempts > 200 * n + 10_000:
            raise RuntimeError(f"could not draw {n} distinct toy {split} problems")
        chain = _sample_chain(rng, task.terms)
        text = problem_text(chain)
        if text in seen or _is_heldout(text, task.version) != want_heldout:
            continue
        seen.add(text)
        out.append(
            Problem(
                id=f"toy-{split}-{hashlib.sha1(text.encode()).hexdigest()[:10]}",
                problem=text,
                answer=str(chain.answer),
                meta={"task": task.version, "terms": len(chain.terms), "carries": chain.carries(), "split": split},
            )
        )
    return out


def _slip(value: int, rng: random.Random) -> int:
    """A random slip: the result off by one or two (never negative, never the true value)."""
    for _ in range(10):
        wrong = value + rng.choice((-2, -1, 1, 2))
        if wrong >= 0:
            return wrong
    return value + 1


def is_carry(a: int, t: int) -> bool:
    """An addition that crosses a multiple of ten (47+5): the step the demonstrator gets wrong."""
    return t > 0 and (a % 10) + t >= 10


def _step(a: int, t: int, result: int) -> str:
    return f"{a}{t:+d}={result}"


def toy_demonstration(
    problem: Problem | str,
    rng: random.Random,
    *,
    forget: float = DEFAULT_TASK.forget,
    notice: float = DEFAULT_TASK.notice,
    slip: float = DEFAULT_TASK.slip,
    check: float = DEFAULT_TASK.check,
    restate: bool = DEFAULT_TASK.restate,
) -> str:
    """One response for `problem`, as the policy should write it after the prompt's ``<think>``.

    * At each carrying addition (47+5) the demonstrator forgets the carry with probability
      `forget` (writes 47+5=42); it then notices with probability `notice` and corrects itself
      (``47+5=42 wait, 47+5=52``), otherwise it carries the error to the end.
    * With probability `slip` one other step is off by one or two (uncorrected).
    * With probability `check` the demonstration re-checks its last step backwards before
      answering (``check: 57-8=49 ok``).
    * With `restate`, every step line but the last ends with the terms still to come
      (``47+5=52 -3+8``), so the next term is copied from the line above rather than counted out
      in the prompt.

    With ``forget=0`` and ``slip=0`` every demonstration's boxed answer is correct.
    """
    text = problem.problem if isinstance(problem, Problem) else problem
    chain = parse_problem(text)
    slip_at = rng.randrange(len(chain.terms)) if rng.random() < slip else -1
    lines: list[str] = []
    value = chain.start
    for i, t in enumerate(chain.terms):
        true = value + t
        if is_carry(value, t) and rng.random() < forget:
            wrong = true - 10
            if rng.random() < notice:
                lines.append(f"{_step(value, t, wrong)} {rng.choice(_NOTICE_WORDS)}, {_step(value, t, true)}")
            else:
                lines.append(_step(value, t, wrong))
                true = wrong
        elif i == slip_at:
            true = _slip(true, rng)
            lines.append(_step(value, t, true))
        else:
            lines.append(_step(value, t, true))
        if restate and i + 1 < len(chain.terms):
            lines[-1] += " " + "".join(f"{u:+d}" for u in chain.terms[i + 1:])
        value = true
    if rng.random() < check:
        prev = value - chain.terms[-1]
        lines.append(f"{rng.choice(_CHECK_WORDS)}: {_step(value, -chain.terms[-1], prev)} ok")
    return "\n".join(lines) + f"\n{THINK_CLOSE} {BOXED}{value}}}"


def carry_steps(problem: Problem | str) -> int:
    """How many carrying additions the problem's chain has (the demonstrator's weak spot)."""
    return parse_problem(problem.problem if isinstance(problem, Problem) else problem).carries()


_BOX_RE = re.compile(r"\\boxed\{([^{}]*)\}")


def grade_toy(response: str, answer: str | Sequence[str], require_think: bool = True) -> bool:
    """Exact grading for the toy task (what the DeepScaleR grader does on integer answers).

    The text after the first ``</think>`` (required unless `require_think` is false) must contain a
    ``\\boxed{N}``; the last one is compared as an integer with the reference(s).
    """
    if THINK_CLOSE in response:
        response = response.split(THINK_CLOSE)[1]
    elif require_think:
        return False
    found = _BOX_RE.findall(response)
    if not found:
        return False
    refs = [answer] if isinstance(answer, str) else list(answer)
    try:
        got = int(found[-1].strip())
    except ValueError:
        return False
    for ref in refs:
        try:
            if got == int(str(ref).strip()):
                return True
        except ValueError:
            continue
    return False
