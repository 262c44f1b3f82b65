"""`remix studio` on the embedded default, as a user runs it: one command, one data directory.

Runs the curl sequence of README.md *as written* (only host/port and the data directory are
substituted), then stops the studio with Ctrl-C (SIGINT) and checks that the API and the worker
process both exit cleanly.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from studio_harness import REPO, _child_env, free_port, wait_for

pytestmark = pytest.mark.integration

DOC = REPO / "README.md"


def curl_sequence() -> str:
    text = DOC.read_text()
    m = re.search(r"<!-- curl-sequence:begin -->\s*```bash\n(.*?)```\s*<!-- curl-sequence:end -->", text, re.S)
    assert m, "README.md must hold the curl sequence between curl-sequence markers"
    return m.group(1)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_studio_command_and_documented_curl_sequence(tmp_path: Path) -> None:
    data_dir = tmp_path / "studio-data"
    port = free_port()
    log_path = tmp_path / "studio.log"
    env = _child_env({})  # no REMIX_* at all: the embedded defaults, token generated on first start
    with open(log_path, "wb") as log:
        studio = subprocess.Popen([sys.executable, "-m", "backend.cli", "studio", "--port", str(port),
                                   "--data-dir", str(data_dir)], cwd=tmp_path, env=env, stdout=log,
                                  stderr=subprocess.STDOUT, start_new_session=True)
    api = f"http://127.0.0.1:{port}/api/v1"
    worker_pid = None
    try:
        def worker_online() -> dict | None:
            if studio.poll() is not None:
                raise AssertionError(f"studio exited with {studio.returncode}:\n{log_path.read_text()[-4000:]}")
            try:
                health = httpx.get(f"{api}/health", timeout=10).json()
            except httpx.HTTPError:
                return None
            return health if health["workers"]["online"] >= 1 else None

        health = wait_for(worker_online, 180, what="the studio and its worker")
        assert health["database"]["dialect"] == "sqlite" and health["broker"]["url"].startswith("filesystem")
        assert (data_dir / "studio.db").is_file() and (data_dir / "broker").is_dir()
        assert health["workers"]["items"][0]["pid"] is None  # not shown without a token
        token = (data_dir / "api_token").read_text().strip()
        health = httpx.get(f"{api}/health", headers={"Authorization": f"Bearer {token}"}, timeout=10).json()
        worker_pid = health["workers"]["items"][0]["pid"]
        assert worker_pid != studio.pid
        assert token and token in log_path.read_text(), "the new token is printed on first start"
        assert oct((data_dir / "api_token").stat().st_mode & 0o777) == "0o600"

        script = curl_sequence().replace("http://127.0.0.1:8000", f"http://127.0.0.1:{port}")
        script = script.replace(".remix/api_token", str(data_dir / "api_token"))
        done = subprocess.run(["bash", "-euo", "pipefail", "-c", script], cwd=tmp_path, capture_output=True,
                              text=True, timeout=400)
        assert done.returncode == 0, f"{done.stdout}\n{done.stderr}\n{log_path.read_text()[-4000:]}"
        out = done.stdout
        assert "succeeded" in out, out
        run = httpx.get(f"{api}/runs/1").json()
        assert run["status"] == "succeeded" and run["steps_done"] == run["steps_total"]
        page = httpx.get(f"{api}/runs/1/rollouts", params={"limit": 5, "order": "desc"}).json()
        assert page["count"] == run["rollouts_generated"] > 0
        assert page["data"][0]["uid"] in out, "the listed rollouts are printed"
        assert '"rule":"zero_variance_groups"' in out, "the run's health alerts are printed"
    finally:
        if studio.poll() is None:
            studio.send_signal(signal.SIGINT)  # Ctrl-C
        try:
            code = studio.wait(timeout=90)
        except subprocess.TimeoutExpired:
            studio.kill()
            if worker_pid and _pid_alive(worker_pid):
                os.kill(worker_pid, signal.SIGKILL)
            raise
    assert code == 0, log_path.read_text()[-4000:]
    assert worker_pid is not None
    wait_for(lambda: not _pid_alive(worker_pid), 10, what="the worker process to exit")
    assert "worker stopped (exit 0)" in log_path.read_text()


# Start-up lines nobody can act on (issue 15): Celery's root warning, kombu's host-less URL warning,
# an unexpanded node name, progress bars logged as warnings.
NOISE = ("SecurityWarning", "superuser privileges", "No hostname was supplied", "%h", "Loading weights")


def test_studio_starts_quietly_and_health_says_starting_not_degraded(tmp_path: Path) -> None:
    data_dir, log_path = tmp_path / "studio-data", tmp_path / "studio.log"
    port = free_port()
    api = f"http://127.0.0.1:{port}/api/v1"
    studio = _start_studio(data_dir, port, log_path, tmp_path)
    seen: list[str] = []
    try:
        def online() -> dict | None:
            assert studio.poll() is None, log_path.read_text()[-4000:]
            try:
                health = httpx.get(f"{api}/health", timeout=10).json()
            except httpx.HTTPError:
                return None
            seen.append(health["status"])
            return health if health["workers"]["online"] >= 1 else None

        health = wait_for(online, 180, what="the studio's worker")
        assert health["status"] == "ok", seen
        assert set(seen) <= {"starting", "ok"}, seen  # never `degraded` while its own worker boots
    finally:
        studio.send_signal(signal.SIGINT)
        studio.wait(timeout=90)
    log = log_path.read_text()
    assert "worker stopped (exit 0)" in log, log[-4000:]
    assert not [n for n in NOISE if n in log], log[-4000:]


def test_a_worker_names_its_embedded_fallback_and_refuses_it_on_request(tmp_path: Path) -> None:
    data_dir = tmp_path / "d"
    env = _child_env({"REMIX_DATA_DIR": str(data_dir)})  # no REMIX_DATABASE_URL / REMIX_BROKER_URL
    refused = subprocess.run([sys.executable, "-m", "worker.cli", "worker", "--require-urls"], cwd=tmp_path, env=env,
                             capture_output=True, text=True, timeout=120)
    assert refused.returncode == 4 and refused.stderr.count("\n") == 1, refused
    assert "REMIX_DATABASE_URL and REMIX_BROKER_URL not set" in refused.stderr
    log_path = tmp_path / "worker.log"
    with open(log_path, "wb") as log:
        worker = subprocess.Popen([sys.executable, "-m", "worker.cli", "worker", "-n", "probe@%h"], cwd=tmp_path,
                                  env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_for(lambda: " ready." in log_path.read_text(), 180, what="the worker to be ready")
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.wait(timeout=60)
    text = log_path.read_text()
    first = text.splitlines()[0]
    assert first.startswith(f"remix worker probe@{socket.gethostname()}: "), first  # %h expanded
    assert f"embedded SQLite file {data_dir.resolve() / 'studio.db'}" in first, first
    assert f"filesystem broker {data_dir.resolve() / 'broker'}" in first, first
    assert not [n for n in NOISE if n in text], text


def _start_studio(data_dir: Path, port: int, log_path: Path, cwd: Path) -> subprocess.Popen:
    with open(log_path, "ab") as log:
        return subprocess.Popen([sys.executable, "-m", "backend.cli", "studio", "--port", str(port),
                                 "--data-dir", str(data_dir)], cwd=cwd, env=_child_env({}), stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True)


def _processes() -> list[tuple[int, int, list[bytes]]]:
    """(pid, parent pid, argv) of every process /proc shows."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        found.append((int(entry.name), ppid, argv))
    return found


def _workers_on(data_dir: Path) -> list[int]:
    """Pids of the worker processes serving `data_dir` (found by their lock-file argument); the
    processes they fork (grading pool) carry the same command line and are left out."""
    lock = str(data_dir / "worker.lock").encode()
    parents = {pid: ppid for pid, ppid, argv in _processes() if b"worker.cli" in argv and lock in argv}
    return [pid for pid, ppid in parents.items() if ppid not in parents]


def test_kill_9_of_the_studio_leaves_no_orphan_and_the_next_studio_resumes_the_job(tmp_path: Path) -> None:
    """The studio's worker stops with its studio (even on kill -9: the job checkpoints and is
    re-queued), the next `remix studio` on the folder runs exactly one worker, and the job resumes once."""
    from studio_harness import fast_config

    data_dir, log_path = tmp_path / "studio-data", tmp_path / "studio.log"
    port = free_port()
    api = f"http://127.0.0.1:{port}/api/v1"
    first = _start_studio(data_dir, port, log_path, tmp_path)
    second = None
    try:
        def online() -> dict | None:
            try:
                health = httpx.get(f"{api}/health", timeout=10).json()
            except httpx.HTTPError:
                return None
            return health if health["workers"]["online"] >= 1 else None

        wait_for(online, 180, what="the first studio's worker")
        (old_worker,) = _workers_on(data_dir)
        token = (data_dir / "api_token").read_text().strip()
        steps = 30  # far more than the kill needs: the first studio cannot finish the run before it dies
        cfg = fast_config(steps, **{"trainer.checkpoint_every": 1})
        r = httpx.post(f"{api}/runs", json={"config": cfg}, headers={"Authorization": f"Bearer {token}"}, timeout=30)
        assert r.status_code == 201, r.text
        run_id = r.json()["id"]
        wait_for(lambda: httpx.get(f"{api}/runs/{run_id}").json()["steps_done"] >= 2, 180, what="two steps")

        first.send_signal(signal.SIGKILL)
        first.wait()
        wait_for(lambda: not _pid_alive(old_worker), 120, what="the orphaned worker to checkpoint and stop")

        second = _start_studio(data_dir, port, log_path, tmp_path)
        wait_for(online, 180, what="the second studio's worker")
        assert len(_workers_on(data_dir)) == 1
        blocked = subprocess.run([sys.executable, "-m", "worker.cli", "worker", "--no-migrate", "--lock-file",
                                  str(data_dir / "worker.lock")], env=_child_env({"REMIX_DATA_DIR": str(data_dir)}),
                                 capture_output=True, text=True, timeout=120)
        assert blocked.returncode == 3 and "already holds" in blocked.stderr, blocked.stderr

        def finished() -> dict | None:
            run = httpx.get(f"{api}/runs/{run_id}").json()
            return run if run["status"] in ("succeeded", "failed", "cancelled") else None

        run = wait_for(finished, 300, what="the resumed run to finish")
        assert run["status"] == "succeeded" and run["steps_done"] == run["steps_total"] == steps, run
        assert run["job"]["attempt"] == 2 and run["job"]["resumed_from_step"] >= 2, run["job"]
        series = httpx.get(f"{api}/runs/{run_id}/metrics", params={"keys": "critic/score/mean"}).json()["series"]
        assert series[0]["total"] == steps and series[0]["step"] == list(range(1, steps + 1))  # each step once: none lost or twice
    finally:
        for proc in (first, second):
            if proc is not None and proc.poll() is None:
                proc.send_signal(signal.SIGINT)
                try:
                    proc.wait(timeout=90)
                except subprocess.TimeoutExpired:
                    proc.kill()
        for pid in _workers_on(data_dir):
            os.kill(pid, signal.SIGKILL)


def _api_processes(studio: subprocess.Popen) -> list[int]:
    """The API processes `--api-workers` spawned (multiprocessing's resource tracker left out)."""
    return [pid for pid, ppid, argv in _processes()
            if ppid == studio.pid and any(b"spawn_main" in arg for arg in argv)]


def test_api_workers_share_the_port_stop_on_ctrl_c_and_die_with_a_killed_studio(tmp_path: Path) -> None:
    data_dir, log_path = tmp_path / "studio-data", tmp_path / "studio.log"
    port = free_port()
    api = f"http://127.0.0.1:{port}/api/v1"

    def start() -> subprocess.Popen:
        with open(log_path, "ab") as log:
            return subprocess.Popen([sys.executable, "-m", "backend.cli", "studio", "--no-worker", "--api-workers", "2",
                                     "--port", str(port), "--data-dir", str(data_dir)], cwd=tmp_path,
                                    env=_child_env({}), stdout=log, stderr=subprocess.STDOUT, start_new_session=True)

    def serving(studio: subprocess.Popen) -> list[int] | None:
        assert studio.poll() is None, log_path.read_text()[-4000:]
        try:
            ok = httpx.get(f"{api}/health", timeout=10).status_code == 200
        except httpx.HTTPError:
            return None
        procs = _api_processes(studio)
        return procs if ok and len(procs) == 2 else None

    studio = start()
    first: list[int] = []
    second: list[int] = []
    try:
        first = wait_for(lambda: serving(studio), 180, what="two API processes")
        token = (data_dir / "api_token").read_text().strip()
        # a write in one process is read back (through any of them) at once: the read caches are per process
        r = httpx.post(f"{api}/runs", json={"config": {"preset": "toy", "steps": 3}},
                       headers={"Authorization": f"Bearer {token}"}, timeout=30)
        assert r.status_code == 201, r.text
        for _ in range(6):
            assert httpx.get(f"{api}/runs/{r.json()['id']}", timeout=10).json()["status"] in ("pending", "queued")
        studio.send_signal(signal.SIGINT)
        assert studio.wait(timeout=90) == 0, log_path.read_text()[-4000:]
        assert not [pid for pid in first if _pid_alive(pid)]

        studio = start()
        second = wait_for(lambda: serving(studio), 180, what="two API processes after a restart")
        studio.send_signal(signal.SIGKILL)  # the API processes get SIGTERM from the kernel
        studio.wait()
        wait_for(lambda: not [pid for pid in second if _pid_alive(pid)], 60, what="the API processes to exit")
    finally:
        if studio.poll() is None:
            studio.kill()
        for pid in first + second:
            if _pid_alive(pid):
                os.kill(pid, signal.SIGKILL)
