// Jobs: every job live, with its duration; a chosen job's log tail, timings and error.

import { api } from "./api.js";
import { badge, el, fill, table } from "./dom.js";
import { duration, num, pct, stamp } from "./format.js";
import { jobsTable } from "./overview.js";

let selected = null;

export const interval = 3000;

export async function enter({ arg }) {
  if (arg) selected = arg;
  await refresh();
}

export async function refresh() {
  const calls = [api("/jobs", { params: { limit: 50 } })];
  if (selected) calls.push(api(`/jobs/${encodeURIComponent(selected)}`));
  const [list, found] = await Promise.all(calls);
  let job = found;
  if (!selected && list.jobs.length) { // show the newest job until the user picks one
    job = list.jobs[0];
    selected = job.job_id;
  }
  fill("jobs-table", jobsTable(list.jobs, {
    onRow: (j) => { window.location.hash = `#/jobs/${j.job_id}`; },
    rowProps: (j) => ({ dataset: { job: j.job_id }, class: j.job_id === selected ? "selected" : "", "aria-selected": j.job_id === selected ? "true" : null }),
  }));
  if (job) renderJob(job);
}

function renderJob(job) {
  const facts = [
    ["status", badge(job.status)],
    ["kind", job.kind],
    ["upload", job.upload_id ? el("a", { href: `#/upload/${job.upload_id}` }, el("code", {}, job.upload_id.slice(0, 8))) : "–"],
    ["created", stamp(job.created_at)],
    ["duration", duration(job.started_at, job.finished_at)],
    ["attempts", num(job.attempts)],
    ["model", job.model_version || "–"],
    ["rows read", num(job.rows_read)],
    ["rows rejected", num(job.rows_rejected)],
  ];
  if (job.metrics?.model) facts.push(["holdout WAPE", `${pct(job.metrics.model.wape)} (seasonal-naive ${pct(job.metrics.baseline?.wape)})`]);
  const timings = Object.entries(job.timings || {}).map(([stage, seconds]) => ({ stage, seconds }));
  const rejects = Object.entries(job.rejects_by_reason || {}).map(([reason, count]) => ({ reason, count }));
  const log = (job.log_tail || []).join("\n");
  fill("job-detail",
    el("h2", {}, "Job ", el("code", {}, job.job_id)),
    el("dl", { class: "facts" }, facts.map(([k, v]) => [el("dt", {}, k), el("dd", {}, v)])),
    job.error ? el("p", { class: "error", role: "alert" }, el("strong", {}, job.error_code || "error"), ": ", job.error) : null,
    timings.length ? table([
      { label: "Stage", value: (t) => t.stage.replaceAll("_", " ") },
      { label: "Seconds", value: (t) => Number(t.seconds).toFixed(2), num: true },
    ], timings, { caption: `Seconds per stage (stages can overlap, so they may add up to more than the job's ${duration(job.started_at, job.finished_at)})` }) : null,
    rejects.length ? table([
      { label: "Rejected because", value: (r) => r.reason.replaceAll("_", " ") },
      { label: "Rows", value: (r) => num(r.count), num: true },
    ], rejects, { caption: "Rejected rows" }) : null,
    job.rejects_url ? el("p", {}, el("a", {
      id: "job-rejects", href: `/api/jobs/${encodeURIComponent(job.job_id)}/rejects`, download: `rejects-${job.job_id}.csv`,
    }, "Download the rejected rows (CSV, with the reason of each)")) : null,
    el("h3", {}, "Log tail"),
    el("pre", { class: "log", tabindex: "0", "aria-label": "job log" }, log || "(empty)"));
}
