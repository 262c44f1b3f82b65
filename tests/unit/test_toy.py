"""The synthetic toy task: determinism, the train/held-out split, demonstrations and their grading."""

import random
import re

import pytest

from remix_engine import toy
from remix_engine.data import Problem
from remix_engine.reward import grade


def test_problems_are_deterministic_per_seed():
    a = toy.toy_problems("train", 200, seed=3)
    b = toy.toy_problems("train", 200, seed=3)
    c = toy.toy_problems("train", 200, seed=4)
    assert a == b
    assert [p.problem for p in a] != [p.problem for p in c]


def test_heldout_is_a_fixed_list_independent_of_the_seed():
    h0 = toy.toy_problems("heldout", 300, seed=0)
    h9 = toy.toy_problems("heldout", 300, seed=9)
    assert h0 == h9
    assert toy.toy_problems("heldout", 120) == h0[:120]  # a prefix, whatever the size asked


def test_train_and_heldout_are_disjoint():
    heldout = {p.problem for p in toy.toy_problems("heldout", 500)}
    for seed in (0, 1, 2):
        train = {p.problem for p in toy.toy_problems("train", 4000, seed=seed)}
        assert not train & heldout
    # and the split is a property of the problem text, not of the list it came in
    assert all(toy._is_heldout(t) for t in heldout)


def test_problems_are_well_formed():
    problems = toy.toy_problems("train", 500, seed=0) + toy.toy_problems("heldout", 200)
    assert len({p.id for p in problems}) == len(problems)
    assert len({p.problem for p in problems}) == len(problems)
    lo, hi = toy.DEFAULT_TASK.terms
    for p in problems:
        assert isinstance(p, Problem)
        m = re.fullmatch(r"Compute (\d\d)((?:[+-][1-9])+)\.", p.problem)
        assert m, p.problem
        assert lo <= p.meta["terms"] <= hi
        chain = toy.parse_problem(p.problem)
        values = chain.values()
        assert all(toy.VALUE_RANGE[0] <= v <= toy.VALUE_RANGE[1] for v in values)
        assert p.answer == str(eval(p.problem.removeprefix("Compute ").rstrip(".")))  # noqa: S307 - digits only
        assert p.meta["carries"] == toy.carry_steps(p)


def test_parse_problem_rejects_other_text():
    with pytest.raises(ValueError, match="not a toy arithmetic problem"):
        toy.parse_problem("What is 2+2?")
    with pytest.raises(ValueError):
        toy.toy_problems("test", 3)  # type: ignore[arg-type]


def test_noise_free_demonstrations_are_graded_correct():
    rng = random.Random(0)
    for p in toy.toy_problems("train", 300, seed=1):
        demo = toy.toy_demonstration(p, rng, forget=0.0, slip=0.0)
        assert toy.grade_toy(demo, p.answer)
        assert grade(demo, p.answer).correct  # the project's DeepScaleR-style grader agrees
        assert demo.count(toy.THINK_CLOSE) == 1 and demo.count(toy.BOXED) == 1
        assert demo.index(toy.THINK_CLOSE) < demo.index(toy.BOXED)


def test_demonstrations_have_the_documented_habits():
    rng = random.Random(0)
    problems = toy.toy_problems("train", 1500, seed=2)
    demos = [toy.toy_demonstration(p, rng) for p in problems]
    correct = [toy.grade_toy(d, p.answer) for d, p in zip(demos, problems, strict=True)]
    # every problem without a carrying addition is solved unless a random slip hit it
    no_carry = [c for c, p in zip(correct, problems, strict=True) if p.meta["carries"] == 0]
    assert sum(no_carry) / len(no_carry) > 0.9
    with_carry = [c for c, p in zip(correct, problems, strict=True) if p.meta["carries"] > 0]
    assert sum(with_carry) / len(with_carry) < 0.7
    # self-reflection words appear in a share of the demonstrations, never in plain steps
    reflect = [bool(re.search(r"wait|check|confirm", d)) for d in demos]
    assert 0.15 < sum(reflect) / len(reflect) < 0.6
    for d in demos:
        for line in d.split("\n")[:-1]:
            assert re.fullmatch(r"-?\d+[+-]\d=-?\d+", line) or re.search(r"wait|check|confirm", line), line
    # a forgotten carry that is noticed is followed by the correct step
    for d in demos:
        for m in re.finditer(r"(\d+)([+-]\d)=(\d+) [a-z ,-]+, (\d+)([+-]\d)=(\d+)", d):
            a, t, wrong, a2, t2, right = m.groups()
            assert (a, t) == (a2, t2) and int(right) == int(a) + int(t) and int(wrong) == int(right) - 10


def test_demonstration_is_deterministic_given_the_rng():
    p = toy.toy_problems("train", 1, seed=5)[0]
    assert toy.toy_demonstration(p, random.Random(7)) == toy.toy_demonstration(p.problem, random.Random(7))


def test_carry_detection():
    assert toy.is_carry(47, 5) and toy.is_carry(19, 1)
    assert not toy.is_carry(47, 2) and not toy.is_carry(47, -8) and not toy.is_carry(40, 9)
    assert toy.carry_steps("Compute 47+5-3+8.") == 2  # 47+5 and 49+8


def test_grade_toy_follows_the_deepscaler_contract():
    assert toy.grade_toy("1+2=3\n</think> \\boxed{3}", "3")
    assert not toy.grade_toy("1+2=3\n \\boxed{3}", "3")  # no </think>
    assert toy.grade_toy("1+2=3\n \\boxed{3}", "3", require_think=False)
    assert not toy.grade_toy("\\boxed{3} </think> no box", "3")  # a box inside the thinking is not graded
    assert toy.grade_toy("</think> \\boxed{4} no, \\boxed{3}", "3")  # the last box counts
    assert not toy.grade_toy("</think> \\boxed{x}", "3")
    assert toy.grade_toy("</think> \\boxed{ 07 }", ["5", "7"])


def test_demonstrations_fit_the_toy_generation_budget():
    from remix_engine.models import build_toy_tokenizer

    tok = build_toy_tokenizer()
    rng = random.Random(0)
    lengths = [len(tok(toy.toy_demonstration(p, rng), add_special_tokens=False)["input_ids"]) + 1
               for p in toy.toy_problems("train", 600, seed=0)]
    assert sum(n <= 96 for n in lengths) / len(lengths) > 0.98  # rollout.max_new_tokens of the toy preset


def test_the_long_toy_is_its_own_task_with_longer_chains():
    """toy-long: its own held-out split and problems, 10-14 terms, and demonstrations that reflect more."""
    from remix_engine.data import load_problems

    long_task = toy.TASKS["toy-long"]
    heldout = toy.toy_problems("heldout", 200, task="toy-long")
    assert heldout == load_problems("toy-long", "heldout", limit=200)
    assert all(toy._is_heldout(p.problem, long_task.version) for p in heldout)
    train = toy.toy_problems("train", 2000, seed=0, task="toy-long")
    assert not {p.problem for p in train} & {p.problem for p in heldout}
    lo, hi = long_task.terms
    assert lo > toy.DEFAULT_TASK.terms[1]
    assert all(lo <= p.meta["terms"] <= hi and p.meta["task"] == long_task.version for p in train + heldout)
    assert all(p.answer == str(toy.parse_problem(p.problem).answer) for p in train)
    rng = random.Random(0)
    demos = [toy.toy_demonstration(p, rng, **long_task.demo_mix) for p in train[:500]]
    reflect = sum(("wait" in d or "check" in d or "confirm" in d) for d in demos) / len(demos)
    assert reflect > 0.7  # most demonstrations correct or re-check themselves (the toy's: ~35%)
    assert sum(len(d) for d in demos) / len(demos) > 2.5 * 47  # the toy's responses: ~47 characters
    # every step line but the last restates the terms still to come
    chain = toy.parse_problem(train[0].problem)
    steps = [line for line in demos[0].splitlines() if re.match(r"\d+[+-]\d=", line)]
    assert steps[0].endswith(" " + "".join(f"{t:+d}" for t in chain.terms[1:]))
    assert re.search(r"=\d+$", steps[-1])  # the last step has nothing left to restate
    assert toy.task_named("toy-long") is long_task and toy.task_named("data.jsonl") is toy.DEFAULT_TASK
