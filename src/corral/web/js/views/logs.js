// Logs: a live tail of one instance's log over SSE, with pause/resume and copy.
// While paused, lines keep arriving and are held back; resume shows them all.
//
// Once a node is linked, a Node picker comes first: #/logs/NAME?node=BOX follows the
// instance NAME of the node BOX, through this daemon's relay.
//
// One object, ``v``, holds the view: ``v.el`` its controls, ``v.lines`` what the box
// shows, ``v.held`` what arrived while paused, ``v.stream`` the AbortController of the
// followed log, ``v.base`` the prefix of the chosen machine's API; every function below
// takes it.

import { follow, get, seg } from "../api.js";
import { h, replace, toast } from "../dom.js";
import * as fleet from "../fleet.js";

const MAX_LINES = 5000;
const TAIL = 500;

export async function mount(root, { arg, go, query }) {
  const stop = new AbortController();
  const node = query.get("node") || "";
  const v = { el: controls(), stream: null, paused: false, held: [], lines: [], node, base: fleet.base(node) };
  const { el } = v;
  const nodePick = fleet.picker("log-node");
  replace(root,
    h("div", { class: "view-head" }, h("h1", {}, "Logs"), nodePick.box,
      h("label", { class: "row" }, h("span", { class: "field-label" }, "Instance"), el.pick),
      el.pauseBtn, el.copyBtn, el.state),
    el.box);
  el.pauseBtn.addEventListener("click", () => togglePause(v));
  el.copyBtn.addEventListener("click", () => copyLines(v));
  el.pick.addEventListener("change", () => go("logs", el.pick.value, node ? { node } : null));
  nodePick.select.addEventListener("change", () => go("logs", "", nodePick.select.value ? { node: nodePick.select.value } : null));

  let instances = [];
  const [nodes] = await Promise.all([
    fleet.listNodes(stop.signal).catch(() => []),
    get(`${v.base}/api/v1/instances`, { signal: stop.signal })
      .then((list) => { instances = list; })
      .catch((err) => { el.state.textContent = err.message; }),
  ]);
  nodePick.show(nodes, node);
  const names = instances.map((i) => i.name);
  if (arg && !names.includes(arg)) names.unshift(arg);
  replace(el.pick, h("option", { value: "" }, names.length ? "choose…" : "no instances"),
    names.map((n) => h("option", { value: n, selected: n === arg }, n)));
  start(v, arg);
  return () => { stop.abort(); if (v.stream) v.stream.abort(); };
}

function controls() {
  return {
    pick: h("select", { id: "log-instance", "aria-label": "Instance" }),
    pauseBtn: h("button", { type: "button", class: "btn", id: "log-pause", "aria-pressed": "false" }, "Pause"),
    copyBtn: h("button", { type: "button", class: "btn", id: "log-copy" }, "Copy"),
    state: h("span", { class: "muted small", id: "log-state", role: "status" }),
    box: h("pre", { class: "logbox", id: "log-lines", tabindex: 0, "aria-label": "Log lines" }),
  };
}

/** "name", or "name on box" for a node's instance. */
function following(v, name) {
  return v.node ? `${name} on ${v.node}` : name;
}

function heldText(v) {
  return `Paused: ${v.held.length} new line${v.held.length === 1 ? "" : "s"} held back.`;
}

function lineNode(text) {
  const level = /^\d+\.\d+\.\d+\.\d+\s+([EWID])\s/.exec(text) || /^\S+\s+([EWID])\s/.exec(text);
  return h("div", { class: `line${level ? ` lvl-${level[1]}` : ""}` }, text);
}

/** Append lines (keeping the last MAX_LINES), following the bottom if the user was there. */
function show(v, newLines) {
  const box = v.el.box;
  const atBottom = box.scrollHeight - box.scrollTop - box.clientHeight < 30;
  const frag = document.createDocumentFragment();
  for (const l of newLines) frag.appendChild(lineNode(l));
  box.appendChild(frag);
  v.lines.push(...newLines);
  const excess = v.lines.length - MAX_LINES;
  if (excess > 0) {
    v.lines = v.lines.slice(excess);
    for (let i = 0; i < excess && box.firstChild; i++) box.firstChild.remove();
  }
  if (atBottom) box.scrollTop = box.scrollHeight;
}

function start(v, name) {
  const { el } = v;
  if (v.stream) v.stream.abort();
  replace(el.box);
  v.lines = []; v.held = [];
  if (!name) { el.state.textContent = "No instance selected."; return; }
  const mine = new AbortController();
  v.stream = mine;
  el.state.textContent = `Following ${following(v, name)}…`;
  follow(`${v.base}/api/v1/instances/${seg(name)}/logs?tail=${TAIL}&follow=true`, (ev) => {
    const line = JSON.parse(ev.data);
    if (!v.paused) { show(v, [line]); return; }
    v.held.push(line);
    el.state.textContent = heldText(v);
  }, { signal: mine.signal })
    .then(() => { if (!mine.signal.aborted) el.state.textContent = "The log stream ended."; })
    .catch((err) => { el.state.textContent = err.message; });
}

function togglePause(v) {
  const { el } = v;
  v.paused = !v.paused;
  el.pauseBtn.textContent = v.paused ? "Resume" : "Pause";
  el.pauseBtn.setAttribute("aria-pressed", String(v.paused));
  if (!v.paused && v.held.length) { show(v, v.held); v.held = []; }
  el.state.textContent = v.paused ? heldText(v) : `Following ${following(v, el.pick.value)}…`;
}

async function copyLines(v) {
  try {
    await navigator.clipboard.writeText(v.lines.join("\n"));
    toast(`Copied ${v.lines.length} lines`, "ok");
  } catch {
    // no clipboard API (plain http to another host): select the text for Ctrl+C
    const range = document.createRange();
    range.selectNodeContents(v.el.box);
    const sel = window.getSelection();
    sel.removeAllRanges();
    sel.addRange(range);
    toast("Lines selected: press Ctrl+C to copy", "info");
  }
}
