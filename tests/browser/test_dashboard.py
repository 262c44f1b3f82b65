"""The dashboard in a real browser against a live studio (embedded default).

One tiny toy run is created through the New-run form (after a server-side validation error is shown
inline), watched while its charts grow without a page reload, then inspected on the off-policy page
and in the trace inspector; a second run (plain GRPO, queued through the API) is compared with it.
Every page is saved as test-artifacts/screenshots/<page>.png.
"""

from __future__ import annotations

import json
import re

import pytest

pytestmark = pytest.mark.browser

# A toy run that finishes in seconds on 2 shared cores; reincarnation at step 4 so that the
# off-policy views show replay before it and none after it.
STEPS = 6
TINY = ["rollout.prompts_per_step=4", "rollout.group_size=4", "rollout.max_new_tokens=32", "data.heldout_size=16",
        "trainer.eval_every=2", "trainer.checkpoint_every=3", "warm_start.steps=30"]
GROUP_SIZE = 4
LIVE: dict = {}  # what the run page showed right after the form submitted the run (see toy_run)


def plot_points(page, selector: str) -> int:
    """Data points drawn in the Plotly figure inside `selector` (0 when there is no figure)."""
    return page.evaluate("""(sel) => {
        const plot = document.querySelector(sel + ' .plot');
        if (!plot || !plot.data) return 0;
        return plot.data.reduce((n, t) => n + ((t.x && t.x.length) || 0), 0);
    }""", selector)


def wait_points(page, selector: str, at_least: int, timeout: float = 60_000) -> None:
    page.wait_for_function("""([sel, n]) => {
        const plot = document.querySelector(sel + ' .plot');
        return plot && plot.data && plot.data.reduce((k, t) => k + ((t.x && t.x.length) || 0), 0) >= n;
    }""", arg=[selector, at_least], timeout=timeout)


# ------------------------------------------------------------------------------------ fixtures
@pytest.fixture(scope="module")
def toy_run(context, studio, screenshot) -> int:
    """Create the toy run through the form: first with an invalid value (the server's message must
    appear next to the field), then fixed. Returns the new run's id."""
    page = context.new_page()
    try:
        page.goto("/new")
        # The API token through the header's dialog, as a user would paste it.
        page.click("#token-button")
        page.fill("#token-input", studio.token)
        page.click("#token-save")
        page.wait_for_function("() => document.querySelector('#token-button').textContent.trim() === 'API token ✓'")

        page.fill("#f-name", "browser toy remix")
        page.select_option("#f-algorithm", "remix-grpo")
        page.fill("#f-steps", str(STEPS))
        page.fill("#f-seed", "0")
        page.fill("#f-utd", "0")  # invalid: the server answers 422 naming remix.utd
        page.fill("#f-reincarnate", "4")
        page.fill("#f-overrides", "\n".join(TINY))
        page.click("#submit-run")
        page.wait_for_selector("#e-utd:not(:empty)")
        assert "greater than or equal to 1" in page.text_content("#e-utd")
        assert page.get_attribute("#f-utd", "aria-invalid") == "true"
        assert page.is_visible("#error-summary")
        assert page.url.endswith("/new")
        screenshot(page, "new-run")

        page.fill("#f-utd", "2")
        with page.expect_navigation(url=re.compile(r"/runs/\d+$")):
            page.click("#submit-run")
        run_id = int(page.url.rsplit("/", 1)[1])

        # The page we land on is the live run page of a run that has only just been queued: its
        # charts must fill in and grow while we watch, without a reload.
        page.wait_for_selector("#run-header h1")
        page.evaluate("window.__noReload = true")  # gone if the page reloads
        page.wait_for_selector("#chart-reward .chart-body:not([data-state='loading'])")
        LIVE["points_at_first_render"] = plot_points(page, "#chart-reward")
        LIVE["status_at_first_render"] = page.get_attribute("#run-header [data-status]", "data-status")
        wait_points(page, "#chart-reward", max(2, LIVE["points_at_first_render"] + 1), timeout=120_000)
        LIVE["points_later"] = plot_points(page, "#chart-reward")
        LIVE["no_reload"] = page.evaluate("window.__noReload === true")
    finally:
        page.close()
    return run_id


@pytest.fixture(scope="module")
def grpo_run(studio, toy_run) -> int:
    """A plain GRPO run with the same tiny settings, queued through the REST API (runs after toy_run)."""
    r = studio.api.post("/runs", headers=studio.write_headers(), json={
        "name": "browser toy grpo",
        "config": {"preset": "toy", "algorithm": "grpo", "steps": 4, "seed": 0, "overrides": TINY}})
    assert r.status_code == 201, r.text
    return r.json()["id"]


# ------------------------------------------------------------------------------------ tests
def test_runs_page_empty_state(page, studio, screenshot):
    if studio.api.get("/runs").json()["count"]:
        pytest.skip("runs exist already (this test only means something first)")
    page.goto("/")
    page.wait_for_selector(".state-empty")
    assert "No runs yet" in page.text_content("#runs-table")
    assert page.get_attribute("#runs-table .state-empty a", "href") == "/new"
    page.wait_for_selector("#health[data-state='ok']")
    assert "worker" in page.text_content("#health")
    screenshot(page, "runs-empty")


def test_new_run_from_form_is_queued(studio, toy_run):
    run = studio.run(toy_run)
    assert run["name"] == "browser toy remix"
    assert run["algorithm"] == "remix-grpo" and run["steps_total"] == STEPS
    cfg = run["config"]
    assert cfg["remix"]["utd"] == 2 and cfg["remix"]["reincarnate_at"] == 4
    assert cfg["rollout"]["group_size"] == GROUP_SIZE and cfg["warm_start"]["steps"] == 30


def test_run_page_charts_grow_live(page, studio, toy_run, screenshot):
    # right after submitting, the run page showed fewer points than later, with no reload between
    assert LIVE["points_at_first_render"] < STEPS, LIVE
    assert LIVE["points_later"] > LIVE["points_at_first_render"], LIVE
    assert LIVE["no_reload"], LIVE

    page.goto(f"/runs/{toy_run}")
    page.wait_for_selector("#run-header h1")
    assert page.text_content("#run-header h1") == "browser toy remix"
    page.evaluate("window.__noReload = true")

    studio.wait_run(toy_run, lambda r: r["status"] == "succeeded", 180, "succeed")
    page.wait_for_selector("#run-header [data-status='succeeded']", timeout=30_000)
    wait_points(page, "#chart-reward", STEPS)
    for chart in ("accuracy", "reward", "length", "reflection", "kl", "clipfrac", "ratio"):
        assert plot_points(page, f"#chart-{chart}") >= 2, f"chart {chart} has no data"
    assert page.evaluate("window.__noReload === true")
    # reincarnation (step 4) is marked on the charts
    assert page.evaluate("document.querySelector('#chart-reward .plot').layout.shapes.length") >= 1

    # x = cumulative rollouts, then wall time
    page.click("#x-choice button[data-x='rollouts']")
    page.wait_for_function("() => document.querySelector('#chart-reward .plot').layout.xaxis.title.text.includes('rollouts')")
    xs = page.evaluate("document.querySelector('#chart-reward .plot').data.at(-1).x")
    assert xs == sorted(xs) and xs[-1] > STEPS  # cumulative rollouts, not steps
    page.click("#x-choice button[data-x='time']")
    page.wait_for_function("() => document.querySelector('#chart-reward .plot').layout.xaxis.title.text.includes('time')")
    page.click("#x-choice button[data-x='step']")
    page.wait_for_function("() => document.querySelector('#chart-reward .plot').layout.xaxis.title.text.includes('step')")
    # smoothing adds a faint raw trace under the smoothed line
    page.fill("#smoothing", "0.6")
    page.dispatch_event("#smoothing", "input")
    page.wait_for_function("() => document.querySelector('#chart-reward .plot').data.length >= 2")

    # job log, checkpoints, config
    assert "finished: succeeded" in page.text_content("#job-log")
    assert page.locator("#checkpoints tbody tr").count() >= 1
    assert "reincarnate_at" in page.text_content("#config-tree")
    screenshot(page, "run")


def test_offpolicy_page(page, studio, toy_run, screenshot):
    studio.wait_run(toy_run, lambda r: r["status"] == "succeeded", 180, "succeed")
    page.goto(f"/offpolicy/{toy_run}")
    wait_points(page, "#chart-reuse-ratio", STEPS)
    for chart in ("fresh-replayed", "staleness-map", "staleness-hist", "ratio-age", "clip-age", "ratio-time",
                  "reuse-hist"):
        assert plot_points(page, f"#chart-{chart}") >= 1, f"off-policy chart {chart} has no data"
    # replay happened before reincarnation (ages > 0) and the step is marked on the step charts
    ages = page.evaluate("document.querySelector('#chart-staleness-hist .plot').data[0].x")
    assert max(ages) >= 1
    for chart in ("reuse-ratio", "fresh-replayed", "staleness-map", "ratio-time", "clip-time"):
        text = page.evaluate(f"JSON.stringify(document.querySelector('#chart-{chart} .plot').layout.annotations)")
        assert "reincarnation (step 4)" in text, chart
    assert "step 4" in page.text_content("#op-stats")
    screenshot(page, "offpolicy")


def test_trace_inspector_filters_and_opens_a_trace(page, studio, toy_run, screenshot):
    studio.wait_run(toy_run, lambda r: r["status"] == "succeeded", 180, "succeed")
    total = studio.api.get(f"/runs/{toy_run}/rollouts", params={"limit": 1}).json()["count"]
    page.goto(f"/traces/{toy_run}")
    page.wait_for_selector("#trace-table tbody tr")
    assert page.text_content("#trace-count").startswith(f"{total} rollouts match")

    # step range
    page.fill("#t-step-min", "2")
    page.fill("#t-step-max", "2")
    page.press("#t-step-max", "Enter")
    page.dispatch_event("#t-step-max", "change")
    page.wait_for_function("() => [...document.querySelectorAll('#trace-table tbody tr td:first-child')]"
                           ".every(td => td.textContent === '2')")
    expected = studio.api.get(f"/runs/{toy_run}/rollouts", params={"step_min": 2, "step_max": 2, "limit": 1}).json()["count"]
    page.wait_for_function(f"() => document.querySelector('#trace-count').textContent.startsWith('{expected} rollout')")
    assert "step_min=2" in page.url

    # outcome: the verdict column agrees with the filter
    outcome = "format" if studio.api.get(f"/runs/{toy_run}/rollouts", params={"format_ok": False, "step_min": 2,
                                                                              "step_max": 2}).json()["count"] else "wrong"
    page.select_option("#t-outcome", outcome)
    page.wait_for_function(f"() => {{ const b = [...document.querySelectorAll('#trace-table [data-verdict]')];"
                           f" return b.length > 0 && b.every(x => x.dataset.verdict === '{outcome}'); }}")

    # text search: the exact prompt of one rollout finds its whole group
    page.click("#t-clear")
    page.wait_for_selector("#trace-table tbody tr")
    one = studio.api.get(f"/runs/{toy_run}/rollouts", params={"limit": 1, "include_text": True}).json()["data"][0]
    page.fill("#t-q", one["prompt"])
    page.wait_for_function("([lo, hi]) => { const m = /^(\\d+) rollout/.exec(document.querySelector('#trace-count').textContent);"
                           " return m && Number(m[1]) >= lo && Number(m[1]) < hi; }", arg=[GROUP_SIZE, total])

    # open a trace: prompt, folded <think>, final part, answer vs reference, verdict, lineage, group
    page.click("#t-clear")
    page.wait_for_selector("#trace-table tbody tr:nth-child(2)")
    row = page.locator("#trace-table tbody tr").nth(1)
    rid = int(row.get_attribute("data-rollout-id"))
    row.click()
    page.wait_for_selector(f"#group-grid [data-rollout-id='{rid}']")
    detail = studio.api.get(f"/rollouts/{rid}").json()
    assert page.text_content("#prompt") == detail["prompt"]
    assert page.text_content("#reference") == (detail["reference"] or "—")
    assert page.text_content("#extracted") == (detail["extracted"] or "∅ (nothing extracted)")
    if "</think>" in detail["response"]:
        assert page.evaluate("document.querySelector('#think-part').open") is False  # folded
    assert page.is_visible("#final-part")
    assert (detail["reason"] or "") in page.text_content("#verdict")
    lineage = page.locator("#lineage li")
    assert lineage.count() == 1 + len(detail["uses"])
    assert f"by policy v{detail['policy_version']}" in lineage.first.text_content()
    assert page.locator("#group-grid [role='listitem']").count() == GROUP_SIZE
    assert f"rollout={rid}" in page.url
    screenshot(page, "traces")


def test_runs_list_filter_sort_and_compare(page, studio, toy_run, grpo_run, screenshot):
    studio.wait_run(grpo_run, lambda r: r["steps_done"] >= 2, 240, "train two steps")
    page.goto("/")
    page.wait_for_selector(f"tr[data-run-id='{grpo_run}']")
    page.wait_for_selector(f"tr[data-run-id='{toy_run}']")
    assert page.locator("#runs-table tbody tr").count() == 2
    # name filter (client side) and status filter (server side)
    page.fill("#filter-q", "browser toy")
    page.wait_for_function("() => document.querySelectorAll('#runs-table tbody tr').length === 2")
    page.fill("#filter-q", "toy remix")
    page.wait_for_function("() => document.querySelectorAll('#runs-table tbody tr').length === 1")
    page.fill("#filter-q", "")
    page.select_option("#filter-status", "succeeded")
    page.wait_for_function(f"() => !document.querySelector(\"tr[data-run-id='{grpo_run}']\") || "
                           f"document.querySelector(\"tr[data-run-id='{grpo_run}'] [data-status]\").dataset.status === 'succeeded'")
    page.select_option("#filter-status", "")
    page.wait_for_selector(f"tr[data-run-id='{grpo_run}']")
    # sort by cost: ascending then descending
    page.click("button[data-sort='rollouts']")
    page.click("button[data-sort='rollouts']")
    assert page.get_attribute("th:has(button[data-sort='rollouts'])", "aria-sort") == "ascending"
    # latest accuracy appears for the finished run
    page.wait_for_function(f"() => /%/.test(document.querySelector(\"tr[data-run-id='{toy_run}']\").children[5].textContent)")
    screenshot(page, "runs")

    # select both and compare
    for rid in (toy_run, grpo_run):
        page.check(f"tr[data-run-id='{rid}'] input[type='checkbox']")
    with page.expect_navigation(url=re.compile(r"/compare\?runs=")):
        page.click("#compare-button")
    page.wait_for_selector("#chart-cmp-critic-score-mean .plot")
    page.wait_for_function("() => document.querySelector('#chart-cmp-critic-score-mean .plot').data"
                           ".filter(t => t.x && t.x.length >= 2).length >= 2", timeout=60_000)
    names = page.evaluate("document.querySelector('#chart-cmp-critic-score-mean .plot').data.map(t => t.name)")
    assert any(f"#{toy_run}" in n for n in names) and any(f"#{grpo_run}" in n for n in names)
    assert "rollouts" in page.evaluate("document.querySelector('#chart-cmp-critic-score-mean .plot').layout.xaxis.title.text")
    # config diff: only differing keys, the algorithm among them
    keys = page.eval_on_selector_all("#diff-table tbody tr", "rows => rows.map(r => r.dataset.key)")
    assert "algorithm" in keys and "trainer.steps" in keys
    assert "rollout.group_size" not in keys  # equal in both runs
    page.click("#x-choice button[data-x='step']")
    page.wait_for_function("() => document.querySelector('#chart-cmp-critic-score-mean .plot').layout.xaxis.title.text.includes('step')")
    screenshot(page, "compare")


def test_error_states(page, studio, screenshot):
    page.goto("/runs/987654")
    page.wait_for_selector("#run-header .state-error")
    assert "does not exist" in page.text_content("#run-header")
    screenshot(page, "run-not-found")
    page.goto("/traces/987654")
    page.wait_for_selector("#run-header .state-error")
    page.goto("/compare?runs=987654")
    page.wait_for_selector("#compare-charts .state-empty")
    assert "not found" in page.text_content("#compare-notice")


def test_resources_on_the_form_and_the_run_page(page, studio, toy_run, screenshot):
    """GPUs (processes) and queue on the New-run form; the run page shows the world size. The run goes
    to a queue no worker consumes, so it stays queued (and is cancelled): nothing trains here."""
    page.goto(f"/runs/{toy_run}")
    page.wait_for_selector("#world-size")
    assert page.text_content("#world-size").strip() == "1 process"

    page.goto("/new")
    page.fill("#f-name", "browser two processes")
    page.fill("#f-steps", "2")
    page.fill("#f-gpus", "0")  # invalid: the server names resources.gpus
    page.fill("#f-queue", "browser-nowhere")
    page.click("#submit-run")
    page.wait_for_selector("#e-gpus:not(:empty)")
    assert "greater than or equal to 1" in page.text_content("#e-gpus")
    page.fill("#f-gpus", "2")
    assert "resources.gpus=2" in page.text_content("#api-preview-body")
    with page.expect_navigation(url=re.compile(r"/runs/\d+$")):
        page.click("#submit-run")
    run_id = int(page.url.rsplit("/", 1)[1])
    page.wait_for_selector("#world-size")
    text = page.text_content("#world-size")
    assert "2 processes" in text and "browser-nowhere" in text
    run = studio.run(run_id)
    assert run["config"]["resources"] == {"gpus": 2, "queue": "browser-nowhere"}
    assert run["job"]["queue"] == "browser-nowhere" and run["status"] in ("pending", "queued")
    screenshot(page, "run-resources")
    assert studio.api.post(f"/runs/{run_id}/cancel", headers=studio.write_headers()).json()["status"] == "cancelled"


# ------------------------------------------------------------------------------------ statistics
# A run written straight into the studio's database through the worker's SQL sink, with the values a
# real run has and the tiny toy run does not: clip fractions of ~1e-4–1e-3, kl_convex equal to
# kl_anchor (λ = 1 before the KL-Convex schedule starts), GRPO groups with the engine's advantages and
# responses long enough to need the preview column.
STATS_STEPS = 8
STATS_GROUP = [1.0, 0.0, 0.0, 0.0]  # the issue's example: mean 0.25, sample std 0.5 → advantages 1.5 / −0.5


def seed_stats_run(data_dir) -> int:
    import math

    import torch

    from remix_engine.algorithms import grpo_advantages
    from remix_engine.events import RolloutRecord, RolloutUseRecord
    from studio.db import make_engine, session_scope
    from studio.models import Run
    from studio.settings import Settings
    from worker.sink import SqlSink

    engine = make_engine(Settings(data_dir=data_dir).sqlalchemy_url)
    try:
        with session_scope(engine) as s:
            run = Run(name="browser synthetic statistics", preset="toy", algorithm="remix-grpo", status="succeeded",
                      request={}, steps_total=STATS_STEPS, steps_done=STATS_STEPS,
                      config={"algorithm": "remix-grpo", "actor": {"advantage": "grpo"},
                              "rollout": {"group_size": len(STATS_GROUP)}, "trainer": {"steps": STATS_STEPS},
                              "remix": {"reincarnate_at": None}})
            s.add(run)
            s.flush()
            run_id = run.id
        sink = SqlSink(run_id, engine=engine)
        sink.on_start({"resumed_from": None})
        groups = [STATS_GROUP, [1.0, 1.0, 0.0, 0.0]]
        for step in range(1, STATS_STEPS + 1):
            rewards = torch.tensor([r for g in groups for r in g])
            adv = grpo_advantages(rewards, [gi for gi, g in enumerate(groups) for _ in g]).tolist()
            records = []
            for gi, g in enumerate(groups):
                for j, reward in enumerate(g):
                    i = gi * len(g) + j
                    think = " ".join(f"step {k}: {step * 7 + k} plus {j} carries, wait, let me verify" for k in range(12))
                    records.append(RolloutRecord(
                        uid=f"s{step:06d}-g{gi:03d}-r{j}", step=step, policy_version=step, group_id=f"s{step:06d}-g{gi:03d}",
                        prompt_id=f"p{gi}", prompt=f"Compute {step}+{gi}.", response=f"<think>{think}</think> \\boxed{{{step + gi}}}",
                        extracted=str(step + gi) if reward else "0", reference=str(step + gi), reward=reward,
                        correct=bool(reward), format_ok=True, reason=None, length=200, truncated=False, advantage=adv[i]))
            sink.on_rollouts(step, records)
            uses = [RolloutUseRecord(rollout_uid=r.uid, step=step, age=0, ratio_mean=1.0, ratio_max=1.01,
                                     clipfrac=3e-4, kl_to_behavior=1e-5) for r in records]
            if step > 1:  # the previous step's rollouts replayed (age 1)
                uses += [RolloutUseRecord(rollout_uid=f"s{step - 1:06d}-g{gi:03d}-r{j}", step=step, age=1, ratio_mean=1.02,
                                          ratio_max=1.2, clipfrac=1.2e-3, kl_to_behavior=1e-4)
                         for gi in range(len(groups)) for j in range(len(STATS_GROUP))]
            sink.on_rollout_uses(step, uses)
            kl = 1e-3 * step
            metrics = {"actor/pg_clipfrac": 3e-4 + 1e-4 * math.sin(step), "actor/ppo_kl": 2e-4 * step,
                       "actor/kl_anchor": kl, "actor/kl_convex": kl, "actor/kl_lambda": 1.0,
                       "critic/score/mean": 0.375, "replay/reincarnated": 0.0,
                       "replay/age_0/clipfrac": 3e-4 + 5e-5 * math.cos(step), "replay/age_0/ratio_mean": 1.0,
                       "cost/rollouts": float(8 * step), "timing_s/elapsed": float(step)}
            if step > 1:
                metrics |= {"replay/age_1/clipfrac": 1.2e-3, "replay/age_1/ratio_mean": 1.02}
            sink.on_step(step, metrics)
        sink.on_end({})
        sink.close()
    finally:
        engine.dispose()
    return run_id


@pytest.fixture(scope="module")
def stats_run(studio) -> int:
    return seed_stats_run(studio.data_dir)


def _layout(page, chart: str) -> dict:
    return page.evaluate(f"(() => {{ const p = document.querySelector('#chart-{chart} .plot');"
                         f" return {{ data: p.data.map(t => ({{ name: t.name, y: t.y, dash: t.line && t.line.dash,"
                         f" symbol: t.marker && t.marker.symbol, text: t.text }})),"
                         f" yaxis: p._fullLayout.yaxis.range, tickformat: p.layout.yaxis.tickformat }}; }})()")


def _tick_labels(page, chart: str) -> list[str]:
    return page.eval_on_selector_all(f"#chart-{chart} .ytick text", "els => els.map(e => e.textContent)")


def test_run_page_axes_follow_small_values(page, studio, stats_run, screenshot):
    page.goto(f"/runs/{stats_run}")
    wait_points(page, "#chart-clipfrac", STATS_STEPS)
    wait_points(page, "#chart-kl", 3 * STATS_STEPS)
    clip = _layout(page, "clipfrac")
    ys = clip["data"][0]["y"]
    lo, hi = clip["yaxis"]
    assert lo <= min(ys) and hi >= max(ys), clip["yaxis"]  # covers its data …
    assert hi <= 2 * max(ys), f"a 0–{hi} axis squashes clip fractions of ~{max(ys):.1e} into a flat line"
    labels = _tick_labels(page, "clipfrac")
    assert len(labels) >= 3 and len(set(labels)) == len(labels), labels  # not "0%, 0%, 0%, 0%"
    # kl_anchor and kl_convex coincide: different dash styles and markers, and the legend says so
    kl = {t["name"].split(" ")[0]: t for t in _layout(page, "kl")["data"]}
    assert set(kl) == {"actor/ppo_kl", "actor/kl_anchor", "actor/kl_convex"}, list(kl)
    assert len({t["dash"] for t in kl.values()}) == 3 and len({t["symbol"] for t in kl.values()}) == 3
    names = [t["name"] for t in _layout(page, "kl")["data"]]
    assert "actor/kl_convex (= actor/kl_anchor)" in names, names
    kl_lo, kl_hi = _layout(page, "kl")["yaxis"]
    assert kl_lo <= 0 and kl_hi >= 1e-3 * STATS_STEPS and kl_hi < 0.02, (kl_lo, kl_hi)
    screenshot(page, "run-small-values")


def test_offpolicy_clip_charts_follow_their_data(page, studio, stats_run, screenshot):
    off = studio.api.get(f"/runs/{stats_run}/offpolicy").json()
    page.goto(f"/offpolicy/{stats_run}")
    wait_points(page, "#chart-clip-age", 2)
    bars = _layout(page, "clip-age")
    expected = [b["clipfrac"] for b in off["by_age"]]
    assert bars["data"][0]["y"] == pytest.approx(expected)  # bar heights are the values
    lo, hi = bars["yaxis"]
    assert lo == 0 and max(expected) <= hi <= 2 * max(expected), bars["yaxis"]
    assert bars["data"][0]["text"] == ["0.03%", "0.12%"], bars["data"][0]["text"]
    labels = _tick_labels(page, "clip-age")
    assert len(labels) >= 3 and len(set(labels)) == len(labels), labels
    wait_points(page, "#chart-clip-time", STATS_STEPS)
    over_time = _layout(page, "clip-time")
    lo, hi = over_time["yaxis"]
    assert hi <= 2 * max(max(t["y"]) for t in over_time["data"]), over_time["yaxis"]
    assert len({t["dash"] for t in over_time["data"]}) == len(over_time["data"]) == 2
    screenshot(page, "offpolicy-small-values")


def test_trace_list_and_group_statistics(page, studio, stats_run, screenshot):
    page.goto(f"/traces/{stats_run}?step_min=1&step_max=1&order=asc")
    page.wait_for_selector("#trace-table tbody tr")
    # the response preview is readable at 1,400 px: a wide column, inside the list (no clipping)
    geo = page.evaluate("""() => {
        const th = [...document.querySelectorAll('#trace-table thead th')].at(-1);
        const cell = document.querySelector('#trace-table tbody tr td:last-child');
        const list = document.querySelector('.trace-list');
        return { th: th.textContent, width: cell.getBoundingClientRect().width, right: cell.getBoundingClientRect().right,
                 listRight: list.getBoundingClientRect().right, scroll: list.scrollWidth - list.clientWidth,
                 chars: cell.textContent.length };
    }""")
    assert geo["th"] == "response" and geo["width"] >= 220, geo
    assert geo["right"] <= geo["listRight"] + 1 and geo["scroll"] <= 1, geo
    # the filters' labels line up
    tops = page.eval_on_selector_all("#trace-filters .field > label, #trace-filters .field > .field-label",
                                     "els => els.map(e => Math.round(e.getBoundingClientRect().top))")
    assert len(set(tops)) == 1, tops

    # the group header's mean and std reproduce the advantages shown (GRPO: sample std, + 1e-6)
    row = page.locator("#trace-table tbody tr[data-rollout-id]").first
    clicked = row.get_attribute("data-rollout-id")
    row.click()
    # wait for the clicked rollout's group, not for the group of a rollout selected before (the URL
    # may preselect one): its grid marks the clicked rollout as current, with the header beside it
    page.wait_for_selector(f"#group-grid .group-item.current[data-rollout-id='{clicked}']")
    page.wait_for_selector("#group-mean")
    group = page.evaluate("""() => ({
        mean: Number(document.querySelector('#group-mean').textContent),
        std: Number(document.querySelector('#group-std').textContent),
        formula: document.querySelector('#group-formula').textContent,
        items: [...document.querySelectorAll('#group-grid [role=listitem]')].map(x => ({
            reward: Number(x.dataset.reward), advantage: Number(x.dataset.advantage),
            shown: Number(x.querySelector('dd strong').textContent) })),
    })""")
    assert "n − 1" in group["formula"] and "1e-6" in group["formula"], group["formula"]
    assert group["std"] > 0
    for item in group["items"]:
        assert (item["reward"] - group["mean"]) / (group["std"] + 1e-6) == pytest.approx(item["shown"], abs=2e-3), group
        assert item["shown"] == pytest.approx(item["advantage"], abs=1e-3)
    if sorted(i["reward"] for i in group["items"]) == sorted(STATS_GROUP):
        assert (group["mean"], group["std"]) == (0.25, 0.5)
    screenshot(page, "traces-statistics")


def test_leaderboard_scatter_names_every_point_and_shows_sizes(page, studio, screenshot):
    table = studio.api.get("/leaderboard", params={"size": "all", "mode": "greedy", "source": "all"}).json()
    plotted = [r for r in table["rows"] if r["average"] is not None and (r["cost_rollouts"] or 0) > 0]
    assert len(plotted) >= 10, "the studio ships the paper's published rows"
    page.goto("/leaderboard")
    page.wait_for_selector("#lb-chart .plot")
    page.wait_for_selector("#lb-table tbody tr")
    traces = page.evaluate("document.querySelector('#lb-chart .plot').data.map(t => ({ name: t.name, meta: t.meta,"
                           " text: t.text, size: t.marker.size, symbol: t.marker.symbol, x: t.x }))")
    # every point carries its model's name
    labels = [label for t in traces for label in t["text"]]
    assert sorted(labels) == sorted(r["model"] for r in plotted) and all(labels)
    drawn = page.evaluate("[...document.querySelectorAll('#lb-chart .textpoint text')].map(e => e.textContent).filter(Boolean)")
    assert sorted(drawn) == sorted(r["model"] for r in plotted), drawn
    # one legend entry per model size (and source); a bigger model gets a bigger marker and its own shape
    by_size = {t["meta"]: t for t in traces}
    if {"1.5B", "7B"} <= set(by_size):
        assert by_size["7B"]["size"] > by_size["1.5B"]["size"]
        shapes = lambda t: {s for s in t["symbol"] if s != "triangle-right"}  # noqa: E731 (▷ = lower bound)
        assert shapes(by_size["7B"]).isdisjoint(shapes(by_size["1.5B"]))
        assert any("1.5B" in t["name"] for t in traces) and any("7B" in t["name"] for t in traces)
    # the source is named once (under the table), not repeated and cut off on every row
    refs = {r["reference"] for r in table["rows"] if r["source"] == "published" and r["reference"]}
    text = page.text_content("#lb-table")
    for ref in refs:
        assert text.count(ref) == 0 and ref in page.text_content("#lb-sources")
    screenshot(page, "leaderboard")


# ------------------------------------------------------------------------------------ health alerts
@pytest.fixture(scope="module")
def alert_run(studio) -> int:
    """A run built to raise alerts: no warm start, so every response of the random toy policy is
    wrong (all groups zero-variance) and runs into max_new_tokens (truncation)."""
    r = studio.api.post("/runs", headers=studio.write_headers(), json={
        "name": "browser alerts", "config": {"preset": "toy", "algorithm": "grpo", "steps": 4, "seed": 0,
                                              "overrides": TINY + ["warm_start.steps=0", "rollout.max_new_tokens=16"]}})
    assert r.status_code == 201, r.text
    return r.json()["id"]


def test_health_alerts_on_the_runs_list_and_the_run_page(page, studio, alert_run, screenshot):
    studio.wait_run(alert_run, lambda r: r["status"] == "succeeded", 300, "finish")
    alerts = {a["rule"]: a for a in studio.api.get(f"/runs/{alert_run}/alerts").json()}
    assert "zero_variance_groups" in alerts, alerts
    zero = alerts["zero_variance_groups"]
    assert zero["status"] == "firing" and zero["first_step"] == 3 and zero["value"] == 1.0

    page.goto("/")
    badge = page.wait_for_selector(f"tr[data-run-id='{alert_run}'] .alert-badge")
    firing = sum(a["status"] == "firing" for a in alerts.values())
    assert badge.text_content() == f"⚠ {firing} alert{'s' if firing > 1 else ''}"

    badge.click()
    item = page.wait_for_selector("#alerts li[data-rule='zero_variance_groups']")
    text = item.text_content()
    assert "Zero-variance groups" in text and zero["detail"] in text and "group_size" in text  # opened: firing
    assert item.eval_on_selector("a", "a => a.getAttribute('href')") == zero["links"]["traces"]
    # the metric it watches gets a chart, marked where the alert began
    chart = "#chart-alert-critic-frac_reward_zero_std"
    wait_points(page, chart, 4)
    marks = page.evaluate(f"document.querySelector('{chart} .plot').layout.annotations.map(a => [a.x, a.text])")
    assert [3, "⚠ Zero-variance groups"] in marks, marks
    screenshot(page, "run-alerts")


# ------------------------------------------------------------------------------------ token lens
def test_token_lens_colours_each_token_with_the_api_values(page, studio, toy_run, screenshot):
    studio.wait_run(toy_run, lambda r: r["status"] == "succeeded", 300, "finish")
    replayed = studio.api.get(f"/runs/{toy_run}/rollouts", params={"reuse_min": 1, "limit": 1}).json()["data"][0]
    lens = studio.api.get(f"/rollouts/{replayed['id']}/tokens").json()
    assert len(lens["tokens"]) == replayed["length"] and lens["uses"][0]["age"] == 0 and lens["uses"][1]["age"] >= 1

    page.goto(f"/traces/{toy_run}?rollout={replayed['id']}")
    page.wait_for_selector("#token-text .tok")

    def shown() -> list[tuple[float | None, str, bool]]:
        return page.eval_on_selector_all("#token-text .tok", """els => els.map(e => [
            e.dataset.value === '' ? null : Number(e.dataset.value), e.style.background, e.classList.contains('tok-clipped')])""")

    def values() -> list[float | None]:
        return [v for v, _, _ in shown()]

    # default: the importance ratio at the first (fresh) use — 1 everywhere (behaviour log-probs recomputed)
    assert values() == pytest.approx(lens["uses"][0]["ratios"])
    page.select_option("#lens-use", "1")  # its first replay
    replay = lens["uses"][1]
    assert values() == pytest.approx(replay["ratios"])
    assert [c for _, _, c in shown()] == [bool(c) for c in replay["clipped"]]  # clipped tokens are outlined
    page.select_option("#lens-quantity", "entropy")
    assert values() == pytest.approx(replay["entropy"], abs=1e-4)
    assert all(bg.startswith("rgba(234, 88, 12") for _, bg, _ in shown())  # every token coloured by its entropy
    page.select_option("#lens-quantity", "behavior")
    assert page.is_disabled("#lens-use")
    assert values() == pytest.approx(lens["behavior_logprobs"], abs=1e-4)
    title = page.get_attribute("#token-text .tok[data-i='0']", "title")
    assert title.startswith(f"token 0: {json.dumps(lens['tokens'][0])}") and "behaviour log-prob" in title
    screenshot(page, "token-lens")
