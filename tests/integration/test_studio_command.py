"""`remix studio` on the embedded default, as a user runs it: one command, one data directory.

Runs the curl sequence of README.md *as written* (only host/port and the data directory are
substituted), then stops the studio with Ctrl-C (SIGINT) and checks that the API and the worker
process both exit cleanly.
"""

from __future__ import annotations

import os
import re
import signal
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
