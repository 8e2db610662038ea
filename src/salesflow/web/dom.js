// Small DOM helpers: elements are built with textContent only (never innerHTML), so data from the
// API can never become markup.

/** An element: el("td", {class: "num", dataset: {month: "2021-01"}}, "12"). */
export function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "class") node.className = value;
    else if (key === "text") node.textContent = String(value);
    else if (key === "dataset") Object.assign(node.dataset, value);
    else if (key.startsWith("on") && typeof value === "function") {
      node.addEventListener(key.slice(2), value);
    } else if (value === true) node.setAttribute(key, "");
    else node.setAttribute(key, String(value));
  }
  append(node, children);
  return node;
}

function append(node, children) {
  for (const child of children) {
    if (child === undefined || child === null || child === false) continue;
    if (Array.isArray(child)) append(node, child);
    else node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

/** Replace a container's content. */
export function fill(target, ...children) {
  const node = typeof target === "string" ? document.getElementById(target) : target;
  if (!node) return null;
  node.replaceChildren();
  append(node, children);
  return node;
}

/**
 * A table from column specs: {label, value(row) -> text|Node, num?: bool, key?: string}.
 * `onRow(row)` makes rows selectable with the mouse and the keyboard (Enter/Space).
 */
export function table(columns, rows, { caption, onRow, rowProps, empty = "Nothing yet.", stack = false } = {}) {
  if (!rows.length) return el("p", { class: "muted" }, empty);
  const head = el("tr", {}, columns.map((c) => el("th", { scope: "col", class: c.num ? "num" : "" }, c.label)));
  const body = rows.map((row) => {
    const props = rowProps ? rowProps(row) : {};
    const cells = columns.map((c) => el("td", {
      class: [c.num ? "num" : "", c.wrap ? "wrap" : ""].join(" ").trim(),
      dataset: c.key ? { col: c.key } : undefined,
      "data-label": stack ? c.label : undefined, // a stacked row names each value (phone layout)
    }, c.value(row)));
    const tr = el("tr", props, cells);
    if (onRow) {
      tr.tabIndex = 0;
      tr.classList.add("clickable");
      tr.addEventListener("click", () => onRow(row));
      tr.addEventListener("keydown", (event) => {
        // Only keys pressed on the row itself: Enter on a button or link inside it is theirs.
        if (event.target !== tr) return;
        if (event.key === "Enter" || event.key === " ") {
          event.preventDefault();
          onRow(row);
        }
      });
    }
    return tr;
  });
  return el("div", { class: "table-scroll" },
    el("table", { class: stack ? "stack" : undefined }, caption ? el("caption", {}, caption) : null, el("thead", {}, head), el("tbody", {}, body)));
}

// The latest scroll position of every scrolled element (a redraw reads it from the element it
// replaced, so a scroll made while the refresh was fetching is kept too).
const lastScroll = new WeakMap();
document.addEventListener("scroll", (event) => {
  const box = event.target;
  if (box instanceof Element) lastScroll.set(box, [box.scrollTop, box.scrollLeft]);
}, true);

/**
 * Remember where keyboard focus is and which boxes scroll, before a redraw; the function returned
 * puts them back on the new elements after it. Only what the redraw replaced is touched: focus
 * the user moved, or a box that stayed, is left alone. Elements are found again by a CSS path from
 * their nearest ancestor with an id (data attributes, else their position).
 */
export function keepPlace() {
  const active = document.activeElement;
  const focus = active && active !== document.body ? pathOf(active) : null;
  const boxes = [...document.querySelectorAll(".table-scroll, .log")]
    .map((box) => ({ box, path: pathOf(box) }))
    .filter((entry) => entry.path);
  return () => {
    for (const { box, path } of boxes) {
      const where = box.isConnected ? null : lastScroll.get(box);
      const node = where && (where[0] || where[1]) ? document.querySelector(path) : null;
      if (node) [node.scrollTop, node.scrollLeft] = where;
    }
    const lost = !document.activeElement || document.activeElement === document.body;
    if (focus && lost && !active.isConnected) document.querySelector(focus)?.focus({ preventScroll: true });
  };
}

function pathOf(node) {
  const steps = [];
  for (let at = node; at && at !== document.body; at = at.parentElement) {
    if (at.id) {
      steps.unshift(`#${CSS.escape(at.id)}`);
      return steps.join(" > ");
    }
    const data = Object.entries(at.dataset).map(([k, v]) =>
      `[data-${k.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`)}="${CSS.escape(v)}"]`).join("");
    const index = at.parentElement ? [...at.parentElement.children].indexOf(at) + 1 : 1;
    steps.unshift(`${at.tagName.toLowerCase()}${data || `:nth-child(${index})`}`);
  }
  return null;
}

/** A status badge: the status name is both its text and its class. */
export function badge(status) {
  const name = String(status || "unknown");
  return el("span", { class: `badge status-${name.replace(/[^a-z_]/gi, "")}` }, name);
}

let toastTimer = 0;

/** A short message at the bottom of the page (also read by screen readers). */
export function toast(message, kind = "info") {
  const node = document.getElementById("toast");
  node.textContent = message;
  node.className = `toast ${kind}`;
  node.hidden = false;
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => { node.hidden = true; }, 6000);
}
