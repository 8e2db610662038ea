// Bulk export: every series' forecasts for the chosen months, fetched from /api/forecast/export and
// saved through a download link; a refusal (bad_horizon, export_too_large, ...) is shown in place.

import { el } from "./dom.js";

function fileName(response, format) {
  const found = /filename="?([^";]+)"?/.exec(response.headers.get("content-disposition") || "");
  return found ? found[1] : `forecasts.${format}`;
}

async function refusal(response) {
  try {
    const body = await response.json();
    return `${body?.error?.code || response.status}: ${body?.error?.message || response.statusText}`;
  } catch {
    return `HTTP ${response.status}`;
  }
}

async function run(event) {
  event.preventDefault();
  const months = document.getElementById("export-months").value;
  const format = document.getElementById("export-format").value;
  const status = document.getElementById("export-status");
  const button = document.getElementById("export-button");
  status.className = "muted";
  status.textContent = `Exporting ${months} months of every series…`;
  button.disabled = true;
  try {
    const query = new URLSearchParams({ months, format });
    const response = await fetch(`/api/forecast/export?${query}`, { credentials: "same-origin" });
    if (response.status === 401) {
      window.location.assign("/welcome");
      return;
    }
    if (!response.ok) {
      status.className = "error";
      status.textContent = `Not exported: ${await refusal(response)}`;
      return;
    }
    const name = fileName(response, format);
    const url = URL.createObjectURL(await response.blob());
    const link = el("a", { href: url, download: name, hidden: true });
    document.body.append(link);
    link.click();
    link.remove();
    setTimeout(() => URL.revokeObjectURL(url), 60_000);
    const rows = Number(response.headers.get("x-row-count") || 0).toLocaleString("en");
    status.textContent = `Saved ${name}: ${rows} rows from model ${response.headers.get("x-model-version") || "?"}.`;
    status.dataset.file = name;
  } catch (error) {
    status.className = "error";
    status.textContent = `Not exported: ${error.message || error}`;
  } finally {
    button.disabled = false;
  }
}

/** Wire the export form once, at page load. */
export function init() {
  document.getElementById("export-form").addEventListener("submit", run);
}
