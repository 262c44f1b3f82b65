// The header shared by a run's pages (overview, off-policy, traces): name, status, progress,
// cost, actions (cancel, retry, clone, compare) and the tabs.

import * as api from "./api.js";
import { $, ACTIVE, errorState, duration, h, num, progressBar, replace, statusBadge, timeEl, withBusy } from "./ui.js";

const TABS = [
  { key: "overview", label: "Overview", href: (id) => `/runs/${id}` },
  { key: "offpolicy", label: "Off-policy", href: (id) => `/offpolicy/${id}` },
  { key: "traces", label: "Traces", href: (id) => `/traces/${id}` },
];

/**
 * Render the header into #run-header. `onChange` is called after a successful cancel (the page
 * refreshes its data).
 */
export function renderRunHeader(run, activeTab, { onChange } = {}) {
  const actions = h("div", { class: "head-actions" });
  if (ACTIVE.has(run.status) && !run.cancel_requested) {
    actions.append(h("button", {
      type: "button", class: "btn btn-danger", id: "cancel-run",
      onclick: (e) => withBusy(e.currentTarget, async () => {
        if (!confirm(`Cancel run #${run.id}? A running run checkpoints and stops after its current step.`)) return;
        const updated = await api.cancelRun(run.id);
        onChange?.(updated);
      }),
    }, "Cancel run"));
  }
  if (!ACTIVE.has(run.status)) {
    actions.append(h("button", {
      type: "button", class: "btn", id: "retry-run", title: "Start a new run with the same config (lineage kept)",
      onclick: (e) => withBusy(e.currentTarget, async () => {
        const child = await api.retryRun(run.id);
        location.href = `/runs/${child.id}`;
      }),
    }, "Retry"));
  }
  actions.append(
    h("a", { class: "btn", href: `/new?from=${run.id}`, title: "Open the form pre-filled with this run's settings" }, "Clone"),
    h("a", { class: "btn", href: `/compare?runs=${run.id}` }, "Compare…"));

  // resources.gpus: the world size the run trains with (runs from before the field: 1 process)
  const gpus = run.config?.resources?.gpus ?? 1;
  const queue = run.config?.resources?.queue;
  const meta = h("div", { class: "run-meta" },
    h("span", {}, h("code", {}, run.algorithm), " · ", run.preset),
    h("span", { id: "world-size", title: "resources.gpus: training processes (one per GPU)" },
      h("strong", {}, `${gpus} process${gpus === 1 ? "" : "es"}`), queue ? [" · queue ", h("code", {}, queue)] : null),
    h("span", {}, "cost ", h("strong", {}, num(run.rollouts_generated)), " rollouts · ", num(run.tokens_generated), " tokens"),
    h("span", {}, "training time ", h("strong", {}, duration(run.elapsed_s))),
    h("span", {}, "created ", timeEl(run.created_at)),
    run.parent_run_id ? h("span", {}, "retry of ", h("a", { href: `/runs/${run.parent_run_id}` }, `#${run.parent_run_id}`)) : null,
    run.child_run_ids?.length ? h("span", {}, "retried as ",
      run.child_run_ids.map((c, i) => [i ? ", " : "", h("a", { href: `/runs/${c}` }, `#${c}`)])) : null);

  replace($("#run-header"),
    h("nav", { class: "small muted", "aria-label": "Breadcrumb" }, h("a", { href: "/" }, "Runs"), " / ", `#${run.id}`),
    h("div", { class: "page-head" },
      h("div", {},
        h("div", { class: "run-title" }, h("h1", {}, run.name), statusBadge(run.status, run.cancel_requested),
          h("div", { style: { width: "180px" } }, progressBar(run.steps_done, run.steps_total)),
          // what the job does before its first step (the toy's warm start and its ETA)
          run.status === "running" && run.job?.phase
            ? h("span", { class: "small muted", id: "run-phase", role: "status" }, run.job.phase) : null,
          // why a queued run has not started (a busy worker and its warm start, or no worker at all)
          run.job?.waiting ? h("span", { class: "small muted", id: "run-waiting", role: "status" }, run.job.waiting) : null),
        meta),
      actions),
    h("nav", { class: "tabs", "aria-label": "Run views" },
      TABS.map((t) => h("a", { href: t.href(run.id), "aria-current": t.key === activeTab ? "page" : null }, t.label))));
  document.title = `${run.name} · ReMix Studio`;
}

/** Load the run or render a helpful error into #run-header; returns the run or null. */
export async function loadRunOrExplain(runId, retry) {
  if (runId === null) {
    replace($("#run-header"), errorState(new Error("This address has no run id. Open a run from the runs list."), null, "No run here"),
      h("p", {}, h("a", { href: "/" }, "← All runs")));
    return null;
  }
  try {
    return await api.getRun(runId);
  } catch (err) {
    const box = err.status === 404
      ? errorState(new Error(`Run #${runId} does not exist (it may have been deleted, or the link is wrong).`), null, "Run not found")
      : errorState(err, retry);
    replace($("#run-header"), box, h("p", {}, h("a", { href: "/" }, "← All runs")));
    return null;
  }
}
