"""Tests for GraderPool: parity with in-process grading, hard timeouts, threads, torch, Celery."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from remix_engine.reward import GraderPool, grade, mathverify_available
from remix_engine.reward.pool import TASK_SLEEP, close_default_pool, get_default_pool

REPO_ROOT = Path(__file__).resolve().parents[2]

# sympy evaluates 9**(9**9) while parsing: minutes of big-integer work, passes all rllm guards.
HANGING_RESPONSE = "</think> \\boxed{9**9**9}"
MIXED_ITEMS = [
    ("</think> \\boxed{2\\sqrt{2}}", "\\sqrt{8}"),
    ("</think> \\boxed{\\frac{2}{4}}", "\\frac{1}{2}"),
    ("</think> \\boxed{3+2x}", "2x+3"),
    ("no think \\boxed{5}", "5"),
    ("</think> \\boxed{5", "5"),
    ("</think> \\boxed{0.022}", ["0.02\n", "0.022\n"]),
    ("</think> \\boxed{142}", 142.0),
]


@pytest.fixture(scope="module")
def pool():
    with GraderPool(processes=2, timeout_s=1.5) as shared:
        yield shared


def test_pool_results_equal_in_process_grading(pool):
    expected = [grade(response, reference) for response, reference in MIXED_ITEMS]
    assert pool.grade_many(MIXED_ITEMS) == expected
    lenient = [grade(response, reference, require_think=False) for response, reference in MIXED_ITEMS]
    assert pool.grade_many(MIXED_ITEMS, require_think=False) == lenient
    assert pool.grade_many([]) == []


def test_batch_of_128_keeps_order_and_costs_no_process_start(pool):
    items = [(f"</think> \\boxed{{{i}}}", str(i if i % 3 else i + 1)) for i in range(128)]
    pids = pool.worker_pids()
    start = time.perf_counter()
    results = pool.grade_many(items)
    elapsed = time.perf_counter() - start
    assert [r.extracted for r in results] == [str(i) for i in range(128)]
    assert [r.correct for r in results] == [bool(i % 3) for i in range(128)]
    assert pool.worker_pids() == pids
    assert elapsed < 1.0  # pipe round-trips only; a process start alone costs more


def test_hung_sympy_call_is_killed_and_pool_keeps_working(pool):
    restarts = pool.restarts
    pids = set(pool.worker_pids())
    start = time.perf_counter()
    results = pool.grade_many([(HANGING_RESPONSE, "x"), ("</think> \\boxed{5}", "5")])
    elapsed = time.perf_counter() - start
    hung, fine = results
    assert (hung.correct, hung.format_ok, hung.extracted, hung.reason) == (False, True, "9**9**9", "timeout")
    assert fine.correct
    assert elapsed < 1.5 + 3.0  # bounded by the timeout, not by the sympy computation
    assert pool.restarts == restarts + 1
    assert len(set(pool.worker_pids()) - pids) == 1  # exactly one worker was replaced
    assert pool.grade_many(MIXED_ITEMS[:3]) == [grade(r, ref) for r, ref in MIXED_ITEMS[:3]]


def test_sleep_hook_times_out_only_the_slow_item(pool):
    outcomes = pool.run_tasks(TASK_SLEEP, [(30.0,), (0.0,), (0.01,)])
    assert [o.timed_out for o in outcomes] == [True, False, False]
    assert [o.value for o in outcomes[1:]] == [0.0, 0.01]


def test_memory_bomb_fails_fast_under_the_worker_memory_cap(pool):
    start = time.perf_counter()
    (result,) = pool.grade_many([("</think> \\boxed{[1]*10**9}", "x")])
    assert result.reason == "wrong answer"
    assert time.perf_counter() - start < 1.5


def test_pool_works_from_several_threads(pool):
    results: dict[int, list] = {}

    def run(key: int) -> None:
        results[key] = pool.grade_many(MIXED_ITEMS)

    threads = [threading.Thread(target=run, args=(key,)) for key in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    expected = [grade(response, reference) for response, reference in MIXED_ITEMS]
    assert results == {0: expected, 1: expected, 2: expected}


@pytest.mark.skipif(not mathverify_available(), reason="math-verify is not installed")
def test_mathverify_through_the_pool(pool):
    items = [
        ("</think> \\boxed{\\frac{2}{4}}", "\\frac12"),
        ("</think> \\boxed{3}", "4"),
        ("\\boxed{3}", ["2", "3"]),
    ]
    assert pool.mathverify_many(items) == [True, False, True]


@pytest.mark.skipif(not mathverify_available(), reason="math-verify is not installed")
def test_hung_mathverify_call_is_killed(pool):
    # math-verify 0.9.0 (timeouts disabled) evaluates 9^(9^9) and never returns in time.
    restarts = pool.restarts
    items = [("</think> \\boxed{9^{9^{9}}}", "5"), ("</think> \\boxed{0.5}", "\\frac12")]
    start = time.perf_counter()
    assert pool.mathverify_many(items) == [False, True]
    assert time.perf_counter() - start < 1.5 + 3.0
    assert pool.restarts == restarts + 1
    # The replacement worker preloads math-verify and serves both task kinds.
    assert pool.mathverify_many(items[1:] * 3) == [True] * 3
    assert pool.grade_many(MIXED_ITEMS[:2]) == [grade(r, ref) for r, ref in MIXED_ITEMS[:2]]


def test_closed_pool_stops_workers_and_refuses_work():
    small = GraderPool(processes=1, timeout_s=5.0)
    small.wait_ready()
    processes = [worker.process for worker in small._workers]
    small.close()
    small.close()  # idempotent
    assert all(process.poll() is not None for process in processes)
    with pytest.raises(RuntimeError):
        small.grade_many(MIXED_ITEMS)


def test_default_pool_is_shared_and_closable():
    first = get_default_pool(lambda: GraderPool(processes=1))
    try:
        assert get_default_pool() is first
        assert first.grade_many(MIXED_ITEMS[:1])[0].correct
    finally:
        close_default_pool()
    assert first.closed


def _run_script(script: str, timeout: float) -> subprocess.CompletedProcess:
    """Run a Python script in a fresh interpreter from the repository root."""
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT))
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script)],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_pool_from_a_thread_of_an_unguarded_torch_script():
    # No `if __name__ == "__main__"` guard on purpose: workers must not re-run the parent's main.
    script = """
        import threading
        import torch
        torch.set_num_threads(2)
        busy = torch.randn(512, 512) @ torch.randn(512, 512)  # torch's thread pool is now live
        from remix_engine.reward import GraderPool
        out = []
        def work():
            with GraderPool(processes=1, timeout_s=1.0) as pool:
                out.append(pool.grade_many([("</think>\\\\boxed{5}", "5"), ("</think>\\\\boxed{9**9**9}", "x")]))
        thread = threading.Thread(target=work)
        thread.start()
        thread.join()
        print("RESULT", [(r.correct, r.reason) for r in out[0]])
    """
    done = _run_script(script, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("RESULT") == 1
    assert "RESULT [(True, 'correct'), (False, 'timeout')]" in done.stdout


CELERY_APP = """
    import os
    from celery import Celery

    base = os.environ["REMIX_TEST_CELERY_DIR"]
    app = Celery("reward_celery_app", broker="filesystem://", backend="file://" + os.path.join(base, "results"))
    app.conf.broker_transport_options = {
        "data_folder_in": os.path.join(base, "queue"),
        "data_folder_out": os.path.join(base, "queue"),
        "processed_folder": os.path.join(base, "processed"),
        "control_folder": os.path.join(base, "control"),
    }

    @app.task
    def grade_in_worker(items):
        import threading
        import torch
        torch.randn(256, 256) @ torch.randn(256, 256)
        from remix_engine.reward import GraderPool
        out = []
        def work():
            with GraderPool(processes=1, timeout_s=1.0) as pool:
                out.append(pool.grade_many([tuple(item) for item in items]))
        thread = threading.Thread(target=work)
        thread.start()
        thread.join()
        return [[r.correct, r.reason] for r in out[0]]
"""


def test_pool_inside_a_celery_solo_worker(tmp_path):
    pytest.importorskip("celery")
    for folder in ("queue", "processed", "results", "control"):
        (tmp_path / folder).mkdir()
    (tmp_path / "reward_celery_app.py").write_text(textwrap.dedent(CELERY_APP))
    env = dict(
        os.environ, PYTHONPATH=f"{REPO_ROOT}{os.pathsep}{tmp_path}", REMIX_TEST_CELERY_DIR=str(tmp_path)
    )
    worker = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "reward_celery_app",
            "worker",
            "--pool=solo",
            "--loglevel=error",
        ],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        client = subprocess.run(
            [
                sys.executable,
                "-c",
                "import reward_celery_app as m; "
                "print('RESULT', m.grade_in_worker.delay([['</think>\\\\boxed{5}', '5'], "
                "['</think>\\\\boxed{9**9**9}', 'x']]).get(timeout=60))",
            ],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=90,
        )
    finally:
        worker.terminate()
        try:
            worker.wait(timeout=20)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait()
    assert client.returncode == 0, client.stderr
    assert "RESULT [[True, 'correct'], [False, 'timeout']]" in client.stdout
