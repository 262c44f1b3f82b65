"""The first minutes of a new user, measured: `remix studio` on a fresh data folder and an empty
warm-start cache, then a quick-demo run submitted as the dashboard's button would.

Prints a table of seconds from the start of the command to
  * the first /health answer, and the first `ok` (the worker is online);
  * the quick-demo run's job running, and its first phase line (the warm start begins);
  * the first chart point (step 0: the starting policy's evaluation, after the warm start);
  * the first training step;
and the warm start alone (from the job's phase lines). Run it from the repository root:

    .venv/bin/python benchmarks/first_run.py                 # empty cache in a temporary folder
    .venv/bin/python benchmarks/first_run.py --keep-cache    # the user's cache (a second start)
    .venv/bin/python benchmarks/first_run.py --set warm_start.steps=450   # another quick-demo override

The install (`make setup`) is not included: time it with `time make setup` on a fresh clone.
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from remix_engine.config import parse_override  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
# The dashboard's quick-demo settings (frontend/static/new_run.js) for remix-grpo, 20 steps.
QUICK_DEMO = {"rollout.prompts_per_step": 8, "rollout.group_size": 4, "rollout.max_new_tokens": 64,
              "data.heldout_size": 32, "trainer.eval_every": 2, "trainer.checkpoint_every": 10,
              "remix.schedule.start": 4, "remix.schedule.interval": 2, "remix.reincarnate_at": 14}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--keep-cache", action="store_true", help="use the user's warm-start cache (default: an empty one)")
    ap.add_argument("--timeout", type=float, default=1800, help="give up after this many seconds")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="another override of the quick-demo run (repeatable), e.g. a variant to time beside the default")
    args = ap.parse_args()
    overrides = {**QUICK_DEMO, **dict(parse_override(item) for item in args.set)}

    root = Path(tempfile.mkdtemp(prefix="remix-first-run-"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("REMIX_")}
    if not args.keep_cache:
        env["REMIX_CACHE_DIR"] = str(root / "cache")
    port = free_port()
    api = f"http://127.0.0.1:{port}/api/v1"
    log = open(root / "studio.log", "wb")  # noqa: SIM115 - closed below
    t0 = time.monotonic()
    studio = subprocess.Popen([sys.executable, "-m", "backend.cli", "studio", "--port", str(port), "--data-dir",
                               str(root / "data")], cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT,
                              start_new_session=True)
    marks: dict[str, float] = {}
    phases: list[tuple[float, str]] = []

    def mark(name: str) -> None:
        if name not in marks:
            marks[name] = time.monotonic() - t0
            print(f"{marks[name]:7.1f} s  {name}", flush=True)

    try:
        run_id = None
        while time.monotonic() - t0 < args.timeout and "first training step" not in marks:
            if studio.poll() is not None:
                raise SystemExit(f"the studio exited with {studio.returncode}; see {root / 'studio.log'}")
            try:
                health = httpx.get(f"{api}/health", timeout=5).json()
            except httpx.HTTPError:
                time.sleep(0.2)
                continue
            mark("first /health answer")
            if health.get("status") == "ok":
                mark("/health ok (worker online)")
            if run_id is None and "/health ok (worker online)" in marks:
                token = (root / "data" / "api_token").read_text().strip()
                body = {"config": {"preset": "toy", "algorithm": "remix-grpo", "steps": 20, "overrides": overrides}}
                r = httpx.post(f"{api}/runs", json=body, headers={"Authorization": f"Bearer {token}"}, timeout=30)
                r.raise_for_status()
                run_id = r.json()["id"]
                mark("quick-demo run submitted")
            if run_id is not None:
                run = httpx.get(f"{api}/runs/{run_id}", timeout=10).json()
                job = run.get("job") or {}
                if run["status"] == "running":
                    mark("job running")
                if job.get("phase") and (not phases or phases[-1][1] != job["phase"]):
                    phases.append((time.monotonic() - t0, job["phase"]))
                    mark("first phase line (warm start begins)")
                if "eval/heldout/pass@1" in (run.get("latest_metrics") or {}):
                    mark("first chart point (step 0)")
                if run["steps_done"] >= 1:
                    mark("first training step")
                if run["status"] in ("failed", "cancelled"):
                    raise SystemExit(f"the run ended {run['status']}: {run.get('error')}")
            time.sleep(0.5)
    finally:
        studio.send_signal(signal.SIGINT)
        try:
            studio.wait(timeout=120)
        except subprocess.TimeoutExpired:
            studio.kill()
        log.close()

    # the phase goes back to null right after this line, so read it from the worker's log
    warm = [float(m.group(1)) for m in re.finditer(r"warm start: done in (\d+) s",
                                                    (root / "studio.log").read_text(errors="replace"))]
    print()
    print("| event | seconds after `remix studio` |")
    print("|---|---|")
    for name, seconds in marks.items():
        print(f"| {name} | {seconds:.1f} |")
    if warm:
        print(f"| warm start alone (from its own report) | {warm[0]:.0f} |")
    print(f"\nmachine: {os.cpu_count()} CPUs; log in {root / 'studio.log'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
