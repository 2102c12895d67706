// Settings: builds (list, default, add, `update` with progress), API keys, the daemon's
// settings (idle TTL, port range, ...), presets and the default flags of every launch
// (the '*' preset). Sections whose endpoint this daemon lacks say so instead of failing.

import { api, follow, get, seg } from "../api.js";
import { badge, confirmAction, field, h, meter, replace, table, toast } from "../dom.js";
import { shellQuote, shellSplit, when } from "../format.js";

export function mount(root) {
  const stop = new AbortController();
  const opts = { signal: stop.signal };
  const sections = {
    builds: h("div", { id: "builds" }),
    update: h("div", { id: "update" }),
    keys: h("div", { id: "keys" }),
    settings: h("div", { id: "daemon-settings" }),
    presets: h("div", { id: "presets" }),
  };
  const card = (id, title, ...body) => h("section", { class: "card", "aria-labelledby": `${id}-title` },
    h("h2", { id: `${id}-title` }, title), ...body);
  replace(root, h("div", { class: "view-head" }, h("h1", {}, "Settings")),
    card("builds", "llama-server builds", sections.builds, addBuildForm(), sections.update),
    card("keys", "API keys", sections.keys),
    card("presets", "Presets and default flags", sections.presets),
    card("defaults", "Defaults", sections.settings));

  const unavailable = (box, what, err) => replace(box, h("p", { class: err.missing ? "muted" : "error-text" },
    err.missing ? `${what} are not available on this daemon.` : `${what}: ${err.message}`));

  // -- builds -----------------------------------------------------------------------------
  async function loadBuilds() {
    try {
      const builds = await get("/api/v1/builds", opts);
      replace(sections.builds, table(["#", "Version", "Backend", "Origin", "Path", ""], builds.map((b) => h("tr", {},
        h("td", {}, b.id),
        h("td", {}, b.version || "—", b.build ? h("span", { class: "sub" }, b.build) : null),
        h("td", {}, b.backend), h("td", {}, b.origin),
        h("td", { class: "mono small" }, b.path),
        h("td", {}, b.is_default ? badge("default") : h("button", { type: "button", class: "btn btn-sm",
          "aria-label": `Make build ${b.id} the default`, onclick: async () => {
            try { await api("POST", `/api/v1/builds/${b.id}/default`); } catch (err) { toast(err.message, "error"); }
            loadBuilds();
          } }, "Make default")))), "No build registered: corral uses llama-server from PATH or CORRAL_LLAMA_SERVER. Update or add one."));
    } catch (err) { unavailable(sections.builds, "Builds", err); }
  }

  function addBuildForm() {
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
        loadBuilds();
      } catch (err) { toast(err.message, "error"); }
    });
    const from = h("select", { "aria-label": "Update from" }, ["release", "source", "pypi"].map((v) => h("option", { value: v }, v)));
    const backend = h("select", { "aria-label": "Backend" }, ["auto", "cpu", "cuda", "rocm", "vulkan", "metal"].map((v) => h("option", { value: v }, v)));
    const version = h("input", { type: "text", placeholder: "newest", "aria-label": "Version" });
    const upd = h("form", { class: "row", "aria-label": "Update llama-server" },
      field("Update from", from), field("Backend", backend), field("Version", version),
      h("button", { type: "submit", class: "btn btn-primary" }, "Update"));
    upd.addEventListener("submit", async (ev) => {
      ev.preventDefault();
      const body = { from: from.value, backend: backend.value };
      if (version.value.trim()) body.version = version.value.trim();
      try { trackJob(await api("POST", "/api/v1/builds/update", body)); } catch (err) { toast(err.message, "error"); }
    });
    return h("div", { class: "stack" }, form, upd);
  }

  function renderJob(job) {
    const p = job.progress || {};
    const frac = p.total ? p.done / p.total : (job.state === "done" ? 1 : 0);
    const active = !["done", "failed", "cancelled"].includes(job.state);
    replace(sections.update, h("div", { class: "stack", "data-job": job.id },
      h("div", { class: "row" }, badge(job.state), h("strong", {}, `${job.phase || ""}`), h("span", { class: "muted" }, job.message || ""),
        active ? h("button", { type: "button", class: "btn btn-sm btn-danger", onclick: () =>
          api("DELETE", `/api/v1/builds/jobs/${seg(job.id)}`).catch((err) => toast(err.message, "error")) }, "Cancel") : null),
      meter(frac, p.total ? `${Math.floor(frac * 100)} %` : job.state, { name: "Update progress" }),
      job.error ? h("p", { class: "error-text" }, job.error) : null,
      job.log && job.log.length ? h("pre", { class: "cmdline small" }, job.log.slice(-8).join("\n")) : null));
  }

  function trackJob(job) {
    renderJob(job);
    follow(`/api/v1/builds/jobs/${seg(job.id)}/events`, (ev) => {
      const data = JSON.parse(ev.data);
      if (data.id && data.id !== job.id) return;
      job = { ...job, ...data };
      renderJob(job);
      if (job.state === "done") { toast("llama-server updated", "ok"); loadBuilds(); }
    }, opts).catch((err) => toast(err.message, "error"));
  }

  // -- keys -------------------------------------------------------------------------------
  async function loadKeys(secretNode = null) {
    try {
      const keys = await get("/api/v1/keys", opts);
      const name = h("input", { type: "text", required: true, maxlength: 64, placeholder: "laptop" });
      const scope = h("select", {}, h("option", { value: "admin" }, "admin (everything)"),
        h("option", { value: "inference" }, "inference (/v1/* only)"));
      const form = h("form", { class: "row", "aria-label": "Create an API key" },
        field("Name", name), field("Scope", scope), h("button", { type: "submit", class: "btn" }, "Create key"));
      form.addEventListener("submit", async (ev) => {
        ev.preventDefault();
        try {
          const k = await api("POST", "/api/v1/keys", { name: name.value.trim(), scope: scope.value });
          loadKeys(h("div", { class: "secret", role: "status" }, h("span", {}, `Secret of ${k.name} (shown once):`),
            h("code", {}, k.secret)));
        } catch (err) { toast(err.message, "error"); }
      });
      replace(sections.keys, secretNode, table(["Id", "Name", "Scope", "Created", "Last used", ""], keys.map((k) => h("tr", {},
        h("td", { class: "mono" }, k.id), h("td", {}, k.name), h("td", {}, k.scope),
        h("td", {}, when(k.created_at)), h("td", {}, when(k.last_used_at)),
        h("td", {}, k.active ? h("button", { type: "button", class: "btn btn-sm btn-danger", "aria-label": `Revoke ${k.name}`,
          onclick: async () => {
            if (!confirmAction(`Revoke key ${k.name}? Clients using it get 401.`)) return;
            try { await api("DELETE", `/api/v1/keys/${seg(k.id)}`); } catch (err) { toast(err.message, "error"); }
            loadKeys();
          } }, "Revoke") : badge("revoked")))),
        "No keys: on 127.0.0.1 the daemon needs none until the first key exists."), form);
    } catch (err) { unavailable(sections.keys, "API keys", err); }
  }

  // -- settings ---------------------------------------------------------------------------
  async function loadSettings() {
    try {
      const data = await get("/api/v1/settings", opts);
      const inputs = new Map();
      const rows = Object.entries(data.settings).map(([key, s]) => {
        const input = h("input", { type: "text", id: `setting-${key}`, value: s.secret ? (s.set ? "(set)" : "(not set)") : s.value ?? "",
          disabled: !s.editable || s.source === "env", "data-setting": key });
        if (s.editable && s.source !== "env") inputs.set(key, { input, s });
        return h("tr", {},
          h("td", {}, h("label", { for: `setting-${key}`, class: "mono" }, key), h("span", { class: "sub" }, s.help)),
          h("td", {}, input),
          h("td", { class: "small muted" }, s.source === "env" ? `from ${s.env}` : s.source, s.applies === "restart" ? " · after restart" : ""),
          h("td", { class: "small muted" }, s.secret ? "" : `default ${s.default ?? "—"}`));
      });
      const saveBtn = h("button", { type: "submit", class: "btn btn-primary" }, "Save settings");
      const err = h("p", { class: "error-text", role: "alert" });
      const form = h("form", { class: "stack" }, table(["Setting", "Value", "Source", "Default"], rows), h("div", { class: "row" }, saveBtn, err));
      form.addEventListener("submit", async (ev) => {
        ev.preventDefault();
        const changes = {};
        const bad = [];
        for (const [key, { input, s }] of inputs) {
          const v = input.value.trim();
          if (v === String(s.value ?? "")) continue;
          const value = v === "" ? null : s.type === "str" ? v : Number(v);
          // Number("soon") is NaN, which JSON would send as null (= back to the default)
          if (typeof value === "number" && !Number.isFinite(value)) bad.push(key);
          changes[key] = value;
        }
        if (bad.length) { err.textContent = `Not a number: ${bad.join(", ")}`; return; }
        if (!Object.keys(changes).length) { err.textContent = "Nothing changed."; return; }
        try {
          const res = await api("PUT", "/api/v1/settings", changes);
          toast(`Saved ${res.updated.join(", ")}`, "ok");
          loadSettings();
        } catch (e) { err.textContent = e.message; }
      });
      replace(sections.settings, h("p", { class: "muted small" }, `Written to ${data.config_path}.`), form);
    } catch (err) { unavailable(sections.settings, "Settings", err); }
  }

  // -- presets ----------------------------------------------------------------------------
  async function loadPresets() {
    try {
      const presets = await get("/api/v1/presets", opts);
      const star = presets.find((p) => p.name === "*");
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
          loadPresets();
        } catch (e) { err.textContent = e.message; }
      });
      const rows = presets.filter((p) => p.name !== "*").map((p) => h("tr", {},
        h("td", {}, h("strong", {}, p.name), p.description ? h("span", { class: "sub" }, p.description) : null),
        h("td", {}, p.model || "—"),
        h("td", { class: "mono small" }, (p.flags || []).map(shellQuote).join(" ")),
        h("td", {}, h("div", { class: "actions" },
          h("a", { class: "btn btn-sm", href: `#/launch?preset=${encodeURIComponent(p.name)}` }, "Open in Launch"),
          h("button", { type: "button", class: "btn btn-sm btn-danger", "aria-label": `Delete preset ${p.name}`, onclick: async () => {
            if (!confirmAction(`Delete preset ${p.name}?`)) return;
            try { await api("DELETE", `/api/v1/presets/${seg(p.name)}`); } catch (e) { toast(e.message, "error"); }
            loadPresets();
          } }, "Delete")))));
      replace(sections.presets, form, table(["Name", "Model", "Flags", ""], rows, "No presets: save one from the Launch view."));
    } catch (err) { unavailable(sections.presets, "Presets", err); }
  }

  loadBuilds();
  get("/api/v1/builds/jobs", opts).then((jobs) => {
    const active = jobs.filter((j) => !["done", "failed", "cancelled"].includes(j.state));
    if (active.length) trackJob(active[active.length - 1]);
  }).catch(() => {});
  loadKeys();
  loadSettings();
  loadPresets();
  return () => stop.abort();
}
