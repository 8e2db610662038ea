// Forecast explorer: a store and a product (or all: totals, their bands the sums of the series'
// bounds) -> monthly actuals, the next 12 months' forecast with its 80% and 95% intervals, the active
// model's backtest windows, a table and a CSV download. When a day model is active a Month/Day switch
// appears: the day view draws the last 90 days of daily actuals and the day model's next 28 days; the
// table and the CSV follow the switch.

import { api } from "./api.js";
import { monthlyChart } from "./chart.js";
import { el, fill, toast } from "./dom.js";
import { addDays, addMonths, dayLabel, dayRange, monthLabel, monthRange, num, pct, stamp } from "./format.js";

const HORIZON = 12; // months forecast after the last month the model learned from
const DAY_HORIZON = 28; // days forecast after the last day the day model learned from: four weeks
const DAY_WINDOW = 90; // days of daily actuals drawn: about a quarter, readable at one point a day
const BAND_LEVEL = "0.8";
const WIDE_LEVEL = "0.95"; // the wider band, drawn lighter behind the 80% one
const BATCH = 10000; // the job server's largest POST /forecast batch
const MAX_SINGLE_GETS = 120; // without POST /forecast, at most this many GETs

// Redrawn on a change of selection, and when another model becomes active (checked this often).
export const interval = 10000;

let series = null;
let shown = null; // "store|product|granularity" drawn now
let rows = [];
let rowsGranularity = "month"; // what `rows` hold (the CSV's first column)
let showHistory = false; // the table starts at the forecast; the history rows are behind a toggle
let resizeObserver = null;
let redraw = null;
let drawing = 0; // the latest show() call: an older one that finishes later draws nothing
let drawnVersion = null; // the active model version the drawn forecast came from

export async function enter({ query }) {
  wire();
  if (!series) await loadSeries();
  const store = query.get("store") || document.getElementById("store-select").value || "all";
  const product = query.get("product") || document.getElementById("product-select").value || "all";
  setSelect("store-select", store);
  setSelect("product-select", product);
  if (query.get("view") === "day" || query.get("view") === "month") setGranularity(query.get("view"));
  if (shown !== `${store}|${product}|${granularity()}`) await show();
  else await followActive();
}

/** The switch's choice; "month" while the switch is hidden (no day model active). */
function granularity() {
  if (document.getElementById("granularity-switch").hidden) return "month";
  return document.getElementById("granularity-day").checked ? "day" : "month";
}

function setGranularity(value) {
  document.getElementById(`granularity-${value === "day" ? "day" : "month"}`).checked = true;
}

export async function refresh() {
  await followActive();
}

/** The version active now for the granularity shown (null: none), from the job server. */
function activeOf(models, daily) {
  const want = daily ? "day" : "month";
  return models?.models?.find((m) => m.active && (m.granularity || "month") === want) || null;
}

/** Redraw when the active model is no longer the one drawn (an activation or a promotion). */
async function followActive() {
  if (shown === null) return;
  const models = await api("/models");
  const now = activeOf(models, granularity() === "day")?.version || null;
  if (now === drawnVersion) return;
  const before = drawnVersion;
  await show();
  if (before && now) say(`The active model is now ${now} (it was ${before}): the forecast above is drawn from ${now}.`);
}

function say(message) {
  const note = document.getElementById("forecast-note");
  note.textContent = note.hidden ? message : `${message} ${note.textContent}`;
  note.hidden = false;
}

function wire() {
  if (resizeObserver) return;
  document.getElementById("forecast-form").addEventListener("submit", (event) => {
    event.preventDefault();
    show();
  });
  for (const id of ["store-select", "product-select", "granularity-month", "granularity-day"]) {
    document.getElementById(id).addEventListener("change", () => show());
  }
  document.getElementById("download-csv").addEventListener("click", download);
  let lastWidth = 0;
  resizeObserver = new ResizeObserver((entries) => {
    const width = Math.round(entries[0].contentRect.width);
    if (redraw && Math.abs(width - lastWidth) > 8) {
      lastWidth = width;
      redraw();
    }
  });
  resizeObserver.observe(document.getElementById("forecast-chart"));
}

async function loadSeries() {
  series = await api("/series");
  const options = (id, values, allLabel) => fill(id,
    el("option", { value: "all" }, allLabel),
    values.map((v) => el("option", { value: v }, v)));
  options("store-select", series.stores, `All stores (${series.stores.length})`);
  options("product-select", series.products, `All products (${series.products.length})`);
}

function setSelect(id, value) {
  const select = document.getElementById(id);
  if ([...select.options].some((o) => o.value === value)) select.value = value;
}

/** The answers of a forecast API body, whatever its exact shape. */
export function answersOf(body) {
  if (Array.isArray(body)) return body;
  for (const key of ["answers", "forecasts", "results", "rows"]) if (Array.isArray(body?.[key])) return body[key];
  if (body && "predicted_quantity" in body) return [body];
  return [];
}

/** [lo, hi] of an answer at `level`, or null when the API gave none. */
export function intervalOf(answer, level = BAND_LEVEL) {
  const spec = (answer.intervals || answer.interval || {})[level];
  let pair = null;
  if (Array.isArray(spec)) pair = spec;
  else if (spec && typeof spec === "object") pair = [spec.lo, spec.hi];
  else if (answer.lo && typeof answer.lo === "object") pair = [answer.lo[level], answer.hi?.[level]];
  if (!pair || pair[0] === null || pair[0] === undefined || pair[1] === null || pair[1] === undefined) return null;
  return [Number(pair[0]), Number(pair[1])];
}

function periodOf(answer, daily = false) {
  return String(answer.period || answer.month || answer.date || "").slice(0, daily ? 10 : 7);
}

async function fetchForecast(queries) {
  const answers = [];
  let lineage = null;
  const notes = [];
  try {
    for (let i = 0; i < queries.length; i += BATCH) {
      const body = await api("/forecast", { method: "POST", body: { queries: queries.slice(i, i + BATCH) } });
      answers.push(...answersOf(body));
      lineage = lineage || body.lineage || null;
      notes.push(...(body.notes || []));
    }
    return { answers, lineage, notes };
  } catch (error) {
    // No POST /forecast on this job server (404/405): ask one month at a time if that is few.
    if (![404, 405].includes(error.status) || error.code === "model_not_found" || queries.length > MAX_SINGLE_GETS) throw error;
  }
  for (const q of queries) {
    const body = await api("/forecast", { params: q }).catch((error) => {
      if (error.status === 404 && !error.code) throw new Error("the job server has no forecast API");
      throw error;
    });
    answers.push(...answersOf(body));
    lineage = lineage || body.lineage || null;
  }
  return { answers, lineage, notes };
}

async function show() {
  const store = document.getElementById("store-select").value;
  const product = document.getElementById("product-select").value;
  const ticket = ++drawing;
  const figure = document.getElementById("forecast-figure");
  figure.setAttribute("aria-busy", "true");
  const note = document.getElementById("forecast-note");
  note.hidden = true;
  try {
    const models = await api("/models").catch(() => null);
    // One active model per granularity: the switch shows only when a day model is active.
    const dayActive = models?.active_by_granularity?.day || null;
    document.getElementById("granularity-switch").hidden = !dayActive;
    const daily = granularity() === "day";
    shown = `${store}|${product}|${daily ? "day" : "month"}`;
    const hash = `#/forecast?store=${encodeURIComponent(store)}&product=${encodeURIComponent(product)}${daily ? "&view=day" : ""}`;
    if (window.location.hash !== hash) window.history.replaceState(null, "", hash);
    const active = activeOf(models, daily);
    const past = await api("/history", {
      params: { store_id: store, product_id: product, ...(daily ? { granularity: "day", days: DAY_WINDOW } : {}) },
    });
    const actual = daily
      ? new Map((past.days || []).map((p) => [p.date, p.quantity]))
      : new Map(past.months.map((p) => [p.month, p.quantity]));
    const lastKnown = [...actual.keys()].at(-1);
    const lastLearned = active?.date_range?.last ? String(active.date_range.last).slice(0, daily ? 10 : 7) : lastKnown;
    const next = daily ? (n) => addDays(lastLearned, n) : (n) => addMonths(lastLearned, n);
    const horizon = lastLearned ? (daily ? dayRange : monthRange)(next(1), next(daily ? DAY_HORIZON : HORIZON)) : [];
    const stores = store === "all" ? series.stores : [store];
    const products = product === "all" ? series.products : [product];
    const single = stores.length === 1 && products.length === 1;
    const queries = [];
    for (const s of stores) {
      for (const p of products) {
        for (const period of horizon) queries.push(daily ? { store_id: s, product_id: p, date: period } : { store_id: s, product_id: p, month: period });
      }
    }

    const forecast = new Map();
    const messages = [];
    let lineage = null;
    if (queries.length && active) {
      try {
        const result = await fetchForecast(queries);
        lineage = result.lineage;
        for (const a of result.answers) {
          const month = periodOf(a, daily);
          const entry = forecast.get(month) || { value: 0, lo: 0, hi: 0, lo95: 0, hi95: 0, basis: new Set(), n: 0 };
          entry.value += Number(a.predicted_quantity);
          entry.n += 1;
          entry.basis.add(a.basis || "model");
          // A total's bounds are the sums of its series' bounds (null when one series has none).
          for (const [level, low, high] of [[BAND_LEVEL, "lo", "hi"], [WIDE_LEVEL, "lo95", "hi95"]]) {
            const pair = intervalOf(a, level);
            entry[low] = pair && entry[low] !== null ? entry[low] + pair[0] : null;
            entry[high] = pair && entry[high] !== null ? entry[high] + pair[1] : null;
          }
          forecast.set(month, entry);
        }
        const bounded = [...forecast.values()].some((f) => f.lo !== null);
        if (!single && bounded) {
          messages.push("Totals: the band is the sum of the series' bounds, exact if their errors move together; "
            + "with independent errors the total's interval would be narrower, so read it as a conservative (wide) band.");
        } else if (!bounded) messages.push(`The forecast API gave no prediction interval for ${single ? "this series" : "some of these series"}.`);
      } catch (error) {
        messages.push(`No forecast: ${error.message}`);
      }
    } else if (!active) {
      messages.push("No active model yet: upload a sales file to train one.");
    }
    if (ticket !== drawing) return; // the selection changed meanwhile
    drawnVersion = active?.version || null;
    // Backtest windows are shaded on the month axis only (a day model's windows span whole months).
    const windows = (daily ? [] : active?.backtest?.windows || []).map((w, i) => ({
      label: `backtest window ${i + 1}: fitted up to ${w.origin}, scored ${w.months?.[0]} → ${w.months?.at(-1)}`,
      short: `bt ${i + 1}`,
      months: w.months || [],
    }));
    const all = [...actual.keys(), ...forecast.keys()].sort();
    const months = all.length ? (daily ? dayRange : monthRange)(all[0], all.at(-1)) : [];
    rowsGranularity = daily ? "day" : "month";
    rows = months.map((month) => {
      const f = forecast.get(month);
      return {
        month,
        actual: actual.has(month) ? actual.get(month) : null,
        forecast: f ? f.value : null,
        lo: f ? f.lo : null,
        hi: f ? f.hi : null,
        lo95: f ? f.lo95 : null,
        hi95: f ? f.hi95 : null,
        basis: f ? [...f.basis].join("+") : "",
      };
    }).filter((r) => r.actual !== null || r.forecast !== null);
    const name = `${store === "all" ? "all stores" : `store ${store}`}, ${product === "all" ? "all products" : `product ${product}`}`;
    const chartBox = document.getElementById("forecast-chart");
    redraw = () => {
      if (!months.length) {
        fill(chartBox, el("p", { class: "muted" }, "No history yet for this selection."));
        return;
      }
      const unit = daily ? "days" : "months";
      const first = [...forecast.keys()][0];
      monthlyChart(chartBox, {
        months, actual, forecast, windows, bandLevel: BAND_LEVEL, wideLevel: WIDE_LEVEL, daily,
        unit: daily ? "units / day" : "units / month",
        title: `${daily ? "Daily" : "Monthly"} quantity: ${name}`,
        description: `${actual.size} ${unit} of actuals and ${forecast.size} forecast ${unit}${first ? ` from ${(daily ? dayLabel : monthLabel)(first)}` : ""}.`,
      });
    };
    redraw();
    renderLegend([...forecast.values()].some((f) => f.lo !== null),
      [...forecast.values()].some((f) => f.lo95 !== null), windows.length > 0);
    renderLineage(lineage, active, daily);
    renderTable();
    document.getElementById("download-csv").disabled = !rows.length;
    if (messages.length) {
      note.textContent = messages.join(" ");
      note.hidden = false;
    }
  } catch (error) {
    toast(error.message, "error");
  } finally {
    if (ticket === drawing) figure.setAttribute("aria-busy", "false");
  }
}

function renderLegend(band, wide, windows) {
  const key = (cls, text) => el("span", { class: "key" }, el("span", { class: `swatch ${cls}`, "aria-hidden": "true" }), text);
  fill("forecast-legend", key("actual", "actual"), key("forecast", "forecast"),
    band ? key("band", "80% interval") : null, wide ? key("band-wide", "95% interval") : null,
    windows ? key("window", "backtest windows") : null);
}

function renderLineage(lineage, active, daily) {
  const version = lineage?.model_version || active?.version;
  if (!version) {
    fill("forecast-lineage");
    return;
  }
  const range = lineage?.date_range || active?.date_range;
  const skill = lineage?.metrics?.skill ?? active?.backtest?.skill;
  const sources = lineage?.training_sources?.length ?? active?.inputs?.length;
  const cut = daily ? 10 : 7;
  fill("forecast-lineage",
    `${daily ? "Day model" : "Model"} ${version}, trained `, stamp(lineage?.trained_at || active?.created_at),
    range ? ` on ${String(range.first).slice(0, cut)} → ${String(range.last).slice(0, cut)}` : "",
    sources ? ` (${sources} source file${sources === 1 ? "" : "s"})` : "",
    skill !== undefined && skill !== null ? `; backtest skill vs seasonal-naive ${pct(skill)}` : "", ".");
}

function cell(value, key, digits = 1) {
  return el("td", { class: "num", dataset: { col: key, value: value === null ? "" : String(value) } }, value === null ? "–" : num(value, digits));
}

/** The numbers, starting at the forecast; the history's rows (before it) behind a toggle. */
function renderTable() {
  if (!rows.length) {
    fill("forecast-table", el("p", { class: "muted" }, "Nothing to show."));
    return;
  }
  const daily = rowsGranularity === "day";
  const history = rows.filter((r) => r.forecast === null).length;
  const all = !rows.some((r) => r.forecast !== null); // no forecast: the history is all there is
  const head = [daily ? "Day" : "Month", "Actual", "Forecast", "Low 80%", "High 80%", "Low 95%", "High 95%", "Basis"];
  const toggle = history && !all ? el("button", {
    type: "button", class: "button secondary small", id: "toggle-history", "aria-expanded": String(showHistory),
    "aria-controls": "forecast-numbers",
    onclick: () => { showHistory = !showHistory; renderTable(); document.getElementById("toggle-history")?.focus(); },
  }, showHistory ? `Hide the history (${num(history)} ${daily ? "days" : "months"})` : `Show the history (${num(history)} ${daily ? "days" : "months"})`) : null;
  fill("forecast-table", toggle, el("div", { class: "table-scroll tall", tabindex: "0", "aria-label": "forecast numbers" }, el("table", { id: "forecast-numbers" },
    el("caption", { class: "visually-hidden" }, `${daily ? "Daily" : "Monthly"} forecast${showHistory || all ? " and actuals" : ""}`),
    el("thead", {}, el("tr", {}, head.map((h, i) => el("th", { scope: "col", class: i && i < 7 ? "num" : "" }, h)))),
    el("tbody", {}, rows.map((r) => el("tr", {
      dataset: { [daily ? "date" : "month"]: r.month, period: r.month, kind: r.forecast !== null ? "forecast" : "actual" },
      hidden: r.forecast === null && !showHistory && !all,
    },
    el("th", { scope: "row" }, daily ? dayLabel(r.month) : monthLabel(r.month)),
    cell(r.actual, "actual"), cell(r.forecast, "forecast"), cell(r.lo, "lo"), cell(r.hi, "hi"),
    cell(r.lo95, "lo95"), cell(r.hi95, "hi95"),
    el("td", { dataset: { col: "basis" } }, r.basis)))))));
}

function download() {
  const store = document.getElementById("store-select").value;
  const product = document.getElementById("product-select").value;
  const quote = (v) => (/[",\n]/.test(v) ? `"${v.replaceAll('"', '""')}"` : v);
  const daily = rowsGranularity === "day";
  const lines = [`${daily ? "date" : "month"},actual_quantity,predicted_quantity,lo_80,hi_80,lo_95,hi_95,basis`];
  for (const r of rows) {
    lines.push([r.month, r.actual ?? "", r.forecast ?? "", r.lo ?? "", r.hi ?? "", r.lo95 ?? "", r.hi95 ?? "", quote(r.basis)].join(","));
  }
  const url = URL.createObjectURL(new Blob([`${lines.join("\n")}\n`], { type: "text/csv" }));
  const link = el("a", { href: url, download: `forecast-${store}-${product}${daily ? "-daily" : ""}.csv`.replace(/[^\w.-]/g, "_") });
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(url), 1000);
}
