// Leaderboard page: published and measured rows, sortable table, accuracy-vs-cost scatter (log x),
// exports, evaluation jobs (start, follow, cancel, inspect samples) and import of published rows.

import { ApiError, getToken, request } from "./api.js";
import { baseLayout, draw, drawEmpty } from "./charts.js";
import {
  $, $$, ACTIVE, emptyState, errorState, h, initChrome, loadingState, openTokenDialog, pct, poll, progressBar,
  replace, reportActionError, statusBadge, timeEl, withBusy,
} from "./ui.js";

const API_BASE = document.documentElement.dataset.apiBase || "/api/v1";
const MODE_NAMES = { greedy: "Greedy", "t0.1": "T = 0.1" };

const state = { size: "all", mode: "greedy", source: "all", sortKey: "average", sortDir: "desc", table: null };

// ------------------------------------------------------------------------------------ table
const lbParams = (extra = {}) => ({ size: state.size, mode: state.mode, source: state.source, ...extra });

function fmtScore(v) {
  return v === null || v === undefined ? "—" : v.toFixed(2);
}

function rowValue(row, key) {
  if (key === "average") return row.average;
  if (key === "cost") return row.cost_rollouts;
  if (key === "model" || key === "source" || key === "size") return (row[key] || "").toLowerCase();
  return row.scores[key] ?? null;
}

function sortedRows(rows) {
  const { sortKey, sortDir } = state;
  const present = rows.filter((r) => rowValue(r, sortKey) !== null && rowValue(r, sortKey) !== "");
  const missing = rows.filter((r) => !present.includes(r));
  present.sort((a, b) => {
    const x = rowValue(a, sortKey);
    const y = rowValue(b, sortKey);
    const cmp = typeof x === "string" ? x.localeCompare(y) : x - y;
    return (sortDir === "asc" ? cmp : -cmp) || a.model.localeCompare(b.model);
  });
  return present.concat(missing);
}

// Rows with different protocols are never ranked together: the sorted rows are split into protocol
// groups (in the order of each group's best row) and ranked inside their group.
function protocolGroups(rows) {
  const groups = new Map();
  for (const r of rows) {
    const key = r.protocol_key || "unknown";
    if (!groups.has(key)) groups.set(key, []);
    groups.get(key).push(r);
  }
  return [...groups.entries()];
}

function ciText(ci) {
  return ci ? `[${ci[0].toFixed(1)}, ${ci[1].toFixed(1)}]` : null;
}

function scoreCell(v, ci, col, isBest) {
  const td = h("td", { class: `num${isBest ? " best" : ""}`, "data-col": col }, fmtScore(v));
  if (ci && v !== null && v !== undefined) {
    td.append(h("span", { class: "ci", title: "95% bootstrap interval over problems" }, ciText(ci)));
  }
  return td;
}

function header(key, label, numeric) {
  const th = h("th", { scope: "col", class: `sortable${numeric ? " num" : ""}`, "data-key": key },
    h("button", { type: "button", onclick: () => sortBy(key, numeric) }, label));
  if (state.sortKey === key) th.setAttribute("aria-sort", state.sortDir === "asc" ? "ascending" : "descending");
  return th;
}

function sortBy(key, numeric) {
  if (state.sortKey === key) state.sortDir = state.sortDir === "asc" ? "desc" : "asc";
  else { state.sortKey = key; state.sortDir = numeric && key !== "cost" ? "desc" : "asc"; }
  renderTable();
}

function costCell(row) {
  const td = h("td", { class: "num", "data-col": "cost" }, row.cost_text || "—");
  if (row.cost_lower_bound) td.title = `at least ${row.cost_rollouts.toLocaleString("en-US")} rollouts (lower bound)`;
  else if (row.cost_rollouts !== null) td.title = `${row.cost_rollouts.toLocaleString("en-US")} rollouts`;
  return td;
}

// Published rows name their source once, in the footer; with several sources a row carries its number.
function sourceNumbers(rows) {
  const refs = [...new Set(rows.filter((r) => r.source === "published" && r.reference).map((r) => r.reference))];
  return new Map(refs.map((ref, i) => [ref, i + 1]));
}

function modelCell(row, sources) {
  const cell = h("td", { class: "col-name" }, h("span", { class: "model-name" }, row.model));
  if (row.source === "published" && row.reference && sources.size > 1) {
    cell.append(h("span", { class: "src-ref", title: row.reference, "data-source": sources.get(row.reference) },
      `[${sources.get(row.reference)}]`));
  }
  if (row.source === "measured") {
    const bits = [];
    if (row.run_id) bits.push(h("a", { href: `/runs/${row.run_id}` }, `run #${row.run_id}`));
    if (row.checkpoint_step !== null) bits.push(` step ${row.checkpoint_step}`);
    if (row.evaluation_job_id) {
      if (bits.length) bits.push(" · ");
      bits.push(h("a", { href: `#eval-${row.evaluation_job_id}` }, `evaluation #${row.evaluation_job_id}`));
    }
    const notes = (row.notes || "").replace(/^evaluation job \d+;?\s*/, "");
    if (notes) bits.push(h("span", { class: "muted" }, ` · ${notes}`));
    cell.append(h("span", { class: "ref small" }, bits));
  }
  return cell;
}

function renderTable() {
  const table = state.table;
  const box = $("#lb-table");
  if (!table) return;
  if (!table.rows.length) {
    replace(box, emptyState("No rows for these filters",
      "Pick another size or decoding mode, or evaluate a checkpoint below."));
    $("#lb-footer").textContent = "";
    return;
  }
  const benches = table.benchmarks;
  const rows = sortedRows(table.rows);
  const sources = sourceNumbers(rows);
  const groups = protocolGroups(rows);
  const groupInfo = new Map((table.protocol_groups || []).map((g) => [g.key, g]));
  const bestOf = (members) => {
    const best = {};
    for (const b of [...benches, "average"]) {
      const vals = members.map((r) => (b === "average" ? r.average : r.scores[b])).filter((v) => v !== null && v !== undefined);
      best[b] = vals.length ? Math.max(...vals) : null;
    }
    return best;
  };
  const nCols = benches.length + 7;
  const thead = h("thead", {}, h("tr", {},
    h("th", { scope: "col", class: "num", title: "rank within the row's protocol group" }, "#"),
    header("model", "Model", false), header("source", "Source", false), header("size", "Size", false),
    benches.map((b) => header(b, table.labels[b] || b, true)), header("average", "Avg", true), header("cost", "Cost", true),
    h("th", { scope: "col" }, "Protocol")));
  const renderRow = (r, rank, best) => {
    const cells = benches.map((b) => {
      const v = r.scores[b];
      const td = scoreCell(v, (r.ci95 || {})[b], b, v !== undefined && v === best[b]);
      if (r.mathverify && r.mathverify[b] !== undefined) td.title = `math-verify: ${fmtScore(r.mathverify[b])}`;
      return td;
    });
    const avg = scoreCell(r.average, r.average_ci95, "average", r.average !== null && r.average === best.average);
    if (r.average !== null && r.average_of_five !== null && Math.abs(r.average - r.average_of_five) > 0.006) {
      avg.append(" ", h("span", { class: "lb-flag", title: `as published; the mean of the five cells is ${r.average_of_five.toFixed(2)}` }, "†"));
    } else if (r.source === "measured" && r.average !== null && r.average_of_five === null) {
      const n = Object.keys(r.scores).length;
      avg.append(" ", h("span", { class: "lb-flag", title: `mean over the ${n} evaluated benchmark${n === 1 ? "" : "s"}, not the standard five` }, "‡"));
    }
    return h("tr", { class: `row-${r.source}`, "data-key": r.key, "data-protocol": r.protocol_key || "unknown" },
      h("td", { class: "num lb-rank", "data-col": "rank" }, String(rank)),
      modelCell(r, sources), h("td", {}, h("span", { class: `badge src-${r.source}` }, r.source)), h("td", {}, r.size || "—"),
      cells, avg, costCell(r),
      h("td", { class: "mono small lb-protocol", "data-col": "protocol", title: r.protocol_label || "" }, r.protocol_key || "—"));
  };
  const tbody = h("tbody", {}, groups.flatMap(([key, members]) => {
    const info = groupInfo.get(key);
    const best = bestOf(members);
    const head = h("tr", { class: "lb-group", "data-protocol": key },
      h("th", { scope: "rowgroup", colspan: nCols },
        h("span", { class: "lb-group-label" }, info ? info.label : (members[0].protocol_label || key)),
        h("span", { class: "muted small" }, ` · ${key} · ${members.length} row${members.length === 1 ? "" : "s"}, ranked within this protocol`)));
    return [head, ...members.map((r, i) => renderRow(r, i + 1, best))];
  }));
  replace(box, h("table", { class: "table table-compact lb-table" },
    h("caption", { class: "sr-only" }, `Leaderboard, ${MODE_NAMES[table.mode] || table.mode}, pass@1 in percent`), thead, tbody));
  const nPub = rows.filter((r) => r.source === "published").length;
  const refs = [...sources.keys()].map((ref) => (sources.size > 1 ? `[${sources.get(ref)}] ${ref}` : ref)).join(" · ");
  replace($("#lb-footer"), `${rows.length} rows (${nPub} published, ${rows.length - nPub} measured). ` +
    "Rows are ranked only against rows with the same protocol (n, temperature, top_p, max tokens, grader, benchmark file); " +
    "[lo, hi]: 95% bootstrap interval. Bold: best in column within its protocol. † published average differs from the mean of its cells; ‡ measured on other benchmarks than the five.",
  refs ? h("span", { id: "lb-sources" }, ` Published rows from: ${refs}.`) : null);
}

// ------------------------------------------------------------------------------------ chart
const SOURCE_COLORS = { published: "#4f46e5", measured: "#ea580c" };
const SIZE_SYMBOLS = ["circle", "square", "diamond", "cross", "star"];
const LABEL_SPOTS = ["top center", "bottom center", "middle right", "middle left", "top right", "top left",
                     "bottom right", "bottom left"];

/** "1.5B" → 1.5, "7B" → 7, anything else → null. */
function billions(size) {
  const m = /^\s*([\d.]+)\s*B\s*$/i.exec(size || "");
  return m ? Number(m[1]) : null;
}

/** Marker size by model size: a bigger model gets a bigger marker (1.5B → 9 px, 7B → 16 px). */
function markerSize(size) {
  const b = billions(size);
  return b === null ? 11 : Math.round(Math.min(24, Math.max(7, 9 + 3.2 * Math.log2(b / 1.5))));
}

/**
 * A label position for every point, chosen so that labels overlap each other and the markers as
 * little as possible: each point tries the spots around it in turn, in (approximate) pixels.
 */
function labelPositions(points, width, height) {
  const lx = points.map((p) => Math.log10(p.x));
  const [x0, x1] = [Math.min(...lx), Math.max(...lx)];
  const [y0, y1] = [Math.min(...points.map((p) => p.y)), Math.max(...points.map((p) => p.y))];
  const px = (p, i) => [(x1 > x0 ? (lx[i] - x0) / (x1 - x0) : 0.5) * width * 0.9 + width * 0.05,
                        (y1 > y0 ? (y1 - p.y) / (y1 - y0) : 0.5) * height * 0.84 + height * 0.08];
  const boxes = points.map((p, i) => { const [x, y] = px(p, i); const r = p.size / 2 + 1; return [x - r, y - r, x + r, y + r]; });
  const overlap = (a, b) => Math.max(0, Math.min(a[2], b[2]) - Math.max(a[0], b[0])) * Math.max(0, Math.min(a[3], b[3]) - Math.max(a[1], b[1]));
  const placed = [];
  const order = points.map((_, i) => i).sort((a, b) => points[b].y - points[a].y);
  const positions = new Array(points.length);
  for (const i of order) {
    const [x, y] = px(points[i], i);
    const w = 5.6 * points[i].label.length + 4;
    const hgt = 13;
    const r = points[i].size / 2 + 2;
    let best = null;
    for (const spot of LABEL_SPOTS) {
      const [v, hz] = spot.split(" ");
      const left = hz === "center" ? x - w / 2 : hz === "right" ? x + r : x - r - w;
      const top = v === "middle" ? y - hgt / 2 : v === "top" ? y - r - hgt : y + r;
      const box = [left, top, left + w, top + hgt];
      const outside = (left < 0 || left + w > width || top < 0 || top + hgt > height) ? 1e4 : 0;
      const cost = outside + placed.reduce((c, b) => c + overlap(box, b), 0) +
        boxes.reduce((c, b, j) => c + (j === i ? 0 : overlap(box, b)), 0);
      if (!best || cost < best.cost) best = { spot, box, cost };
      if (cost === 0) break;
    }
    placed.push(best.box);
    positions[i] = best.spot;
  }
  return positions;
}

function renderChart() {
  const table = state.table;
  const box = $("#lb-chart");
  const plotted = table.rows.filter((r) => r.average !== null && r.cost_rollouts > 0);
  const skipped = table.rows.filter((r) => !plotted.includes(r));
  $("#lb-chart-note").textContent = skipped.length
    ? `Not plotted (no known cost or no average): ${skipped.map((r) => r.model).join(", ")}` : "";
  if (!plotted.length) { drawEmpty(box, "No row has both an average and a known cost."); return; }
  // Every point is named (placed to avoid the others); one legend entry per model size and source.
  const sizes = [...new Set(plotted.map((r) => r.size || "size unknown"))]
    .sort((a, b) => (billions(a) ?? Infinity) - (billions(b) ?? Infinity));
  const height = 420;
  const spots = labelPositions(plotted.map((r) => ({ x: r.cost_rollouts, y: r.average, label: r.model, size: markerSize(r.size) })),
    Math.max(300, (box.clientWidth || 900) - 90), height - 110);
  const spotOf = new Map(plotted.map((r, i) => [r, spots[i]]));
  const data = [];
  for (const source of ["published", "measured"]) {
    sizes.forEach((size, k) => {
      const rows = plotted.filter((r) => r.source === source && (r.size || "size unknown") === size);
      if (!rows.length) return;
      data.push({
        type: "scatter", mode: "markers+text", name: `${size} · ${source}`, legendgroup: size, meta: size,
        x: rows.map((r) => r.cost_rollouts), y: rows.map((r) => r.average),
        text: rows.map((r) => r.model), textposition: rows.map((r) => spotOf.get(r)), cliponaxis: false,
        textfont: { size: 10, color: "#374151" },
        marker: { size: markerSize(size), color: SOURCE_COLORS[source], opacity: 0.85,
                  symbol: rows.map((r) => (r.cost_lower_bound ? "triangle-right" : SIZE_SYMBOLS[k % SIZE_SYMBOLS.length])),
                  line: { width: 1, color: "#fff" } },
        customdata: rows.map((r) => [r.cost_text, r.size || "—", r.source]),
        hovertemplate: "<b>%{text}</b><br>avg %{y:.2f}<br>cost %{customdata[0]} (%{x:,} rollouts)<br>%{customdata[1]} · %{customdata[2]}<extra></extra>",
      });
    });
  }
  draw(box, data, baseLayout({
    height, hovermode: "closest",
    xaxis: { type: "log", title: { text: "rollouts generated in training (log)" }, gridcolor: "#eef0f3", automargin: true },
    yaxis: { title: { text: `avg pass@1 (%), ${MODE_NAMES[table.mode] || table.mode}` }, gridcolor: "#eef0f3", automargin: true },
  }));
}

// ------------------------------------------------------------------------------------ filters
function updateDownloads() {
  for (const a of $$("#lb-downloads a")) {
    const url = new URL(`${API_BASE}/leaderboard`, location.origin);
    for (const [k, v] of Object.entries(lbParams({ format: a.dataset.format, download: "true" }))) url.searchParams.set(k, v);
    a.href = url.pathname + url.search;
    a.setAttribute("download", `leaderboard-${state.size}-${state.mode}.${a.dataset.format === "latex" ? "tex" : a.dataset.format}`);
  }
}

function syncFilters(table) {
  const sizeSel = $("#lb-size");
  const sizes = ["all", ...table.sizes];
  if ([...sizeSel.options].map((o) => o.value).join() !== sizes.join()) {
    replace(sizeSel, sizes.map((s) => h("option", { value: s }, s === "all" ? "all sizes" : s)));
  }
  sizeSel.value = state.size;
  const modes = table.modes.length ? table.modes : ["greedy"];
  replace($("#lb-mode"), modes.map((m) => h("button", {
    type: "button", "data-mode": m, "aria-pressed": String(m === state.mode),
    onclick: () => { state.mode = m; load(); },
  }, MODE_NAMES[m] || m.replace(/^t/, "T = "))));
}

async function load() {
  updateDownloads();
  const box = $("#lb-table");
  if (!state.table) replace(box, loadingState("Loading the leaderboard…"));
  try {
    const table = await request("/leaderboard", { params: lbParams() });
    state.table = table;
    syncFilters(table);
    renderTable();
    renderChart();
  } catch (err) {
    replace(box, errorState(err, load));
  }
}

// ------------------------------------------------------------------------------------ evaluations
const expanded = new Set();

function scoresLine(ev) {
  return ev.benchmarks.map((b) => `${b.benchmark} ${b.pass_at_1 === null ? b.status : pct(b.pass_at_1, 1)}`).join(" · ");
}

async function cancelEval(ev, button) {
  await withBusy(button, async () => { await request(`/evaluations/${ev.id}/cancel`, { method: "POST" }); await refreshEvals(); });
}

async function showSamples(ev) {
  const box = $("#ev-samples");
  box.hidden = false;
  replace(box, loadingState("Loading samples…"));
  try {
    const page = await request(`/evaluations/${ev.id}/samples`, { params: { limit: 50 } });
    const rows = page.data.map((s) => h("tr", {},
      h("td", {}, s.benchmark), h("td", { class: "mono small" }, `${s.sample_id}${s.sample_index ? ` #${s.sample_index}` : ""}`),
      h("td", { class: "text" }, s.extracted ?? "—"), h("td", { class: "text" }, s.reference ?? "—"),
      h("td", {}, h("span", { class: `badge ${s.correct ? "verdict-correct" : s.format_ok ? "verdict-wrong" : "verdict-format"}` },
        s.correct ? "correct" : s.reason || "wrong")),
      h("td", {}, s.mathverify === null ? "—" : s.mathverify ? "✓" : "✗"),
      h("td", { class: "num" }, s.length), h("td", { class: "text" }, s.response.slice(-300))));
    replace(box, h("div", { class: "card table-card" },
      h("div", { class: "row", style: { padding: "10px 12px" } },
        h("h3", {}, `Samples of evaluation #${ev.id}`), h("span", { class: "muted small" }, `first ${page.data.length} of ${page.count}`),
        h("div", { class: "spacer" }), h("button", { type: "button", class: "btn btn-small", onclick: () => { box.hidden = true; } }, "Close")),
      h("table", { class: "table table-compact ev-samples-table" },
        h("thead", {}, h("tr", {}, ["Benchmark", "Problem", "Extracted", "Reference", "Grader", "math-verify", "Tokens", "Response (end)"]
          .map((t) => h("th", { scope: "col" }, t)))),
        h("tbody", {}, rows))));
  } catch (err) {
    replace(box, errorState(err, () => showSamples(ev)));
  }
}

function renderEvals(list) {
  const box = $("#ev-list");
  if (!list.data.length) {
    replace(box, emptyState("No evaluations yet", "Start one with the form above (or POST /api/v1/evaluations)."));
    return;
  }
  const rows = list.data.map((ev) => {
    const cancel = ACTIVE.has(ev.status)
      ? h("button", { type: "button", class: "btn btn-small btn-danger", onclick: (e) => cancelEval(ev, e.currentTarget) }, "Cancel") : null;
    return h("tr", { id: `eval-${ev.id}`, "data-eval-id": ev.id },
      h("td", { class: "num" }, `#${ev.id}`),
      h("td", { class: "col-name" }, h("span", { class: "model-name" }, ev.name || ev.model),
        h("div", { class: "ev-scores" }, scoresLine(ev))),
      h("td", {}, statusBadge(ev.status, ev.job.cancel_requested),
        ev.error ? h("div", { class: "error-text small", title: ev.error_detail || ev.error }, ev.error.split("\n")[0].slice(0, 140)) : null),
      h("td", {}, progressBar(ev.job.progress_step, ev.job.progress_total)),
      h("td", {}, MODE_NAMES[ev.mode_label] || ev.mode_label),
      h("td", { class: "num" }, pct(ev.average["pass@1"], 2)),
      h("td", { class: "num" }, pct(ev.average.mathverify, 2)),
      h("td", {}, timeEl(ev.created_at)),
      h("td", { class: "col-actions" },
        h("button", { type: "button", class: "btn btn-small", onclick: () => showSamples(ev) }, "Samples"), " ",
        ev.status === "succeeded" ? h("a", { class: "btn btn-small", href: `/compare?eval_a=${ev.id}`,
          title: "paired comparison with another evaluation of the same problems" }, "Compare") : null, " ", cancel));
  });
  replace(box, h("table", { class: "table table-compact" },
    h("thead", {}, h("tr", {}, ["", "Model", "Status", "Progress", "Decoding", "Avg pass@1", "math-verify", "Started", ""]
      .map((t) => h("th", { scope: "col" }, t)))),
    h("tbody", {}, rows)));
}

let lastActive = false;

async function refreshEvals() {
  try {
    const list = await request("/evaluations", { params: { limit: 20 } });
    renderEvals(list);
    const active = list.data.some((ev) => ACTIVE.has(ev.status));
    if (lastActive && !active) load(); // a job just finished: its measured row is on the leaderboard now
    lastActive = active;
  } catch (err) {
    replace($("#ev-list"), errorState(err, refreshEvals));
  }
  return true;
}

// ------------------------------------------------------------------------------------ forms
function intOrNull(value) {
  const v = String(value ?? "").trim();
  return v === "" ? null : Number(v);
}

function evalBody() {
  const form = $("#ev-form");
  const target = form.querySelector("input[name=target]:checked").value;
  const benchmarks = $$("#ev-benchmarks input:checked").map((i) => i.value)
    .concat($("#ev-extra").value.split(",").map((s) => s.trim()).filter(Boolean));
  const body = {
    benchmarks, mode: $("#ev-mode").value, limit: intOrNull($("#ev-limit").value),
    max_new_tokens: intOrNull($("#ev-max-tokens").value) ?? 8192,
    name: $("#ev-name").value.trim() || null, size: $("#ev-size").value.trim() || null,
  };
  if (target === "run") {
    body.run_id = intOrNull($("#ev-run").value);
    body.step = intOrNull($("#ev-step").value);
  } else {
    body.model = $("#ev-model").value.trim() || null;
  }
  if (body.mode === "sample") {
    body.temperature = $("#ev-temperature").value ? Number($("#ev-temperature").value) : null;
    body.samples = intOrNull($("#ev-k").value);
  }
  return body;
}

async function submitEval(event) {
  event.preventDefault();
  const error = $("#ev-error");
  error.textContent = "";
  const body = evalBody();
  if (!body.benchmarks.length) { error.textContent = "Choose at least one benchmark."; return; }
  if (body.run_id === null && body.model === undefined) { error.textContent = "Choose a run."; return; }
  if (body.model === null) { error.textContent = "Give a checkpoint directory or hub id."; return; }
  const button = $("#ev-submit");
  button.disabled = true;
  try {
    let ev;
    try {
      ev = await request("/evaluations", { method: "POST", body });
    } catch (err) {
      if (!(err instanceof ApiError && err.needsToken) || !(await openTokenDialog(err.message))) throw err;
      ev = await request("/evaluations", { method: "POST", body });
    }
    await refreshEvals();
    $(`#eval-${ev.id}`)?.scrollIntoView({ block: "nearest" });
  } catch (err) {
    if (err instanceof ApiError && err.status === 422) error.textContent = err.message;
    else reportActionError(err);
  } finally {
    button.disabled = false;
  }
}

async function submitImport(event) {
  event.preventDefault();
  const out = $("#imp-result");
  out.textContent = "";
  out.className = "small";
  const file = $("#imp-file").files[0];
  if (!file) { out.textContent = "Choose a CSV or JSON file."; out.className = "small error-text"; return; }
  const text = await file.text();
  const isJson = /\.json$/i.test(file.name) || /^\s*[[{]/.test(text);
  const url = new URL(`${API_BASE}/leaderboard/import`, location.origin);
  for (const [k, id] of [["reference", "#imp-reference"], ["dataset", "#imp-dataset"]]) {
    if ($(id).value.trim()) url.searchParams.set(k, $(id).value.trim());
  }
  const send = () => fetch(url, { method: "POST", body: text, headers: {
    "Content-Type": isJson ? "application/json" : "text/csv", Authorization: `Bearer ${getToken()}` } });
  await withBusy($("#imp-submit"), async () => {
    let r = await send();
    if ((r.status === 401 || r.status === 403) && await openTokenDialog("Importing rows needs the write token.")) r = await send();
    const data = await r.json().catch(() => ({}));
    if (!r.ok) {
      const msg = Array.isArray(data.detail) ? data.detail.map((d) => d.msg).join("; ") : data.detail || `HTTP ${r.status}`;
      out.textContent = `Import failed: ${msg}`;
      out.className = "small error-text";
      return;
    }
    out.textContent = `Imported ${data.entries} models (${data.rows} values) as published, dataset "${data.dataset}": ${data.models.join(", ")}`;
    await load();
  });
}

async function fillRuns() {
  try {
    const runs = await request("/runs", { params: { limit: 100 } });
    const sel = $("#ev-run");
    replace(sel, h("option", { value: "" }, "choose a run…"),
      runs.data.map((r) => h("option", { value: r.id }, `#${r.id} ${r.name} (${r.status}, ${r.steps_done} steps)`)));
  } catch { /* the form still accepts a path */ }
}

// The standard benchmarks come from the API (remix_engine/benchmarks.py holds the one list).
async function fillBenchmarks() {
  try {
    const benchmarks = await request("/benchmarks");
    replace($("#ev-benchmarks"), benchmarks.map((b) => h("label", { class: "chip", title: b.label },
      h("input", { type: "checkbox", value: b.name, checked: true }), b.name)));
  } catch (err) {
    replace($("#ev-benchmarks"), errorState(err, fillBenchmarks, "Could not load the benchmark list"));
  }
}

function initForms() {
  const syncTarget = () => {
    const target = $("#ev-form input[name=target]:checked").value;
    for (const el of $$("#ev-form [data-for=run]")) el.hidden = target !== "run";
    for (const el of $$("#ev-form [data-for=model]")) el.hidden = target !== "model";
  };
  for (const r of $$("#ev-form input[name=target]")) r.addEventListener("change", syncTarget);
  $("#ev-mode").addEventListener("change", () => {
    for (const el of $$("#ev-form [data-for=sample]")) el.hidden = $("#ev-mode").value !== "sample";
  });
  $("#ev-form").addEventListener("submit", submitEval);
  $("#imp-form").addEventListener("submit", submitImport);
  $("#lb-size").addEventListener("change", (e) => { state.size = e.target.value; load(); });
  $("#lb-source").addEventListener("change", (e) => { state.source = e.target.value; load(); });
  syncTarget();
}

initChrome("leaderboard");
initForms();
fillBenchmarks();
fillRuns();
load();
poll(refreshEvals, 3000);
