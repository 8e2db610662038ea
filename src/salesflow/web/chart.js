// Hand-written SVG charts: a monthly line chart (actuals, forecast, interval band, backtest windows)
// and a horizontal bar chart. No library: a few scales, paths and text elements.

const NS = "http://www.w3.org/2000/svg";
let chartCount = 0;

function svg(tag, attrs = {}, ...children) {
  const node = document.createElementNS(NS, tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value !== undefined && value !== null) node.setAttribute(key, String(value));
  }
  for (const child of children) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

/** Round numbers for an axis from 0 to at least `max`: about `count` steps of 1, 2, 2.5 or 5 x 10^k. */
export function niceTicks(max, count = 5) {
  if (!(max > 0)) return [0, 1];
  const raw = max / count;
  const power = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 2.5, 5, 10].map((m) => m * power).find((s) => s >= raw);
  const ticks = [];
  for (let v = 0; v < max + step * 0.999; v += step) ticks.push(Number(v.toFixed(10)));
  return ticks;
}

const compact = new Intl.NumberFormat("en-US", { notation: "compact", maximumFractionDigits: 1 });
const full = new Intl.NumberFormat("en-US", { maximumFractionDigits: 1 });
const MONTHS = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];

function label(month) {
  const [year, m] = month.split("-");
  return `${MONTHS[Number(m) - 1]} ${year}`;
}

/** "2024-03-01" -> "Mar 1"; with the year when asked (the first tick, a new year). */
function dayLabel(day, withYear = false) {
  const [year, m, d] = day.split("-");
  return `${MONTHS[Number(m) - 1]} ${Number(d)}${withYear ? ` ${year}` : ""}`;
}

/** The x-axis ticks of a daily axis: about 8 dates, on Mondays when a tick is a week or more apart. */
function dayTicks(days) {
  const every = days.length > 150 ? 28 : days.length > 60 ? 14 : days.length > 20 ? 7 : days.length > 10 ? 2 : 1;
  const weekday = (day) => new Date(`${day}T00:00:00Z`).getUTCDay();
  const start = every >= 7 ? Math.max(0, days.findIndex((day) => weekday(day) === 1)) : 0;
  const ticks = [];
  for (let i = start; i < days.length; i += every) ticks.push(i);
  return ticks;
}

function titled(root, title, description) {
  chartCount += 1;
  const titleId = `chart-title-${chartCount}`;
  const descId = `chart-desc-${chartCount}`;
  root.setAttribute("role", "img");
  root.setAttribute("aria-labelledby", `${titleId} ${descId}`);
  root.append(svg("title", { id: titleId }, title), svg("desc", { id: descId }, description));
}

/**
 * A monthly (or, with `daily: true`, daily) chart into `container` (replacing its content); returns the <svg>.
 * data: {months: ["YYYY-MM", ...] or ["YYYY-MM-DD", ...] when daily (the x axis, contiguous),
 *        actual: Map month -> number, forecast: Map month -> {value, lo, hi} (lo/hi may be null),
 *        windows: [{label, months: [...]}] (shaded), title, description}
 */
export function monthlyChart(container, data) {
  const months = data.months;
  const width = Math.max(320, Math.round(container.clientWidth || 800));
  const height = Math.round(Math.min(400, Math.max(240, width * 0.42)));
  const m = { left: 56, right: 16, top: 22, bottom: 40 };
  const plotW = width - m.left - m.right;
  const plotH = height - m.top - m.bottom;
  const step = plotW / Math.max(1, months.length - 1);
  const index = new Map(months.map((month, i) => [month, i]));
  const x = (i) => m.left + i * step;

  let top = 0;
  for (const v of data.actual.values()) top = Math.max(top, v);
  for (const f of data.forecast.values()) top = Math.max(top, f.value, f.hi ?? 0, f.hi95 ?? 0);
  const ticks = niceTicks(top * 1.05 || 1);
  const yMax = ticks[ticks.length - 1];
  const y = (v) => m.top + plotH - (v / yMax) * plotH;

  const root = svg("svg", {
    class: data.daily ? "monthly-chart daily-chart" : "monthly-chart", viewBox: `0 0 ${width} ${height}`, width, height,
    "data-months": data.daily ? undefined : months.length, "data-days": data.daily ? months.length : undefined,
    "data-granularity": data.daily ? "day" : "month",
  });
  titled(root, data.title || (data.daily ? "Daily quantities" : "Monthly quantities"), data.description || "");

  // Backtest windows, shaded behind everything else.
  const windows = svg("g", { class: "windows" });
  for (const w of data.windows || []) {
    const inside = w.months.filter((mm) => index.has(mm)).map((mm) => index.get(mm));
    if (!inside.length) continue;
    const x0 = x(Math.min(...inside)) - step / 2;
    const x1 = x(Math.max(...inside)) + step / 2;
    windows.append(svg("rect", {
      class: "backtest-window", x: Math.max(m.left, x0), y: m.top,
      width: Math.max(1, Math.min(m.left + plotW, x1) - Math.max(m.left, x0)), height: plotH,
      "data-label": w.label,
    }, svg("title", {}, w.label)));
    if (x1 - x0 >= 28) { // too narrow for a label on a small screen: the title still names it
      windows.append(svg("text", { class: "window-label", x: (x0 + x1) / 2, y: m.top - 6, "text-anchor": "middle" }, w.short || ""));
    }
  }
  root.append(windows);

  // Grid and axes.
  const grid = svg("g", { class: "grid" });
  for (const t of ticks) {
    grid.append(svg("line", { x1: m.left, x2: m.left + plotW, y1: y(t), y2: y(t) }));
    grid.append(svg("text", { class: "tick y", x: m.left - 8, y: y(t) + 4, "text-anchor": "end" }, compact.format(t)));
  }
  const xTick = (i, text) => {
    grid.append(svg("line", { class: "x-tick", x1: x(i), x2: x(i), y1: m.top + plotH, y2: m.top + plotH + 5 }));
    grid.append(svg("text", { class: "tick x", x: x(i), y: m.top + plotH + 20, "text-anchor": "middle" }, text));
  };
  if (data.daily) {
    // Few ticks on a narrow chart: a "Mar 14" label needs about 56 px.
    let ticks = dayTicks(months);
    const room = Math.max(2, Math.floor(plotW / 56));
    if (ticks.length > room) ticks = ticks.filter((_, k) => k % Math.ceil(ticks.length / room) === 0);
    ticks.forEach((i, k) => xTick(i, dayLabel(months[i], k === 0 || months[i].slice(5) < months[ticks[k - 1]].slice(5))));
  } else {
    const every = months.length > 36 ? 12 : months.length > 18 ? 6 : months.length > 8 ? 3 : 1;
    months.forEach((month, i) => {
      const monthNo = Number(month.slice(5));
      if ((monthNo - 1) % every !== 0) return;
      xTick(i, every >= 12 ? month.slice(0, 4) : label(month));
    });
  }
  grid.append(svg("line", { class: "axis", x1: m.left, x2: m.left + plotW, y1: m.top + plotH, y2: m.top + plotH }));
  if (data.unit) grid.append(svg("text", { class: "axis-title", x: 4, y: 12 }, data.unit));
  root.append(grid);

  // The interval bands, the wider (95%) first and lighter: hi along the top, lo back along the bottom.
  const band = (lo, hi, level, cls) => {
    const banded = months.filter((mm) => {
      const f = data.forecast.get(mm);
      return f && lo(f) !== null && lo(f) !== undefined && hi(f) !== null && hi(f) !== undefined;
    });
    if (!banded.length) return;
    const upper = banded.map((mm) => `${x(index.get(mm)).toFixed(1)},${y(hi(data.forecast.get(mm))).toFixed(1)}`);
    const lower = banded.slice().reverse().map((mm) => `${x(index.get(mm)).toFixed(1)},${y(lo(data.forecast.get(mm))).toFixed(1)}`);
    root.append(svg("path", {
      class: cls, "data-level": level, d: `M${upper.join("L")}L${lower.join("L")}Z`,
    }, svg("title", {}, `${Math.round(Number(level) * 100)}% prediction interval`)));
  };
  if (data.wideLevel) band((f) => f.lo95, (f) => f.hi95, data.wideLevel, "band band-wide");
  band((f) => f.lo, (f) => f.hi, data.bandLevel || "0.8", "band");

  // Lines (a gap in the data breaks the line) and one point per month.
  const line = (values, cls) => {
    let d = "";
    let pen = false;
    months.forEach((mm, i) => {
      const v = values(mm);
      if (v === undefined || v === null) { pen = false; return; }
      d += `${pen ? "L" : "M"}${x(i).toFixed(1)},${y(v).toFixed(1)}`;
      pen = true;
    });
    if (d) root.append(svg("path", { class: `line ${cls}`, d }));
  };
  line((mm) => data.actual.get(mm), "actual");
  const lastActual = [...data.actual.keys()].filter((mm) => index.has(mm)).sort().pop();
  line((mm) => (mm === lastActual && !data.forecast.has(mm) && data.forecast.size ? data.actual.get(mm) : data.forecast.get(mm)?.value), "forecast");

  const firstForecast = [...data.forecast.keys()].filter((mm) => index.has(mm)).sort()[0];
  if (firstForecast && lastActual) {
    const xs = x(index.get(firstForecast)) - step / 2;
    root.append(svg("line", { class: "divider", x1: xs, x2: xs, y1: m.top, y2: m.top + plotH }));
    root.append(svg("text", { class: "divider-label", x: xs + 6, y: m.top + 12 }, "forecast →"));
  }

  const points = svg("g", { class: "points" });
  for (const [kind, map, valueOf] of [
    ["actual", data.actual, (v) => v],
    ["forecast", data.forecast, (f) => f.value],
  ]) {
    for (const [mm, v] of map) {
      if (!index.has(mm)) continue;
      const value = valueOf(v);
      points.append(svg("circle", {
        class: `point ${kind}`, cx: x(index.get(mm)).toFixed(1), cy: y(value).toFixed(1), r: months.length > 60 ? 2 : 3,
        "data-month": data.daily ? undefined : mm, "data-date": data.daily ? mm : undefined, "data-period": mm, "data-value": value,
      }));
    }
  }
  root.append(points);
  root.append(hoverLayer({ months, data, x, y, m, plotW, plotH, step }));
  container.replaceChildren(root);
  return root;
}

/** A crosshair and a value box that follow the mouse. */
function hoverLayer({ months, data, x, m, plotW, plotH, step }) {
  const group = svg("g", { class: "hover" });
  const cross = svg("line", { class: "crosshair", y1: m.top, y2: m.top + plotH, visibility: "hidden" });
  const box = svg("g", { class: "tip", visibility: "hidden" });
  const bg = svg("rect", { class: "tip-bg", rx: 4 });
  const text = svg("text", { class: "tip-text" });
  box.append(bg, text);
  const capture = svg("rect", { class: "capture", x: m.left - step / 2, y: m.top, width: plotW + step, height: plotH });
  group.append(cross, capture, box);
  capture.addEventListener("mouseleave", () => {
    cross.setAttribute("visibility", "hidden");
    box.setAttribute("visibility", "hidden");
  });
  capture.addEventListener("mousemove", (event) => {
    const rootSvg = capture.ownerSVGElement;
    const point = rootSvg.createSVGPoint();
    point.x = event.clientX;
    point.y = event.clientY;
    const local = point.matrixTransform(rootSvg.getScreenCTM().inverse());
    const i = Math.max(0, Math.min(months.length - 1, Math.round((local.x - m.left) / step)));
    const month = months[i];
    const lines = [data.daily ? dayLabel(month, true) : label(month)];
    if (data.actual.has(month)) lines.push(`actual ${full.format(data.actual.get(month))}`);
    const f = data.forecast.get(month);
    if (f) {
      lines.push(`forecast ${full.format(f.value)}`);
      if (f.lo !== null && f.lo !== undefined) lines.push(`80%: ${full.format(f.lo)} – ${full.format(f.hi)}`);
    }
    text.replaceChildren(...lines.map((t, k) => svg("tspan", { x: 8, dy: k ? 16 : 16 }, t)));
    cross.setAttribute("x1", x(i));
    cross.setAttribute("x2", x(i));
    cross.setAttribute("visibility", "visible");
    box.setAttribute("visibility", "visible");
    const widthOf = Math.max(...lines.map((t) => t.length)) * 7 + 16;
    bg.setAttribute("width", widthOf);
    bg.setAttribute("height", lines.length * 16 + 10);
    const left = x(i) + 10 + widthOf > m.left + plotW ? x(i) - 10 - widthOf : x(i) + 10;
    box.setAttribute("transform", `translate(${left},${m.top + 4})`);
  });
  return group;
}

/** Horizontal bars, largest first: items [{label, value}], `format(value)` for the value text. */
export function barChart(container, items, { title = "Bar chart", description = "", format = (v) => v.toFixed(3) } = {}) {
  const sorted = items.slice().sort((a, b) => b.value - a.value);
  const width = Math.max(280, Math.round(container.clientWidth || 480));
  const row = 28;
  const labelW = Math.min(160, Math.max(80, ...sorted.map((i) => i.label.length * 8 + 12)));
  const valueW = 64;
  const height = sorted.length * row + 8;
  const max = Math.max(...sorted.map((i) => i.value), 1e-12);
  const root = svg("svg", { class: "bar-chart", viewBox: `0 0 ${width} ${height}`, width, height });
  titled(root, title, description || sorted.map((i) => `${i.label} ${format(i.value)}`).join(", "));
  sorted.forEach((item, k) => {
    const barW = Math.max(1, ((width - labelW - valueW) * item.value) / max);
    const yTop = 4 + k * row;
    root.append(
      svg("text", { class: "bar-label", x: labelW - 8, y: yTop + 18, "text-anchor": "end" }, item.label),
      svg("rect", { class: "bar", x: labelW, y: yTop + 4, width: barW, height: row - 10, rx: 3, "data-label": item.label, "data-value": item.value }),
      svg("text", { class: "bar-value", x: labelW + barW + 6, y: yTop + 18 }, format(item.value)),
    );
  });
  container.replaceChildren(root);
  return root;
}
