// Models: every version with its granularity and metrics (one active version per granularity), one
// version's backtest (overall and per store/product), feature importances and (day models) day/month
// coherence, and activation (rollback) behind a confirmation dialog.

import { accuracyOf } from "./accuracy.js";
import { api } from "./api.js";
import { barChart } from "./chart.js";
import { el, fill, table, toast } from "./dom.js";
import { num, pct, stamp } from "./format.js";
import { skillOf } from "./overview.js";

let selected = null;
let lastModels = [];
const coherence = new Map(); // version -> the job server's coherence answer (or {error}); fixed per version

const granularityOf = (m) => m.granularity || "month";

export const interval = 10000;

export async function enter({ arg }) {
  if (arg) selected = arg;
  await refresh();
}

export async function refresh() {
  const body = await api("/models");
  lastModels = body.models || [];
  if (!selected || !lastModels.some((m) => m.version === selected)) selected = body.active || lastModels[0]?.version || null;
  fill("models-table", table([
    { label: "Version", value: (m) => el("span", {}, el("strong", {}, m.version), m.active
      ? el("span", { class: "badge status-active", title: `the active ${granularityOf(m)} model` }, `active (${granularityOf(m)})`) : null) },
    { label: "Granularity", value: (m) => el("span", { dataset: { granularity: granularityOf(m) } }, granularityOf(m)) },
    { label: "Trained", value: (m) => stamp(m.created_at) },
    { label: "Rows", value: (m) => num(m.rows_read), num: true },
    { label: "Holdout WAPE", value: (m) => pct(m.metrics?.model?.wape), num: true },
    { label: "Seasonal-naive", value: (m) => pct(m.metrics?.baseline?.wape), num: true },
    { label: "Backtest WAPE", value: (m) => pct(m.backtest?.overall?.model?.wape), num: true },
    { label: "Skill", value: (m) => { const s = skillOf(m); return s ? pct(s.value) : "–"; }, num: true },
    { label: "Promotion", value: promotionOf },
    { label: "", value: (m) => (m.active ? "" : el("button", {
      type: "button", class: "button small", "data-version": m.version,
      onclick: (event) => { event.stopPropagation(); confirmActivate(m); },
    }, `Activate ${m.version}`)) },
  ], lastModels, {
    empty: "No models yet: upload a sales file to train one.",
    stack: true,
    onRow: (m) => { selected = m.version; renderDetail(); },
    rowProps: (m) => ({ class: m.version === selected ? "selected" : "", dataset: { version: m.version } }),
  }));
  renderDetail();
  renderActive(body.active_by_granularity || { month: body.active || null });
  renderHistory(body.history || []);
}

/** "Active: month v0003 · day v0004" above the table. */
function renderActive(byGranularity) {
  const parts = Object.entries(byGranularity).map(([g, v]) => el("span", { dataset: { granularity: g } }, `${g} `, el("strong", {}, v || "none")));
  fill("models-active", "Active: ", parts.flatMap((part, i) => (i ? [" · ", part] : [part])));
}

/** Promoted / forced / kept as a candidate, with the gate's reason as a tooltip. */
function promotionOf(model) {
  const p = model.promotion;
  if (!p) return "–";
  const word = p.forced ? "forced" : p.promoted ? "promoted" : "candidate";
  return el("span", { title: p.reason || "" }, word);
}

function renderDetail() {
  const model = lastModels.find((m) => m.version === selected);
  if (!model) {
    fill("model-detail", el("p", { class: "muted" }, "Choose a model."));
    return;
  }
  const windows = model.backtest?.windows || [];
  const importances = Object.entries(model.feature_importances || {}).map(([label, value]) => ({ label, value: Number(value) }));
  const levels = Object.entries(model.intervals?.levels || {});
  const chartBox = el("div", { class: "chart small-chart", id: "importance-chart" });
  fill("model-detail",
    el("h2", {}, `Model ${model.version} (${granularityOf(model)})`),
    el("p", { class: "muted" }, "Trained ", stamp(model.created_at), ` on ${num(model.rows_read)} rows, `,
      model.date_range ? `${String(model.date_range.first).slice(0, 7)} to ${String(model.date_range.last).slice(0, 7)}` : "",
      `; ${num(model.stores)} stores × ${num(model.products)} products.`),
    windows.length ? table([
      { label: "Window", value: (w) => `${w.months?.[0] || "?"} → ${w.months?.[w.months.length - 1] || "?"}` },
      { label: "Fitted up to", value: (w) => w.origin || "–" },
      { label: "Model WAPE", value: (w) => pct(w.model?.wape), num: true },
      { label: "Naive", value: (w) => pct(w.naive?.wape), num: true },
      { label: "Seasonal-naive", value: (w) => pct(w.seasonal_naive?.wape), num: true },
      { label: "MASE", value: (w) => num(w.model?.mase, 2), num: true },
    ], windows, { caption: "Backtest (rolling origin): WAPE per window" })
      : el("p", { class: "muted" }, "This version has no backtest recorded (trained before backtests existed)."),
    leaderboardOf(model),
    accuracyOf(model, () => { if (selected === model.version) renderDetail(); }),
    model.promotion?.reason ? el("p", {}, el("strong", {}, "Promotion: "), model.promotion.reason) : null,
    levels.length ? el("p", {}, "Prediction intervals: ", levels.map(([level, spec]) =>
      `${pct(Number(level), 0)} ± ${num(spec.half_width, 1)}`).join(", "),
    model.intervals?.coverage_last_window
      ? ` (coverage on the last window: ${Object.entries(model.intervals.coverage_last_window).map(([l, c]) => `${pct(Number(l), 0)} → ${pct(c)}`).join(", ")})`
      : "") : null,
    granularityOf(model) === "day" ? el("div", { id: "coherence-detail" }, coherenceOf(model)) : null,
    el("h3", {}, "Feature importances"),
    importances.length ? chartBox : el("p", { class: "muted" }, "Not recorded for this version."));
  if (importances.length) {
    barChart(chartBox, importances, { title: `Feature importances of ${model.version}`, format: (v) => pct(v) });
  }
}

/** The model competition: every candidate's backtest scores on the same rows, the winner first. */
function leaderboardOf(model) {
  const c = model.competition;
  if (!c?.leaderboard?.length) return el("p", { class: "muted" }, "No model competition recorded for this version.");
  const table_ = model.forecast_table;
  return el("div", { id: "leaderboard" },
    table([
      { label: "Rank", value: (e) => String(e.rank), num: true },
      { label: "Candidate", value: (e) => e.name === c.winner ? el("strong", {}, e.name) : e.name },
      { label: "Kind", value: (e) => e.kind },
      { label: "WAPE", value: (e) => pct(e.wape), num: true },
      { label: "MASE", value: (e) => num(e.mase, 2), num: true },
      { label: "Bias", value: (e) => pct(e.bias), num: true },
    ], c.leaderboard, { caption: `Model competition: ${c.winner} won (${c.why})` }),
    c.statistical_skipped ? el("p", { class: "muted" }, `Statistical candidates sat out: ${c.statistical_skipped}.`) : null,
    table_ ? el("p", { class: "muted" }, `Answers come from ${table_.model}'s forecast table, ${monthOf(table_.first_period_index)} to ${monthOf(table_.last_period_index)}; later months are refused, not extrapolated.`) : null);
}

/** A month period index (year * 12 + month - 1) as YYYY-MM. */
function monthOf(index) {
  if (!Number.isInteger(index)) return "?";
  return `${Math.floor(index / 12)}-${String((index % 12) + 1).padStart(2, "0")}`;
}

/** A day model's day-vs-month check: loaded once per version, then drawn from the cache. */
function coherenceOf(model) {
  const found = coherence.get(model.version);
  if (!found) {
    coherence.set(model.version, { loading: true });
    api(`/models/${encodeURIComponent(model.version)}/coherence`)
      .then((body) => coherence.set(model.version, body))
      .catch((error) => coherence.set(model.version, { error: error.message }))
      .finally(() => { if (selected === model.version) renderDetail(); });
    return el("p", { class: "muted" }, "Loading the day/month coherence check…");
  }
  if (found.loading) return el("p", { class: "muted" }, "Loading the day/month coherence check…");
  if (found.error) return el("p", { class: "muted" }, `Coherence with the month model: ${found.error}`);
  const s = found.summary || {};
  return el("p", {},
    el("strong", {}, "Coherence with month model "), found.month_version || "?", ": daily forecasts summed per month are ",
    `${pct(s.total_ratio)} of the month model's over ${(found.months || []).join(", ") || "the horizon"}`,
    ` (per series: median ${pct(s.ratio_median)}, ${pct(s.ratio_min)} to ${pct(s.ratio_max)}; mean absolute difference ${num(s.mean_abs_diff, 1)}).`);
}

function renderHistory(history) {
  const rows = history.slice().reverse();
  fill("activation-history", table([
    { label: "When", value: (h) => stamp(h.at) },
    { label: "Active", value: (h) => h.version },
    { label: "Before", value: (h) => h.previous || "–" },
    { label: "Why", value: (h) => h.reason || "", wrap: true },
    { label: "By", value: (h) => h.actor || "" },
  ], rows, { empty: "No activations yet.", stack: true }));
}

function confirmActivate(model) {
  const dialog = document.getElementById("confirm-dialog");
  document.getElementById("confirm-text").textContent =
    `Make ${model.version} the active model? Forecasts will come from it at once; you can switch back here.`;
  document.getElementById("confirm-ok").textContent = `Activate ${model.version}`;
  dialog.returnValue = "";
  dialog.onclose = async () => {
    if (dialog.returnValue !== "confirm") return;
    const reason = document.getElementById("confirm-reason").value.trim() || "activated from the dashboard";
    try {
      await api(`/models/${encodeURIComponent(model.version)}/activate`, { method: "POST", body: { reason } });
      toast(`${model.version} is now active.`, "success");
      selected = model.version;
      await refresh();
    } catch (error) {
      toast(`Could not activate ${model.version}: ${error.message}`, "error");
    }
  };
  dialog.showModal();
  document.getElementById("confirm-cancel").focus();
}
