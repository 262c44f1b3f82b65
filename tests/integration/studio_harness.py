"""Process helpers for the studio integration tests: real processes, real databases, real brokers.

The API runs as `python -m backend.cli studio --no-worker` and workers as `python -m worker.cli
worker` (the same code as `remix studio` / `remix worker`), each a separate OS process.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parents[2]
WRITE_TOKEN = "it-write-token"
READ_TOKEN = "it-read-token"

# Small, fast toy runs: no warm start, one torch thread, few short responses.
FAST_OVERRIDES: dict[str, Any] = {
    "rollout.prompts_per_step": 4,
    "rollout.group_size": 2,
    "rollout.max_new_tokens": 16,
    "data.heldout_size": 4,
    "warm_start.steps": 0,
    "trainer.eval_every": 2,
    "trainer.checkpoint_every": 2,
    "trainer.torch_threads": 1,
}


def fast_config(steps: int, algorithm: str = "remix-grpo", **overrides: Any) -> dict[str, Any]:
    return {"preset": "toy", "algorithm": algorithm, "steps": steps, "seed": 0,
            "overrides": {**FAST_OVERRIDES, **overrides}}


def fresh_per_step(cfg: dict[str, Any]) -> int:
    """Rollouts generated per step by a fast config (fresh prompts × group size)."""
    ov = cfg["overrides"]
    share = ov.get("remix.replay_share", 0.4) if cfg["algorithm"].startswith("remix-") else 0.0
    return max(1, round((1 - share) * ov["rollout.prompts_per_step"])) * ov["rollout.group_size"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(predicate: Callable[[], Any], timeout: float, interval: float = 0.5, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what} (last: {last!r})")


def _child_env(extra: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("REMIX_")}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p)
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env


class Deployment:
    """One studio deployment: an API process and any number of worker processes."""

    def __init__(self, name: str, env: dict[str, str], log_dir: Path):
        self.name = name
        self.env = env
        self.log_dir = log_dir
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.api: subprocess.Popen | None = None
        self.workers: dict[str, subprocess.Popen] = {}
        self.client = httpx.Client(base_url=self.base_url + "/api/v1", timeout=30)
        self.write_headers = {"Authorization": f"Bearer {WRITE_TOKEN}"}
        self.read_headers = {"Authorization": f"Bearer {READ_TOKEN}"}

    # -------------------------------------------------------------------------------- processes
    def _spawn(self, args: list[str], log_name: str) -> subprocess.Popen:
        log = open(self.log_dir / log_name, "ab")  # noqa: SIM115 (closed with the process)
        return subprocess.Popen([sys.executable, *args], cwd=REPO, env=_child_env(self.env), stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True)

    def start_api(self) -> None:
        self.api = self._spawn(["-m", "backend.cli", "studio", "--no-worker", "--port", str(self.port),
                                "--log-level", "warning"], "api.log")

        def up() -> bool:
            if self.api.poll() is not None:
                raise AssertionError(f"API exited with {self.api.returncode}: {self.log('api.log')[-3000:]}")
            try:
                return self.client.get("/health").status_code in (200, 503)
            except httpx.HTTPError:
                return False

        wait_for(up, 90, what="the API to answer")

    def start_worker(self, name: str | None = None) -> subprocess.Popen:
        name = name or f"w{len(self.workers) + 1}"
        proc = self._spawn(["-m", "worker.cli", "worker", "-n", f"{name}-{uuid.uuid4().hex[:6]}@it",
                            "--loglevel", "INFO"], f"worker-{name}.log")
        self.workers[name] = proc
        return proc

    def log(self, name: str) -> str:
        path = self.log_dir / name
        return path.read_text(errors="replace") if path.exists() else ""

    def logs_tail(self, n: int = 4000) -> str:
        return "\n".join(f"--- {p.name}\n{p.read_text(errors='replace')[-n:]}" for p in sorted(self.log_dir.glob("*.log")))

    def stop(self) -> None:
        procs = [p for p in [*self.workers.values(), self.api] if p is not None and p.poll() is None]
        for p in procs:
            p.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 30
        for p in procs:
            try:
                p.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        self.client.close()

    def settings(self):  # noqa: ANN201
        """The studio Settings of this deployment (for direct DB / Celery access from the test)."""
        from studio.settings import Settings

        return Settings(data_dir=Path(self.env["REMIX_DATA_DIR"]), database_url=self.env.get("REMIX_DATABASE_URL"),
                        broker_url=self.env.get("REMIX_BROKER_URL"),
                        gpu_queue=self.env.get("REMIX_GPU_QUEUE", "gpu"))

    # -------------------------------------------------------------------------------- API helpers
    def submit(self, cfg: dict[str, Any], name: str | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {"config": cfg}
        if name:
            body["name"] = name
        r = self.client.post("/runs", json=body, headers=self.write_headers)
        assert r.status_code == 201, r.text
        return r.json()

    def run(self, run_id: int) -> dict[str, Any]:
        """The run as a token holder sees it (absolute paths, worker, full error)."""
        r = self.client.get(f"/runs/{run_id}", headers=self.read_headers)
        assert r.status_code == 200, r.text
        return r.json()

    def wait_status(self, run_id: int, statuses: tuple[str, ...], timeout: float = 240) -> dict[str, Any]:
        def done() -> dict[str, Any] | None:
            run = self.run(run_id)
            if run["status"] in statuses:
                return run
            if run["status"] == "failed" and "failed" not in statuses:
                raise AssertionError(f"run {run_id} failed: {run['error_detail']}\n{self.logs_tail()}")
            return None

        try:
            return wait_for(done, timeout, what=f"run {run_id} to reach {statuses}")
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{self.logs_tail()}") from None

    def wait_progress(self, run_id: int, predicate: Callable[[dict[str, Any]], bool], timeout: float = 180,
                      what: str = "progress") -> dict[str, Any]:
        def check() -> dict[str, Any] | None:
            run = self.run(run_id)
            if run["status"] in ("failed", "succeeded", "cancelled") and not predicate(run):
                raise AssertionError(f"run {run_id} ended ({run['status']}) before {what}: {run.get('error')}")
            return run if predicate(run) else None

        return wait_for(check, timeout, what=what)

    def all_rollouts(self, run_id: int, limit: int = 100, **params: Any) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        cursor = None
        while True:
            q = {"limit": limit, **params}
            if cursor:
                q["cursor"] = cursor
            r = self.client.get(f"/runs/{run_id}/rollouts", params=q)
            assert r.status_code == 200, r.text
            page = r.json()
            out += page["data"]
            cursor = page["next_cursor"]
            if not cursor:
                return out


def assert_every_step_once(deployment: Deployment, run_id: int, cfg: dict, steps: int) -> None:
    """Each step's metrics and rollouts are in SQL exactly once (none lost, none written twice)."""
    per_step = fresh_per_step(cfg)
    m = deployment.client.get(f"/runs/{run_id}/metrics", params={"keys": "cost/rollouts,critic/score/mean"}).json()
    series = {s["key"]: s for s in m["series"]}
    assert series["cost/rollouts"]["step"] == list(range(0, steps + 1))
    assert series["cost/rollouts"]["y"] == [float(per_step * s) for s in range(steps + 1)]
    assert series["critic/score/mean"]["step"] == list(range(1, steps + 1))
    rows = deployment.all_rollouts(run_id)
    assert len({r["uid"] for r in rows}) == len(rows) == steps * per_step
    assert Counter(r["step"] for r in rows) == {s: per_step for s in range(1, steps + 1)}
