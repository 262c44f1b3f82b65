// Off-policy view: reuse ratio per step, fresh vs replayed samples, staleness (policy age) over
// training and as a histogram, importance ratio / clip fraction per policy-age bucket, and how often
// rollouts were replayed. The reincarnation step is marked on every chart.

import * as api from "./api.js";
import {
  PALETTE, baseLayout, chartCard, cornerNote, draw, drawEmpty, drawLines, fractionAxis, fractionText, markerShapes,
} from "./charts.js";
import { loadRunOrExplain, renderRunHeader } from "./run_header.js";
import { $, ACTIVE, h, initChrome, itemId, num, pct, poll, replace } from "./ui.js";

const runId = itemId();
const AGE_METRIC = /^replay\/age_(\d+)\/(ratio_mean|clipfrac)$/;

const CHARTS = [
  { id: "reuse-ratio", title: "Reuse ratio per step",
    help: "Share of each step's samples that were replayed from earlier policies. Tracks the replay share p; 0 after reincarnation." },
  { id: "fresh-replayed", title: "Fresh vs replayed samples",
    help: "Samples consumed per step. Fresh ones cost new rollouts; replayed ones are free — that is ReMix's saving." },
  { id: "staleness-map", title: "Staleness over training",
    help: "Samples per (step, policy age). Ages stay within the window N; click a cell to see those rollouts." },
  { id: "staleness-hist", title: "Staleness histogram",
    help: "All uses by policy age. Most mass at age 0 (fresh); the tail shows how old replayed data gets." },
  { id: "ratio-age", title: "Importance ratio per policy age",
    help: "π_θ / π_behaviour per age bucket. Near 1 is healthy; older buckets drifting far from 1 are too off-policy." },
  { id: "clip-age", title: "Clip fraction per policy age",
    help: "Share of tokens clipped, per age bucket. Small is healthy; a high value for old ages means stale data is mostly clipped away." },
  { id: "ratio-time", title: "Importance ratio per age over training",
    help: "replay/age_<a>/ratio_mean by step: how the ratio of each age bucket evolves. Should hug 1." },
  { id: "clip-time", title: "Clip fraction per age over training",
    help: "replay/age_<a>/clipfrac by step. Spikes mean the policy moved far from the data it replays." },
  { id: "reuse-hist", title: "How often rollouts were replayed",
    help: "Rollouts by number of replays. Click a bar to inspect rollouts replayed that many times." },
];

const state = { run: null, bodies: {}, data: null, series: [], reincarnation: null };

function buildCharts() {
  const grid = replace($("#op-charts"));
  for (const def of CHARTS) {
    const { card, body } = chartCard(def);
    grid.append(card);
    state.bodies[def.id] = body;
  }
}

function stat(label, value, sub) {
  return h("div", { class: "stat" }, h("div", { class: "stat-label" }, label), h("div", { class: "stat-value" }, value),
    sub ? h("div", { class: "stat-sub" }, sub) : null);
}

function renderStats(data) {
  const t = data.totals || {};
  const reinc = state.reincarnation;
  replace($("#op-stats"),
    stat("samples consumed", num(t.uses ?? 0), "fresh + replayed uses"),
    stat("replayed share", pct(t.reuse_ratio ?? 0), `${num(t.replayed_uses ?? 0)} replayed uses`),
    stat("mean policy age", num(t.mean_age ?? 0, 2), `max ${num(t.max_age ?? 0)}`),
    stat("rollouts replayed", `${num(t.rollouts_replayed ?? 0)} / ${num(t.rollouts ?? 0)}`, "at least once"),
    stat("reincarnation", reinc === null ? "—" : `step ${reinc}`,
      reinc === null ? (state.run?.config?.remix?.reincarnate_at ? `planned at step ${state.run.config.remix.reincarnate_at}` : "never") : "anchor ← π_T, replay off"));
}

function stepMarker() {
  return state.reincarnation === null ? [] : [{ x: state.reincarnation, label: `reincarnation (step ${state.reincarnation})` }];
}

function ageNote() {
  return state.reincarnation === null ? [] : [cornerNote(`reincarnated at step ${state.reincarnation}`)];
}

function emptyText() {
  const run = state.run;
  if (run && ACTIVE.has(run.status)) return "No samples consumed yet — this fills in after the first training step.";
  if (run && run.config?.trainer?.log_rollouts === false) return "This run did not log rollouts (trainer.log_rollouts=false).";
  return "This run recorded no rollout uses.";
}

function barLayout(xTitle, yTitle, extra = {}) {
  const base = baseLayout();
  return baseLayout({
    hovermode: "closest", bargap: 0.15,
    xaxis: { ...base.xaxis, title: { text: xTitle, standoff: 6 } },
    yaxis: { ...base.yaxis, title: { text: yTitle, standoff: 4 } },
    ...extra,
  });
}

function drawAll() {
  const data = state.data;
  const b = state.bodies;
  const steps = data.reuse_by_step;
  const markers = stepMarker();
  const { shapes, annotations } = markerShapes(markers);
  const empty = emptyText();

  // 1. reuse ratio per step
  drawLines(b["reuse-ratio"], [{ name: "reuse ratio", x: steps.map((s) => s.step), y: steps.map((s) => s.reuse_ratio),
                                 color: PALETTE[0] }],
  { xTitle: "training step", format: "pct", markers, empty });

  // 2. fresh vs replayed (stacked)
  if (steps.length) {
    draw(b["fresh-replayed"], [
      { type: "bar", name: "fresh", x: steps.map((s) => s.step), y: steps.map((s) => s.fresh), marker: { color: "#60a5fa" } },
      { type: "bar", name: "replayed", x: steps.map((s) => s.step), y: steps.map((s) => s.replayed), marker: { color: "#f59e0b" } },
    ], barLayout("training step", "samples", { barmode: "stack", shapes, annotations, hovermode: "x unified" }));
  } else drawEmpty(b["fresh-replayed"], empty);

  // 3. staleness heatmap
  const cells = data.staleness_by_step;
  if (cells.length) {
    const stepsAxis = Array.from(new Set(cells.map((c) => c.step))).sort((x, y) => x - y);
    const maxAge = Math.max(...cells.map((c) => c.age));
    const ages = Array.from({ length: maxAge + 1 }, (_, i) => i);
    const z = ages.map(() => stepsAxis.map(() => null));
    for (const c of cells) z[c.age][stepsAxis.indexOf(c.step)] = c.count;
    draw(b["staleness-map"], [{
      type: "heatmap", x: stepsAxis, y: ages, z, colorscale: [[0, "#dbeafe"], [1, "#1e3a8a"]], hoverongaps: false, xgap: 1, ygap: 1,
      colorbar: { title: { text: "samples" }, thickness: 10 },
      hovertemplate: "step %{x}, age %{y}: %{z} samples<br>generated by policy v%{customdata}<extra>click to inspect</extra>",
      customdata: ages.map((a) => stepsAxis.map((s) => s - a)),
    }], barLayout("training step", "policy age", { shapes, annotations, yaxis: { ...baseLayout().yaxis, dtick: 1, title: { text: "policy age" } } }));
    const plot = b["staleness-map"].querySelector(".plot");
    if (plot && !plot.dataset.clickBound) {
      plot.dataset.clickBound = "1";
      plot.on("plotly_click", (ev) => {
        const p = ev.points?.[0];
        if (!p || p.z === null || p.z === undefined) return;
        location.href = `/traces/${runId}?policy_version=${p.x - p.y}`;
      });
    }
  } else drawEmpty(b["staleness-map"], empty);

  // 4. staleness histogram
  const hist = data.staleness_histogram;
  if (hist.length) {
    draw(b["staleness-hist"], [{ type: "bar", x: hist.map((a) => a.age), y: hist.map((a) => a.count),
                                 marker: { color: hist.map((a) => (a.age === 0 ? "#60a5fa" : "#f59e0b")) },
                                 hovertemplate: "age %{x}: %{y} samples<extra></extra>" }],
    barLayout("policy age (steps)", "samples", { showlegend: false, annotations: ageNote(), xaxis: { ...baseLayout().xaxis, dtick: 1, title: { text: "policy age (steps)" } } }));
  } else drawEmpty(b["staleness-hist"], empty);

  // 5./6. ratio and clip fraction per age bucket
  const ages = data.by_age;
  if (ages.length) {
    const x = ages.map((a) => a.age);
    draw(b["ratio-age"], [
      { type: "bar", name: "mean ratio", x, y: ages.map((a) => a.ratio_mean), marker: { color: "#60a5fa" },
        text: ages.map((a) => (a.ratio_mean === null ? "" : a.ratio_mean.toFixed(3))), textposition: "inside",
        hovertemplate: "age %{x}: mean %{y:.4f}<extra></extra>" },
      { type: "scatter", mode: "markers", name: "max ratio", x, y: ages.map((a) => a.ratio_max),
        marker: { color: "#dc2626", size: 9, symbol: "line-ew-open", line: { width: 2, color: "#dc2626" } },
        hovertemplate: "age %{x}: max %{y:.4f}<extra></extra>" },
    ], barLayout("policy age", "π_θ / π_b", {
      annotations: ageNote(), xaxis: { ...baseLayout().xaxis, dtick: 1, title: { text: "policy age" } },
      shapes: [{ type: "line", xref: "paper", x0: 0, x1: 1, y0: 1, y1: 1, line: { color: "#16a34a", dash: "dash", width: 1 } }],
    }));
    // the axis follows the data (clip fractions are often ~1e-4): bar heights are the values
    const clip = fractionAxis(ages.map((a) => a.clipfrac), 0.25);
    draw(b["clip-age"], [{ type: "bar", name: "clip fraction", x, y: ages.map((a) => a.clipfrac),
                           text: ages.map((a) => fractionText(a.clipfrac)),
                           textposition: "outside", cliponaxis: false,
                           marker: { color: "#f59e0b" }, hovertemplate: `age %{x}: %{y:${clip.hoverformat}}<extra></extra>` }],
    barLayout("policy age", "clip fraction", { showlegend: false, annotations: ageNote(),
      xaxis: { ...baseLayout().xaxis, dtick: 1, title: { text: "policy age" } },
      yaxis: { ...baseLayout().yaxis, range: clip.range, autorange: false, tickformat: clip.tickformat,
               title: { text: "clip fraction" } } }));
  } else {
    drawEmpty(b["ratio-age"], empty);
    drawEmpty(b["clip-age"], empty);
  }

  // 7./8. per-age metrics over training
  for (const [id, field, format] of [["ratio-time", "ratio_mean", null], ["clip-time", "clipfrac", "pct"]]) {
    const series = state.series.filter((s) => s.field === field).sort((p, q) => p.age - q.age)
      .map((s, i) => ({ name: `age ${s.age}`, x: s.x, y: s.y, step: s.step, color: PALETTE[i % PALETTE.length] }));
    drawLines(b[id], series, { xTitle: "training step", format, markers, empty });
  }

  // 9. reuse count histogram
  const reuse = data.rollout_reuse_histogram;
  if (reuse.length) {
    draw(b["reuse-hist"], [{ type: "bar", x: reuse.map((r) => r.reuse_count), y: reuse.map((r) => r.rollouts),
                             marker: { color: reuse.map((r) => (r.reuse_count === 0 ? "#94a3b8" : "#8b5cf6")) },
                             hovertemplate: "replayed %{x}×: %{y} rollouts<extra>click to inspect</extra>" }],
    barLayout("times replayed", "rollouts", { showlegend: false, annotations: ageNote(),
      xaxis: { ...baseLayout().xaxis, dtick: 1, title: { text: "times replayed" } } }));
    const plot = b["reuse-hist"].querySelector(".plot");
    if (plot && !plot.dataset.clickBound) {
      plot.dataset.clickBound = "1";
      plot.on("plotly_click", (ev) => {
        const p = ev.points?.[0];
        if (p) location.href = `/traces/${runId}?reuse_count=${p.x}`;
      });
    }
  } else drawEmpty(b["reuse-hist"], empty);
}

async function loadAgeSeries() {
  const keys = (await api.metricKeys(runId)).filter((k) => AGE_METRIC.test(k) || k === "replay/reincarnated");
  if (!keys.length) return { series: [], reincarnation: null };
  const data = await api.metrics(runId, keys, "step", 600);
  let reincarnation = null;
  const series = [];
  for (const s of data.series) {
    if (s.key === "replay/reincarnated") {
      const i = s.y.findIndex((v) => v >= 0.5);
      if (i >= 0) reincarnation = s.step[i];
      continue;
    }
    const m = AGE_METRIC.exec(s.key);
    if (m && s.x.length) series.push({ age: Number(m[1]), field: m[2], ...s });
  }
  return { series, reincarnation };
}

function renderNotice(run) {
  const notes = [];
  if (!run.algorithm.startsWith("remix-")) {
    notes.push(h("div", { class: "notice notice-info" }, h("code", {}, run.algorithm),
      " is on-policy: every sample is fresh (age 0) and nothing is replayed. These views are meant for remix-* runs — ",
      h("a", { href: `/new?from=${run.id}` }, "clone this run"), " with a remix algorithm to compare."));
  }
  replace($("#op-notice"), notes);
}

async function refresh() {
  const run = await api.getRun(runId);
  state.run = run;
  renderRunHeader(run, "offpolicy", { onChange: () => ticker.now() });
  renderNotice(run);
  const [data, ageData] = await Promise.all([api.offpolicy(runId), loadAgeSeries()]);
  state.data = data;
  state.series = ageData.series;
  state.reincarnation = ageData.reincarnation ?? run.summary?.reincarnated_at ?? null;
  renderStats(data);
  drawAll();
  $("#op-charts").dataset.points = String(data.reuse_by_step.length);
  return ACTIVE.has(run.status);
}

initChrome("runs");
let ticker = { now() {} };

async function main() {
  const run = await loadRunOrExplain(runId, () => location.reload());
  if (!run) {
    $("#op-intro").hidden = true;
    $("#op-stats").hidden = true;
    return;
  }
  buildCharts();
  ticker = poll(async () => {
    try {
      return await refresh();
    } catch (err) {
      for (const body of Object.values(state.bodies)) drawEmpty(body, `Could not load the off-policy data: ${err.message}`);
      throw err;
    }
  }, 5000);
}

main();
