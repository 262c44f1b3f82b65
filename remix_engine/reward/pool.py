"""Persistent worker processes that grade with a hard per-item wall-clock timeout.

sympy (check B of the grader) and math-verify can hang or eat memory on adversarial model output,
and neither has a timeout that works off the main thread. :class:`GraderPool` therefore runs the
grader in long-lived worker processes and talks to each one over a pair of pipes, one item at a
time.

Workers are started spawn-style: a fresh ``sys.executable`` interpreter via ``subprocess`` (the
same fork+exec that ``multiprocessing``'s "spawn" context uses, so a parent with torch, OpenMP or
CUDA threads running is never forked into a live copy). Unlike the ``multiprocessing`` spawn
context it does not re-import the parent's ``__main__``, so a training script without an
``if __name__ == "__main__"`` guard is not re-executed in every worker, and it also works inside
daemonic processes (which ``multiprocessing`` forbids to have children).
When an item runs past ``timeout_s`` its worker is killed (SIGKILL) and replaced, and the item is
reported as ``reason="timeout"`` (incorrect). No signals are used in the parent, so the pool works
from any thread, from Celery ``--pool=solo`` workers and from inside training loops.

Workers are kept between calls, so a batch of ~128 short items costs pipe round-trips (tens of
microseconds each), not process starts.
"""

from __future__ import annotations

import atexit
import json
import os
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, wait
from typing import Any

from remix_engine.reward.grader import (
    REASON_TIMEOUT,
    REASON_WORKER_CRASH,
    GradeResult,
    Reference,
    extract_final_answer,
)

_READY = "ready"
TASK_GRADE = "grade"
TASK_MATHVERIFY = "mathverify"
TASK_SLEEP = "sleep"  # test hook: sleeps for the given seconds, then echoes them back
TASK_LOAD = "load"  # imports and warms the code behind a task kind (start-up work, not timed)


# --------------------------------------------------------------------------------------------
# Worker side (runs in the spawned process)
# --------------------------------------------------------------------------------------------


def _limit_address_space(extra_mb: int | None) -> None:
    """Cap the worker's virtual memory at its current size plus ``extra_mb`` (Linux only).

    A model answer such as ``[1]*10**9`` would otherwise make sympy's ``eval`` allocate
    gigabytes; with the cap it fails fast with ``MemoryError`` and grades as wrong.
    """
    if not extra_mb:
        return
    try:
        import resource

        with open("/proc/self/statm") as handle:
            current_pages = int(handle.read().split()[0])
        limit = current_pages * os.sysconf("SC_PAGE_SIZE") + extra_mb * 1024 * 1024
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    except (ImportError, OSError, ValueError):
        pass


def _run_task(kind: str, payload: tuple) -> Any:
    """Execute one task inside a worker and return its picklable result."""
    if kind == TASK_GRADE:
        from remix_engine.reward.grader import grade

        response, reference, require_think = payload
        return grade(response, reference, require_think)
    if kind == TASK_MATHVERIFY:
        from remix_engine.reward.mathverify import mathverify_correct

        response, reference = payload
        return mathverify_correct(response, reference)
    if kind == TASK_SLEEP:
        (seconds,) = payload
        time.sleep(seconds)
        return seconds
    if kind == TASK_LOAD:
        (loaded_kind,) = payload
        _warm_up(loaded_kind)
        return loaded_kind
    raise ValueError(f"unknown task kind {kind!r}")


def _warm_up(kind: str) -> None:
    """Import the code behind a task kind and run one small item so the first real one is fast."""
    if kind == TASK_GRADE:
        from remix_engine.reward.grader import grade

        grade("</think>\\boxed{2\\sqrt{2}}", "\\sqrt{8}")
    elif kind == TASK_MATHVERIFY:
        from remix_engine.reward.mathverify import mathverify_correct

        mathverify_correct("</think>\\boxed{\\frac{1}{2}}", "0.5")


def _die_with_parent() -> None:
    """Ask Linux to SIGKILL this worker when its parent dies (best effort, no-op elsewhere)."""
    try:
        import ctypes
        import signal

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, int(signal.SIGKILL))  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def worker_main(read_fd: int, write_fd: int, memory_limit_mb: int, preload: str) -> None:
    """Worker loop: warm up, announce readiness, then answer ``(kind, payload)`` requests.

    ``preload`` is a comma-separated list of task kinds to import before reporting ready. The
    loop ends on EOF or a ``None`` request.

    Each reply is ``(True, result)`` or ``(False, error_text)``.
    """
    _die_with_parent()
    inbox = Connection(read_fd, writable=False)
    outbox = Connection(write_fd, readable=False)
    for kind in filter(None, preload.split(",")):
        _warm_up(kind)
    _limit_address_space(memory_limit_mb)
    outbox.send(_READY)
    while True:
        try:
            request = inbox.recv()
        except (EOFError, OSError):
            return
        if request is None:
            return
        kind, payload = request
        try:
            reply = (True, _run_task(kind, payload))
        except BaseException as exc:  # MemoryError, RecursionError, ...: report, keep serving
            reply = (False, f"{type(exc).__name__}: {exc}")
        try:
            outbox.send(reply)
        except (BrokenPipeError, OSError):
            return


# The command a worker interpreter runs: restore the parent's import path, then serve.
_BOOTSTRAP = (
    "import json, sys; sys.path[:0] = json.loads(sys.argv[1]); "
    "from remix_engine.reward.pool import worker_main; "
    "worker_main(int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5])"
)


# --------------------------------------------------------------------------------------------
# Parent side
# --------------------------------------------------------------------------------------------


@dataclass
class _Worker:
    """Parent-side handle of one worker process and its two pipe ends."""

    process: subprocess.Popen
    reader: Connection
    writer: Connection
    ready: bool = False
    started_at: float = field(default_factory=time.monotonic)
    loaded: frozenset[str] = frozenset()


@dataclass
class _Job:
    """One item of a batch in flight on a worker."""

    index: int
    deadline: float


@dataclass(frozen=True)
class TaskOutcome:
    """What happened to one task: finished with a value, failed, or timed out."""

    ok: bool
    value: Any = None
    error: str = ""
    timed_out: bool = False


class GraderPool:
    """A small pool of persistent grading processes with a hard per-item timeout.

    ``processes`` fresh interpreters are started at construction and kept until :meth:`close`
    (a worker is replaced only after a timeout or a crash). ``timeout_s`` is the hard wall-clock
    limit per item, counted from when the item is handed to a worker. ``memory_limit_mb`` caps
    each worker's extra address space (``None`` or 0: no cap). Batches are serialised with a lock,
    so one pool may be shared by several threads. Use it as a context manager or call
    :meth:`close`.
    """

    def __init__(
        self,
        processes: int = 2,
        timeout_s: float = 5.0,
        *,
        memory_limit_mb: int | None = 4096,
        startup_timeout_s: float = 120.0,
    ) -> None:
        if processes < 1:
            raise ValueError("processes must be >= 1")
        if timeout_s <= 0:
            raise ValueError("timeout_s must be > 0")
        self.processes = processes
        self.timeout_s = float(timeout_s)
        self.memory_limit_mb = memory_limit_mb
        self.startup_timeout_s = startup_timeout_s
        self._lock = threading.Lock()
        self._closed = False
        self.restarts = 0
        self._preload = {TASK_GRADE}
        self._workers: list[_Worker] = [self._start_worker() for _ in range(processes)]

    # -- lifecycle ---------------------------------------------------------------------------

    def _start_worker(self) -> _Worker:
        """Start one worker interpreter; it becomes usable once it has sent its ready message."""
        to_parent_r, to_parent_w = os.pipe()
        to_child_r, to_child_w = os.pipe()
        command = [
            sys.executable,
            "-c",
            _BOOTSTRAP,
            json.dumps(sys.path),
            str(to_child_r),
            str(to_parent_w),
            str(self.memory_limit_mb or 0),
            ",".join(sorted(self._preload)),
        ]
        try:
            process = subprocess.Popen(command, pass_fds=(to_child_r, to_parent_w), stdin=subprocess.DEVNULL)
        except BaseException:
            os.close(to_parent_r)
            os.close(to_child_w)
            raise
        finally:
            os.close(to_child_r)
            os.close(to_parent_w)
        return _Worker(
            process=process,
            reader=Connection(to_parent_r, writable=False),
            writer=Connection(to_child_w, readable=False),
            loaded=frozenset(self._preload),
        )

    @staticmethod
    def _stop_worker(worker: _Worker, graceful: bool) -> None:
        """Stop one worker: ask it to exit when ``graceful``, else (or if it lingers) kill it."""
        if graceful and worker.ready:
            try:
                worker.writer.send(None)
                worker.process.wait(timeout=1.0)
            except (BrokenPipeError, OSError, subprocess.TimeoutExpired):
                pass
        if worker.process.poll() is None:
            worker.process.kill()
        worker.process.wait(timeout=10.0)
        worker.reader.close()
        worker.writer.close()

    def _replace_worker(self, slot: int) -> None:
        """Kill the worker in ``slot`` and start a fresh one in its place."""
        self._stop_worker(self._workers[slot], graceful=False)
        self._workers[slot] = self._start_worker()
        self.restarts += 1

    def close(self) -> None:
        """Stop all workers. The pool cannot be used afterwards; closing twice is harmless."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            for worker in self._workers:
                self._stop_worker(worker, graceful=True)
            self._workers = []

    @property
    def closed(self) -> bool:
        """True once :meth:`close` has run."""
        return self._closed

    def worker_pids(self) -> list[int]:
        """Process ids of the current workers (changes when a worker is replaced)."""
        return [worker.process.pid for worker in self._workers]

    def __enter__(self) -> GraderPool:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- scheduling --------------------------------------------------------------------------

    def run_tasks(self, kind: str, payloads: Sequence[tuple]) -> list[TaskOutcome]:
        """Run ``payloads`` of one task ``kind`` across the workers, each with the hard timeout."""
        with self._lock:
            if self._closed:
                raise RuntimeError("GraderPool is closed")
            if payloads:
                self._ensure_loaded(kind)
            return self._run_locked(kind, list(payloads))

    def _run_locked(self, kind: str, payloads: list[tuple]) -> list[TaskOutcome]:
        """Dispatcher loop; the caller holds the lock."""
        outcomes: list[TaskOutcome | None] = [None] * len(payloads)
        pending = deque(range(len(payloads)))
        jobs: dict[int, _Job] = {}  # worker slot -> job
        while pending or jobs:
            self._dispatch(kind, payloads, pending, jobs)
            self._collect(jobs, outcomes)
            self._expire(jobs, outcomes)
            self._check_startups()
        return [
            outcome if outcome is not None else TaskOutcome(ok=False, error="lost") for outcome in outcomes
        ]

    def _dispatch(self, kind: str, payloads: list[tuple], pending: deque, jobs: dict[int, _Job]) -> None:
        """Hand the next pending items to ready, idle workers."""
        for slot, worker in enumerate(self._workers):
            if not pending:
                return
            if not worker.ready or slot in jobs:
                continue
            index = pending.popleft()
            try:
                worker.writer.send((kind, payloads[index]))
            except (BrokenPipeError, OSError):
                pending.appendleft(index)
                self._replace_worker(slot)
                continue
            jobs[slot] = _Job(index=index, deadline=time.monotonic() + self.timeout_s)

    def _wait_budget(self, jobs: dict[int, _Job]) -> float:
        """Seconds to block: until the earliest deadline, or a short poll while workers start."""
        now = time.monotonic()
        budgets = [job.deadline - now for job in jobs.values()]
        if any(not worker.ready for worker in self._workers):
            budgets.append(0.05)
        return max(0.0, min(budgets)) if budgets else 0.05

    def _collect(self, jobs: dict[int, _Job], outcomes: list[TaskOutcome | None]) -> None:
        """Wait for replies (and ready messages) and record finished items."""
        watched = {}
        for slot, worker in enumerate(self._workers):
            if slot in jobs or not worker.ready:
                watched[worker.reader] = slot
        if not watched:
            return
        for conn in wait(list(watched), timeout=self._wait_budget(jobs)):
            slot = watched[conn]
            worker = self._workers[slot]
            try:
                message = conn.recv()
            except (EOFError, OSError):
                self._on_crash(slot, jobs, outcomes)
                continue
            if message == _READY:
                worker.ready = True
                continue
            job = jobs.pop(slot, None)
            if job is None:
                continue
            ok, value = message
            outcomes[job.index] = (
                TaskOutcome(ok=True, value=value) if ok else TaskOutcome(ok=False, error=value)
            )

    def _on_crash(self, slot: int, jobs: dict[int, _Job], outcomes: list[TaskOutcome | None]) -> None:
        """A worker died (segfault, OOM kill): fail its item and replace it."""
        job = jobs.pop(slot, None)
        if job is not None:
            outcomes[job.index] = TaskOutcome(ok=False, error=REASON_WORKER_CRASH)
        if not self._workers[slot].ready:
            raise RuntimeError("grader worker died during start-up")
        self._replace_worker(slot)

    def _expire(self, jobs: dict[int, _Job], outcomes: list[TaskOutcome | None]) -> None:
        """Kill and replace every worker whose item ran past its deadline."""
        now = time.monotonic()
        for slot, job in list(jobs.items()):
            if job.deadline <= now:
                del jobs[slot]
                outcomes[job.index] = TaskOutcome(ok=False, error=REASON_TIMEOUT, timed_out=True)
                self._replace_worker(slot)

    def _check_startups(self) -> None:
        """Raise if a worker has not become ready within ``startup_timeout_s``."""
        now = time.monotonic()
        for worker in self._workers:
            if not worker.ready and now - worker.started_at > self.startup_timeout_s:
                raise RuntimeError(f"grader worker not ready after {self.startup_timeout_s:.0f} s")

    def wait_ready(self) -> None:
        """Block until every worker has started (optional; grading waits by itself)."""
        with self._lock:
            if self._closed:
                raise RuntimeError("GraderPool is closed")
            self._wait_ready_locked()

    def _wait_ready_locked(self) -> None:
        """Block until every worker has sent its ready message; the caller holds the lock."""
        while any(not worker.ready for worker in self._workers):
            self._collect({}, [])
            self._check_startups()

    def _ensure_loaded(self, kind: str) -> None:
        """Have every worker import and warm ``kind``'s code before its timed items start.

        Import time (math-verify pulls in antlr) is start-up work and must not count against an
        item's timeout. Workers started later (replacements) preload the kind themselves.
        """
        if kind not in (TASK_GRADE, TASK_MATHVERIFY):
            return
        self._preload.add(kind)
        self._wait_ready_locked()
        lacking = [worker for worker in self._workers if kind not in worker.loaded]
        for worker in lacking:
            worker.writer.send((TASK_LOAD, (kind,)))
        deadline = time.monotonic() + self.startup_timeout_s
        for worker in lacking:
            try:
                if not worker.reader.poll(max(0.0, deadline - time.monotonic())):
                    raise RuntimeError(f"grader worker did not load {kind!r} in time")
                ok, value = worker.reader.recv()
            except (EOFError, OSError) as exc:
                raise RuntimeError(f"grader worker died while loading {kind!r}") from exc
            if not ok:
                raise RuntimeError(f"grader worker could not load {kind!r}: {value}")
            worker.loaded = worker.loaded | {kind}

    # -- public grading API ------------------------------------------------------------------

    def grade_many(
        self, items: Sequence[tuple[str, Reference]], require_think: bool = True
    ) -> list[GradeResult]:
        """Grade ``(response, reference)`` pairs; a hung or crashed item is graded incorrect.

        A timed-out item gets ``reason="timeout"`` and keeps the ``format_ok``/``extracted``
        values of the (cheap, in-parent) answer extraction.
        """
        payloads = [(response, reference, require_think) for response, reference in items]
        outcomes = self.run_tasks(TASK_GRADE, payloads)
        return [
            _to_grade_result(outcome, response, require_think)
            for outcome, (response, _) in zip(outcomes, items, strict=True)
        ]

    def mathverify_many(self, items: Sequence[tuple[str, Reference]]) -> list[bool | None]:
        """math-verify second opinion per pair: True/False, ``None`` if not installed.

        Timeouts and worker failures count as ``False`` (incorrect).
        """
        outcomes = self.run_tasks(TASK_MATHVERIFY, [(response, reference) for response, reference in items])
        return [outcome.value if outcome.ok else False for outcome in outcomes]


def _to_grade_result(outcome: TaskOutcome, response: str, require_think: bool) -> GradeResult:
    """Turn a task outcome into a :class:`GradeResult` (failures become incorrect)."""
    if outcome.ok:
        return outcome.value
    answer, format_ok, _ = extract_final_answer(response, require_think)
    if outcome.timed_out:
        reason = REASON_TIMEOUT
    elif outcome.error == REASON_WORKER_CRASH:
        reason = REASON_WORKER_CRASH
    else:
        reason = "grader error"
    return GradeResult(correct=False, format_ok=format_ok, extracted=answer, reason=reason)


# --------------------------------------------------------------------------------------------
# Shared default pool
# --------------------------------------------------------------------------------------------

_default_pool: GraderPool | None = None
_default_lock = threading.Lock()


def get_default_pool(factory: Callable[[], GraderPool] = GraderPool) -> GraderPool:
    """Return the process-wide shared pool, creating it on first use (closed at exit)."""
    global _default_pool
    with _default_lock:
        if _default_pool is None or _default_pool.closed:
            _default_pool = factory()
            atexit.register(_default_pool.close)
        return _default_pool


def close_default_pool() -> None:
    """Close the shared pool if one was created."""
    global _default_pool
    with _default_lock:
        if _default_pool is not None:
            _default_pool.close()
            _default_pool = None
