"""Issue 14, parts 3 and 7: what a studio submission may read (studio/paths.py, checked by the API
and again by the worker), the admin-only config fields, what open reads show without a token, and
the OpenAPI description of status codes and security."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from studio.db import session_scope
from studio.models import Evaluation, Job, Run

WRITE = {"Authorization": "Bearer w"}
READ = {"Authorization": "Bearer r"}


@pytest.fixture
def api(studio_env, monkeypatch, tmp_path):
    """(client, layout): a studio whose data roots are the defaults (data dir, benchmark folder, runs dir)."""
    from backend.app import create_app
    from studio.settings import get_settings, reset_settings_cache

    bench = tmp_path / "bench"
    bench.mkdir()
    (bench / "tiny.jsonl").write_text(json.dumps({"problem": "1+1?", "answer": "2"}) + "\n")
    monkeypatch.setenv("REMIX_BENCHMARKS_DIR", str(bench))
    monkeypatch.setenv("REMIX_API_TOKENS", "w")
    monkeypatch.setenv("REMIX_READONLY_TOKENS", "r")
    reset_settings_cache()
    inside = Path(get_settings().data_path) / "uploads"
    inside.mkdir(parents=True)
    (inside / "train.jsonl").write_text(json.dumps({"problem": "2+2?", "answer": "4"}) + "\n")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.jsonl").write_text(json.dumps({"problem": "the secret", "answer": "42"}) + "\n")
    (outside / "model").mkdir()
    (outside / "model" / "config.json").write_text("{}")
    client = TestClient(create_app(get_settings()))  # no `with`: no reaper thread
    return client, {"inside": inside, "outside": outside, "bench": bench}


def _stored() -> tuple[int, int, int]:
    with session_scope() as s:
        return tuple(s.execute(select(func.count()).select_from(t)).scalar_one() for t in (Run, Job, Evaluation))


def _queued_messages() -> int:
    from studio.settings import get_settings

    folder = get_settings().broker_folder / "queue"
    return len(list(folder.glob("*.msg"))) if folder.is_dir() else 0


def _post_run(client, overrides: dict, headers=WRITE):  # noqa: ANN001
    return client.post("/api/v1/runs", headers=headers,
                       json={"config": {"preset": "toy", "steps": 1, "overrides": {"warm_start.steps": 0, **overrides}}})


def _refusal(r, field: str) -> str:  # noqa: ANN001
    assert r.status_code == 422, r.text
    (d,) = [d for d in r.json()["detail"] if d["field"] == field]
    return d["msg"]


RUN_FIELDS = ["data.train", "data.heldout", "trainer.eval_benchmarks", "model.name_or_path"]


def _override(field: str, value: str) -> dict:
    return {field: [value]} if field == "trainer.eval_benchmarks" else {field: value}


@pytest.mark.parametrize("field", RUN_FIELDS)
def test_a_run_path_outside_the_roots_is_refused_with_one_message_whether_or_not_it_exists(api, field):
    client, d = api
    existing = str(d["outside"] / ("model" if field == "model.name_or_path" else "secret.jsonl"))
    missing = str(d["outside"] / ("nomodel" if field == "model.name_or_path" else "missing.jsonl"))
    before = (_stored(), _queued_messages())
    msgs = [_refusal(_post_run(client, _override(field, value)), field) for value in (existing, missing)]
    # the value is echoed; everything else is the same text: no existence oracle
    assert msgs[0].replace(existing, "X") == msgs[1].replace(missing, "X")
    assert "REMIX_DATA_ROOTS" in msgs[0] and msgs[0].startswith(field)
    assert (_stored(), _queued_messages()) == before == ((0, 0, 0), 0)  # nothing stored, nothing sent


def test_dot_dot_and_symlink_escapes_are_refused(api):
    client, d = api
    inside, outside = d["inside"], d["outside"]
    (inside / "link.jsonl").symlink_to(outside / "secret.jsonl")
    (inside / "linked-dir").symlink_to(outside, target_is_directory=True)
    for value in (f"{inside}/../../outside/secret.jsonl", str(inside / "link.jsonl"),
                  str(inside / "linked-dir" / "secret.jsonl"), "../outside/secret.jsonl", "~/../../etc/passwd",
                  "/etc/passwd", "secret\0.jsonl"):
        assert _refusal(_post_run(client, {"data.train": value}), "data.train"), value
    # a bare name that is a file in the worker's folder would be read as that file: refused too
    Path("secret").write_text("x")  # the fixture's working directory is tmp_path, not a root
    assert _refusal(_post_run(client, {"data.train": "secret"}), "data.train")
    assert _refusal(_post_run(client, {"data.train": "not-a-benchmark"}), "data.train")
    assert _stored() == (0, 0, 0)


def test_sources_inside_the_roots_and_named_sources_are_accepted(api):
    client, d = api
    for overrides in ({"data.train": str(d["inside"] / "train.jsonl")},
                      {"data.train": "data/uploads/train.jsonl"},  # relative, resolved inside the data dir
                      {"data.heldout": str(d["bench"] / "tiny.jsonl")},
                      {"data.train": "tiny", "data.heldout": "hf:org/set:test"},
                      {"trainer.eval_benchmarks": ["tiny", "hf:org/bench", "org/bench"]},
                      {"model.name_or_path": "Qwen/Qwen2.5-0.5B"}):
        r = _post_run(client, overrides)
        assert r.status_code == 201, (overrides, r.text)


def test_the_data_roots_setting_replaces_the_defaults(api, monkeypatch, tmp_path):
    from studio.settings import reset_settings_cache

    client, d = api
    monkeypatch.setenv("REMIX_DATA_ROOTS", f"{d['outside']}{os.pathsep}{tmp_path / 'elsewhere'}")
    reset_settings_cache()
    assert _post_run(client, {"data.train": str(d["outside"] / "secret.jsonl")}).status_code == 201
    assert _refusal(_post_run(client, {"data.train": str(d["inside"] / "train.jsonl")}), "data.train")


@pytest.mark.parametrize(("field", "value", "env"), [("model.trust_remote_code", True, "REMIX_ALLOW_REMOTE_CODE"),
                                                     ("warm_start.cache_dir", "/tmp/cache", "REMIX_ALLOW_CACHE_DIRS")])
def test_admin_only_fields_are_refused_unless_the_admin_allows_them(api, monkeypatch, field, value, env):
    from studio.settings import reset_settings_cache

    client, _ = api
    assert env in _refusal(_post_run(client, {field: value}), field)
    assert _stored() == (0, 0, 0)
    monkeypatch.setenv(env, "1")
    reset_settings_cache()
    r = _post_run(client, {field: value})
    assert r.status_code == 201 and r.json()["config"][field.split(".")[0]][field.split(".")[1]] == value


def test_evaluation_paths_follow_the_same_policy(api):
    client, d = api

    def post(body: dict):  # noqa: ANN202
        return client.post("/api/v1/evaluations", headers=WRITE, json={"benchmarks": ["tiny"], **body})

    existing, missing = str(d["outside"] / "model"), str(d["outside"] / "nomodel")
    msgs = [_refusal(post({"model": m}), "model") for m in (existing, missing)]
    assert msgs[0].replace(existing, "X") == msgs[1].replace(missing, "X")
    bench = [_refusal(post({"model": "org/model", "benchmarks": [b]}), "benchmarks")
             for b in (str(d["outside"] / "secret.jsonl"), str(d["outside"] / "missing.jsonl"))]
    assert bench[0].replace("secret", "X") == bench[1].replace("missing", "X")
    assert _refusal(post({"model": "org/model", "benchmarks": ["nosuchbench"]}), "benchmarks")
    assert _stored() == (0, 0, 0) and _queued_messages() == 0
    ok = post({"model": "org/model", "benchmarks": ["tiny", str(d["bench"] / "tiny.jsonl"), "hf:org/set"]})
    assert ok.status_code == 201, ok.text
    # the default leaderboard name of a local checkpoint carries no absolute path
    (d["inside"] / "ckpt").mkdir()
    named = post({"model": str(d["inside"] / "ckpt")}).json()
    assert named["name"] == "uploads/ckpt" or named["name"].endswith("/uploads/ckpt")
    assert not named["name"].startswith("/")


# ------------------------------------------------------------------------------- the worker
def _claim_latest():  # noqa: ANN202
    from studio import jobs
    from worker.job import JobContext, JobHeartbeat

    with session_scope() as s:
        job = s.execute(select(Job).order_by(Job.id.desc())).scalars().first()
        job_id, token = job.id, job.dispatch_token
    claim = jobs.claim(job_id, token, "gpu-host-7 pid=4242")
    assert claim is not None
    return claim, JobContext(claim, JobHeartbeat(job_id, claim.attempt, 60.0))  # heartbeat not started


def test_the_worker_checks_again_a_job_queued_before_the_policy_tightened(api, monkeypatch, tmp_path):
    from studio.settings import reset_settings_cache
    from worker.job import settle
    from worker.training import run_training

    client, d = api
    train = str(d["inside"] / "train.jsonl")
    run_id = _post_run(client, {"data.train": train}).json()["id"]
    monkeypatch.setenv("REMIX_DATA_ROOTS", str(tmp_path / "elsewhere"))  # the admin narrows the roots
    reset_settings_cache()
    claim, ctx = _claim_latest()
    out = run_training(ctx)
    assert out.status == "failed" and out.error.startswith("refused by the studio's path policy: data.train:")
    assert "Traceback" not in out.error
    settle(claim, ctx.heartbeat, out)
    run = client.get(f"/api/v1/runs/{run_id}", headers=READ).json()
    assert run["status"] == "failed" and "data.train" in run["error"]
    retry = client.post(f"/api/v1/runs/{run_id}/retry", headers=WRITE)
    assert retry.status_code == 409 and "data.train" in retry.text
    assert _stored()[:2] == (1, 1)
    assert not list((tmp_path / "data" / "runs").rglob("*.pt"))  # nothing trained


def test_the_worker_refuses_an_evaluation_outside_the_roots(api, monkeypatch, tmp_path):
    from studio.settings import reset_settings_cache
    from worker.evaluation import run_evaluation

    client, d = api
    assert client.post("/api/v1/evaluations", headers=WRITE,
                       json={"model": "org/model", "benchmarks": [str(d["bench"] / "tiny.jsonl")]}).status_code == 201
    monkeypatch.setenv("REMIX_DATA_ROOTS", str(tmp_path / "elsewhere"))
    monkeypatch.setenv("REMIX_BENCHMARKS_DIR", str(tmp_path / "elsewhere"))
    reset_settings_cache()
    _, ctx = _claim_latest()
    out = run_evaluation(ctx)
    assert out.status == "failed" and out.error.startswith("refused by the studio's path policy: benchmarks[0]:")


# ------------------------------------------------------------------------------- public reads
ABSOLUTE = re.compile(r"/(tmp|home|work|root|var|etc|usr)/")


def test_public_reads_show_no_paths_pids_or_tracebacks_but_a_token_holder_sees_them(api, tmp_path):
    from studio import jobs
    from studio.models import Checkpoint
    from studio.settings import get_settings
    from worker.job import short_error

    client, d = api
    run_id = _post_run(client, {"data.train": str(d["inside"] / "train.jsonl")}).json()["id"]
    claim, _ = _claim_latest()
    runs_dir = get_settings().runs_path
    ckpt = runs_dir / str(run_id) / "attempt-01" / "checkpoints" / "step_000001"
    with session_scope() as s:
        s.add(Checkpoint(run_id=run_id, step=1, policy_version=1, path=str(ckpt), policy_path=str(ckpt / "policy")))
    try:
        raise FileNotFoundError(f"data file not found: {tmp_path}/private/file.jsonl")
    except FileNotFoundError as exc:
        error = short_error(exc)
    assert "Traceback" in error or "File \"" in error
    jobs.finish(claim.job_id, claim.attempt, "failed", error=error)

    texts = []
    for path in (f"/api/v1/runs/{run_id}", "/api/v1/runs", f"/api/v1/jobs/{claim.job_id}", "/api/v1/jobs",
                 "/api/v1/health"):
        r = client.get(path)
        assert r.status_code == 200, (path, r.text)
        texts.append(r.text)
        assert str(tmp_path) not in r.text and not ABSOLUTE.search(r.text), (path, r.text[:2000])
        assert "4242" not in r.text and "gpu-host-7" not in r.text, path
        assert "File \"" not in r.text and "Traceback" not in r.text, path
    run = client.get(f"/api/v1/runs/{run_id}").json()
    assert run["error"] == "FileNotFoundError: data file not found: …/file.jsonl" and run["error_detail"] is None
    assert run["job"]["worker"] is None and run["job"]["error_detail"] is None
    assert run["output_dir"] == f"runs/{run_id}"
    assert run["checkpoints"][0]["path"] == f"runs/{run_id}/attempt-01/checkpoints/step_000001"
    assert run["config"]["data"]["train"] == "data/uploads/train.jsonl"
    # an invalid token on an open read is no token
    assert client.get(f"/api/v1/runs/{run_id}", headers={"Authorization": "Bearer nope"}).json()["error_detail"] is None

    for headers in (READ, WRITE):  # any valid token sees everything
        full = client.get(f"/api/v1/runs/{run_id}", headers=headers).json()
        assert full["error_detail"] == error and full["job"]["error_detail"] == error
        assert full["error"] == error.splitlines()[0]
        assert full["job"]["worker"] == "gpu-host-7 pid=4242"
        assert full["output_dir"] == str(runs_dir / str(run_id))
        assert full["checkpoints"][0]["path"] == str(ckpt)
        assert full["config"]["data"]["train"] == str(d["inside"] / "train.jsonl")


def test_public_evaluation_reads_show_no_paths(api):
    client, d = api
    spec = str(d["bench"] / "tiny.jsonl")
    ev = client.post("/api/v1/evaluations", headers=WRITE, json={"model": "org/model", "benchmarks": [spec]}).json()
    public = client.get(f"/api/v1/evaluations/{ev['id']}")
    assert public.status_code == 200 and str(d["bench"].parent) not in public.text and not ABSOLUTE.search(public.text)
    assert public.json()["params"]["benchmarks"] == ["bench/tiny.jsonl"]
    assert spec in client.get(f"/api/v1/evaluations/{ev['id']}", headers=READ).text
    assert spec not in client.get("/api/v1/evaluations").text


# ------------------------------------------------------------------------------- OpenAPI
def test_openapi_lists_status_codes_and_security_per_route(tmp_path):
    from backend.app import create_app
    from studio.settings import Settings

    spec = create_app(Settings(data_dir=tmp_path)).openapi()
    seen = 0
    for path, item in spec["paths"].items():
        for method, op in item.items():
            seen += 1
            where = f"{method.upper()} {path}"
            codes = set(op["responses"])
            assert all(op["responses"][c].get("description") for c in codes), where
            if method == "get":
                assert not op.get("security"), f"{where}: an open read is marked as needing a token"
            else:
                assert op.get("security") == [{"HTTPBearer": []}], where
                assert {"401", "403"} <= codes, f"{where}: {sorted(codes)}"
            if "{" in path:
                assert "404" in codes, f"{where}: {sorted(codes)}"
            if op.get("requestBody"):
                assert {"413", "422"} <= codes, f"{where}: {sorted(codes)}"
    assert seen > 20
    assert "400" in spec["paths"]["/api/v1/runs/{run_id}/rollouts"]["get"]["responses"]
    assert "409" in spec["paths"]["/api/v1/runs/{run_id}/cancel"]["post"]["responses"]
    # with REMIX_AUTH_READS every read needs a token too, and says so
    closed = create_app(Settings(data_dir=tmp_path, auth_reads=True)).openapi()
    runs = closed["paths"]["/api/v1/runs"]["get"]
    assert runs["security"] == [{"HTTPBearer": []}] and "401" in runs["responses"]


# ------------------------------------------------------------- found by tests/unit/test_api_fuzz.py
def test_out_of_range_ids_answer_the_documented_422_shape(api):
    client, _ = api
    for path, params in (("/api/v1/runs", {"parent_run_id": 2 ** 70}), ("/api/v1/evaluations", {"offset": 2 ** 72})):
        r = client.get(path, params=params)
        assert r.status_code == 422, (path, r.text)
        detail = r.json()["detail"]
        assert isinstance(detail, list) and {"loc", "msg", "type"} <= set(detail[0]), r.text
        assert "out of range" in detail[0]["msg"]


def test_a_body_that_is_not_utf8_is_a_documented_400(api):
    client, _ = api
    spec = client.get("/openapi.json").json()["paths"]
    for path in ("/api/v1/runs", "/api/v1/evaluations"):
        r = client.post(path, headers={**WRITE, "Content-Type": "application/json"}, content=b"\xd1\x82\xc0")
        assert r.status_code == 400, (path, r.text)
        assert "400" in spec[path]["post"]["responses"], path
