// Settings: builds (list, default, add, `update` with progress), API keys, the daemon's
// settings (idle TTL, port range, ...), presets and the default flags of every launch
// (the '*' preset). Sections whose endpoint this daemon lacks say so instead of failing.
//
// One object, ``v``, holds the view: ``v.box`` the section containers and ``v.opts`` the
// request options (the view's abort signal); every function below takes it.

import { api, follow, get, seg } from "../api.js";
import { badge, confirmAction, field, h, meter, replace, table, toast } from "../dom.js";
import { shellQuote, shellSplit, when } from "../format.js";

const FINISHED = ["done", "failed", "cancelled"];
const UPDATE_FROM = ["release", "source", "pypi"];
const BACKENDS = ["auto", "cpu", "cuda", "rocm", "vulkan", "metal"];

export function mount(root) {
  const stop = new AbortController();
  const v = {
    opts: { signal: stop.signal },
    box: {
      builds: h("div", { id: "builds" }),
      update: h("div", { id: "update" }),
      keys: h("div", { id: "keys" }),
      settings: h("div", { id: "daemon-settings" }),
      presets: h("div", { id: "presets" }),
    },
  };
  replace(root, h("div", { class: "view-head" }, h("h1", {}, "Settings")),
    card("builds", "llama-server builds", v.box.builds,
      h("div", { class: "stack" }, addBuildForm(v), updateForm(v)), v.box.update),
    card("keys", "API keys", v.box.keys),
    card("presets", "Presets and default flags", v.box.presets),
    card("defaults", "Defaults", v.box.settings));

  loadBuilds(v);
  get("/api/v1/builds/jobs", v.opts).then((jobs) => {
    const active = jobs.filter((j) => !FINISHED.includes(j.state));
    if (active.length) trackJob(v, active[active.length - 1]);
  }).catch(() => {});
  loadKeys(v);
  loadSettings(v);
  loadPresets(v);
  return () => stop.abort();
}

function card(id, title, ...body) {
  return h("section", { class: "card", "aria-labelledby": `${id}-title` }, h("h2", { id: `${id}-title` }, title), ...body);
}

/** A section whose endpoint failed: "not available" for an older daemon, else the error. */
function unavailable(box, what, err) {
  replace(box, h("p", { class: err.missing ? "muted" : "error-text" },
    err.missing ? `${what} are not available on this daemon.` : `${what}: ${err.message}`));
}

// -- builds --------------------------------------------------------------------------------
async function loadBuilds(v) {
  try {
    const builds = await get("/api/v1/builds", v.opts);
    replace(v.box.builds, table(["#", "Version", "Backend", "Origin", "Path", ""], builds.map((b) => buildRow(v, b)),
      "No build registered: corral uses llama-server from PATH or CORRAL_LLAMA_SERVER. Update or add one."));
  } catch (err) { unavailable(v.box.builds, "Builds", err); }
}

function buildRow(v, b) {
  const makeDefault = async () => {
    try { await api("POST", `/api/v1/builds/${b.id}/default`); } catch (err) { toast(err.message, "error"); }
    loadBuilds(v);
  };
  return h("tr", {},
    h("td", {}, b.id),
    h("td", {}, b.version || "—", b.build ? h("span", { class: "sub" }, b.build) : null),
    h("td", {}, b.backend), h("td", {}, b.origin),
    h("td", { class: "mono small" }, b.path),
    h("td", {}, b.is_default ? badge("default") : h("button", { type: "button", class: "btn btn-sm",
      "aria-label": `Make build ${b.id} the default`, onclick: makeDefault }, "Make default")));
}

function addBuildForm(v) {
  const path = h("input", { type: "text", required: true, placeholder: "/opt/llama.cpp/build/bin/llama-server", class: "grow" });
  const makeDefault = h("input", { type: "checkbox" });
  const form = h("form", { class: "row bottom", "aria-label": "Add a build" },
    h("label", { class: "field grow" }, h("span", { class: "field-label" }, "Add a binary"), path),
    h("label", { class: "row small" }, makeDefault, "default"),
    h("button", { type: "submit", class: "btn" }, "Add"));
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    try {
      await api("POST", "/api/v1/builds", { path: path.value.trim(), default: makeDefault.checked });
      path.value = "";
      loadBuilds(v);
    } catch (err) { toast(err.message, "error"); }
  });
  return form;
}

function updateForm(v) {
  const from = h("select", { "aria-label": "Update from" }, UPDATE_FROM.map((x) => h("option", { value: x }, x)));
  const backend = h("select", { "aria-label": "Backend" }, BACKENDS.map((x) => h("option", { value: x }, x)));
  const version = h("input", { type: "text", placeholder: "newest", "aria-label": "Version" });
  const form = h("form", { class: "row", "aria-label": "Update llama-server" },
    field("Update from", from), field("Backend", backend), field("Version", version),
    h("button", { type: "submit", class: "btn btn-primary" }, "Update"));
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const body = { from: from.value, backend: backend.value };
    if (version.value.trim()) body.version = version.value.trim();
    try { trackJob(v, await api("POST", "/api/v1/builds/update", body)); } catch (err) { toast(err.message, "error"); }
  });
  return form;
}

function renderJob(v, job) {
  const p = job.progress || {};
  const frac = p.total ? p.done / p.total : (job.state === "done" ? 1 : 0);
  const active = !FINISHED.includes(job.state);
  const cancel = () => api("DELETE", `/api/v1/builds/jobs/${seg(job.id)}`).catch((err) => toast(err.message, "error"));
  replace(v.box.update, h("div", { class: "stack", "data-job": job.id },
    h("div", { class: "row" }, badge(job.state), h("strong", {}, `${job.phase || ""}`), h("span", { class: "muted" }, job.message || ""),
      active ? h("button", { type: "button", class: "btn btn-sm btn-danger", onclick: cancel }, "Cancel") : null),
    meter(frac, p.total ? `${Math.floor(frac * 100)} %` : job.state, { name: "Update progress" }),
    job.error ? h("p", { class: "error-text" }, job.error) : null,
    job.log && job.log.length ? h("pre", { class: "cmdline small" }, job.log.slice(-8).join("\n")) : null));
}

function trackJob(v, job) {
  renderJob(v, job);
  follow(`/api/v1/builds/jobs/${seg(job.id)}/events`, (ev) => {
    const data = JSON.parse(ev.data);
    if (data.id && data.id !== job.id) return;
    job = { ...job, ...data };
    renderJob(v, job);
    if (job.state === "done") { toast("llama-server updated", "ok"); loadBuilds(v); }
  }, v.opts).catch((err) => toast(err.message, "error"));
}

// -- keys ----------------------------------------------------------------------------------
/** The keys table and the create form; ``secretNode`` shows a new key's secret once. */
async function loadKeys(v, secretNode = null) {
  try {
    const keys = await get("/api/v1/keys", v.opts);
    replace(v.box.keys, secretNode, table(["Id", "Name", "Scope", "Created", "Last used", ""], keys.map((k) => keyRow(v, k)),
      "No keys: on 127.0.0.1 the daemon needs none until the first key exists."), newKeyForm(v));
  } catch (err) { unavailable(v.box.keys, "API keys", err); }
}

function keyRow(v, k) {
  const revoke = async () => {
    if (!confirmAction(`Revoke key ${k.name}? Clients using it get 401.`)) return;
    try { await api("DELETE", `/api/v1/keys/${seg(k.id)}`); } catch (err) { toast(err.message, "error"); }
    loadKeys(v);
  };
  return h("tr", {},
    h("td", { class: "mono" }, k.id), h("td", {}, k.name), h("td", {}, k.scope),
    h("td", {}, when(k.created_at)), h("td", {}, when(k.last_used_at)),
    h("td", {}, k.active ? h("button", { type: "button", class: "btn btn-sm btn-danger", "aria-label": `Revoke ${k.name}`,
      onclick: revoke }, "Revoke") : badge("revoked")));
}

function newKeyForm(v) {
  const name = h("input", { type: "text", required: true, maxlength: 64, placeholder: "laptop" });
  const scope = h("select", {}, h("option", { value: "admin" }, "admin (everything)"),
    h("option", { value: "inference" }, "inference (/v1/* only)"));
  const form = h("form", { class: "row", "aria-label": "Create an API key" },
    field("Name", name), field("Scope", scope), h("button", { type: "submit", class: "btn" }, "Create key"));
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    try {
      const k = await api("POST", "/api/v1/keys", { name: name.value.trim(), scope: scope.value });
      loadKeys(v, h("div", { class: "secret", role: "status" }, h("span", {}, `Secret of ${k.name} (shown once):`),
        h("code", {}, k.secret)));
    } catch (err) { toast(err.message, "error"); }
  });
  return form;
}

// -- settings ------------------------------------------------------------------------------
async function loadSettings(v) {
  try {
    const data = await get("/api/v1/settings", v.opts);
    const inputs = new Map(); // key -> {input, s}: the settings this page may change
    const rows = Object.entries(data.settings).map(([key, s]) => settingRow(key, s, inputs));
    replace(v.box.settings, h("p", { class: "muted small" }, `Written to ${data.config_path}.`),
      settingsForm(v, rows, inputs));
  } catch (err) { unavailable(v.box.settings, "Settings", err); }
}

function settingRow(key, s, inputs) {
  const input = h("input", { type: "text", id: `setting-${key}`, value: s.secret ? (s.set ? "(set)" : "(not set)") : s.value ?? "",
    disabled: !s.editable || s.source === "env", "data-setting": key });
  if (s.editable && s.source !== "env") inputs.set(key, { input, s });
  return h("tr", {},
    h("td", {}, h("label", { for: `setting-${key}`, class: "mono" }, key), h("span", { class: "sub" }, s.help)),
    h("td", {}, input),
    h("td", { class: "small muted" }, s.source === "env" ? `from ${s.env}` : s.source, s.applies === "restart" ? " · after restart" : ""),
    h("td", { class: "small muted" }, s.secret ? "" : `default ${s.default ?? "—"}`));
}

/** The values changed in ``inputs``: {changes, bad} (``bad``: keys that are not numbers). */
function changedSettings(inputs) {
  const changes = {};
  const bad = [];
  for (const [key, { input, s }] of inputs) {
    const text = input.value.trim();
    if (text === String(s.value ?? "")) continue;
    const value = text === "" ? null : s.type === "str" ? text : Number(text);
    // Number("soon") is NaN, which JSON would send as null (= back to the default)
    if (typeof value === "number" && !Number.isFinite(value)) bad.push(key);
    changes[key] = value;
  }
  return { changes, bad };
}

function settingsForm(v, rows, inputs) {
  const saveBtn = h("button", { type: "submit", class: "btn btn-primary" }, "Save settings");
  const err = h("p", { class: "error-text", role: "alert" });
  const form = h("form", { class: "stack" }, table(["Setting", "Value", "Source", "Default"], rows), h("div", { class: "row" }, saveBtn, err));
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const { changes, bad } = changedSettings(inputs);
    if (bad.length) { err.textContent = `Not a number: ${bad.join(", ")}`; return; }
    if (!Object.keys(changes).length) { err.textContent = "Nothing changed."; return; }
    try {
      const res = await api("PUT", "/api/v1/settings", changes);
      toast(`Saved ${res.updated.join(", ")}`, "ok");
      loadSettings(v);
    } catch (e) { err.textContent = e.message; }
  });
  return form;
}

// -- presets -------------------------------------------------------------------------------
async function loadPresets(v) {
  try {
    const presets = await get("/api/v1/presets", v.opts);
    const rows = presets.filter((p) => p.name !== "*").map((p) => presetRow(v, p));
    replace(v.box.presets, defaultsForm(v, presets.find((p) => p.name === "*")),
      table(["Name", "Model", "Flags", ""], rows, "No presets: save one from the Launch view."));
  } catch (err) { unavailable(v.box.presets, "Presets", err); }
}

/** The '*' preset's flags, every launch's defaults, as one editable command line. */
function defaultsForm(v, star) {
  const defaults = h("input", { type: "text", id: "default-flags", class: "mono grow",
    value: star ? (star.flags || []).map(shellQuote).join(" ") : "", placeholder: "-c 8192 --jinja" });
  const err = h("p", { class: "error-text", role: "alert" });
  const form = h("form", { class: "row bottom", "aria-label": "Default flags" },
    h("label", { class: "field grow" }, h("span", { class: "field-label" }, "Default flags for every launch"), defaults, err),
    h("button", { type: "submit", class: "btn" }, "Save defaults"));
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    try {
      const { name: _star, ...keep } = star || {}; // the rest of '*' stays as it was
      await api("PUT", "/api/v1/presets/*", { ...keep, flags: shellSplit(defaults.value) });
      err.textContent = "";
      toast("Default flags saved", "ok");
      loadPresets(v);
    } catch (e) { err.textContent = e.message; }
  });
  return form;
}

function presetRow(v, p) {
  const remove = async () => {
    if (!confirmAction(`Delete preset ${p.name}?`)) return;
    try { await api("DELETE", `/api/v1/presets/${seg(p.name)}`); } catch (e) { toast(e.message, "error"); }
    loadPresets(v);
  };
  return h("tr", {},
    h("td", {}, h("strong", {}, p.name), p.description ? h("span", { class: "sub" }, p.description) : null),
    h("td", {}, p.model || "—"),
    h("td", { class: "mono small" }, (p.flags || []).map(shellQuote).join(" ")),
    h("td", {}, h("div", { class: "actions" },
      h("a", { class: "btn btn-sm", href: `#/launch?preset=${encodeURIComponent(p.name)}` }, "Open in Launch"),
      h("button", { type: "button", class: "btn btn-sm btn-danger", "aria-label": `Delete preset ${p.name}`, onclick: remove }, "Delete"))));
}
