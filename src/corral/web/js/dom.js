// Building DOM nodes without ever parsing HTML: every string becomes a text node or an
// attribute value, so names, file names, log lines and chat text cannot inject markup.

const PROPS = new Set(["value", "checked", "selected", "indeterminate"]);
const URL_ATTRS = new Set(["href", "src", "action", "formaction"]);
const SAFE_URL = /^(https?:\/\/|\/|#|\?|mailto:)/i;

/** True for URLs the UI may put in href/src: http(s), same-origin paths and fragments. */
export function safeUrl(url) {
  return typeof url === "string" && SAFE_URL.test(url.trim());
}

/**
 * h("button", {class: "btn", onclick: fn, disabled: true}, "Stop", icon)
 * Attributes: on* functions become listeners; booleans toggle the attribute; value,
 * checked and selected are set as properties; null/undefined/false are skipped.
 */
export function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [key, val] of Object.entries(attrs || {})) {
    if (val === null || val === undefined || val === false) continue;
    if (key.startsWith("on") && typeof val === "function") {
      el.addEventListener(key.slice(2), val);
    } else if (key === "dataset") {
      Object.assign(el.dataset, val);
    } else if (PROPS.has(key)) {
      el[key] = val;
    } else if (URL_ATTRS.has(key) && !safeUrl(String(val))) {
      continue; // javascript:, data: and friends never reach an attribute
    } else {
      el.setAttribute(key, val === true ? "" : String(val));
    }
  }
  append(el, children);
  return el;
}

/** Append children: strings and numbers as text, arrays flattened, null/false skipped. */
export function append(parent, children) {
  for (const child of [children].flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    parent.appendChild(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return parent;
}

/** Replace every child of ``el`` with ``children``. */
export function replace(el, ...children) {
  el.replaceChildren();
  return append(el, children);
}

/** A labelled form field: <label>text <input …></label> with an optional hint line. */
export function field(label, control, hint) {
  return h("label", { class: "field" }, h("span", { class: "field-label" }, label), control,
    hint ? h("span", { class: "hint" }, hint) : null);
}

/** A field whose label names its control by id: <div><label for=id>text</label> control extra</div>. */
export function labelled(id, text, control, extra) {
  return h("div", { class: "field" }, h("label", { class: "field-label", for: id }, text), control, extra || null);
}

/** A short-lived message in the corner; errors stay until dismissed. */
export function toast(message, kind = "info") {
  const box = document.getElementById("toasts");
  if (!box) return;
  const close = h("button", { type: "button", class: "icon", "aria-label": "Dismiss" }, "×");
  const item = h("div", { class: `toast toast-${kind}`, role: kind === "error" ? "alert" : "status" },
    h("span", {}, message), close);
  close.addEventListener("click", () => item.remove());
  box.appendChild(item);
  if (kind !== "error") setTimeout(() => item.remove(), 4000);
}

/** A state badge (starting, ready, failed...) styled by its name. */
export function badge(state) {
  const s = String(state || "unknown");
  return h("span", { class: `badge badge-${s.replace(/[^a-z]/g, "")}` }, s);
}

/** A horizontal meter with its label, for RAM, VRAM and pull progress. */
export function meter(fraction, label, opts = {}) {
  const pct = Math.max(0, Math.min(1, Number.isFinite(fraction) ? fraction : 0));
  const bar = h("div", { class: "meter-bar" });
  bar.style.width = `${(pct * 100).toFixed(1)}%`;
  return h("div", {
    class: `meter ${opts.class || ""}`, role: "progressbar", "aria-valuemin": 0,
    "aria-valuemax": 100, "aria-valuenow": Math.round(pct * 100), "aria-label": opts.name || label,
  }, h("div", { class: "meter-track" }, bar), h("div", { class: "meter-label" }, label));
}

/** A table from column titles and row arrays; ``empty`` shown when there are no rows. */
export function table(columns, rows, empty = "Nothing here yet.") {
  if (!rows.length) return h("p", { class: "empty" }, empty);
  return h("div", { class: "table-wrap" }, h("table", {},
    h("thead", {}, h("tr", {}, columns.map((c) => h("th", { scope: "col" }, c)))),
    h("tbody", {}, rows)));
}

/** Ask before something destructive; the native dialog is escaped text by nature. */
export function confirmAction(message) {
  return window.confirm(message);
}
