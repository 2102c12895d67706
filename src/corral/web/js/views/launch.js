// Launch: model (or preset) and build, then the installed build's whole flag catalog as a
// searchable, sectioned editor with typed inputs, inline validation, the resulting
// command line, launching, and saving the set as a preset.
//
// Memory: as the form changes (debounced with the plan), POST /api/v1/fit answers where
// the launch would go: a bar per device (planned use against free memory), the flags the
// plan suggests (one click writes them into the form, which fixes them: the daemon plans
// no more what the user set), and the planner's notes. Unchecking "Plan memory" launches
// exactly the flags given (fit: false, as `corral run --no-fit`).

import { api, get, seg } from "../api.js";
import { h, meter, replace, toast } from "../dom.js";
import { bytes, redactArgv, shellQuote, shellSplit } from "../format.js";
import * as flags from "../flags.js";

/** Flags corral sets itself from the form (the daemon refuses them in the flag list). */
const OWNED = new Set(["--model", "--port"]);
// Flags that make llama-server print something and exit: never what a launch wants.
const EXITS = new Set(["--help", "--version", "--cache-list", "--completion-bash", "--list-devices"]);

export async function mount(root, { go, query }) {
  // secret: flags whose value is a secret (the daemon's ``secret_flags``): masked in the
  // command line and typed into password fields.
  const state = { catalog: [], sections: [], values: {}, errors: {}, rows: new Map(), builds: [], presets: null,
    secret: new Set(), suggested: {} };
  const stop = new AbortController();

  const model = h("input", { type: "text", id: "launch-model", name: "model", list: "model-options", required: true,
    placeholder: "model name, id or path to a .gguf", value: query.get("model") || "" });
  const modelOptions = h("datalist", { id: "model-options" });
  const preset = h("select", { id: "launch-preset", name: "preset" }, h("option", { value: "" }, "(none)"));
  const build = h("select", { id: "launch-build", name: "build" }, h("option", { value: "" }, "default build"));
  const name = h("input", { type: "text", id: "launch-name", name: "name", maxlength: 64, placeholder: "from the model",
    pattern: "[A-Za-z0-9][A-Za-z0-9._-]{0,63}" });
  const port = h("input", { type: "text", id: "launch-port", name: "port", inputmode: "numeric", placeholder: "auto" });
  const restart = h("select", { id: "launch-restart", name: "restart" },
    ["on-failure", "always", "never"].map((p) => h("option", { value: p }, p)));
  const idleTtl = h("input", { type: "text", id: "launch-idle-ttl", name: "idle_ttl", inputmode: "decimal",
    placeholder: "daemon default" });
  const pinned = h("input", { type: "checkbox", id: "launch-pinned", name: "pinned" });
  const env = h("input", { type: "text", id: "launch-env", name: "env", class: "mono",
    placeholder: "CUDA_VISIBLE_DEVICES=0 GGML_CUDA_ENABLE_UNIFIED_MEMORY=1" });
  const extra = h("input", { type: "text", id: "launch-extra", name: "extra", class: "mono",
    placeholder: "more llama-server arguments, e.g. --lora a.gguf", "aria-describedby": "launch-extra-error" });
  const extraError = h("p", { id: "launch-extra-error", class: "field-error", role: "alert" });
  const cmdline = h("pre", { class: "cmdline", id: "cmdline", "aria-label": "Command line" });
  // What the daemon says it would run (POST /api/v1/instances/plan): '*' defaults and the
  // preset merged, flags checked by the build's catalog, the name and port it would pick.
  const planNote = h("p", { class: "muted small", id: "plan-note", role: "status" });
  const launchError = h("div", { id: "launch-error", class: "launch-error hidden", role: "alert" });
  const launchBtn = h("button", { type: "submit", class: "btn btn-primary", id: "launch-button" }, "Launch");
  const presetName = h("input", { type: "text", id: "preset-name", placeholder: "preset name", maxlength: 64,
    "aria-label": "Preset name" });
  const saveBtn = h("button", { type: "button", class: "btn", id: "save-preset" }, "Save as preset");
  const search = h("input", { type: "search", id: "flag-search", placeholder: "Search flags by name or help…",
    "aria-label": "Search flags", class: "grow" });
  const onlySet = h("input", { type: "checkbox", id: "only-set" });
  const shown = h("span", { class: "muted small", role: "status" });
  const editor = h("div", { id: "flag-editor" }, h("p", { class: "loading" }, "Reading the flag catalog…"));
  const fitOn = h("input", { type: "checkbox", id: "launch-fit", name: "fit", checked: true });
  const fitStatus = h("p", { class: "small", id: "fit-status", role: "status" });
  const fitBars = h("div", { class: "fit-bars", id: "fit-devices" });
  const fitFlags = h("code", { class: "mono", id: "fit-flags" });
  const fitApply = h("button", { type: "button", class: "btn btn-sm", id: "fit-apply" }, "Apply");
  const fitSuggest = h("div", { class: "row fit-suggest hidden", id: "fit-suggest" },
    h("span", { class: "field-label" }, "Suggested flags"), fitFlags, fitApply);
  const fitNotes = h("ul", { class: "fit-notes small", id: "fit-notes" });

  const labelled = (id, text, control, extraNode) => h("div", { class: "field" },
    h("label", { class: "field-label", for: id }, text), control, extraNode || null);
  const form = h("form", { class: "stack", id: "launch-form", novalidate: true },
    h("section", { class: "card" },
      h("h2", {}, "What to run"),
      h("div", { class: "form-grid" },
        labelled("launch-model", "Model", model, modelOptions),
        labelled("launch-preset", "Preset", preset),
        labelled("launch-build", "Build", build),
        labelled("launch-name", "Instance name", name),
        labelled("launch-port", "Port", port),
        labelled("launch-restart", "Restart policy", restart),
        labelled("launch-idle-ttl", "Idle TTL (seconds, 0 = never)", idleTtl),
        h("label", { class: "row small" }, pinned, "pinned (never stopped when idle nor evicted)")),
      h("div", { class: "field" }, h("label", { class: "field-label", for: "launch-env" }, "Environment"), env),
      h("div", { class: "field" }, h("label", { class: "field-label", for: "launch-extra" }, "Extra arguments"), extra, extraError)),
    h("section", { class: "card" },
      h("h2", {}, "Command line"), cmdline, planNote,
      h("div", { class: "row" }, launchBtn, h("span", { class: "spacer grow" }), presetName, saveBtn),
      launchError),
    h("section", { class: "card", id: "fit-card", "aria-labelledby": "fit-title" },
      h("div", { class: "card-head row" }, h("h2", { id: "fit-title" }, "Memory"),
        h("label", { class: "row small" }, fitOn, "Plan memory (unchecked: launch exactly these flags, --no-fit)")),
      fitStatus, fitBars, fitSuggest, fitNotes),
    h("section", { class: "card", "aria-labelledby": "flags-title" },
      h("div", { class: "flag-tools row" }, h("h2", { id: "flags-title" }, "Flags"), search,
        h("label", { class: "row small" }, onlySet, "only set"), shown),
      editor));
  replace(root, h("div", { class: "view-head" }, h("h1", {}, "Launch")), form);

  // -- rendering --------------------------------------------------------------------------
  function selectedBuild() {
    return state.builds.find((b) => String(b.id) === build.value) || state.builds.find((b) => b.is_default);
  }

  function tokens() {
    return flags.toTokens(state.catalog, state.values);
  }

  function extraTokens() {
    try {
      const t = shellSplit(extra.value);
      setExtraError(null);
      return t;
    } catch (err) {
      setExtraError(`Extra arguments: ${err.message}`);
      return null;
    }
  }

  function setExtraError(msg) {
    extraError.textContent = msg || "";
    if (msg) extra.setAttribute("aria-invalid", "true"); else extra.removeAttribute("aria-invalid");
  }

  function updateCommand() {
    const b = selectedBuild();
    const argv = [b ? b.path : "llama-server", "--model", model.value.trim() || "<model>",
      "--host", "127.0.0.1", "--port", port.value.trim() || "<auto>", ...tokens(), ...(extraTokens() || [])];
    cmdline.textContent = redactArgv(argv, state.secret).map(shellQuote).join(" ");
    schedulePlan();
  }

  let planTimer = null;
  let planSeq = 0;
  function schedulePlan() {
    clearTimeout(planTimer);
    planTimer = setTimeout(refreshPlan, 300);
  }

  function planBody() {
    if (Object.keys(state.errors).length) return null; // shown at their rows already
    const more = extraTokens();
    if (more === null || (!model.value.trim() && !preset.value)) return null;
    const body = { restart: restart.value, flags: [...tokens(), ...more] };
    if (model.value.trim()) body.model = model.value.trim();
    if (preset.value) body.preset = preset.value;
    if (name.value.trim()) body.name = name.value.trim();
    const p = Number(port.value.trim());
    if (port.value.trim() && Number.isInteger(p) && p >= 1 && p <= 65535) body.port = p;
    if (build.value) body.build = Number(build.value);
    return body;
  }

  async function refreshPlan() {
    const body = planBody();
    const seq = ++planSeq;
    if (!body) { planNote.textContent = ""; planNote.classList.remove("error-text"); showFit(null); return; }
    if (!fitOn.checked) body.fit = false;
    let plan;
    try {
      plan = await api("POST", "/api/v1/instances/plan", body);
      if (seq !== planSeq || stop.signal.aborted) return;
      learnSecrets(plan.secret_flags);
      cmdline.textContent = redactArgv(plan.argv, state.secret).map(shellQuote).join(" ");
      planNote.classList.remove("error-text");
      planNote.textContent = `As the daemon would run it: instance ${plan.name}, port ${plan.port}` +
        (plan.preset ? `, preset ${plan.preset}` : "") + ".";
    } catch (err) {
      if (seq !== planSeq || stop.signal.aborted) return;
      planNote.classList.add("error-text");
      planNote.textContent = err.message;
      if (err.code === "no_room") await fitOf(body, seq, { refused: err }); // where it falls short
      else showFit(null);
      return;
    }
    if (!fitOn.checked) { showFit({ off: true }); return; }
    // The launch's own plan (other instances' memory counted) when the daemon plans it;
    // else (-ngl/-ts/--device set here) what those flags would take, from /api/v1/fit.
    if (plan.placement) { showFit({ fit: plan.placement, added: plan.placement.added || [] }); return; }
    await fitOf(body, seq, { fixed: true });
  }

  /** The /api/v1/fit plan of ``body``, shown unless a newer form state superseded it. */
  async function fitOf(body, seq, how) {
    try {
      const fit = await api("POST", "/api/v1/fit", body);
      if (seq === planSeq && !stop.signal.aborted) showFit({ fit, ...how });
    } catch (err) {
      if (seq === planSeq && !stop.signal.aborted) showFit({ error: how.refused || err, refused: how.refused });
    }
  }

  // -- memory plan --------------------------------------------------------------------------
  /** The plan's flags that differ from what the form sets: {long: value}. */
  function suggestions(planFlags) {
    const planned = flags.fromTokens(state.catalog, planFlags).values;
    const typed = { ...flags.fromTokens(state.catalog, extraTokens() || []).values, ...state.values };
    return Object.fromEntries(Object.entries(planned).filter(([long, v]) => typed[long] !== v));
  }

  /**
   * null: nothing to plan yet; {off}: --no-fit; {error}; {fit, added}: the launch's
   * placement (``added``: the [flag, value] pairs it adds); {fit, fixed}: a /api/v1/fit
   * plan of flags the user placed themselves (``fit.flags``: the whole list).
   */
  function showFit(result) {
    state.suggested = {};
    fitStatus.classList.remove("error-text", "ok-text");
    fitSuggest.classList.add("hidden");
    replace(fitBars);
    replace(fitNotes);
    if (!result) { fitStatus.textContent = "Choose a model to see where it goes."; return; }
    if (result.off) { fitStatus.textContent = "Not planned: the launch runs exactly the flags given."; return; }
    if (result.error) {
      fitStatus.classList.add("error-text");
      fitStatus.textContent = `${result.refused ? "Refused" : "No memory plan"}: ${result.error.message}`;
      return;
    }
    const fit = result.fit;
    const fits = fit.fits && !result.refused;
    fitStatus.classList.add(fits ? "ok-text" : "error-text");
    fitStatus.textContent = result.refused ? `Refused: ${result.refused.message}`
      : `${fits ? "Fits" : "Does not fit"}: context ${fit.context}, KV cache ${fit.cache_type_k}/${fit.cache_type_v}` +
        (result.fixed ? " (placed by your flags: the daemon adds nothing)." : ".");
    replace(fitBars, (fit.devices || []).map(deviceBar));
    state.suggested = !fits ? {} : suggestions(result.added ? result.added.flat()
      .filter((t) => t !== null && t !== undefined).map(String) : fit.flags || []);
    const tokens = flags.toTokens(state.catalog, state.suggested);
    if (tokens.length) {
      fitFlags.textContent = redactArgv(tokens, state.secret).map(shellQuote).join(" ");
      fitSuggest.classList.remove("hidden");
    }
    replace(fitNotes, (fit.notes || []).map((n) => h("li", {}, String(n))));
  }

  function deviceBar(d) {
    const used = Number(d.used_bytes) || 0;
    const free = Number(d.free_bytes) || 0;
    const frac = free ? used / free : used ? 1 : 0;
    const layers = d.layers ? ` · ${d.layers} layers` : "";
    return h("div", { class: "field fit-device", "data-device": String(d.id) },
      h("span", { class: "field-label" }, `${d.id} · ${d.name}`),
      meter(frac, `${bytes(used)} planned of ${bytes(free)} free${layers} (weights ${bytes(d.weights_bytes)}, ` +
        `KV ${bytes(d.kv_bytes)}, compute ${bytes(d.compute_bytes)})`,
      { name: `${d.id} memory`, class: used > free ? "full" : frac > 0.9 ? "hot" : "" }));
  }

  /** Write the suggested flags into the editor: set, they are the user's from now on. */
  function applySuggested() {
    const list = Object.entries(state.suggested || {});
    if (!list.length) return;
    const inExtra = flags.fromTokens(state.catalog, extraTokens() || []);
    if (list.some(([long]) => long in inExtra.values)) {
      // the flag is typed in Extra arguments: rewrite that text without it
      extra.value = flags.toTokens(state.catalog, Object.fromEntries(Object.entries(inExtra.values)
        .filter(([long]) => !(long in state.suggested)))).concat(inExtra.rest).map(shellQuote).join(" ");
    }
    for (const [long, v] of list) state.values[long] = v;
    renderEditor();
    updateCommand();
    toast(`Applied ${list.map(([long]) => long).join(", ")}`, "ok");
  }

  /** Remember which flags hold secrets; their inputs become password fields. */
  function learnSecrets(list) {
    if (!Array.isArray(list)) return;
    state.secret = new Set(list);
    for (const [long, row] of state.rows) maskInput(long, row.input);
  }

  function maskInput(long, input) {
    if (state.secret.has(long) && input.tagName === "INPUT" && input.type === "text") {
      input.type = "password";
      input.autocomplete = "off";
    }
  }

  function setRowError(long, message) {
    const row = state.rows.get(long);
    if (message) state.errors[long] = message; else delete state.errors[long];
    if (!row) return;
    row.error.textContent = message || "";
    row.el.classList.toggle("is-invalid", Boolean(message));
    if (message) row.input.setAttribute("aria-invalid", "true"); else row.input.removeAttribute("aria-invalid");
  }

  function setValue(flag, value) {
    const empty = value === "" || value === null || value === undefined || value === false;
    if (empty) delete state.values[flag.long]; else state.values[flag.long] = value;
    const row = state.rows.get(flag.long);
    if (row) row.el.classList.toggle("is-set", !empty);
    setRowError(flag.long, empty ? null : flags.validate(flag, value));
    updateCommand();
    if (onlySet.checked) filter();
  }

  function inputFor(flag, id, describedBy) {
    const kind = flags.kindOf(flag);
    const current = state.values[flag.long];
    const common = { id, "aria-describedby": describedBy, "data-flag": flag.long };
    let input;
    if (kind === "switch" && !flags.negationOf(flag)) {
      input = h("input", { ...common, type: "checkbox", checked: Boolean(current) });
      input.addEventListener("change", () => setValue(flag, input.checked ? "on" : ""));
      return input;
    }
    if (kind === "switch" || kind === "choice") {
      const opts = kind === "switch"
        ? [["", "default"], ["on", flag.long], ["off", flags.negationOf(flag)]]
        : [["", "default"], ...flag.choices.map((c) => [c, c])];
      input = h("select", common, opts.map(([v, t]) => h("option", { value: v, selected: v === (current || "") }, t)));
      input.addEventListener("change", () => setValue(flag, input.value));
      return input;
    }
    if (flag.repeatable) {
      input = h("textarea", { ...common, rows: 2, placeholder: `${flag.value_hint} (one per line)`, value: current || "" });
    } else {
      input = h("input", { ...common, type: "text", placeholder: flag.value_hint || "",
        inputmode: kind === "number" ? "decimal" : null, value: current || "" });
    }
    input.addEventListener("input", () => setValue(flag, input.value));
    return input;
  }

  function renderEditor() {
    state.rows.clear();
    const bySection = new Map(state.sections.map((s) => [s, []]));
    for (const flag of state.catalog) {
      if (!bySection.has(flag.section)) bySection.set(flag.section, []);
      bySection.get(flag.section).push(flag);
    }
    const sections = [...bySection].filter(([, list]) => list.length).map(([section, list]) => {
      const details = h("details", { class: "flag-section", open: true, "data-section": section },
        h("summary", {}, `${section} (${list.length})`), list.map(renderRow));
      return details;
    });
    replace(editor, sections);
    filter();
  }

  function renderRow(flag) {
    const key = flag.long.replace(/^-+/, "");
    const id = `flag-${key}`;
    const error = h("p", { class: "field-error", id: `${id}-error`, role: "alert" });
    const input = inputFor(flag, id, `${id}-help ${id}-error`);
    const meta = [flag.value_hint ? `value: ${flag.value_hint}` : "switch",
      flag.default ? `default: ${flag.default}` : null, flag.env ? `env: ${flag.env}` : null,
      flag.repeatable ? "repeatable" : null].filter(Boolean).join(" · ");
    const el = h("div", { class: "flag-row", "data-flag": flag.long },
      h("div", {}, h("label", { class: "flag-name", for: id }, flags.label(flag)),
        flag.negations && flag.negations.length ? h("div", { class: "flag-meta" }, `off: ${flag.negations.join(", ")}`) : null),
      h("div", { class: "flag-input" }, input),
      h("div", { id: `${id}-help` }, h("div", { class: "flag-help" }, flag.help || ""), h("div", { class: "flag-meta" }, meta)),
      error);
    state.rows.set(flag.long, { el, input, error, flag });
    maskInput(flag.long, input);
    if (flag.long in state.values) {
      el.classList.add("is-set");
      setRowError(flag.long, flags.validate(flag, state.values[flag.long]));
    }
    return el;
  }

  function filter() {
    const matches = new Set(flags.search(state.catalog, search.value).map((f) => f.long));
    let n = 0;
    for (const [long, row] of state.rows) {
      const visible = matches.has(long) && (!onlySet.checked || long in state.values);
      row.el.classList.toggle("hidden", !visible);
      n += visible;
    }
    for (const sec of editor.querySelectorAll(".flag-section")) {
      sec.classList.toggle("hidden", !sec.querySelector(".flag-row:not(.hidden)"));
    }
    shown.textContent = `${n} of ${state.catalog.length} flags`;
  }

  // -- data -------------------------------------------------------------------------------
  async function loadCatalog() {
    const q = build.value ? `?build=${encodeURIComponent(build.value)}` : "";
    try {
      const cat = await get(`/api/v1/flags${q}`, { signal: stop.signal });
      learnSecrets(cat.secret_flags); // when the catalog says so; the plan always does
      state.catalog = cat.flags.filter((f) => !OWNED.has(f.long) && !EXITS.has(f.long)); // set above, by corral
      state.sections = cat.sections;
      // values of flags this build lacks are kept out of the command, not lost silently
      const known = new Set(cat.flags.map((f) => f.long));
      const lost = Object.keys(state.values).filter((k) => !known.has(k));
      if (lost.length) {
        extra.value = [extra.value, ...lost.map((k) => `${k} ${state.values[k]}`)].filter(Boolean).join(" ");
        lost.forEach((k) => delete state.values[k]);
      }
      renderEditor();
      updateCommand();
    } catch (err) {
      if (!stop.signal.aborted) replace(editor, h("p", { class: "error-text", role: "alert" }, `Flag catalog: ${err.message}`));
    }
  }

  async function loadLists() {
    const [models, builds, presets] = await Promise.all([
      get("/api/v1/models", { signal: stop.signal }).catch(() => []),
      get("/api/v1/builds", { signal: stop.signal }).catch(() => []),
      get("/api/v1/presets", { signal: stop.signal }).catch(() => null),
    ]);
    replace(modelOptions, models.map((m) => h("option", { value: m.name }, `${m.name} · ${m.quantization || ""}`)));
    state.builds = builds;
    replace(build, h("option", { value: "" }, "default build"), builds.map((b) =>
      h("option", { value: String(b.id) }, `#${b.id} ${b.version || b.path}${b.is_default ? " (default)" : ""}`)));
    state.presets = Array.isArray(presets) ? presets : null;
    if (state.presets) {
      replace(preset, h("option", { value: "" }, "(none)"), state.presets.filter((p) => p.name !== "*")
        .map((p) => h("option", { value: p.name }, p.name)));
    } else {
      preset.disabled = true;
      saveBtn.disabled = true;
      saveBtn.title = presetName.title = "presets are not available on this daemon";
    }
  }

  async function applyPreset(presetNameValue) {
    if (!presetNameValue) return;
    try {
      const p = await get(`/api/v1/presets/${seg(presetNameValue)}`, { signal: stop.signal });
      if (p.model) model.value = p.model;
      if (p.build !== null && p.build !== undefined) build.value = String(p.build);
      if (p.restart) restart.value = p.restart;
      idleTtl.value = p.idle_ttl ?? "";
      pinned.checked = Boolean(p.pinned);
      env.value = Object.entries(p.env || {}).map(([k, v]) => shellQuote(`${k}=${v}`)).join(" ");
      presetName.value = p.name;
      await loadCatalog();
      const { values, rest } = flags.fromTokens(state.catalog, p.flags || []);
      state.values = values;
      extra.value = rest.map(shellQuote).join(" ");
      renderEditor();
      updateCommand();
      toast(`Preset ${p.name} loaded`, "ok");
    } catch (err) {
      toast(`Preset ${presetNameValue}: ${err.message}`, "error");
    }
  }

  // -- actions ----------------------------------------------------------------------------
  function showLaunchError(msg) {
    launchError.textContent = msg || "";
    launchError.classList.toggle("hidden", !msg);
  }

  function checkAll() {
    for (const flag of state.catalog) {
      if (flag.long in state.values) setRowError(flag.long, flags.validate(flag, state.values[flag.long]));
    }
    const bad = Object.keys(state.errors);
    const more = extraTokens();
    if (bad.length) {
      showLaunchError(`Fix ${bad.length} invalid flag value${bad.length > 1 ? "s" : ""} first: ${bad.map((k) => state.errors[k]).join("; ")}`);
      const row = state.rows.get(bad[0]);
      if (row) { row.el.classList.remove("hidden"); row.input.focus(); }
      return null;
    }
    if (more === null) { showLaunchError(extraError.textContent); extra.focus(); return null; }
    return [...tokens(), ...more];
  }

  /** "A=1 B='x y'" -> {A: "1", B: "x y"}; null (and an inline error) when malformed. */
  function envValues() {
    const out = {};
    try {
      for (const pair of shellSplit(env.value)) {
        const eq = pair.indexOf("=");
        if (eq < 1) throw new Error(`'${pair}' is not NAME=value`);
        out[pair.slice(0, eq)] = pair.slice(eq + 1);
      }
    } catch (err) {
      showLaunchError(`Environment: ${err.message}`);
      env.focus();
      return null;
    }
    return out;
  }

  /** The launch options shared by Launch and Save as preset; null when one is invalid. */
  function options() {
    const out = { restart: restart.value };
    const vars = envValues();
    if (vars === null) return null;
    if (Object.keys(vars).length) out.env = vars;
    if (idleTtl.value.trim()) {
      const ttl = Number(idleTtl.value.trim());
      if (!Number.isFinite(ttl) || ttl < 0) { showLaunchError("Idle TTL must be a number of seconds >= 0."); idleTtl.focus(); return null; }
      out.idle_ttl = ttl;
    }
    if (pinned.checked) out.pinned = true;
    if (build.value) out.build = Number(build.value);
    return out;
  }

  function showServerError(err) {
    const flag = flags.flagInMessage(state.catalog, err.message);
    const row = flag && state.rows.get(flag.long);
    if (row && flag.long in state.values) {
      setRowError(flag.long, err.message);
      row.el.classList.remove("hidden");
    } else if (flag || /argument/.test(err.message)) {
      setExtraError(err.message);
    }
    showLaunchError(err.detail ? `${err.message}\n${err.detail}` : err.message);
  }

  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    showLaunchError(null);
    const argv = checkAll();
    if (!argv) return;
    if (!model.value.trim() && !preset.value) { showLaunchError("Choose a model (or a preset that names one)."); model.focus(); return; }
    const opts = options();
    if (!opts) return;
    const body = { ...opts, flags: argv };
    if (!fitOn.checked) body.fit = false;
    if (model.value.trim()) body.model = model.value.trim();
    if (name.value.trim()) body.name = name.value.trim();
    if (port.value.trim()) {
      const p = Number(port.value.trim());
      if (!Number.isInteger(p) || p < 1 || p > 65535) { showLaunchError("Port must be 1 to 65535."); port.focus(); return; }
      body.port = p;
    }
    if (preset.value) body.preset = preset.value;
    launchBtn.disabled = true;
    try {
      const inst = await api("POST", "/api/v1/instances", body);
      toast(`Launched ${inst.name} on port ${inst.port}`, "ok");
      go("dashboard");
    } catch (err) {
      showServerError(err);
    } finally {
      launchBtn.disabled = false;
    }
  });

  saveBtn.addEventListener("click", async () => {
    showLaunchError(null);
    const argv = checkAll();
    const pname = presetName.value.trim();
    if (!argv) return;
    if (!pname) { showLaunchError("Give the preset a name."); presetName.focus(); return; }
    const opts = options();
    if (!opts) return;
    const body = { ...opts, flags: argv };
    if (model.value.trim()) body.model = model.value.trim();
    try {
      const res = await api("PUT", `/api/v1/presets/${seg(pname)}`, body);
      toast(`Preset ${pname} saved${res && res.warnings && res.warnings.length ? `: ${res.warnings.join("; ")}` : ""}`, "ok");
      await loadLists();
      preset.value = pname;
    } catch (err) {
      showServerError(err);
    }
  });

  preset.addEventListener("change", () => applyPreset(preset.value));
  build.addEventListener("change", loadCatalog);
  for (const el of [model, port, extra, name]) el.addEventListener("input", updateCommand);
  for (const el of [preset, build, restart, fitOn]) el.addEventListener("change", schedulePlan);
  fitApply.addEventListener("click", applySuggested);
  search.addEventListener("input", filter);
  onlySet.addEventListener("change", filter);

  await loadLists();
  await loadCatalog();
  if (query.get("preset")) { preset.value = query.get("preset"); await applyPreset(query.get("preset")); }
  return () => stop.abort();
}
