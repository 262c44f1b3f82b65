import os

import pytest
import torch


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    # On a shared 2-core machine two OpenMP threads per process spin against each other's load:
    # a 3-step warm start took 25 s with 2 threads and 4 s with 1 (measured). Restored afterwards.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(autouse=True)
def _no_caller_environment(monkeypatch):
    # The caller's cache and data folders must not change what a unit test sees (a CI run once
    # failed because REMIX_CACHE_DIR was set); tests that need them set them explicitly.
    for name in ("REMIX_CACHE_DIR", "REMIX_BENCHMARKS_DIR", "REMIX_DATA_DIR"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def studio_env(tmp_path, monkeypatch):
    """A fresh SQLite studio in tmp_path; no REMIX_* variable or .env of the caller leaks in."""
    for key in list(os.environ):
        if key.startswith("REMIX_"):
            monkeypatch.delenv(key)
    monkeypatch.chdir(tmp_path)  # no .env from the caller's directory
    monkeypatch.setenv("REMIX_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("REMIX_MAX_ATTEMPTS", "2")
    from studio.db import dispose_engines
    from studio.migrate import upgrade_database
    from studio.settings import get_settings, reset_settings_cache

    reset_settings_cache()
    dispose_engines()
    settings = get_settings()
    upgrade_database(settings)
    yield settings
    dispose_engines()
    reset_settings_cache()
