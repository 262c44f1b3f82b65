// Runs page: table of runs with status, algorithm, progress, latest accuracy, cost, created;
// filter (server side: status, algorithm; client side: name), sort (client side), select to compare.

import * as api from "./api.js";
import {
  $, ACTIVE, emptyState, errorState, h, initChrome, loadingState, num, pct, poll, progressBar, replace,
  statusBadge, timeEl, withBusy,
} from "./ui.js";

const PAGE = 100;
const ACC_KEY = "eval/heldout/pass@1";
const REWARD_KEY = "critic/score/mean";

const state = {
  runs: [],
  count: 0,
  limit: PAGE,
  selected: new Set(),
  sort: { key: "created_at", dir: "desc" },
  loaded: false,
  error: null,
};

const COLUMNS = [
  { key: "name", label: "Run" },
  { key: "status", label: "Status" },
  { key: "algorithm", label: "Algorithm" },
  { key: "progress", label: "Progress" },
  { key: "accuracy", label: "Held-out acc.", title: "latest eval/heldout/pass@1" },
  { key: "reward", label: "Reward", title: "latest critic/score/mean" },
  { key: "rollouts", label: "Cost (rollouts)", title: "rollouts generated so far" },
  { key: "created_at", label: "Created" },
];

function latest(run, key) {
  return run.latest_metrics?.[key] ?? null;
}

function sortValue(run, key) {
  switch (key) {
    case "progress": return run.steps_total ? run.steps_done / run.steps_total : 0;
    case "accuracy": return latest(run, ACC_KEY) ?? -1;
    case "reward": return latest(run, REWARD_KEY) ?? -1;
    case "rollouts": return run.rollouts_generated;
    case "created_at": return run.created_at;
    default: return String(run[key] ?? "").toLowerCase();
  }
}

function filters() {
  const form = $("#run-filters");
  return { q: form.q.value.trim().toLowerCase(), status: form.status.value, algorithm: form.algorithm.value };
}

function syncUrl() {
  const f = filters();
  const params = new URLSearchParams();
  if (f.q) params.set("q", f.q);
  if (f.status) params.set("status", f.status);
  if (f.algorithm) params.set("algorithm", f.algorithm);
  if (state.sort.key !== "created_at" || state.sort.dir !== "desc") params.set("sort", `${state.sort.key}:${state.sort.dir}`);
  const qs = params.toString();
  history.replaceState(null, "", location.pathname + (qs ? `?${qs}` : ""));
}

function readUrl() {
  const params = new URLSearchParams(location.search);
  const form = $("#run-filters");
  form.q.value = params.get("q") || "";
  form.status.value = params.get("status") || "";
  form.algorithm.value = params.get("algorithm") || "";
  const [key, dir] = (params.get("sort") || "").split(":");
  if (COLUMNS.some((c) => c.key === key)) state.sort = { key, dir: dir === "asc" ? "asc" : "desc" };
}

// ------------------------------------------------------------------------------------ data
async function refresh() {
  const f = filters();
  try {
    // the latest accuracy and reward of every run come with the list (one request per refresh)
    const page = await api.listRuns({ status: f.status, algorithm: f.algorithm, limit: state.limit,
                                      metrics: [ACC_KEY, REWARD_KEY] });
    state.runs = page.data;
    state.count = page.count;
    state.error = null;
    state.loaded = true;
    render();
  } catch (err) {
    state.error = err;
    render();
    throw err;
  }
  return true;
}

// ------------------------------------------------------------------------------------ render
function visibleRuns() {
  const { q } = filters();
  let runs = state.runs;
  if (q) runs = runs.filter((r) => r.name.toLowerCase().includes(q) || String(r.id) === q.replace("#", ""));
  const { key, dir } = state.sort;
  const sign = dir === "asc" ? 1 : -1;
  return runs.slice().sort((a, b) => {
    const va = sortValue(a, key);
    const vb = sortValue(b, key);
    if (va < vb) return -sign;
    if (va > vb) return sign;
    return b.id - a.id;
  });
}

function headerCell(col) {
  const active = state.sort.key === col.key;
  const ariaSort = active ? (state.sort.dir === "asc" ? "ascending" : "descending") : "none";
  const arrow = active ? (state.sort.dir === "asc" ? " ▲" : " ▼") : "";
  return h("th", { scope: "col", "aria-sort": ariaSort, title: col.title || null },
    h("button", {
      type: "button", class: "sort-button", "data-sort": col.key,
      onclick: () => {
        state.sort = { key: col.key, dir: active && state.sort.dir === "desc" ? "asc" : "desc" };
        syncUrl();
        render();
      },
    }, col.label, arrow));
}

function actionButtons(run) {
  const buttons = [];
  if (ACTIVE.has(run.status) && !run.cancel_requested) {
    buttons.push(h("button", {
      type: "button", class: "btn btn-small", "aria-label": `Cancel run ${run.id}`,
      onclick: (e) => withBusy(e.currentTarget, async () => { await api.cancelRun(run.id); await refresh(); }),
    }, "Cancel"));
  }
  if (!ACTIVE.has(run.status)) {
    buttons.push(h("button", {
      type: "button", class: "btn btn-small", "aria-label": `Retry run ${run.id}`,
      onclick: (e) => withBusy(e.currentTarget, async () => {
        const child = await api.retryRun(run.id);
        location.href = `/runs/${child.id}`;
      }),
    }, "Retry"));
  }
  return buttons;
}

/** Health alerts of a run: a badge linking to the run page's alert list (firing ones stand out). */
function alertBadge(run) {
  const { firing = 0, total = 0 } = run.alerts || {};
  if (!total) return null;
  const label = firing ? `⚠ ${firing} alert${firing > 1 ? "s" : ""}` : `${total} resolved`;
  return h("a", {
    class: `badge alert-badge ${firing ? "alert-firing" : "alert-resolved"}`, href: `/runs/${run.id}#alerts`,
    title: `${firing} firing, ${total} in all: open the run to read them`,
  }, label);
}

function row(run) {
  const checked = state.selected.has(run.id);
  const acc = latest(run, ACC_KEY);
  const reward = latest(run, REWARD_KEY);
  return h("tr", { "data-run-id": run.id, class: checked ? "selected" : null },
    h("td", { class: "col-check" },
      h("input", {
        type: "checkbox", checked, "aria-label": `Select run ${run.id} (${run.name}) for comparison`,
        onchange: (e) => {
          if (e.target.checked) state.selected.add(run.id);
          else state.selected.delete(run.id);
          render();
        },
      })),
    h("td", { class: "col-name" },
      h("a", { href: `/runs/${run.id}` }, run.name),
      h("span", { class: "muted small" }, ` #${run.id}`),
      run.parent_run_id ? h("span", { class: "muted small", title: "retry of" }, ` ↻ #${run.parent_run_id}`) : null,
      run.error ? h("div", { class: "small error-text", title: run.error_detail || run.error }, run.error.split("\n")[0].slice(0, 120)) : null),
    h("td", {}, statusBadge(run.status, run.cancel_requested), alertBadge(run)),
    h("td", {}, h("code", {}, run.algorithm), h("span", { class: "muted small" }, ` ${run.preset}`)),
    h("td", { class: "col-progress" }, progressBar(run.steps_done, run.steps_total)),
    h("td", { class: "num" }, acc === null ? h("span", { class: "muted" }, "—") : pct(acc)),
    h("td", { class: "num" }, reward === null ? h("span", { class: "muted" }, "—") : num(reward)),
    h("td", { class: "num" }, num(run.rollouts_generated)),
    h("td", {}, timeEl(run.created_at)),
    h("td", { class: "col-actions" }, actionButtons(run)));
}

let lastSignature = "";

function render() {
  // Skip identical re-renders (the list is polled): keeps focus and hover where the user left them.
  const signature = JSON.stringify([state.runs.map((r) => [r.id, r.updated_at, r.status, r.alerts?.firing, r.alerts?.total]), state.count, state.loaded,
    String(state.error), [...state.selected], state.sort, Object.values(filters()),
    state.runs.map((r) => r.latest_metrics), Math.floor(Date.now() / 30000)]);
  if (signature === lastSignature) return;
  lastSignature = signature;
  const box = $("#runs-table");
  const compare = $("#compare-button");
  const n = state.selected.size;
  compare.disabled = n < 2 || n > 10;
  compare.textContent = n ? `Compare selected (${n})` : "Compare selected";
  compare.title = n < 2 ? "Select at least two runs" : n > 10 ? "Select at most ten runs" : "";

  if (!state.loaded) {
    replace(box, state.error ? errorState(state.error, () => refresh().catch(() => {})) : loadingState("Loading runs…"));
    return;
  }
  const runs = visibleRuns();
  const f = filters();
  const filtered = Boolean(f.q || f.status || f.algorithm);
  if (!runs.length) {
    replace(box, filtered
      ? emptyState("No runs match these filters.", "Change or clear the filters above.",
        h("button", { type: "button", class: "btn", onclick: clearFilters }, "Clear filters"))
      : emptyState("No runs yet.",
        "Start a toy run: it trains a tiny model on a synthetic arithmetic task and shows charts within a minute.",
        h("a", { class: "btn btn-primary", href: "/new" }, "Start a toy run")));
    $("#runs-footer").textContent = "";
    return;
  }
  const table = h("table", { class: "table runs-table" },
    h("caption", { class: "sr-only" }, "Runs; column headers sort the table"),
    h("thead", {}, h("tr", {}, h("th", { scope: "col", class: "col-check" }, h("span", { class: "sr-only" }, "Select")),
      COLUMNS.map(headerCell), h("th", { scope: "col" }, h("span", { class: "sr-only" }, "Actions")))),
    h("tbody", {}, runs.map(row)));
  replace(box, state.error ? errorState(state.error, () => refresh().catch(() => {})) : null, table);
  const footer = $("#runs-footer");
  replace(footer, `${runs.length} shown of ${state.count} run${state.count === 1 ? "" : "s"}`);
  if (state.count > state.runs.length) {
    footer.append(" · ", h("button", {
      type: "button", class: "btn btn-small", onclick: async (e) => {
        state.limit = Math.min(500, state.limit + PAGE);
        await withBusy(e.currentTarget, refresh);
      },
    }, "Load more"));
  }
}

function clearFilters() {
  $("#run-filters").reset();
  syncUrl();
  refresh().catch(() => {});
}

// ------------------------------------------------------------------------------------ main
initChrome("runs");
readUrl();
const form = $("#run-filters");
form.addEventListener("submit", (e) => e.preventDefault());
form.q.addEventListener("input", () => { syncUrl(); render(); });
for (const name of ["status", "algorithm"]) {
  form[name].addEventListener("change", () => { syncUrl(); refresh().catch(() => {}); });
}
$("#compare-button").addEventListener("click", () => {
  const ids = Array.from(state.selected).sort((a, b) => a - b);
  location.href = `/compare?runs=${ids.join(",")}`;
});
render();
poll(async () => {
  await refresh();
  return true;
}, 4000);
