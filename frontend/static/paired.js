// Compare page, paired comparison of two evaluations (issue 18): the same problems scored by two
// checkpoints → per-problem table (both verdicts and answers, links to both samples), the flips,
// exact McNemar and a paired bootstrap. Data: GET /api/v1/evaluations/compare?a=&b=.
// State in the query string: ?eval_a=1&eval_b=2 (kept by compare.js when it rewrites the URL).

import { request } from "./api.js";
import { $, emptyState, errorState, h, loadingState, pct, replace } from "./ui.js";

const url = new URLSearchParams(location.search);  // read before compare.js rewrites the query string
const state = { a: url.get("eval_a") || "", b: url.get("eval_b") || "", onlyFlips: false, result: null };

function syncUrl() {
  const p = new URLSearchParams(location.search);
  for (const [k, v] of [["eval_a", state.a], ["eval_b", state.b]]) { if (v) p.set(k, v); else p.delete(k); }
  const qs = p.toString().replace(/%2C/g, ",").replace(/%2F/g, "/");
  history.replaceState(null, "", location.pathname + (qs ? `?${qs}` : ""));
}

function pValue(p) {
  if (p === null || p === undefined) return "—";
  return p < 0.001 ? p.toExponential(1) : p.toFixed(3);
}

function verdict(side) {
  return h("span", { class: `badge ${side.correct ? "verdict-correct" : "verdict-wrong"}` }, side.correct ? "correct" : "wrong");
}

function sideCells(side) {
  const avg = side.k > 1 ? h("span", { class: "muted small" }, ` avg@${side.k} ${pct(side.avg, 0)}`) : null;
  return [
    h("td", {}, verdict(side), avg),
    h("td", { class: "mono small pc-answer" }, side.answer ?? "—"),
    h("td", {}, h("a", { href: side.link, target: "_blank", rel: "noopener", class: "small" }, "samples")),
  ];
}

function summary(bench) {
  const mc = bench.mcnemar;
  const pb = bench.paired_bootstrap;
  const ci = pb.ci95 ? ` [${(100 * pb.ci95[0]).toFixed(1)}, ${(100 * pb.ci95[1]).toFixed(1)}]` : "";
  return h("div", { class: "pc-summary", "data-benchmark": bench.benchmark },
    h("div", {}, h("strong", {}, bench.benchmark), ` · ${bench.n_problems} problems · pass@1 (sample 0) `,
      h("span", { class: "pc-pass-a" }, pct(bench.pass_at_1.a, 1)), " → ", h("span", { class: "pc-pass-b" }, pct(bench.pass_at_1.b, 1))),
    h("div", {}, "Flips A → B: ",
      h("span", { class: "pc-gained", "data-count": bench.flips.gained.length }, `+${bench.flips.gained.length} gained`), " · ",
      h("span", { class: "pc-lost", "data-count": bench.flips.lost.length }, `−${bench.flips.lost.length} lost`),
      ` · both right ${bench.table.both_correct}, neither ${bench.table.neither}`),
    h("div", {}, "Exact McNemar: ", h("span", { class: "pc-mcnemar", "data-p": mc.p_value }, `p = ${pValue(mc.p_value)}`),
      ` (b = ${mc.b}, c = ${mc.c}) · paired bootstrap, avg@k Δ B − A = `,
      h("span", { class: "pc-boot" }, `${pb.diff === null ? "—" : (100 * pb.diff).toFixed(1)} pts${ci}, p = ${pValue(pb.p_value)}`)),
    bench.protocol_differences.length
      ? h("div", { class: "notice small pc-protocol-diff" }, `Different protocols: ${bench.protocol_differences.join("; ")}`)
      : h("div", { class: "muted small" }, "Same protocol on both sides."));
}

function table(bench) {
  const rows = bench.problems.filter((p) => !state.onlyFlips || p.flip);
  if (!rows.length) return emptyState("No flips", "Both evaluations gave the same verdict on every problem.");
  return h("table", { class: "table table-compact pc-table", "data-benchmark": bench.benchmark },
    h("thead", {}, h("tr", {}, ["Problem", "A", "A answer", "", "B", "B answer", "", "Flip"].map((t) => h("th", { scope: "col" }, t)))),
    h("tbody", {}, rows.map((p) => h("tr", { class: p.flip ? `flip-${p.flip}` : "", "data-problem": p.problem_id, "data-flip": p.flip || "" },
      h("td", { class: "mono small" }, p.problem_id), ...sideCells(p.a), ...sideCells(p.b),
      h("td", {}, p.flip ? h("span", { class: `badge pc-flip-${p.flip}` }, p.flip === "gained" ? "gained ↑" : "lost ↓") : "")))));
}

function render() {
  const box = $("#pc-result");
  const res = state.result;
  if (!res) return;
  replace(box, h("p", { class: "muted small" },
    `A = #${res.a.id} ${res.a.name} · B = #${res.b.id} ${res.b.name}. Flips are judged on each side's first sample; ` +
    "McNemar tests pass@1 on those single samples, the paired bootstrap the per-problem avg@k over all samples."),
  res.benchmarks.map((b) => h("div", { class: "card section pc-bench" }, summary(b), h("div", { style: { overflowX: "auto" } }, table(b)))));
}

async function compare() {
  const box = $("#pc-result");
  syncUrl();
  if (!state.a || !state.b) { replace(box, h("p", { class: "muted" }, "Pick two finished evaluations of the same benchmark.")); return; }
  replace(box, loadingState("Comparing…"));
  try {
    state.result = await request("/evaluations/compare", { params: { a: state.a, b: state.b } });
    render();
  } catch (err) {
    state.result = null;
    replace(box, errorState(err, compare, "Not comparable"));
  }
}

async function init() {
  if (!$("#paired")) return;
  const selA = $("#pc-a");
  const selB = $("#pc-b");
  try {
    const list = await request("/evaluations", { params: { status: "succeeded", limit: 200 } });
    const options = list.data.map((ev) => h("option", { value: String(ev.id) },
      `#${ev.id} ${ev.name || ev.model} · ${ev.mode_label} · ${ev.benchmarks.map((b) => b.benchmark).join(", ")}`));
    replace(selA, h("option", { value: "" }, "choose…"), options);
    replace(selB, h("option", { value: "" }, "choose…"), options.map((o) => o.cloneNode(true)));
  } catch (err) {
    replace($("#pc-result"), errorState(err, init));
    return;
  }
  selA.value = state.a;
  selB.value = state.b;
  selA.addEventListener("change", () => { state.a = selA.value; compare(); });
  selB.addEventListener("change", () => { state.b = selB.value; compare(); });
  $("#pc-only-flips").addEventListener("change", (e) => { state.onlyFlips = e.currentTarget.checked; render(); });
  await compare();
}

init();
