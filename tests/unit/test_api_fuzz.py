"""Schemathesis fuzzes every operation of the studio API's own OpenAPI document, in process (ASGI).

A throw-away studio (SQLite in tmp_path, filesystem broker) with one seeded run (rollouts, uses,
metrics written by the real SQL sink) so that reads of run 1 reach the query code, not only 404s.
Every request carries the write token, so the write routes get past auth and their bodies are
validated. Asserted for every generated request: no 5xx, the status code is one the operation
documents, the content type and the body conform to the documented response schema.

No job ever runs: no worker exists here and the reaper is off, so the runs and evaluations that
POST /runs, /runs/{id}/retry and /evaluations create stay queued in the temporary broker folder
(nothing is excluded; cancel and delete act on those rows like on any queued run).

Deterministic: Hypothesis derandomized (fixed seed from the test's name), no deadline, no example
database. Size: MAX_EXAMPLES per operation (26 operations → a few hundred requests in total).
"""

from __future__ import annotations

import pytest

schemathesis = pytest.importorskip("schemathesis")
from hypothesis import HealthCheck, settings  # noqa: E402
from schemathesis.checks import not_a_server_error  # noqa: E402
from schemathesis.specs.openapi.checks import (  # noqa: E402
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

WRITE = {"Authorization": "Bearer w"}
MAX_EXAMPLES = 25
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]


def _seed_run() -> int:
    """One run (queued job) with 3 steps of rollouts, uses and metrics, written by the SQL sink."""
    from remix_engine.events import RolloutRecord, RolloutUseRecord
    from studio import jobs
    from studio.db import get_engine, session_scope
    from studio.settings import get_settings
    from worker.sink import SqlSink

    with session_scope() as s:
        run, _ = jobs.create_run_with_job(s, name="fuzz", cfg_dict={"preset": "toy", "algorithm": "remix-grpo"},
                                          request={}, settings=get_settings())
        run_id = run.id
    sink = SqlSink(run_id, engine=get_engine())
    sink.on_start({"resumed_from": None})
    for t in range(1, 4):
        sink.on_rollouts(t, [RolloutRecord(
            uid=f"r{t}", step=t, policy_version=t, group_id=f"s{t:06d}-g000", prompt_id="p", prompt="1+1?",
            response="</think> \\boxed{2}", extracted="2", reference="2", reward=1.0, correct=True,
            format_ok=True, reason="correct", length=5, truncated=False, advantage=0.5)])
        uses = [RolloutUseRecord(rollout_uid=f"r{t}", step=t, age=0, ratio_mean=1.0, ratio_max=1.1, clipfrac=0.0,
                                 kl_to_behavior=0.0)]
        if t > 1:
            uses.append(RolloutUseRecord(rollout_uid=f"r{t - 1}", step=t, age=1, ratio_mean=1.2, ratio_max=1.3,
                                         clipfrac=0.5, kl_to_behavior=0.01))
        sink.on_rollout_uses(t, uses)
        sink.on_step(t, {"critic/score/mean": 0.5 * t, "cost/rollouts": 8.0 * t, "timing_s/elapsed": 0.5 * t})
    sink.close()
    return run_id


def _load_schema():  # noqa: ANN202
    """The document as the default studio serves it (the app here only answers /openapi.json); the
    requests themselves go to the fixture's app. (schemathesis.pytest.from_fixture does not work
    with pytest 9: it reads Function._nodeid.)"""
    import tempfile

    from backend.app import create_app
    from studio.settings import Settings

    with tempfile.TemporaryDirectory() as tmp:
        return schemathesis.openapi.from_asgi("/openapi.json", create_app(Settings(data_dir=tmp, reaper_enabled=False)))


schema = _load_schema()


@pytest.fixture
def studio_app(studio_env, monkeypatch):
    from backend.app import create_app
    from studio.settings import get_settings, reset_settings_cache

    monkeypatch.setenv("REMIX_API_TOKENS", "w")
    monkeypatch.setenv("REMIX_REAPER_ENABLED", "false")
    reset_settings_cache()
    _seed_run()
    return create_app(get_settings())


@schema.parametrize()
@settings(max_examples=MAX_EXAMPLES, deadline=None, derandomize=True, database=None,
          suppress_health_check=list(HealthCheck))
def test_api_conforms_to_its_openapi_document(case, studio_app) -> None:  # noqa: ANN001
    _steer_to_seeded_rows(case)
    case.call_and_validate(app=studio_app, headers=WRITE, checks=CHECKS)


# Path parameters of the seeded rows: generated ids are rarely 1, so half of the valid (positive)
# cases of an operation with such a parameter are pointed at the seeded run, its job, rollouts and a group.
SEEDED = {"run_id": 1, "job_id": 1, "rollout_id": 2, "group_id": "s000002-g000"}


def _steer_to_seeded_rows(case) -> None:  # noqa: ANN001
    params = case.path_parameters or {}
    meta = case.meta
    if not params or meta is None or not meta.generation.mode.is_positive:
        return
    key = next(iter(params.values()))
    if (key if isinstance(key, int) else len(str(key))) % 2 == 0:
        for name in params.keys() & SEEDED.keys():
            params[name] = SEEDED[name]
