// Upload: drag-and-drop or pick a CSV, watch the bytes go, then follow the upload live through
// stored -> queued -> training -> trained (or failed / rejected), with its preview.

import { api, uploadFile } from "./api.js";
import { badge, el, fill, table, toast } from "./dom.js";
import { bytes, num, pct } from "./format.js";
import { uploadsTable } from "./overview.js";

const TERMINAL = new Set(["trained", "failed", "rejected"]);
const STEPS = ["stored", "queued", "training", "trained"];
let following = null; // upload id shown in the follow card
let followedStatus = null;
let wired = false;
let busy = false;

export function interval() {
  return following && !TERMINAL.has(followedStatus) ? 1000 : 5000;
}

export async function enter({ arg }) {
  wire();
  if (arg && arg !== following) {
    following = arg;
    followedStatus = null;
  }
  await refresh();
}

export async function refresh() {
  const jobs = [api("/uploads", { params: { limit: 20 } })];
  if (following) jobs.push(api(`/uploads/${encodeURIComponent(following)}`));
  const [list, record] = await Promise.all(jobs);
  fill("uploads-table", uploadsTable(list.uploads, {
    rowProps: (u) => ({ class: u.upload_id === following ? "selected" : "" }),
  }));
  if (record) renderFollow(record);
}

function wire() {
  if (wired) return;
  wired = true;
  const zone = document.getElementById("drop-zone");
  const input = document.getElementById("file-input");
  input.addEventListener("change", () => {
    if (input.files.length) start(input.files[0]);
  });
  for (const type of ["dragenter", "dragover"]) {
    zone.addEventListener(type, (event) => {
      event.preventDefault();
      zone.classList.add("dragging");
    });
  }
  for (const type of ["dragleave", "dragend"]) zone.addEventListener(type, () => zone.classList.remove("dragging"));
  zone.addEventListener("drop", (event) => {
    event.preventDefault();
    zone.classList.remove("dragging");
    const file = event.dataTransfer?.files?.[0];
    if (file) start(file);
  });
}

async function start(file) {
  if (busy) {
    toast("An upload is already running; wait for it to finish.", "error");
    return;
  }
  busy = true;
  const transfer = document.getElementById("upload-transfer");
  const bar = document.getElementById("upload-progress");
  const text = document.getElementById("upload-progress-text");
  const problem = document.getElementById("upload-error");
  problem.hidden = true;
  transfer.hidden = false;
  document.getElementById("upload-file-name").textContent = `Uploading ${file.name}`;
  bar.value = 0;
  text.textContent = `0 of ${bytes(file.size)}`;
  try {
    const { body } = await uploadFile(file, {
      force: document.getElementById("force-upload").checked,
      onProgress: (sent, total) => {
        bar.value = total ? Math.round((sent / total) * 100) : 0;
        text.textContent = `${bytes(sent)} of ${bytes(total)}`;
      },
    });
    bar.value = 100;
    text.textContent = body.duplicate
      ? `This exact file was uploaded before: following upload ${body.upload_id.slice(0, 8)}.`
      : `${bytes(file.size)} stored.`;
    following = body.upload_id;
    followedStatus = body.status;
    renderFollow(body);
    if (window.location.hash !== `#/upload/${body.upload_id}`) window.location.hash = `#/upload/${body.upload_id}`;
  } catch (error) {
    problem.textContent = `The upload was refused: ${error.message}`;
    problem.hidden = false;
    transfer.hidden = true;
  } finally {
    busy = false;
    document.getElementById("file-input").value = "";
  }
}

function renderFollow(record) {
  followedStatus = record.status;
  document.getElementById("upload-follow").hidden = false;
  document.getElementById("follow-id").textContent = record.upload_id;
  const status = record.status;
  const failed = status === "failed" || status === "rejected";
  // A failed upload: the steps it passed are done, the one it stopped at says "failed" (or
  // "rejected") in its place, and nothing after it is drawn.
  const stoppedAt = STEPS.indexOf(record.job_id ? "training" : "queued");
  const reached = failed ? stoppedAt : STEPS.indexOf(status);
  const shownSteps = failed ? STEPS.slice(0, stoppedAt + 1) : STEPS;
  const steps = shownSteps.map((step, i) => {
    if (failed && i === stoppedAt) {
      return el("li", { class: "step failed", title: `stopped at ${step}` }, `${status} (${step})`);
    }
    const state = i < reached || (i === reached && status === "trained") ? "done" : i === reached ? "current" : "todo";
    return el("li", { class: `step ${state}`, "aria-current": state === "current" ? "step" : null }, step);
  });
  const list = fill("upload-status", ...steps);
  list.dataset.status = status;
  renderResult(record);
  renderPreview(record.preview);
}

function renderResult(record) {
  const parts = [el("p", {}, "Status: ", badge(record.status), " ", record.filename ? `${record.filename} · ${bytes(record.size)}` : "")];
  if (record.job_id) parts.push(el("p", {}, "Training job ", el("a", { href: `#/jobs/${record.job_id}` }, el("code", {}, record.job_id.slice(0, 8)))));
  if (record.status === "trained") {
    const m = record.metrics || {};
    parts.push(el("p", { class: "success", id: "upload-trained" },
      `Trained model ${record.model_version || ""}. Holdout WAPE ${pct(m.model?.wape)} (seasonal-naive ${pct(m.baseline?.wape)}). `,
      el("a", { href: "#/forecast" }, "Explore its forecast →")));
  }
  if (record.error) parts.push(el("p", { class: "error" }, el("strong", {}, record.error_code || "error"), ": ", record.error));
  if (record.job_id && TERMINAL.has(record.status)) {
    parts.push(el("p", {}, el("button", {
      type: "button", class: "button secondary small", id: "retrain",
      onclick: () => retrain(record),
    }, "Train again on this file")));
  }
  fill("upload-result", ...parts);
}

/** A new training job on the upload's stored file (a new model version), then follow that job. */
async function retrain(record) {
  try {
    const job = await api("/train", { method: "POST", body: { upload_id: record.upload_id, replay: true } });
    toast(`Training job ${job.job_id.slice(0, 8)} queued on ${record.filename || "the stored file"}.`, "success");
    window.location.hash = `#/jobs/${job.job_id}`;
  } catch (error) {
    toast(`Could not train again: ${error.message}`, "error");
  }
}

function renderPreview(preview) {
  if (!preview) {
    fill("upload-preview");
    return;
  }
  const facts = [
    ["rows", num(preview.rows)],
    ["date range", preview.date_min ? `${preview.date_min} → ${preview.date_max}` : "–"],
    ["stores", num(preview.stores)],
    ["products", num(preview.products)],
    ["duplicate rows", num(preview.duplicate_rows)],
    ["separator", { ",": "comma", "\t": "tab", ";": "semicolon" }[preview.delimiter] || preview.delimiter],
  ];
  const rejected = Object.entries(preview.rejected || {}).map(([reason, count]) => ({
    reason, count, lines: (preview.first_rejected_lines?.[reason] || []).join(", "),
  }));
  fill("upload-preview",
    el("h3", {}, "Preview"),
    el("dl", { class: "facts", id: "preview-facts" }, facts.map(([k, v]) => [el("dt", {}, k), el("dd", {}, v)])),
    preview.complete === false
      ? el("p", { class: "note" }, `Rows were checked in the first ${bytes(preview.parsed_bytes)} only; training checks them all.`)
      : null,
    preview.extra_columns?.length ? el("p", { class: "muted" }, `Extra columns (ignored): ${preview.extra_columns.join(", ")}`) : null,
    table([
      { label: "Rejected because", value: (r) => r.reason.replaceAll("_", " ") },
      { label: "Rows", value: (r) => num(r.count), num: true },
      { label: "First lines", value: (r) => r.lines },
    ], rejected, { caption: "Rejected rows by reason", empty: "No rejected rows." }));
}
