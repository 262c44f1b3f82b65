// The studio's REST API (/api/v1) as small async functions. No dependencies.
//
// Auth: reads are open on a local studio; writes send `Authorization: Bearer <token>`. The token
// lives in this browser's localStorage (key "remix.apiToken"). Opening any page with
// `#token=<token>` stores it and removes it from the address bar (the fragment never reaches the
// server or its logs).

const API_BASE = document.documentElement.dataset.apiBase || "/api/v1";
const TOKEN_KEY = "remix.apiToken";

export class ApiError extends Error {
  constructor(status, message, detail = null, body = null) {
    super(message);
    this.name = "ApiError";
    this.status = status; // 0 = network error (studio unreachable)
    this.detail = detail; // FastAPI's `detail` (string or list of {loc, msg, field})
    this.body = body; // the whole JSON answer (e.g. /health's report with a 503)
  }

  get needsToken() {
    return this.status === 401 || this.status === 403;
  }
}

// ------------------------------------------------------------------------------------ token
export function getToken() {
  try {
    return localStorage.getItem(TOKEN_KEY) || "";
  } catch {
    return "";
  }
}

export function setToken(token) {
  try {
    if (token) localStorage.setItem(TOKEN_KEY, token.trim());
    else localStorage.removeItem(TOKEN_KEY);
  } catch {
    /* storage disabled: the token lasts as long as the page */
  }
}

(function takeTokenFromFragment() {
  const m = /(?:^#|&)token=([^&]+)/.exec(location.hash);
  if (!m) return;
  setToken(decodeURIComponent(m[1]));
  const rest = location.hash.replace(/(^#|&)token=[^&]+/, "$1").replace(/^#&/, "#");
  history.replaceState(null, "", location.pathname + location.search + (rest === "#" ? "" : rest));
})();

// ------------------------------------------------------------------------------------ core
function buildUrl(path, params) {
  const url = new URL(API_BASE + path, location.origin);
  for (const [key, value] of Object.entries(params || {})) {
    if (value === undefined || value === null || value === "") continue;
    url.searchParams.set(key, String(value));
  }
  return url;
}

function messageOf(status, detail) {
  if (typeof detail === "string") return detail;
  if (Array.isArray(detail)) return detail.map((d) => d.msg || JSON.stringify(d)).join("; ");
  return `HTTP ${status}`;
}

export async function request(path, { method = "GET", params, body, signal } = {}) {
  const headers = { Accept: "application/json" };
  const token = getToken();
  if (token) headers.Authorization = `Bearer ${token}`;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  let response;
  try {
    response = await fetch(buildUrl(path, params), {
      method, headers, signal, body: body === undefined ? undefined : JSON.stringify(body),
    });
  } catch (err) {
    if (err.name === "AbortError") throw err;
    throw new ApiError(0, `Cannot reach the studio API at ${location.origin}${API_BASE}. ` +
      "Is `remix studio` still running?");
  }
  if (response.status === 204) return null;
  let data = null;
  const text = await response.text();
  if (text) {
    try {
      data = JSON.parse(text);
    } catch {
      data = { detail: text.slice(0, 300) };
    }
  }
  if (!response.ok) {
    const detail = data && "detail" in data ? data.detail : null;
    let message = messageOf(response.status, detail);
    if (response.status === 401) message += " — set the API token (button at the top right).";
    if (response.status === 403) message += " — this token may only read.";
    throw new ApiError(response.status, message, detail, data);
  }
  return data;
}

// ------------------------------------------------------------------------------------ endpoints
export const health = () => request("/health");

/** params.metrics: array of metric keys; each run then carries their latest values in latest_metrics. */
export const listRuns = ({ metrics, ...params } = {}) =>
  request("/runs", { params: metrics ? { ...params, metrics: metrics.join(",") } : params });
export const getRun = (id) => request(`/runs/${id}`);
export const createRun = (body) => request("/runs", { method: "POST", body });
export const cancelRun = (id) => request(`/runs/${id}/cancel`, { method: "POST" });
export const retryRun = (id) => request(`/runs/${id}/retry`, { method: "POST" });
export const deleteRun = (id) => request(`/runs/${id}`, { method: "DELETE" });

export const alerts = (id) => request(`/runs/${id}/alerts`);
export const metricKeys = (id) => request(`/runs/${id}/metrics/keys`);
/** keys: array of metric names; x: "step" | "rollouts" | "time". */
export const metrics = (id, keys, x = "step", maxPoints = 500) =>
  request(`/runs/${id}/metrics`, { params: { keys: keys.join(","), x, max_points: maxPoints } });

/** Several runs' series in one request: {runs: [{run_id, series}], missing_run_ids}. */
export const runsMetrics = (ids, keys, x = "step", maxPoints = 500) =>
  request("/runs/metrics", { params: { runs: ids.join(","), keys: keys.join(","), x, max_points: maxPoints } });

export const listRollouts = (id, params = {}) => request(`/runs/${id}/rollouts`, { params });
export const getRollout = (rolloutId) => request(`/rollouts/${rolloutId}`);
export const rolloutTokens = (rolloutId) => request(`/rollouts/${rolloutId}/tokens`);
export const getGroup = (runId, groupId) => request(`/runs/${runId}/groups/${encodeURIComponent(groupId)}`);
export const offpolicy = (id, params = {}) => request(`/runs/${id}/offpolicy`, { params });

export const listJobs = (params = {}) => request("/jobs", { params });
