// Logs: a live tail of one instance's log over SSE, with pause/resume and copy.
// While paused, lines keep arriving and are held back; resume shows them all.

import { follow, get, seg } from "../api.js";
import { h, replace, toast } from "../dom.js";

const MAX_LINES = 5000;
const TAIL = 500;

export async function mount(root, { arg, go }) {
  const stop = new AbortController();
  let stream = null;
  let paused = false;
  let held = [];
  let lines = [];

  const pick = h("select", { id: "log-instance", "aria-label": "Instance" });
  const pauseBtn = h("button", { type: "button", class: "btn", id: "log-pause", "aria-pressed": "false" }, "Pause");
  const copyBtn = h("button", { type: "button", class: "btn", id: "log-copy" }, "Copy");
  const state = h("span", { class: "muted small", id: "log-state", role: "status" });
  const box = h("pre", { class: "logbox", id: "log-lines", tabindex: 0, "aria-label": "Log lines" });
  replace(root,
    h("div", { class: "view-head" }, h("h1", {}, "Logs"),
      h("label", { class: "row" }, h("span", { class: "field-label" }, "Instance"), pick),
      pauseBtn, copyBtn, state),
    box);

  const heldText = () => `Paused: ${held.length} new line${held.length === 1 ? "" : "s"} held back.`;

  function lineNode(text) {
    const level = /^\d+\.\d+\.\d+\.\d+\s+([EWID])\s/.exec(text) || /^\S+\s+([EWID])\s/.exec(text);
    return h("div", { class: `line${level ? ` lvl-${level[1]}` : ""}` }, text);
  }

  function show(newLines) {
    const atBottom = box.scrollHeight - box.scrollTop - box.clientHeight < 30;
    const frag = document.createDocumentFragment();
    for (const l of newLines) frag.appendChild(lineNode(l));
    box.appendChild(frag);
    lines.push(...newLines);
    const excess = lines.length - MAX_LINES;
    if (excess > 0) {
      lines = lines.slice(excess);
      for (let i = 0; i < excess && box.firstChild; i++) box.firstChild.remove();
    }
    if (atBottom) box.scrollTop = box.scrollHeight;
  }

  function start(name) {
    if (stream) stream.abort();
    replace(box);
    lines = []; held = [];
    if (!name) { state.textContent = "No instance selected."; return; }
    stream = new AbortController();
    const mine = stream;
    state.textContent = `Following ${name}…`;
    follow(`/api/v1/instances/${seg(name)}/logs?tail=${TAIL}&follow=true`, (ev) => {
      const line = JSON.parse(ev.data);
      if (!paused) { show([line]); return; }
      held.push(line);
      state.textContent = heldText();
    }, { signal: mine.signal })
      .then(() => { if (!mine.signal.aborted) state.textContent = "The log stream ended."; })
      .catch((err) => { state.textContent = err.message; });
  }

  pauseBtn.addEventListener("click", () => {
    paused = !paused;
    pauseBtn.textContent = paused ? "Resume" : "Pause";
    pauseBtn.setAttribute("aria-pressed", String(paused));
    if (!paused && held.length) { show(held); held = []; }
    state.textContent = paused ? heldText() : `Following ${pick.value}…`;
  });

  copyBtn.addEventListener("click", async () => {
    const text = lines.join("\n");
    try {
      await navigator.clipboard.writeText(text);
      toast(`Copied ${lines.length} lines`, "ok");
    } catch {
      // no clipboard API (plain http to another host): select the text for Ctrl+C
      const range = document.createRange();
      range.selectNodeContents(box);
      const sel = window.getSelection();
      sel.removeAllRanges();
      sel.addRange(range);
      toast("Lines selected: press Ctrl+C to copy", "info");
    }
  });

  pick.addEventListener("change", () => go("logs", pick.value));

  let instances = [];
  try {
    instances = await get("/api/v1/instances", { signal: stop.signal });
  } catch (err) {
    state.textContent = err.message;
  }
  const names = instances.map((i) => i.name);
  if (arg && !names.includes(arg)) names.unshift(arg);
  replace(pick, h("option", { value: "" }, names.length ? "choose…" : "no instances"),
    names.map((n) => h("option", { value: n, selected: n === arg }, n)));
  start(arg);
  return () => { stop.abort(); if (stream) stream.abort(); };
}
