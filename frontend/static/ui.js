// Shared UI helpers: safe DOM building, formatting, status badges, empty/error/loading states,
// polling, and the page chrome (health indicator, API token dialog).

import { ApiError, getToken, health, setToken } from "./api.js";

export const ACTIVE = new Set(["pending", "queued", "running"]);

// ------------------------------------------------------------------------------------ DOM
/**
 * h("a", {href: "/x", class: "btn", onclick: fn, dataset: {id: 1}}, "text", childNode, [more])
 * Strings become text nodes (never HTML), null/false children are skipped.
 */
export function h(tag, props = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(props || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key === "class") el.className = value;
    else if (key === "text") el.textContent = value;
    else if (key === "dataset") Object.assign(el.dataset, value);
    else if (key === "style" && typeof value === "object") Object.assign(el.style, value);
    else if (key.startsWith("on") && typeof value === "function") el.addEventListener(key.slice(2), value);
    else if (value === true) el.setAttribute(key, "");
    else el.setAttribute(key, String(value));
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const child of children) {
    if (child === null || child === undefined || child === false) continue;
    if (Array.isArray(child)) append(el, child);
    else el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

export function clear(el) {
  while (el.firstChild) el.removeChild(el.firstChild);
  return el;
}

export function replace(el, ...children) {
  clear(el);
  append(el, children);
  return el;
}

export const $ = (selector, root = document) => root.querySelector(selector);
export const $$ = (selector, root = document) => Array.from(root.querySelectorAll(selector));

// ------------------------------------------------------------------------------------ format
export function num(value, digits = 3) {
  if (value === null || value === undefined || Number.isNaN(value)) return "—";
  if (Number.isInteger(value)) return value.toLocaleString("en-US");
  const abs = Math.abs(value);
  if (abs !== 0 && (abs < 1e-3 || abs >= 1e6)) return value.toExponential(2);
  return Number(value.toFixed(digits)).toString();
}

export function pct(value, digits = 1) {
  if (value === null || value === undefined || Number.isNaN(value)) return "—";
  return `${(value * 100).toFixed(digits)}%`;
}

export function duration(seconds) {
  if (seconds === null || seconds === undefined) return "—";
  const s = Math.round(seconds);
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m ${s % 60}s`;
  return `${Math.floor(s / 3600)}h ${Math.floor((s % 3600) / 60)}m`;
}

export function ago(iso) {
  if (!iso) return "—";
  const seconds = (Date.now() - new Date(iso).getTime()) / 1000;
  if (seconds < 5) return "just now";
  if (seconds < 60) return `${Math.round(seconds)}s ago`;
  if (seconds < 3600) return `${Math.round(seconds / 60)} min ago`;
  if (seconds < 86400) return `${Math.round(seconds / 3600)} h ago`;
  return new Date(iso).toLocaleDateString();
}

export function dateTime(iso) {
  return iso ? new Date(iso).toLocaleString() : "—";
}

/** A <time> element showing "3 min ago" with the exact time as a tooltip. */
export function timeEl(iso) {
  if (!iso) return h("span", { class: "muted" }, "—");
  return h("time", { datetime: iso, title: dateTime(iso) }, ago(iso));
}

// ------------------------------------------------------------------------------------ widgets
export function statusBadge(status, cancelRequested = false) {
  const label = cancelRequested && ACTIVE.has(status) ? `${status} · cancelling` : status;
  return h("span", { class: `badge status-${status}`, "data-status": status }, label);
}

export function progressBar(done, total) {
  const frac = total > 0 ? Math.min(1, done / total) : 0;
  return h("div", { class: "progress", role: "progressbar", "aria-valuemin": 0, "aria-valuemax": total || 0,
                    "aria-valuenow": done, "aria-label": `${done} of ${total} steps` },
    h("div", { class: "progress-fill", style: { width: `${(frac * 100).toFixed(1)}%` } }),
    h("span", { class: "progress-label" }, `${done} / ${total}`));
}

/** Empty state: what is (not) here and what to do about it. */
export function emptyState(title, text, ...actions) {
  return h("div", { class: "state state-empty", role: "status" },
    h("p", { class: "state-title" }, title), text ? h("p", { class: "muted" }, text) : null,
    actions.length ? h("div", { class: "state-actions" }, actions) : null);
}

export function loadingState(text = "Loading…") {
  return h("div", { class: "state state-loading", role: "status", "aria-busy": "true" },
    h("span", { class: "spinner", "aria-hidden": "true" }), h("span", {}, text));
}

/** Error state with the server's message and a retry button. */
export function errorState(err, retry, title = null) {
  const what = title || (err instanceof ApiError && err.status === 0 ? "The studio is not reachable" : "Something went wrong");
  const box = h("div", { class: "state state-error", role: "alert" },
    h("p", { class: "state-title" }, what), h("p", {}, err.message || String(err)));
  const actions = h("div", { class: "state-actions" });
  if (retry) actions.append(h("button", { type: "button", class: "btn", onclick: retry }, "Try again"));
  if (err instanceof ApiError && err.needsToken) {
    actions.append(h("button", { type: "button", class: "btn btn-primary", onclick: () => openTokenDialog(err.message) },
      "Set API token"));
  }
  if (actions.childNodes.length) box.append(actions);
  return box;
}

/** A short-lived message at the top of the page (errors of button actions). */
export function banner(message, kind = "error", timeoutMs = 8000) {
  const el = $("#banner");
  if (!el) return;
  el.className = `banner banner-${kind}`;
  replace(el, h("span", {}, message),
    h("button", { type: "button", class: "btn btn-small btn-ghost", "aria-label": "Dismiss", onclick: () => { el.hidden = true; } }, "×"));
  el.hidden = false;
  clearTimeout(banner._timer);
  if (timeoutMs) banner._timer = setTimeout(() => { el.hidden = true; }, timeoutMs);
}

/** Report a failed action: open the token dialog for 401/403, else show a banner. */
export function reportActionError(err) {
  if (err instanceof ApiError && err.needsToken) openTokenDialog(err.message);
  else banner(err.message || String(err));
}

// ------------------------------------------------------------------------------------ polling
/**
 * Calls `fn` now and then every `intervalMs` while it returns true (keep going). Pauses while the
 * tab is hidden; backs off (up to 30 s) while `fn` throws. Returns {stop, now}.
 */
export function poll(fn, intervalMs = 3000) {
  let timer = null;
  let stopped = false;
  let failures = 0;
  let running = false;
  async function tick() {
    if (stopped || running) return;
    if (document.hidden) { schedule(intervalMs); return; }
    running = true;
    let again = true;
    try {
      again = (await fn()) !== false;
      failures = 0;
    } catch (err) {
      failures += 1;
      console.warn("poll failed", err);
    } finally {
      running = false;
    }
    if (again) schedule(Math.min(30000, intervalMs * 2 ** failures));
    else stopped = true;
  }
  function schedule(ms) {
    clearTimeout(timer);
    if (!stopped) timer = setTimeout(tick, ms);
  }
  document.addEventListener("visibilitychange", () => { if (!document.hidden && !stopped) schedule(50); });
  tick();
  return {
    stop() { stopped = true; clearTimeout(timer); },
    now() { if (!stopped) schedule(0); },
    restart() { if (stopped) { stopped = false; schedule(0); } },
  };
}

export function debounce(fn, ms = 300) {
  let timer;
  return (...args) => { clearTimeout(timer); timer = setTimeout(() => fn(...args), ms); };
}

// ------------------------------------------------------------------------------------ chrome
let tokenResolve = null;

export function openTokenDialog(reason = "") {
  const dialog = $("#token-dialog");
  if (!dialog) return Promise.resolve(false);
  $("#token-dialog-reason").textContent = reason;
  $("#token-input").value = getToken();
  if (!dialog.open) dialog.showModal();
  $("#token-input").focus();
  return new Promise((resolve) => { tokenResolve = resolve; });
}

function updateTokenButton() {
  const btn = $("#token-button");
  if (!btn) return;
  const has = Boolean(getToken());
  btn.textContent = has ? "API token ✓" : "Set API token";
  btn.title = has ? "A write token is stored in this browser" : "No token stored: starting or cancelling runs will ask for it";
}

async function refreshHealth() {
  const el = $("#health");
  if (!el) return true;
  const text = $(".health-text", el);
  try {
    const data = await health();
    const workers = data.workers?.online ?? 0;
    el.dataset.state = data.status;
    const starting = data.status === "starting";
    text.textContent = workers > 0 ? `${workers} worker${workers > 1 ? "s" : ""} online`
      : starting ? "worker starting…" : "no worker online";
    el.title = workers > 0 ? `database ${data.database?.dialect}, broker ${data.broker?.ok ? "ok" : "down"}`
      : starting ? "The studio's worker is starting; queued runs begin when it is online."
      : "No worker is online: queued runs wait. `remix studio` starts one; on other machines run `remix worker`.";
    if (data.reasons?.length && !starting) el.title += `\n${data.reasons.join("\n")}`;
    if (data.broker && !data.broker.ok) {
      text.textContent = "broker down";
      el.title = `The message broker is unreachable: ${data.broker.error || ""}`;
    }
    if (data.database?.warning) {
      text.textContent += " · schema outdated";
      el.title = data.database.warning;
    }
  } catch (err) {
    el.dataset.state = "error";
    text.textContent = err instanceof ApiError && err.status === 0 ? "studio unreachable" : "studio unhealthy";
    const report = err instanceof ApiError ? err.body : null;
    el.title = report?.database?.error ? `database: ${report.database.error} (restart \`remix studio\` to migrate)`
      : err.message;
  }
  return true;
}

/** Page chrome: active nav link, token dialog, health indicator. Call once per page. */
export function initChrome(navKey) {
  for (const a of $$(".topnav a")) {
    if (a.dataset.nav === navKey) a.setAttribute("aria-current", "page");
  }
  const dialog = $("#token-dialog");
  $("#token-button")?.addEventListener("click", () => openTokenDialog(""));
  dialog?.addEventListener("close", () => {
    const action = dialog.returnValue;
    if (action === "save") setToken($("#token-input").value);
    if (action === "clear") setToken("");
    updateTokenButton();
    if (tokenResolve) { tokenResolve(action === "save" && Boolean(getToken())); tokenResolve = null; }
  });
  updateTokenButton();
  poll(refreshHealth, 15000);
}

/** The numeric id in the template's data-item-id (or null). */
export function itemId() {
  const raw = $("#main")?.dataset.itemId;
  return raw && /^\d+$/.test(raw) ? Number(raw) : null;
}

/** Run an action (button click) with the button disabled meanwhile; reports errors. */
export async function withBusy(button, action) {
  button.disabled = true;
  button.setAttribute("aria-busy", "true");
  try {
    return await action();
  } catch (err) {
    reportActionError(err);
    return undefined;
  } finally {
    button.disabled = false;
    button.removeAttribute("aria-busy");
  }
}
