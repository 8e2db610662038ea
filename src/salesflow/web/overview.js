// Overview: the active model, every service's health, the last uploads and jobs.

import { api } from "./api.js";
import { badge, el, fill, table } from "./dom.js";
import { duration, num, pct, shortId, stamp } from "./format.js";

export const interval = 5000;

export async function enter() {
  await refresh();
}

export async function refresh() {
  const [status, uploads, jobs] = await Promise.allSettled([
    api("/status"),
    api("/uploads", { params: { limit: 5 } }),
    api("/jobs", { params: { limit: 5 } }),
  ]);
  if (status.status === "fulfilled") {
    renderActive(status.value.active_model, status.value.models_error);
    renderHealth(status.value);
  } else {
    fill("service-health", el("li", { class: "error" }, status.reason.message));
  }
  fill("last-uploads", uploads.status === "fulfilled"
    ? uploadsTable(uploads.value.uploads)
    : el("p", { class: "error" }, uploads.reason.message));
  fill("last-jobs", jobs.status === "fulfilled"
    ? jobsTable(jobs.value.jobs)
    : el("p", { class: "error" }, jobs.reason.message));
}

/** Skill against seasonal-naive: the backtest's when present, else from the holdout metrics. */
export function skillOf(model) {
  const skill = model?.backtest?.skill;
  if (skill !== undefined && skill !== null) return { value: skill, source: "backtest" };
  const wape = model?.metrics?.model?.wape;
  const base = model?.metrics?.baseline?.wape;
  if (wape !== undefined && wape !== null && base) return { value: 1 - wape / base, source: "holdout" };
  return null;
}

function renderActive(model, unknown) {
  if (unknown) {
    fill("active-model", el("p", { class: "error" }, `Active model unknown: ${unknown}.`));
    return;
  }
  if (!model) {
    fill("active-model", el("p", { class: "muted" }, "No active model yet: upload a sales file to train one."));
    return;
  }
  const skill = skillOf(model);
  const range = model.date_range ? `${String(model.date_range.first).slice(0, 7)} → ${String(model.date_range.last).slice(0, 7)}` : "–";
  const inputs = (model.inputs || []).map((i) => shortId(i.upload_id || i.sha256)).join(", ");
  const stat = (label, value, hint) => el("div", { class: "stat" },
    el("div", { class: "stat-value" }, value), el("div", { class: "stat-label" }, label),
    hint ? el("div", { class: "stat-hint" }, hint) : null);
  fill("active-model",
    el("div", { class: "stats", id: "active-model-stats", dataset: { version: model.version } },
      stat("version", model.version),
      stat("trained", stamp(model.created_at)),
      stat("history", range, `${num(model.stores)} stores × ${num(model.products)} products`),
      stat("rows", num(model.rows_read), inputs ? `uploads ${inputs}` : ""),
      stat("holdout WAPE", pct(model.metrics?.model?.wape), `seasonal-naive ${pct(model.metrics?.baseline?.wape)}`),
      stat("skill vs seasonal-naive", skill ? pct(skill.value) : "–", skill ? `from the ${skill.source}` : "not measured"),
    ));
}

function renderHealth(status) {
  const items = status.services.map((s) => el("li", { class: s.ok ? "ok" : "bad" },
    el("span", { class: "dot", "aria-hidden": "true" }),
    el("strong", {}, s.name), " ", s.status,
    Object.entries(s.checks || {}).filter(([, v]) => v !== "ok").map(([k, v]) => el("div", { class: "muted small" }, `${k}: ${v}`))));
  items.push(el("li", { class: status.broker.reachable ? "ok" : "bad" },
    el("span", { class: "dot", "aria-hidden": "true" }),
    el("strong", {}, "Kafka broker"), " ", status.broker.reachable ? "reachable" : "unreachable"));
  const lag = status.consumer.lag;
  items.push(el("li", { class: lag === null ? "unknown" : lag > 0 ? "busy" : "ok" },
    el("span", { class: "dot", "aria-hidden": "true" }),
    el("strong", {}, "Upload consumer"), " ",
    lag === null ? "lag unknown" : lag === 0 ? "caught up" : `${num(lag)} event(s) waiting`));
  fill("service-health", ...items);
}

export function uploadsTable(uploads, options = {}) {
  return table([
    { label: "Upload", value: (u) => el("a", { href: `#/upload/${u.upload_id}` }, el("code", {}, shortId(u.upload_id))) },
    { label: "File", value: (u) => u.filename || "–" },
    { label: "Status", value: (u) => badge(u.status) },
    { label: "When", value: (u) => stamp(u.created_at) },
    { label: "Model", value: (u) => u.model_version || "–" },
  ], uploads || [], { empty: "No uploads yet.", ...options });
}

export function jobsTable(jobs, options = {}) {
  return table([
    { label: "Job", value: (j) => el("a", { href: `#/jobs/${j.job_id}` }, el("code", {}, shortId(j.job_id))) },
    { label: "Kind", value: (j) => j.kind },
    { label: "Status", value: (j) => badge(j.status) },
    { label: "Duration", value: (j) => duration(j.started_at, j.finished_at), num: true },
    { label: "Model", value: (j) => j.model_version || "–" },
  ], jobs || [], { empty: "No jobs yet.", ...options });
}
