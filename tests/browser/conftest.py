"""Fixtures for the dashboard's browser tests: a live studio (`remix studio` on the embedded
default: SQLite + filesystem broker + one worker, in a temporary data directory) and headless
Chromium (the Debian package, driven by Playwright; Playwright's own browser download is never used).

Chromium is looked up at $REMIX_CHROMIUM, /usr/bin/chromium, /usr/bin/chromium-browser or on PATH.
Without it (or without the playwright package) the tests skip locally and FAIL when CI=true, so CI
never passes by skipping them.

Screenshots of every page are written to test-artifacts/screenshots/<page>.png; the studio's own
output goes to test-artifacts/browser-studio.log.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO / "test-artifacts"
SCREENSHOTS = ARTIFACTS / "screenshots"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
ON_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def _unavailable(reason: str):
    if ON_CI:
        pytest.fail(f"browser tests cannot run on CI: {reason}", pytrace=False)
    pytest.skip(reason)


def chromium_path() -> str | None:
    for candidate in (os.environ.get("REMIX_CHROMIUM"), "/usr/bin/chromium", "/usr/bin/chromium-browser",
                      shutil.which("chromium"), shutil.which("chromium-browser")):
        if candidate and Path(candidate).is_file() and os.access(candidate, os.X_OK):
            return candidate
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Studio:
    """`remix studio` in a subprocess; `url`, `token` and an httpx client for the API."""

    def __init__(self, data_dir: Path, log_path: Path):
        self.data_dir = data_dir
        self.log_path = log_path
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None
        self.token = ""
        self.api = httpx.Client(base_url=self.url + "/api/v1", timeout=30)

    def start(self, timeout: float = 120) -> None:
        remix = Path(sys.executable).parent / "remix"
        cmd = [str(remix)] if remix.is_file() else [sys.executable, "-m", "backend.cli"]
        cmd += ["studio", "--data-dir", str(self.data_dir), "--port", str(self.port), "--log-level", "warning",
                "--worker-stop-timeout", "20"]
        env = {k: v for k, v in os.environ.items() if not k.startswith("REMIX_") or k == "REMIX_CACHE_DIR"}
        env["PYTHONUNBUFFERED"] = "1"
        self.log_file = open(self.log_path, "wb")  # noqa: SIM115 (closed in stop)
        self.proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=self.log_file, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"remix studio exited with {self.proc.returncode}:\n{self.log()[-3000:]}")
            try:
                r = self.api.get("/health")
                if r.status_code == 200 and r.json().get("workers", {}).get("online", 0) > 0:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        else:
            raise RuntimeError(f"the studio did not become healthy within {timeout:.0f}s:\n{self.log()[-3000:]}")
        self.token = (self.data_dir / "api_token").read_text().strip()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def write_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    def run(self, run_id: int) -> dict:
        r = self.api.get(f"/runs/{run_id}")
        r.raise_for_status()
        return r.json()

    def wait_run(self, run_id: int, predicate, timeout: float, what: str) -> dict:
        deadline = time.monotonic() + timeout
        run = self.run(run_id)
        while time.monotonic() < deadline:
            run = self.run(run_id)
            if predicate(run):
                return run
            if run["status"] == "failed":
                raise AssertionError(f"run {run_id} failed: {run.get('error')}\n{self.log()[-3000:]}")
            time.sleep(1)
        raise AssertionError(f"timed out after {timeout:.0f}s waiting for run {run_id} to {what} "
                             f"(status {run['status']}, {run['steps_done']}/{run['steps_total']} steps)")

    def stop(self) -> None:
        self.api.close()
        if self.proc is None:
            return
        worker_pids = [int(p) for p in re.findall(r"worker:\s+pid (\d+)", self.log())]
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)  # the studio stops its worker, then itself
            try:
                self.proc.wait(timeout=45)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        for pid in worker_pids:  # a worker the studio could not stop (own session): end it too
            try:
                os.kill(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        self.log_file.close()


@pytest.fixture(scope="session")
def studio(tmp_path_factory) -> Iterator[Studio]:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    data_dir = tmp_path_factory.mktemp("studio-browser") / "data"
    s = Studio(data_dir, ARTIFACTS / "browser-studio.log")
    try:
        s.start()
        yield s
    finally:
        s.stop()


@pytest.fixture(scope="session")
def browser():
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _unavailable("the playwright package is not installed (pip install -e '.[dev]')")
    exe = chromium_path()
    if exe is None:
        _unavailable("Chromium not found (apt-get install chromium, or set REMIX_CHROMIUM)")
    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=exe, args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            b.close()


@pytest.fixture(scope="session")
def context(browser, studio):
    """One browser profile for the session (localStorage keeps the API token between tests)."""
    ctx = browser.new_context(viewport={"width": 1400, "height": 900}, base_url=studio.url)
    ctx.set_default_timeout(20_000)
    yield ctx
    ctx.close()


@pytest.fixture
def page(context):
    """A tab; uncaught JavaScript errors on it fail the test."""
    p = context.new_page()
    errors: list[str] = []
    p.on("pageerror", lambda exc: errors.append(str(exc)))
    p.js_errors = errors
    yield p
    p.close()
    assert not errors, f"uncaught JavaScript errors: {errors}"


def save_screenshot(page, name: str) -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


@pytest.fixture(scope="session")
def screenshot():
    """screenshot(page, "runs") → test-artifacts/screenshots/runs.png (full page)."""
    return save_screenshot
