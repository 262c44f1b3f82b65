// The token lens on the trace page: every response token coloured by one quantity — the behaviour
// log-prob, or at one use of the rollout π_k's log-prob, the importance ratio, the advantage or the
// entropy — with the value on hover and the tokens where the clip was active outlined.
// Data: GET /rollouts/{id}/tokens (stored for one rollout in trainer.token_stats_every).

import * as api from "./api.js";
import { h, replace } from "./ui.js";

const QUANTITIES = {
  behavior: { label: "behaviour log-prob", perUse: false, scale: "logprob",
              help: "log-prob under the policy that generated the rollout; red = unlikely tokens" },
  logprob: { label: "log-prob at this use (π_k)", perUse: true, scale: "logprob",
             help: "log-prob under the consuming step's policy before its update; red = unlikely tokens" },
  ratio: { label: "importance ratio at this use", perUse: true, scale: "ratio",
           help: "π_k / π_behaviour per token: blue below 1, red above (full colour at ½ and 2)" },
  advantage: { label: "advantage at this use", perUse: true, scale: "signed",
               help: "the advantage the update used per token: blue negative, red positive" },
  entropy: { label: "entropy at this use", perUse: true, scale: "positive",
             help: "the policy's entropy at the token (mean over the update's epochs); darker = more uncertain" },
};

/** Values of `quantity` per token (null where unknown). */
export function lensValues(data, quantity, useIndex) {
  if (quantity === "behavior") return data.behavior_logprobs || [];
  const use = data.uses[useIndex];
  const key = { logprob: "logprobs", ratio: "ratios", advantage: "advantages", entropy: "entropy" }[quantity];
  return use ? use[key] : [];
}

/** A background colour for value `v`; `extent` is the largest |value| of the row (signed / positive scales). */
function colour(scale, v, extent) {
  if (v === null || v === undefined || !Number.isFinite(v)) return "transparent";
  let t;
  if (scale === "logprob") t = Math.min(-v / 5, 1); // 0 = certain, 1 = e^-5 or less
  else if (scale === "ratio") t = Math.max(Math.min(Math.log(v) / Math.LN2, 1), -1);
  else t = extent > 0 ? v / extent : 0;
  const alpha = (Math.abs(t) * 0.65).toFixed(3);
  if (scale === "positive") return `rgba(234, 88, 12, ${alpha})`;
  return t < 0 ? `rgba(37, 99, 235, ${alpha})` : `rgba(220, 38, 38, ${alpha})`;
}

function fmt(v) {
  if (v === null || v === undefined) return "—";
  return Math.abs(v) >= 100 || (Math.abs(v) < 1e-3 && v !== 0) ? v.toExponential(2) : v.toFixed(4);
}

function renderTokens(box, data, quantity, useIndex) {
  const q = QUANTITIES[quantity];
  const values = lensValues(data, quantity, useIndex);
  const use = q.perUse ? data.uses[useIndex] : null;
  const epochs = use ? Math.max(1, ...use.clipped) : 1;
  const extent = Math.max(0, ...values.filter(Number.isFinite).map(Math.abs));
  const spans = (data.tokens || []).map((text, i) => {
    const v = values[i];
    const clipped = use ? use.clipped[i] : 0;
    const shown = text === "\n" ? "↵\n" : text;
    return h("span", {
      class: `tok${clipped ? " tok-clipped" : ""}`, "data-i": i, "data-value": v ?? "",
      style: { background: colour(q.scale, v, extent) },
      title: `token ${i}: ${JSON.stringify(text)} · ${q.label} ${fmt(v)}` +
        (clipped ? ` · clipped in ${clipped} of the update's epochs` : ""),
    }, shown);
  });
  replace(box,
    h("div", { class: "token-text", id: "token-text" }, spans),
    h("p", { class: "small muted" }, q.help, use && use.clipped.some((c) => c)
      ? ` Outlined: tokens where the clip was active (in up to ${epochs} epochs).` : ""));
}

/** Fill `container` with the lens of rollout `rolloutId` (or say why there is none). */
export async function loadTokenLens(container, rolloutId) {
  let data;
  try {
    data = await api.rolloutTokens(rolloutId);
  } catch (err) {
    replace(container, h("h4", {}, "Token lens"),
      h("p", { class: "small muted", id: "token-lens-missing" }, err.status === 404 ? err.message : `Could not load: ${err.message}`));
    return;
  }
  const quantity = h("select", { id: "lens-quantity", "aria-label": "Colour tokens by" },
    Object.entries(QUANTITIES).map(([key, q]) => h("option", { value: key }, q.label)));
  const useChoice = h("select", { id: "lens-use", "aria-label": "Use of the rollout" },
    data.uses.map((u, i) => h("option", { value: String(i) }, `step ${u.step} (${u.age === 0 ? "fresh" : `age ${u.age}`})`)));
  const body = h("div", { id: "token-lens-body" });
  const draw = () => {
    useChoice.disabled = !QUANTITIES[quantity.value].perUse;
    renderTokens(body, data, quantity.value, Number(useChoice.value || 0));
  };
  quantity.value = "ratio";
  quantity.addEventListener("change", draw);
  useChoice.addEventListener("change", draw);
  replace(container, h("h4", {}, "Token lens"),
    h("div", { class: "row small" }, h("label", { for: "lens-quantity" }, "colour by"), quantity,
      h("label", { for: "lens-use" }, "use"), useChoice),
    body);
  draw();
}
