// Run page: live charts (no reload) against step / cumulative rollouts / wall time with smoothing,
// job status and log, latest metrics, config and checkpoints.

import * as api from "./api.js";
import {
  STANDARD_CHARTS, X_CHOICES, chartCard, drawEmpty, drawLines, keyHelp, reincarnationX,
} from "./charts.js";
import { loadRunOrExplain, renderRunHeader } from "./run_header.js";
import {
  $, $$, ACTIVE, ago, dateTime, emptyState, h, initChrome, itemId, num, poll, replace, timeEl,
} from "./ui.js";

const runId = itemId();
const EXTRA_KEY = "remix.extraCharts";
const REINCARNATED = "replay/reincarnated";

const state = {
  run: null,
  x: "step",
  smoothing: 0,
  series: new Map(), // key -> {x, y, step}
  charts: [], // {def, body}
  updatedAt: null,
  workersOnline: null,
  configShown: false,
  alerts: [], // GET /runs/{id}/alerts
  alertsSeen: "", // counts of the last fetch (refetch when they change)
};
const ALERT_COLOR = "#dc2626";

// ------------------------------------------------------------------------------------ charts
function extraKeys() {
  try {
    return JSON.parse(localStorage.getItem(EXTRA_KEY) || "[]").filter((k) => typeof k === "string");
  } catch {
    return [];
  }
}

function saveExtraKeys(keys) {
  try { localStorage.setItem(EXTRA_KEY, JSON.stringify(keys)); } catch { /* ignore */ }
}

function chartDefs() {
  const extras = extraKeys().filter((k) => !STANDARD_CHARTS.some((c) => c.keys.includes(k)));
  const defs = [...STANDARD_CHARTS, ...extras.map((k) => ({ id: `extra-${k.replace(/[^\w]+/g, "-")}`, title: k, keys: [k],
                                                           help: keyHelp(k), extra: true }))];
  // an alert's metric is always charted, so its marker has a place
  for (const a of state.alerts) {
    if (!defs.some((d) => d.keys.includes(a.metric))) {
      defs.push({ id: `alert-${a.metric.replace(/[^\w]+/g, "-")}`, title: a.metric, keys: [a.metric], help: keyHelp(a.metric) });
    }
  }
  return defs;
}

function buildCharts() {
  const grid = replace($("#charts"));
  state.charts = chartDefs().map((def) => {
    const remove = def.extra ? h("button", {
      type: "button", class: "btn btn-small btn-ghost", "aria-label": `Remove chart ${def.title}`,
      onclick: () => { saveExtraKeys(extraKeys().filter((k) => k !== def.keys[0])); buildCharts(); draw(); },
    }, "×") : null;
    const { card, body } = chartCard({ id: def.id, title: def.title, help: def.help, extra: remove });
    grid.append(card);
    return { def, body };
  });
}

function emptyMessage(def) {
  const run = state.run;
  if (!run) return "Loading…";
  if (run.status === "queued" || run.status === "pending") {
    return state.workersOnline === 0
      ? "Queued, but no worker is online. Start one: `remix studio` runs a worker, or `remix worker` on a GPU machine."
      : `Queued — ${run.job?.waiting || "waiting for a worker to pick this run up"}.`;
  }
  if (def.missing && run.steps_done > 0) return def.missing;
  if (run.status === "running") {
    if (def.id === "accuracy") {
      return `Held-out accuracy is measured before step 1 and every ${run.config?.trainer?.eval_every ?? "N"} steps.`;
    }
    return "Running: the first points appear after the first training step.";
  }
  if (run.status === "failed" && !state.series.size) return "The run failed before recording metrics — see the job error below.";
  return def.missing || `This run recorded no ${def.keys.join(" / ")}.`;
}

function reincarnationMarker() {
  const mark = reincarnationX(state.series.get(REINCARNATED));
  return mark ? [{ x: mark.x, label: `reincarnation (step ${mark.step})` }] : [];
}

/** The x of a training step on the current axis (step, rollouts or time), from any loaded series. */
function stepX(step) {
  if (state.x === "step") return step;
  for (const s of state.series.values()) {
    const i = s.step.indexOf(step);
    if (i >= 0) return s.x[i];
  }
  return null;
}

/** Where each alert began, on the charts of the metric it watches. */
function alertMarkers(def) {
  return state.alerts.filter((a) => def.keys.includes(a.metric))
    .map((a) => ({ x: stepX(a.first_step), label: `⚠ ${a.title}`, color: ALERT_COLOR }));
}

function draw() {
  const markers = reincarnationMarker();
  let points = 0;
  for (const { def, body } of state.charts) {
    const series = def.keys.map((key) => ({ key, name: key, ...(state.series.get(key) || { x: [], y: [] }) }))
      .filter((s) => s.x.length);
    points += drawLines(body, series, {
      xTitle: X_CHOICES[state.x].title, format: def.format, markers: [...markers, ...alertMarkers(def)],
      smoothing: state.smoothing,
      empty: emptyMessage(def),
    });
  }
  $("#charts").dataset.points = String(points);
}

async function loadMetrics() {
  const keys = new Set([REINCARNATED]);
  for (const { def } of state.charts) def.keys.forEach((k) => keys.add(k));
  const data = await api.metrics(runId, Array.from(keys), state.x, 600);
  state.series = new Map(data.series.filter((s) => s.x.length).map((s) => [s.key, s]));
}

// ------------------------------------------------------------------------------------ panels
function renderJob(run) {
  const job = run.job;
  const box = $("#job");
  if (!job) {
    replace(box, emptyState("No job recorded for this run.", "Retry the run to queue it again."));
    return;
  }
  const events = [];
  const add = (when, text, cls = "") => events.push({ when, text, cls });
  add(job.created_at, `job #${job.id} created (${job.kind}, queue ${job.queue})`);
  if (job.queued_at) add(job.queued_at, "sent to the queue; waiting for a worker");
  if (job.started_at) add(job.started_at, `started on ${job.worker || "a worker"} (attempt ${job.attempt} of at most ${job.max_attempts})`);
  if (job.resumed_from_step !== null && job.resumed_from_step !== undefined) {
    add(job.started_at, `resumed from the checkpoint at step ${job.resumed_from_step}`);
  }
  if (job.lost_attempts) add(null, `attempt lost ${job.lost_attempts} time(s) (worker or training process died); the job was re-queued and resumed`, "warn");
  if (job.last_checkpoint_step !== null && job.last_checkpoint_step !== undefined) {
    add(null, `last checkpoint at step ${job.last_checkpoint_step}`);
  }
  if (job.cancel_requested) add(null, "cancel requested: stops after the current step", "warn");
  if (job.finished_at) add(job.finished_at, `finished: ${job.status}`, job.status === "failed" ? "bad" : "");
  const lines = events.map((e) => `${e.when ? new Date(e.when).toLocaleTimeString() : "        "}  ${e.text}`);
  replace(box,
    h("dl", { class: "kv" },
      h("dt", {}, "status"), h("dd", {}, job.status, job.cancel_requested ? " (cancel requested)" : ""),
      h("dt", {}, "progress"), h("dd", {}, `${job.progress_step} / ${job.progress_total} steps`),
      // the worker's host and PID are only sent to requests with a token
      h("dt", {}, "worker"), h("dd", {}, job.worker || h("span", { class: "muted" },
        job.started_at ? "shown with an API token" : "none yet")),
      h("dt", {}, "heartbeat"), h("dd", {}, job.heartbeat_at ? timeEl(job.heartbeat_at) : "—",
        ACTIVE.has(job.status) && job.heartbeat_at && (Date.now() - new Date(job.heartbeat_at)) > 60000
          ? h("span", { class: "error-text" }, " — stale: the worker may be gone; the studio re-queues the job") : null),
      h("dt", {}, "attempt"), h("dd", {}, `${job.attempt} / ${job.max_attempts}`)),
    h("h3", { class: "section" }, "Log"),
    h("pre", { class: "log", id: "job-log", tabindex: "0", "aria-label": "Job log" }, lines.join("\n")),
    // error is one line; error_detail (the traceback) comes only with a token
    job.error || run.error ? h("div", { class: "notice notice-error section" },
      h("strong", {}, "Error"), h("pre", {}, job.error_detail || job.error || run.error_detail || run.error)) : null,
    run.summary ? summaryBlock(run.summary) : null);
}

function summaryBlock(summary) {
  const rows = [];
  const ini = summary.initial_eval?.["eval/heldout/pass@1"];
  const fin = summary.final_eval?.["eval/heldout/pass@1"];
  if (ini !== undefined || fin !== undefined) {
    rows.push(["held-out accuracy", `${ini === undefined ? "—" : num(ini)} → ${fin === undefined ? "—" : num(fin)}`]);
  }
  for (const key of ["status", "steps", "cost/rollouts", "cost/tokens", "elapsed_s", "reincarnated_at"]) {
    if (summary[key] !== undefined && summary[key] !== null) rows.push([key, typeof summary[key] === "number" ? num(summary[key]) : String(summary[key])]);
  }
  return h("div", { class: "section" }, h("h3", {}, "Summary"),
    h("dl", { class: "kv" }, rows.map(([k, v]) => [h("dt", {}, k), h("dd", {}, v)])));
}

function renderLatest(run) {
  const filter = $("#metric-filter").value.trim().toLowerCase();
  const entries = Object.entries(run.latest_metrics || {}).filter(([k]) => !filter || k.toLowerCase().includes(filter));
  const box = $("#latest");
  if (!Object.keys(run.latest_metrics || {}).length) {
    replace(box, emptyState("No metrics yet.", "They appear with the first evaluation and training step."));
    return;
  }
  if (!entries.length) {
    replace(box, emptyState("No metric matches the filter."));
    return;
  }
  const charted = new Set(state.charts.flatMap((c) => c.def.keys));
  const scroll = box.scrollTop;
  requestAnimationFrame(() => { box.scrollTop = scroll; });
  replace(box, h("table", { class: "table table-compact" },
    h("thead", {}, h("tr", {}, h("th", { scope: "col" }, "metric"), h("th", { scope: "col", class: "num" }, "latest"),
      h("th", { scope: "col" }, h("span", { class: "sr-only" }, "chart")))),
    h("tbody", {}, entries.map(([key, value]) => h("tr", {},
      h("td", {}, h("code", {}, key), keyHelp(key) ? h("div", { class: "muted small" }, keyHelp(key)) : null),
      h("td", { class: "num" }, num(value, 4)),
      h("td", {}, charted.has(key) ? h("span", { class: "muted small" }, "charted") : h("button", {
        type: "button", class: "btn btn-small", "aria-label": `Add a chart of ${key}`,
        onclick: async () => {
          saveExtraKeys([...extraKeys(), key]);
          buildCharts();
          await refreshMetrics();
          renderLatest(state.run);
          $(`#chart-extra-${key.replace(/[^\w]+/g, "-")}`)?.scrollIntoView({ behavior: "smooth", block: "center" });
        },
      }, "+ chart")))))));
}

function renderConfig(run) {
  const box = $("#config");
  const cfg = run.config || {};
  const req = run.request || {};
  const set = [];
  for (const k of ["preset", "algorithm", "steps", "seed"]) if (req[k] !== undefined) set.push(`${k}=${req[k]}`);
  if (Array.isArray(req.overrides)) set.push(...req.overrides);
  else if (req.overrides) set.push(...Object.entries(req.overrides).map(([k, v]) => `${k}=${JSON.stringify(v)}`));
  const sections = Object.entries(cfg).filter(([, v]) => v && typeof v === "object");
  const scalars = Object.entries(cfg).filter(([, v]) => !v || typeof v !== "object");
  replace(box,
    set.length ? h("p", { class: "small" }, h("span", { class: "muted" }, "Set when submitted: "), h("code", {}, set.join("  "))) : null,
    h("div", { class: "config-tree", id: "config-tree" },
      scalars.map(([k, v]) => h("div", {}, h("span", { class: "k" }, `${k}: `), JSON.stringify(v))),
      sections.map(([name, values]) => h("details", { open: ["remix", "trainer", "rollout"].includes(name) },
        h("summary", { class: "section-name" }, name),
        flatten(values).map(([k, v]) => h("div", { class: "kv-line" }, h("span", { class: "k" }, `${k}: `), JSON.stringify(v)))))),
    run.output_dir ? h("p", { class: "small muted" }, "output directory: ", h("code", {}, run.output_dir)) : null);
}

function flatten(obj, prefix = "") {
  const out = [];
  for (const [k, v] of Object.entries(obj)) {
    if (v && typeof v === "object" && !Array.isArray(v)) out.push(...flatten(v, `${prefix}${k}.`));
    else out.push([`${prefix}${k}`, v]);
  }
  return out;
}

function renderCheckpoints(run) {
  const box = $("#checkpoints");
  const ckpts = run.checkpoints || [];
  if (!ckpts.length) {
    const every = run.config?.trainer?.checkpoint_every;
    replace(box, emptyState("No checkpoints yet.", every ? `A checkpoint is written every ${every} steps and at the end.` : null));
    return;
  }
  replace(box, h("table", { class: "table table-compact" },
    h("thead", {}, h("tr", {}, ["step", "policy version", "path", "on disk", "created"].map((t) => h("th", { scope: "col" }, t)))),
    h("tbody", {}, ckpts.slice().reverse().map((c) => h("tr", {},
      h("td", { class: "num" }, c.step), h("td", { class: "num" }, `v${c.policy_version}`),
      h("td", {}, h("code", { class: "small" }, c.path)),
      h("td", {}, c.exists ? "yes" : h("span", { class: "muted", title: "pruned (keep_checkpoints) or removed" }, "no")),
      h("td", {}, timeEl(c.created_at)))))));
}

function renderAlerts(run) {
  const box = $("#alerts");
  box.hidden = !state.alerts.length;
  if (!state.alerts.length) return;
  const firing = state.alerts.filter((a) => a.status === "firing").length;
  replace(box,
    h("h2", { id: "alerts-title" }, "Health alerts ",
      h("span", { class: "muted small" }, `${firing} firing, ${state.alerts.length} in all`)),
    h("ul", { class: "alert-list" }, state.alerts.map((a) => h("li", { class: `alert-item alert-item-${a.status}`, "data-rule": a.rule },
      h("details", { open: a.status === "firing" },
        h("summary", {},
          h("span", { class: `badge ${a.status === "firing" ? "alert-firing" : "alert-resolved"}` }, a.status),
          " ", h("strong", {}, a.title), " ",
          h("span", { class: "muted small" }, a.first_step === a.last_step ? `step ${a.first_step}` : `steps ${a.first_step}–${a.last_step}`),
          h("div", { class: "small" }, a.detail)),
        h("p", { class: "small" }, a.explanation),
        h("p", { class: "small" },
          h("a", { href: a.links.traces }, "Rollouts of these steps"), " · ",
          h("a", { href: a.links.metrics }, `${a.metric} (API)`), " · ",
          h("span", { class: "muted" }, `threshold alerts.${a.rule} = ${a.threshold}`)))))));
}

async function refreshAlerts(run) {
  const counts = JSON.stringify([run.alerts, run.updated_at]);
  if (counts === state.alertsSeen) return;
  state.alertsSeen = counts;
  const before = state.alerts.map((a) => a.metric).join();
  state.alerts = run.alerts?.total ? await api.alerts(runId) : [];
  if (state.alerts.map((a) => a.metric).join() !== before) buildCharts(); // a new alert metric gets its chart
  renderAlerts(run);
}

function renderNotice(run) {
  const box = $("#run-notice");
  const notes = [];
  if ((run.status === "queued" || run.status === "pending") && state.workersOnline === 0) {
    notes.push(h("div", { class: "notice" }, "No worker is online, so this run waits in the queue. ",
      "Start one with ", h("code", {}, "remix studio"), " (includes a worker) or ", h("code", {}, "remix worker"), "."));
  }
  if (run.status === "failed") {
    notes.push(h("div", { class: "notice notice-error" }, "This run failed. The error is in the job log below; fix the cause and press Retry, ",
      "or Clone it to change settings first."));
  }
  replace(box, notes);
}

function renderLive() {
  const run = state.run;
  const el = $("#live");
  if (!run) return;
  el.textContent = ACTIVE.has(run.status)
    ? `● live — updates every 3 s${state.updatedAt ? `, last ${ago(state.updatedAt)}` : ""}`
    : `final (${run.status} ${run.finished_at ? dateTime(run.finished_at) : ""})`;
}

// ------------------------------------------------------------------------------------ refresh
async function refreshMetrics() {
  await loadMetrics();
  draw();
}

async function refresh() {
  const run = await api.getRun(runId);
  const was = state.run;
  state.run = run;
  if (ACTIVE.has(run.status) && (run.status !== "running")) {
    try { state.workersOnline = (await api.health()).workers?.online ?? null; } catch { state.workersOnline = null; }
  }
  renderRunHeader(run, "overview", { onChange: () => ticker.now() });
  renderNotice(run);
  await refreshAlerts(run);
  if (!was || was.updated_at !== run.updated_at || !state.series.size) {
    await refreshMetrics();
    renderJob(run);
    renderLatest(run);
    renderCheckpoints(run);
  } else {
    draw(); // status-dependent empty messages
    renderJob(run);
  }
  if (!state.configShown) {
    renderConfig(run);
    state.configShown = true;
  }
  state.updatedAt = new Date().toISOString();
  renderLive();
  return ACTIVE.has(run.status);
}

// ------------------------------------------------------------------------------------ main
initChrome("runs");
let ticker = { now() {} };

async function main() {
  const run = await loadRunOrExplain(runId, () => location.reload());
  if (!run) {
    $("#chart-controls").hidden = true;
    for (const el of $$(".section")) el.hidden = true;
    return;
  }
  buildCharts();
  for (const button of $$("#x-choice button")) {
    button.addEventListener("click", async () => {
      state.x = button.dataset.x;
      for (const b of $$("#x-choice button")) b.setAttribute("aria-pressed", String(b === button));
      await refreshMetrics().catch((err) => state.charts.forEach(({ body }) => drawEmpty(body, err.message)));
    });
  }
  $("#smoothing").addEventListener("input", (e) => {
    state.smoothing = Number(e.target.value);
    $("#smoothing-value").textContent = state.smoothing ? state.smoothing.toFixed(2) : "off";
    draw();
  });
  $("#metric-filter").addEventListener("input", () => state.run && renderLatest(state.run));
  ticker = poll(async () => {
    try {
      return await refresh();
    } catch (err) {
      $("#live").textContent = `Update failed: ${err.message} — retrying…`;
      throw err;
    }
  }, 3000);
  setInterval(renderLive, 1000);
}

main();
