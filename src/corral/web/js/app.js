// Boot: theme, the API-key dialog, hash routing between the views.
//
// Routes: #/<view>[/<arg>][?query]. Each view module exports mount(root, ctx) and may
// return a cleanup function (timers, streams) called when the user leaves the view.

import { setKeyPrompter, get } from "./api.js";
import { h, replace, toast } from "./dom.js";
import * as theme from "./theme.js";

const VIEWS = {
  dashboard: "./views/dashboard.js",
  models: "./views/models.js",
  launch: "./views/launch.js",
  chat: "./views/chat.js",
  logs: "./views/logs.js",
  nodes: "./views/nodes.js",
  settings: "./views/settings.js",
};

let cleanup = null;
let generation = 0;

/** "#/logs/my-model?tail=50" -> {view: "logs", arg: "my-model", query: URLSearchParams} */
function parseHash(hash) {
  const raw = hash.replace(/^#\/?/, "");
  const [path, qs = ""] = raw.split("?");
  const [view, ...rest] = path.split("/");
  return {
    view: VIEWS[view] ? view : "dashboard",
    arg: rest.length ? decodeURIComponent(rest.join("/")) : "",
    query: new URLSearchParams(qs),
  };
}

/** Navigate to a view (updates the hash; the hashchange handler renders it). */
function go(view, arg = "", query = null) {
  let hash = `#/${view}${arg ? `/${encodeURIComponent(arg)}` : ""}`;
  if (query) {
    const qs = new URLSearchParams(query).toString();
    if (qs) hash += `?${qs}`;
  }
  if (location.hash === hash) route();
  else location.hash = hash;
}

async function route() {
  const mine = ++generation;
  const ctx = parseHash(location.hash);
  if (cleanup) { try { cleanup(); } catch (err) { console.error(err); } cleanup = null; }
  for (const a of document.querySelectorAll(".nav a")) {
    if (a.dataset.view === ctx.view) a.setAttribute("aria-current", "page");
    else a.removeAttribute("aria-current");
  }
  const root = document.getElementById("view");
  root.dataset.view = ctx.view;
  replace(root, h("p", { class: "loading" }, "Loading…"));
  document.title = `${ctx.view[0].toUpperCase()}${ctx.view.slice(1)} · corral`;
  try {
    const mod = await import(VIEWS[ctx.view]);
    if (mine !== generation) return;
    replace(root);
    const done = await mod.mount(root, { ...ctx, go });
    if (mine !== generation) { if (typeof done === "function") done(); return; }
    cleanup = typeof done === "function" ? done : null;
  } catch (err) {
    if (mine !== generation) return;
    replace(root, h("div", { class: "card error-card", role: "alert" },
      h("h2", {}, "This view could not load"), h("p", {}, String(err.message || err))));
  }
}

function keyPrompt(wasWrong) {
  const dialog = document.getElementById("key-dialog");
  const input = document.getElementById("key-input");
  document.getElementById("key-why").textContent = wasWrong
    ? "That key was refused. Enter a valid API key for this daemon."
    : "This daemon requires an API key. It is kept for this browser session only.";
  input.value = "";
  return new Promise((resolve) => {
    dialog.addEventListener("close", () => {
      resolve(dialog.returnValue === "ok" && input.value.trim() ? input.value.trim() : null);
    }, { once: true });
    dialog.showModal();
    input.focus();
  });
}

async function heartbeat() {
  const el = document.getElementById("daemon-status");
  try {
    const info = await get("/healthz");
    el.textContent = `daemon ${info.version}`;
    el.className = "daemon-status ok";
  } catch {
    el.textContent = "daemon unreachable";
    el.className = "daemon-status down";
  }
}

function boot() {
  theme.init();
  document.getElementById("theme-toggle").addEventListener("click", () => theme.toggle());
  setKeyPrompter(keyPrompt);
  window.addEventListener("hashchange", route);
  window.addEventListener("unhandledrejection", (ev) => {
    const err = ev.reason;
    if (err && err.name === "AbortError") return;
    toast(String((err && err.message) || err), "error");
  });
  heartbeat();
  setInterval(heartbeat, 10000);
  route();
}

boot();
