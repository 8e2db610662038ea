// The page's router: one section per hash route (#/overview, #/upload/<id>, #/jobs/<id>, ...), each
// refreshed by polling while it is shown and the tab is visible.

import { api } from "./api.js";
import { keepPlace, toast } from "./dom.js";
import * as exporter from "./export.js";
import * as forecast from "./forecast.js";
import * as jobs from "./jobs.js";
import * as models from "./models.js";
import * as overview from "./overview.js";
import * as upload from "./upload.js";

const VIEWS = { overview, upload, jobs, models, forecast };
let current = null;
let timer = 0;
let refreshing = false;

function parseHash() {
  const raw = window.location.hash.replace(/^#\/?/, "");
  const [path, query = ""] = raw.split("?");
  const [name, ...rest] = path.split("/").filter(Boolean);
  return {
    name: VIEWS[name] ? name : "overview",
    arg: rest.length ? decodeURIComponent(rest.join("/")) : null,
    query: new URLSearchParams(query),
  };
}

async function refresh() {
  if (!current || refreshing || document.hidden) return;
  refreshing = true;
  const putBack = keepPlace(); // a redraw replaces the tables: focus and scroll stay where they were
  try {
    await VIEWS[current].refresh();
    putBack();
    document.body.dataset.refreshes = String(Number(document.body.dataset.refreshes || 0) + 1);
  } catch (error) {
    if (error?.status !== 401) toast(error.message || String(error), "error");
  } finally {
    refreshing = false;
  }
}

function schedule() {
  clearTimeout(timer);
  const view = VIEWS[current];
  const every = typeof view.interval === "function" ? view.interval() : view.interval;
  if (!every) return;
  timer = setTimeout(async () => {
    await refresh();
    schedule();
  }, every);
}

async function route() {
  const { name, arg, query } = parseHash();
  const changed = name !== current;
  if (changed) {
    for (const section of document.querySelectorAll(".view")) section.hidden = section.id !== `view-${name}`;
    for (const link of document.querySelectorAll("nav a[data-view]")) {
      if (link.dataset.view === name) link.setAttribute("aria-current", "page");
      else link.removeAttribute("aria-current");
    }
    current = name;
    document.title = `${name[0].toUpperCase()}${name.slice(1)} · salesflow`;
  }
  try {
    await VIEWS[name].enter({ arg, query, changed });
  } catch (error) {
    if (error?.status !== 401) toast(error.message || String(error), "error");
  }
  if (changed) document.getElementById(`h-${name}`)?.focus({ preventScroll: true });
  schedule();
}

async function healthPill() {
  const pill = document.getElementById("health-pill");
  try {
    const status = await api("/status");
    const down = status.services.filter((s) => !s.ok).map((s) => s.name);
    if (!status.broker.reachable) down.push("broker");
    pill.textContent = down.length ? `${down.join(", ")} down` : "all systems ready";
    pill.className = `health-pill ${down.length ? "bad" : "good"}`;
  } catch (error) {
    pill.textContent = error.status === 401 ? "logged out" : "dashboard unreachable";
    pill.className = "health-pill bad";
  }
}

for (const heading of document.querySelectorAll(".view > h1")) heading.tabIndex = -1;
window.addEventListener("hashchange", route);
document.addEventListener("visibilitychange", () => {
  if (!document.hidden) refresh();
});
exporter.init();
route();
healthPill();
setInterval(() => { if (!document.hidden) healthPill(); }, 10000);
