// Compare: 2–10 runs overlaid on the same charts (x = step, rollouts or wall time; smoothing) and a
// config diff that lists only the keys whose values differ.
// State in the query string: ?runs=1,2&metrics=a,b&x=rollouts&smoothing=0.6

import * as api from "./api.js";
import { PALETTE, STANDARD_CHARTS, X_CHOICES, chartCard, drawEmpty, drawLines, keyHelp } from "./charts.js";
import { $, $$, ACTIVE, emptyState, errorState, h, initChrome, poll, replace, statusBadge } from "./ui.js";

const MAX_RUNS = 10;
const DEFAULT_METRICS = ["eval/heldout/pass@1", "critic/score/mean", "response_length/mean", "actor/pg_clipfrac"];
const STANDARD = STANDARD_CHARTS.map((c) => ({ key: c.keys[0], title: c.title, help: c.help, format: c.format }));

const state = {
  ids: [],
  runs: new Map(), // id -> run detail
  allRuns: [],
  metrics: DEFAULT_METRICS.slice(),
  x: "rollouts",
  smoothing: 0,
  series: new Map(), // run id -> Map(key -> series)
  bodies: new Map(), // metric key -> chart body
  loadError: null,
};

function colorOf(id) {
  return PALETTE[state.ids.indexOf(id) % PALETTE.length];
}

// ------------------------------------------------------------------------------------ url
function readUrl() {
  const p = new URLSearchParams(location.search);
  state.ids = (p.get("runs") || "").split(",").map((s) => s.trim()).filter((s) => /^\d+$/.test(s)).map(Number)
    .filter((v, i, a) => a.indexOf(v) === i).slice(0, MAX_RUNS);
  if (p.get("metrics")) state.metrics = p.get("metrics").split(",").filter(Boolean);
  if (X_CHOICES[p.get("x")]) state.x = p.get("x");
  const s = Number(p.get("smoothing"));
  if (s > 0 && s < 1) state.smoothing = s;
}

function syncUrl() {
  const p = new URLSearchParams();
  if (state.ids.length) p.set("runs", state.ids.join(","));
  if (state.metrics.join(",") !== DEFAULT_METRICS.join(",")) p.set("metrics", state.metrics.join(","));
  if (state.x !== "rollouts") p.set("x", state.x);
  if (state.smoothing) p.set("smoothing", String(state.smoothing));
  // the paired comparison's state (paired.js) lives in the same query string: keep it
  for (const k of ["eval_a", "eval_b"]) { const v = new URLSearchParams(location.search).get(k); if (v) p.set(k, v); }
  const qs = p.toString();
  history.replaceState(null, "", location.pathname + (qs ? `?${qs.replace(/%2C/g, ",").replace(/%2F/g, "/")}` : ""));
}

// ------------------------------------------------------------------------------------ pickers
function renderChips() {
  const box = $("#run-chips");
  if (!state.ids.length) {
    replace(box, h("span", { class: "muted" }, "No runs picked yet."));
  } else {
    replace(box, state.ids.map((id) => {
      const run = state.runs.get(id);
      return h("span", { class: "chip", "data-run-id": id },
        h("span", { class: "swatch", style: { background: colorOf(id) }, "aria-hidden": "true" }),
        h("a", { href: `/runs/${id}` }, run ? run.name : `#${id}`), h("span", { class: "muted small" }, ` #${id}`),
        run ? statusBadge(run.status) : null,
        h("button", { type: "button", "aria-label": `Remove run ${id} from the comparison`,
                      onclick: () => { state.ids = state.ids.filter((x) => x !== id); changedRuns(); } }, "×"));
    }));
  }
  const select = $("#add-run");
  replace(select, h("option", { value: "" }, state.ids.length >= MAX_RUNS ? "at most ten runs" : "choose…"),
    state.allRuns.filter((r) => !state.ids.includes(r.id))
      .map((r) => h("option", { value: r.id }, `#${r.id} ${r.name} (${r.algorithm}, ${r.status})`)));
  select.disabled = state.ids.length >= MAX_RUNS;
  const hint = $("#compare-hint");
  hint.textContent = state.ids.length < 2 ? "Pick at least two runs." : "";
}

function renderMetricChoice() {
  const box = $("#metric-choice");
  const legend = box.querySelector("legend");
  const extras = state.metrics.filter((k) => !STANDARD.some((s) => s.key === k));
  replace(box, legend, [...STANDARD, ...extras.map((k) => ({ key: k, title: k }))].map((m) => {
    const id = `m-${m.key.replace(/[^\w]+/g, "-")}`;
    return h("label", { class: "check-field small", for: id, style: { fontWeight: "normal" } },
      h("input", { type: "checkbox", id, checked: state.metrics.includes(m.key), "data-key": m.key,
                   onchange: (e) => {
                     if (e.target.checked) state.metrics.push(m.key);
                     else state.metrics = state.metrics.filter((k) => k !== m.key);
                     syncUrl();
                     buildCharts();
                     refreshMetrics();
                   } }), m.title);
  }));
}

// ------------------------------------------------------------------------------------ charts
function buildCharts() {
  const grid = replace($("#compare-charts"));
  state.bodies.clear();
  if (state.ids.length < 2) {
    grid.append(h("div", { class: "card", style: { gridColumn: "1 / -1" } },
      state.allRuns.length < 2
        ? emptyState("Comparing needs at least two runs.", "Start a second run (for example the same config with another algorithm).",
          h("a", { class: "btn btn-primary", href: "/new" }, "New run"))
        : emptyState("Pick at least two runs to compare.", "Use “Add a run” above, or select runs in the runs list.",
          h("a", { class: "btn", href: "/" }, "Runs list"))));
    return;
  }
  if (!state.metrics.length) {
    grid.append(h("div", { class: "card", style: { gridColumn: "1 / -1" } }, emptyState("No metric selected.", "Tick a metric above.")));
    return;
  }
  for (const key of state.metrics) {
    const std = STANDARD.find((s) => s.key === key);
    const { card, body } = chartCard({ id: `cmp-${key.replace(/[^\w]+/g, "-")}`, title: std ? std.title : key,
                                       help: std ? std.help : keyHelp(key) });
    card.dataset.metric = key;
    grid.append(card);
    state.bodies.set(key, body);
  }
}

function draw() {
  let total = 0;
  for (const [key, body] of state.bodies) {
    const std = STANDARD.find((s) => s.key === key);
    const series = [];
    const markers = [];
    for (const id of state.ids) {
      const s = state.series.get(id)?.get(key);
      const run = state.runs.get(id);
      if (s && s.x.length) series.push({ name: `#${id} ${run ? run.name : ""}`.trim(), x: s.x, y: s.y, step: s.step, color: colorOf(id) });
      const rein = state.series.get(id)?.get("replay/reincarnated");
      const i = rein ? rein.y.findIndex((v) => v >= 0.5) : -1;
      if (i >= 0) markers.push({ x: rein.x[i], label: `T #${id}`, color: colorOf(id) });
    }
    total += drawLines(body, series, { xTitle: X_CHOICES[state.x].title, format: std?.format, markers,
                                       smoothing: state.smoothing, empty: `None of these runs recorded ${key} yet.`, legend: true });
  }
  $("#compare-charts").dataset.points = String(total);
}

async function refreshMetrics() {
  if (state.ids.length < 2 || !state.metrics.length) return;
  const keys = [...state.metrics, "replay/reincarnated"];
  let body;
  try {
    body = await api.runsMetrics(state.ids, keys, state.x, 300); // every run in one request
  } catch (err) {
    for (const chart of state.bodies.values()) drawEmpty(chart, `Could not load metrics: ${err.message}`);
    return;
  }
  for (const run of body.runs) state.series.set(run.run_id, new Map(run.series.map((s) => [s.key, s])));
  draw();
}

// ------------------------------------------------------------------------------------ config diff
function flatten(obj, prefix = "", out = {}) {
  for (const [k, v] of Object.entries(obj || {})) {
    if (v && typeof v === "object" && !Array.isArray(v)) flatten(v, `${prefix}${k}.`, out);
    else out[`${prefix}${k}`] = v;
  }
  return out;
}

function renderDiff() {
  const box = $("#config-diff");
  const runs = state.ids.map((id) => state.runs.get(id)).filter(Boolean);
  if (runs.length < 2) {
    replace(box, emptyState("Pick two or more runs to see how their configs differ."));
    $("#diff-summary").textContent = "";
    return;
  }
  const flats = runs.map((r) => flatten(r.config));
  const keys = Array.from(new Set(flats.flatMap((f) => Object.keys(f)))).sort();
  const differs = (k) => new Set(flats.map((f) => JSON.stringify(f[k] ?? null))).size > 1;
  const showAll = $("#diff-all").checked;
  const shown = keys.filter((k) => showAll || differs(k));
  const nDiff = keys.filter(differs).length;
  $("#diff-summary").textContent = `${nDiff} of ${keys.length} keys differ`;
  if (!shown.length) {
    replace(box, emptyState("The configs are identical.", "Differences in results come from randomness only (same seed → same run)."));
    return;
  }
  replace(box, h("table", { class: "table table-compact diff-table", id: "diff-table" },
    h("thead", {}, h("tr", {}, h("th", { scope: "col" }, "key"),
      runs.map((r) => h("th", { scope: "col" }, h("span", { class: "chip", style: { border: 0, padding: 0 } },
        h("span", { class: "swatch", style: { background: colorOf(r.id) } }), `#${r.id}`))))),
    h("tbody", {}, shown.map((k) => {
      const d = differs(k);
      return h("tr", { "data-key": k },
        h("td", {}, h("code", {}, k)),
        flats.map((f) => h("td", { class: d ? "differs mono" : "same mono" }, f[k] === undefined ? "—" : JSON.stringify(f[k]))));
    }))));
}

// ------------------------------------------------------------------------------------ loading
async function loadRuns() {
  const missing = state.ids.filter((id) => !state.runs.has(id) || ACTIVE.has(state.runs.get(id).status));
  const results = await Promise.allSettled(missing.map((id) => api.getRun(id)));
  const gone = [];
  results.forEach((res, i) => {
    if (res.status === "fulfilled") state.runs.set(missing[i], res.value);
    else if (res.reason?.status === 404) gone.push(missing[i]);
  });
  if (gone.length) {
    state.ids = state.ids.filter((id) => !gone.includes(id));
    const notice = $("#compare-notice");
    notice.textContent = `Run${gone.length > 1 ? "s" : ""} ${gone.map((g) => `#${g}`).join(", ")} not found ` +
      "(deleted, or a wrong link) and left out of the comparison.";
    notice.hidden = false;
    syncUrl();
  }
}

async function changedRuns() {
  syncUrl();
  await loadRuns();
  renderChips();
  buildCharts();
  renderDiff();
  await refreshMetrics();
}

async function refreshKeys() {
  const keys = new Set();
  const results = await Promise.allSettled(state.ids.slice(0, 3).map((id) => api.metricKeys(id)));
  for (const r of results) if (r.status === "fulfilled") r.value.forEach((k) => keys.add(k));
  replace($("#metric-keys"), Array.from(keys).sort().map((k) => h("option", { value: k })));
}

// ------------------------------------------------------------------------------------ main
initChrome("compare");

async function main() {
  readUrl();
  for (const b of $$("#x-choice button")) b.setAttribute("aria-pressed", String(b.dataset.x === state.x));
  $("#smoothing").value = String(state.smoothing);
  $("#smoothing-value").textContent = state.smoothing ? state.smoothing.toFixed(2) : "off";
  try {
    state.allRuns = (await api.listRuns({ limit: 200 })).data;
  } catch (err) {
    replace($("#compare-charts"), errorState(err, () => location.reload()));
    return;
  }
  renderMetricChoice();
  await changedRuns();
  refreshKeys();

  $("#add-run").addEventListener("change", async (e) => {
    const id = Number(e.target.value);
    if (!id || state.ids.includes(id) || state.ids.length >= MAX_RUNS) return;
    state.ids.push(id);
    await changedRuns();
    refreshKeys();
  });
  for (const button of $$("#x-choice button")) {
    button.addEventListener("click", () => {
      state.x = button.dataset.x;
      for (const b of $$("#x-choice button")) b.setAttribute("aria-pressed", String(b === button));
      syncUrl();
      refreshMetrics();
    });
  }
  $("#smoothing").addEventListener("input", (e) => {
    state.smoothing = Number(e.target.value);
    $("#smoothing-value").textContent = state.smoothing ? state.smoothing.toFixed(2) : "off";
    syncUrl();
    draw();
  });
  const addMetric = () => {
    const key = $("#other-metric").value.trim();
    if (!key || state.metrics.includes(key)) return;
    state.metrics.push(key);
    $("#other-metric").value = "";
    syncUrl();
    renderMetricChoice();
    buildCharts();
    refreshMetrics();
  };
  $("#add-metric").addEventListener("click", addMetric);
  $("#other-metric").addEventListener("keydown", (e) => { if (e.key === "Enter") { e.preventDefault(); addMetric(); } });
  $("#diff-all").addEventListener("change", renderDiff);

  poll(async () => {
    if (!state.ids.some((id) => ACTIVE.has(state.runs.get(id)?.status))) return true; // idle: check again later
    await loadRuns();
    renderChips();
    renderDiff();
    await refreshMetrics();
    return true;
  }, 5000);
}

main();
