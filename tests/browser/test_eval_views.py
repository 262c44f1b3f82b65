"""Evaluation views of issue 18 in a real browser: the compare page's paired table of two toy
checkpoints (with its flips) and the leaderboard's protocol groups and intervals.

Two toy checkpoints are fine-tuned here for a few seconds to answer every prompt with one constant
(``\\boxed{7}`` and ``\\boxed{8}``, the unit tests' trick), so the flips are known exactly on any
machine: on a 12-problem benchmark with answers 7 (×2), 8 (×8) and 9 (×2), B gains the eight 8s,
loses the two 7s and neither gets the 9s (exact McNemar p = 2·(1 + 10 + 45)/1024). Both are
evaluated by the studio's worker through the REST API; a third evaluation with a different
max-new-tokens lands in its own protocol group on the leaderboard.
Screenshots: test-artifacts/screenshots/compare-paired.png, leaderboard-protocols.png.
"""

from __future__ import annotations

import importlib.util
import json
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.browser

REPO = Path(__file__).resolve().parents[2]
ANSWERS = ["7", "7", "8", "8", "8", "8", "8", "8", "8", "8", "9", "9"]


def _constant_answer_checkpoint(out: Path, answer: str) -> Path:
    spec = importlib.util.spec_from_file_location("_evaluate_helpers", REPO / "tests" / "unit" / "test_evaluate.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    mod.ANSWER = f"</think> \\boxed{{{answer}}}"  # the helper reads the module's ANSWER
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the studio's worker shares the cores
    try:
        return mod.train_constant_answer_checkpoint(out)
    finally:
        torch.set_num_threads(threads)


def _evaluate(studio, body: dict, timeout: float = 300) -> dict:
    r = studio.api.post("/evaluations", json=body, headers=studio.write_headers())
    assert r.status_code == 201, r.text
    eid = r.json()["id"]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ev = studio.api.get(f"/evaluations/{eid}", headers=studio.write_headers()).json()
        if ev["status"] == "succeeded":
            return ev
        assert ev["status"] not in ("failed", "cancelled"), f"{ev['error_detail']}\n{studio.log()[-3000:]}"
        time.sleep(1)
    raise AssertionError(f"evaluation {eid} did not finish in {timeout:.0f}s")


@pytest.fixture(scope="module")
def two_checkpoints(studio) -> dict:
    root = studio.data_dir / "toy-eval"  # inside the studio's data roots
    root.mkdir(parents=True, exist_ok=True)
    bench = root / "sevens_eights.jsonl"
    bench.write_text("".join(json.dumps({"id": f"q{i:02d}", "problem": f"What is {a}?", "answer": a}) + "\n"
                             for i, a in enumerate(ANSWERS)))
    seven = _constant_answer_checkpoint(root / "seven", "7")
    eight = _constant_answer_checkpoint(root / "eight", "8")
    common = {"benchmarks": [str(bench)], "max_new_tokens": 12, "mathverify": False, "size": "toy", "batch_size": 12}
    a = _evaluate(studio, {**common, "model": str(seven), "name": "toy always-7"})
    b = _evaluate(studio, {**common, "model": str(eight), "name": "toy always-8"})
    c = _evaluate(studio, {**common, "model": str(seven), "name": "toy always-7 longer", "max_new_tokens": 16})
    return {"a": a["id"], "b": b["id"], "c": c["id"]}


def test_compare_page_shows_the_paired_table_and_its_flips(page, studio, two_checkpoints, screenshot):
    a, b = two_checkpoints["a"], two_checkpoints["b"]
    api = studio.api.get("/evaluations/compare", params={"a": a, "b": b}).json()
    (bench,) = api["benchmarks"]
    assert bench["flips"]["gained"] == [f"q{i:02d}" for i in range(2, 10)] and bench["flips"]["lost"] == ["q00", "q01"]
    assert bench["mcnemar"]["p_value"] == pytest.approx(2 * (1 + 10 + 45) / 1024)

    page.goto(f"/compare?eval_a={a}&eval_b={b}")
    page.wait_for_selector(".pc-table tbody tr")
    rows = page.eval_on_selector_all(".pc-table tbody tr", "rs => rs.map(r => [r.dataset.problem, r.dataset.flip])")
    assert [p for p, _ in rows] == [p["problem_id"] for p in bench["problems"]]
    assert [p for p, f in rows if f == "gained"] == bench["flips"]["gained"]
    assert [p for p, f in rows if f == "lost"] == bench["flips"]["lost"]
    assert page.get_attribute(".pc-gained", "data-count") == "8" and page.get_attribute(".pc-lost", "data-count") == "2"
    assert page.text_content(".pc-mcnemar") == "p = 0.109"
    # both answers and a link to each side's samples
    first = page.locator(".pc-table tbody tr[data-problem='q00'] td")
    assert [first.nth(i).text_content() for i in (2, 5)] == ["7", "8"]
    href = page.get_attribute(".pc-table tbody tr[data-problem='q00'] a >> nth=1", "href")
    assert href.startswith(f"/api/v1/evaluations/{b}/samples") and "sample_id=q00" in href
    assert studio.api.get(href.removeprefix("/api/v1")).json()["data"][0]["extracted"] == "8"
    # the URL keeps the pair (compare.js rewrites the query string for its own state)
    assert f"eval_a={a}" in page.url and f"eval_b={b}" in page.url
    screenshot(page, "compare-paired")
    page.check("#pc-only-flips")
    assert page.locator(".pc-table tbody tr").count() == 10  # the two 9s flipped nowhere
    # not comparable: a clear message, not a table
    other = studio.api.get("/evaluations/compare", params={"a": a, "b": a})
    assert other.status_code == 422


def test_leaderboard_shows_protocol_groups_and_intervals(page, studio, two_checkpoints, screenshot):
    table = studio.api.get("/leaderboard", params={"size": "toy", "mode": "greedy"}).json()
    mine = {r["evaluation_job_id"]: r for r in table["rows"]}
    a, b, c = (mine[two_checkpoints[k]] for k in ("a", "b", "c"))
    assert a["protocol_key"] == b["protocol_key"] != c["protocol_key"]
    assert a["protocol"]["max_new_tokens"] == 12 and c["protocol"]["max_new_tokens"] == 16
    assert a["ci95"]["sevens_eights"] is not None

    page.goto("/leaderboard")
    page.wait_for_selector("#lb-size option[value='toy']", state="attached")
    page.select_option("#lb-size", "toy")
    page.wait_for_function("() => document.querySelector('#lb-table tbody tr') &&"
                           " !document.querySelector('#lb-table tr.row-published')")  # the toy rows only
    groups = page.eval_on_selector_all("#lb-table tr.lb-group", "rs => rs.map(r => r.dataset.protocol)")
    assert sorted(groups) == sorted({a["protocol_key"], c["protocol_key"]})
    for row in (a, b, c):
        tr = page.locator(f"#lb-table tr[data-key='{row['key']}']")
        assert tr.locator("td[data-col='protocol']").text_content() == row["protocol_key"]
        assert row["protocol_label"] in tr.locator("td[data-col='protocol']").get_attribute("title")
        lo, hi = row["ci95"]["sevens_eights"]
        shown = tr.locator("td[data-col='sevens_eights'] .ci").text_content()
        assert [float(x) for x in shown.strip("[]").split(",")] == pytest.approx([lo, hi], abs=0.051)
    # ranks restart in each protocol group: the always-7 with a longer cap is first of its own group
    assert page.locator(f"#lb-table tr[data-key='{c['key']}'] td[data-col='rank']").text_content() == "1"
    ranks = {r["key"]: page.locator(f"#lb-table tr[data-key='{r['key']}'] td[data-col='rank']").text_content()
             for r in (a, b)}
    assert sorted(ranks.values()) == ["1", "2"]
    screenshot(page, "leaderboard-protocols")
    # the downloads carry the stamps and intervals
    md = studio.api.get("/leaderboard", params={"size": "toy", "mode": "greedy", "format": "md"}).text
    assert a["protocol_key"] in md and c["protocol_key"] in md and f"[{lo:.2f}, {hi:.2f}]" in md
