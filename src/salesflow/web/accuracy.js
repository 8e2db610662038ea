// A version's backtest accuracy per store/product (the job server's /models/{v}/accuracy): WAPE,
// MASE, the seasonal-naive WAPE and the skill over it, sortable, worst WAPE first; each row opens
// that series in the forecast explorer.

import { api } from "./api.js";
import { el, table } from "./dom.js";
import { num, pct } from "./format.js";

const found = new Map(); // version -> the answer, {loading} or {error}; fixed per version
let order = { key: "wape", descending: true };

const COLUMNS = [
  { key: "store_id", label: "Store", text: true },
  { key: "product_id", label: "Product", text: true },
  { key: "wape", label: "WAPE", show: (v) => pct(v) },
  { key: "mase", label: "MASE", show: (v) => num(v, 2) },
  { key: "seasonal_naive_wape", label: "Seasonal-naive WAPE", show: (v) => pct(v) },
  { key: "skill", label: "Skill", show: (v) => pct(v) },
  { key: "rows", label: "Months scored", show: (v) => num(v) },
];

/** Rows sorted by the chosen column; missing values last whichever the direction. */
function sorted(rows) {
  const { key, descending } = order;
  const sign = descending ? -1 : 1;
  return [...rows].sort((a, b) => {
    const x = a[key];
    const y = b[key];
    if (x === null || x === undefined) return y === null || y === undefined ? 0 : 1;
    if (y === null || y === undefined) return -1;
    return sign * (typeof x === "string" ? x.localeCompare(y, "en", { numeric: true }) : x - y);
  });
}

function header(column, redraw) {
  const active = order.key === column.key;
  const arrow = active ? (order.descending ? " ↓" : " ↑") : "";
  return el("button", {
    type: "button",
    class: "link-button sort",
    "data-sort": column.key,
    "aria-label": `Sort by ${column.label}${active ? (order.descending ? ", now highest first" : ", now lowest first") : ""}`,
    onclick: () => {
      order = { key: column.key, descending: active ? !order.descending : !column.text };
      redraw();
      document.querySelector(`#accuracy-detail button[data-sort="${column.key}"]`)?.focus();
    },
  }, `${column.label}${arrow}`);
}

function explorerLink(row) {
  const query = new URLSearchParams({ store: row.store_id, product: row.product_id });
  return el("a", { href: `#/forecast?${query}`, title: "Open this series in the forecast explorer" }, row.store_id);
}

/** The table for a version (loaded once, then drawn from the cache); `redraw` draws the view again. */
export function accuracyOf(model, redraw) {
  const answer = found.get(model.version);
  if (!answer) {
    found.set(model.version, { loading: true });
    api(`/models/${encodeURIComponent(model.version)}/accuracy`)
      .then((body) => found.set(model.version, body))
      .catch((error) => found.set(model.version, { error: error.message }))
      .finally(redraw);
  }
  const box = el("div", { id: "accuracy-detail" }, el("h3", {}, "Accuracy per store and product"));
  if (!answer || answer.loading) box.append(el("p", { class: "muted" }, "Loading the backtest per series…"));
  else if (answer.error) box.append(el("p", { class: "muted" }, `Accuracy per series: ${answer.error}`));
  else if (!answer.per_series?.length) box.append(el("p", { class: "muted" }, "This version's backtest recorded no per-series scores."));
  else {
    box.append(el("p", { class: "muted" }, `Backtest scores of ${num(answer.per_series.length)} of ${num(answer.series)} series`,
      answer.note ? ` (${answer.note})` : "", ". Bias per series is not recorded by the backtest; the model competition above gives the overall bias."));
    box.append(table(COLUMNS.map((c) => ({
      label: header(c, redraw),
      num: !c.text,
      key: c.key,
      value: c.key === "store_id" ? explorerLink
        : (row) => (c.text ? row[c.key] : el("span", { dataset: { value: row[c.key] ?? "" } }, c.show(row[c.key]))),
    })), sorted(answer.per_series), {
      caption: "Backtest accuracy per store and product",
      rowProps: (row) => ({ dataset: { store: row.store_id, product: row.product_id } }),
    }));
  }
  return box;
}
