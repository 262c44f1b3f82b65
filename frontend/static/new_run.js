// New run form: the run config's main fields, the ReMix switches and free key=value overrides.
// POST /api/v1/runs; the server's 422 messages are shown next to the field they name.
// /new?from=<run id> pre-fills the form from an earlier run's request ("clone").

import * as api from "./api.js";
import { $, $$, h, initChrome, openTokenDialog, replace } from "./ui.js";

const form = $("#run-form");
const REMIX_INPUTS = ["remix.replay_share", "remix.window", "remix.utd", "remix.kl_convex", "remix.reincarnate_at",
                      "remix.precedent"];
// Sent as overrides whatever the algorithm; empty = the default (1 process, the workers' queue).
const RESOURCE_INPUTS = ["resources.gpus", "resources.queue"];

// Small, fast toy settings (a run that shows charts within a minute on 2 CPU cores).
const QUICK_DEMO = [
  "rollout.prompts_per_step=8",
  "rollout.group_size=4",
  "rollout.max_new_tokens=64",
  "data.heldout_size=32",
  "trainer.eval_every=2",
  "trainer.checkpoint_every=10",
];
// With a remix-* algorithm the 20 demo steps also show the method: replay from step 2, KL-Convex's
// λ falling from step 4 (to its floor at step 12) and the reincarnation at step 14.
const QUICK_DEMO_REMIX = [
  "remix.schedule.start=4",
  "remix.schedule.interval=2",
  "remix.reincarnate_at=14",
];

// ------------------------------------------------------------------------------------ body
function overrideLines() {
  return form.overrides.value.split("\n").map((l) => l.trim()).filter((l) => l && !l.startsWith("#"));
}

function isRemix() {
  return form.algorithm.value.startsWith("remix-");
}

/** The JSON body of POST /runs built from the form (only the fields the user set). */
function buildBody() {
  const config = { preset: form.preset.value, algorithm: form.algorithm.value };
  for (const name of ["steps", "seed"]) {
    const raw = form[name].value.trim();
    if (raw !== "") config[name] = Number.isInteger(Number(raw)) ? Number(raw) : raw;
  }
  const overrides = [];
  if (isRemix()) {
    for (const name of REMIX_INPUTS) {
      const el = form.elements[name];
      if (name === "remix.reincarnate_at" && form.never.checked) {
        overrides.push(`${name}=null`);
        continue;
      }
      const raw = el.value.trim();
      if (raw !== "") overrides.push(`${name}=${raw}`);
    }
  }
  for (const name of RESOURCE_INPUTS) {
    const raw = form.elements[name].value.trim();
    if (raw !== "") overrides.push(`${name}=${raw}`);
  }
  overrides.push(...overrideLines());
  if (overrides.length) config.overrides = overrides;
  const body = { config };
  const name = $("#f-name").value.trim();
  if (name) body.name = name;
  return body;
}

function updatePreview() {
  const body = JSON.stringify(buildBody(), null, 2);
  $("#api-preview-body").textContent =
    `curl -X POST ${location.origin}/api/v1/runs \\\n  -H "Authorization: Bearer $REMIX_TOKEN" ` +
    `-H "Content-Type: application/json" \\\n  -d '${body.replace(/'/g, "'\\''")}'`;
}

function updateRemixFieldset() {
  const on = isRemix();
  $("#remix-fields").disabled = !on;
  $("#remix-note").textContent = on ? "Empty = the preset's value."
    : `${form.algorithm.value} is plain on-policy: these switches are off (p = 0, m = 1, no reincarnation).`;
  form.elements["remix.reincarnate_at"].disabled = form.never.checked;
}

// ------------------------------------------------------------------------------------ help text
// The help text of every setting comes from the server (remix_engine/config.py Field descriptions):
// the hints next to the inputs and the "All settings" reference list, with the chosen preset's values.
async function loadHelp() {
  let fields;
  try {
    fields = await api.request("/config/fields");
  } catch {
    return; // the form works without help text
  }
  const byKey = Object.fromEntries(fields.map((f) => [f.key, f]));
  for (const el of $$("[data-help]")) el.textContent = byKey[el.dataset.help]?.description || "";
  let preset = {};
  try {
    preset = await api.request(`/config/presets/${encodeURIComponent(form.preset.value)}`,
      { params: { algorithm: form.algorithm.value } });
  } catch { /* show the defaults only */ }
  const valueOf = (key) => key.split(".").reduce((node, part) => (node == null ? undefined : node[part]), preset);
  const rows = fields.map((f) => h("tr", {},
    h("td", {}, h("code", {}, f.key)),
    h("td", {}, h("code", {}, JSON.stringify(valueOf(f.key) ?? f.default))),
    h("td", {}, f.description)));
  replace($("#settings-list"), h("table", { class: "table" },
    h("thead", {}, h("tr", {}, h("th", {}, "setting"), h("th", {}, "value"), h("th", {}, "meaning"))),
    h("tbody", {}, rows)));
}

// ------------------------------------------------------------------------------------ errors
function clearErrors() {
  for (const el of $$("[aria-invalid]", form)) el.removeAttribute("aria-invalid");
  for (const el of $$(".field-error", form)) el.textContent = "";
  $("#error-summary").hidden = true;
  replace($("#error-list"));
}

function fieldElement(field) {
  if (!field) return null;
  for (const el of $$("[data-field]", form)) {
    if (el.dataset.field.split(" ").includes(field)) return el;
  }
  return null;
}

/** FastAPI's 422 detail → [{field, msg}], `field` being a dotted config key or a body field. */
function problems(detail) {
  if (typeof detail === "string") return [{ field: null, msg: detail }];
  if (!Array.isArray(detail)) return [{ field: null, msg: "The server rejected the request." }];
  return detail.map((d) => {
    let field = d.field || null;
    if (!field && Array.isArray(d.loc) && d.loc[0] === "body" && d.loc.length > 1 && d.loc[1] !== "config") {
      field = d.loc.slice(1).join(".");
    }
    return { field, msg: d.msg || JSON.stringify(d) };
  });
}

function showErrors(list, { markFields = true } = {}) {
  const summary = $("#error-list");
  replace(summary);
  let first = null;
  for (const { field, msg } of list) {
    if (!markFields) {
      summary.append(h("li", {}, msg));
      continue;
    }
    // A field the form has an input for gets the message inline; everything else came from the
    // overrides box (or names no field) and is shown under it.
    const el = fieldElement(field) || form.overrides;
    el.setAttribute("aria-invalid", "true");
    const errId = el.getAttribute("aria-describedby")?.split(" ").find((id) => id.startsWith("e-"));
    const errEl = errId ? document.getElementById(errId) : null;
    if (errEl) errEl.textContent = errEl.textContent ? `${errEl.textContent} ${msg}` : msg;
    first = first || el;
    summary.append(h("li", {}, h("a", { href: `#${el.id}`, onclick: (e) => { e.preventDefault(); el.focus(); } }, msg)));
  }
  $("#error-summary").hidden = false;
  $("#error-summary").focus();
  return first;
}

// ------------------------------------------------------------------------------------ submit
async function submit(event) {
  event.preventDefault();
  clearErrors();
  const button = $("#submit-run");
  const status = $("#submit-status");
  button.disabled = true;
  status.textContent = "Queuing…";
  try {
    const run = await api.createRun(buildBody());
    status.textContent = `Queued run #${run.id}; opening it…`;
    location.href = `/runs/${run.id}`;
  } catch (err) {
    status.textContent = "";
    if (err.status === 422) {
      showErrors(problems(err.detail));
    } else if (err.needsToken) {
      showErrors([{ field: null, msg: err.message }], { markFields: false });
      if (await openTokenDialog(`Queuing a run needs the write token (${err.message.split(" — ")[0]}).`)) form.requestSubmit();
    } else {
      showErrors([{ field: null, msg: err.message }], { markFields: false });
    }
  } finally {
    button.disabled = false;
  }
}

// ------------------------------------------------------------------------------------ clone
async function prefillFrom(runId) {
  let run;
  try {
    run = await api.getRun(runId);
  } catch (err) {
    showErrors([{ field: null, msg: `Could not load run #${runId} to copy its settings: ${err.message}` }]);
    return;
  }
  const req = run.request || {};
  $("#f-name").value = `${run.name.replace(/ \(retry of #\d+\)$/, "")} (copy)`.slice(0, 200);
  if (req.preset) form.preset.value = req.preset;
  form.algorithm.value = req.algorithm || run.algorithm;
  form.steps.value = req.steps ?? run.steps_total ?? "";
  form.seed.value = req.seed ?? run.config?.trainer?.seed ?? "";
  let items = [];
  if (Array.isArray(req.overrides)) items = req.overrides.map(String);
  else if (req.overrides && typeof req.overrides === "object") {
    items = Object.entries(req.overrides).map(([k, v]) => `${k}=${v === null ? "null" : typeof v === "object" ? JSON.stringify(v) : v}`);
  }
  const rest = [];
  for (const item of items) {
    const [key, ...value] = item.split("=");
    const el = form.elements[key.trim()];
    if ((REMIX_INPUTS.includes(key.trim()) || RESOURCE_INPUTS.includes(key.trim())) && el) {
      const v = value.join("=").trim();
      if (key.trim() === "remix.reincarnate_at" && (v === "null" || v === "~")) form.never.checked = true;
      else el.value = v;
    } else {
      rest.push(item);
    }
  }
  form.overrides.value = rest.join("\n");
  updateRemixFieldset();
  updatePreview();
}

// ------------------------------------------------------------------------------------ main
initChrome("new");
form.addEventListener("submit", submit);
form.addEventListener("input", updatePreview);
form.addEventListener("change", () => { updateRemixFieldset(); updatePreview(); });
$("#quick-demo").addEventListener("click", () => {
  const have = new Set(overrideLines().map((l) => l.split("=")[0].trim()));
  const demo = isRemix() ? [...QUICK_DEMO, ...QUICK_DEMO_REMIX] : QUICK_DEMO;
  const add = demo.filter((l) => !have.has(l.split("=")[0]));
  form.overrides.value = [...overrideLines(), ...add].join("\n");
  if (!form.steps.value || Number(form.steps.value) > 30) form.steps.value = 20;
  updatePreview();
});
form.preset.addEventListener("change", loadHelp);
form.algorithm.addEventListener("change", loadHelp);
updateRemixFieldset();
updatePreview();
loadHelp();
const from = new URLSearchParams(location.search).get("from");
if (from && /^\d+$/.test(from)) prefillFrom(Number(from));
