// Formatting numbers, times and months for people, and a few month helpers.

const integer = new Intl.NumberFormat("en-US", { maximumFractionDigits: 0 });
const oneDecimal = new Intl.NumberFormat("en-US", { minimumFractionDigits: 1, maximumFractionDigits: 1 });

export function num(value, digits = 0) {
  if (value === null || value === undefined || Number.isNaN(Number(value))) return "–";
  if (digits === 1) return oneDecimal.format(Number(value));
  if (digits === 0) return integer.format(Number(value));
  return Number(value).toFixed(digits);
}

export function pct(value, digits = 1) {
  if (value === null || value === undefined || Number.isNaN(Number(value))) return "–";
  return `${(Number(value) * 100).toFixed(digits)}%`;
}

export function bytes(n) {
  if (n === null || n === undefined) return "–";
  const units = ["B", "KB", "MB", "GB", "TB"];
  let value = Number(n);
  let unit = 0;
  while (value >= 1000 && unit < units.length - 1) {
    value /= 1000;
    unit += 1;
  }
  return `${value.toFixed(unit ? 1 : 0)} ${units[unit]}`;
}

/** "3 min ago"-style age of an ISO time (the tooltip of `stamp`). */
export function ago(iso) {
  if (!iso) return "–";
  const seconds = (Date.now() - Date.parse(iso)) / 1000;
  if (!Number.isFinite(seconds)) return String(iso);
  if (seconds < 45) return "just now";
  if (seconds < 3600) return `${Math.round(seconds / 60)} min ago`;
  if (seconds < 86400) return `${Math.round(seconds / 3600)} h ago`;
  const days = Math.round(seconds / 86400);
  return `${days} day${days === 1 ? "" : "s"} ago`;
}

const pad = (n) => String(n).padStart(2, "0");

/** The page's one date format: "2026-12-08 14:05" in the browser's time zone. */
export function when(iso) {
  if (!iso) return "–";
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return String(iso);
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${pad(d.getHours())}:${pad(d.getMinutes())}`;
}

/** A <time> in the page's date format, its age ("4 min ago") as the tooltip. */
export function stamp(iso) {
  const node = document.createElement("time");
  node.textContent = when(iso);
  if (iso) {
    node.dateTime = String(iso);
    node.title = ago(iso);
  }
  return node;
}

/** Seconds between two ISO times (or until now), as "1 min 12 s". */
export function duration(startIso, endIso) {
  if (!startIso) return "–";
  const end = endIso ? Date.parse(endIso) : Date.now();
  const seconds = Math.max(0, (end - Date.parse(startIso)) / 1000);
  if (!Number.isFinite(seconds)) return "–";
  if (seconds < 60) return `${seconds.toFixed(1)} s`;
  return `${Math.floor(seconds / 60)} min ${Math.round(seconds % 60)} s`;
}

/** "2022-03" + n months. */
export function addMonths(month, n) {
  const [year, m] = month.split("-").map(Number);
  const index = year * 12 + (m - 1) + n;
  return `${Math.floor(index / 12)}-${String((index % 12) + 1).padStart(2, "0")}`;
}

/** Every month from `first` to `last` inclusive. */
export function monthRange(first, last) {
  const out = [];
  for (let m = first; m <= last && out.length < 2400; m = addMonths(m, 1)) out.push(m);
  return out;
}

const MONTH_NAMES = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];

export function monthLabel(month) {
  const [year, m] = month.split("-");
  return `${MONTH_NAMES[Number(m) - 1]} ${year}`;
}

export function shortId(id) {
  return id ? String(id).slice(0, 8) : "–";
}

/** "2024-02-28" + n days (UTC calendar days, so no daylight-saving surprises). */
export function addDays(day, n) {
  const date = new Date(`${day}T00:00:00Z`);
  date.setUTCDate(date.getUTCDate() + n);
  return date.toISOString().slice(0, 10);
}

/** Every day from `first` to `last` inclusive (at most ten years of them). */
export function dayRange(first, last) {
  const out = [];
  for (let d = first; d <= last && out.length < 3660; d = addDays(d, 1)) out.push(d);
  return out;
}

/** "2024-03-01" -> "Fri 1 Mar 2024". */
export function dayLabel(day) {
  const date = new Date(`${day}T00:00:00Z`);
  const weekday = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"][date.getUTCDay()];
  return `${weekday} ${date.getUTCDate()} ${MONTH_NAMES[date.getUTCMonth()]} ${date.getUTCFullYear()}`;
}
