// Launch: model (or preset) and build, then the installed build's whole flag catalog as a
// searchable, sectioned editor with typed inputs, inline validation, the resulting
// command line, launching, and saving the set as a preset.
//
// Memory: as the form changes (debounced with the plan), POST /api/v1/fit answers where
// the launch would go: a bar per device (planned use against free memory), the flags the
// plan suggests (one click writes them into the form, which fixes them: the daemon plans
// no more what the user set), and the planner's notes. Unchecking "Plan memory" launches
// exactly the flags given (fit: false, as `corral run --no-fit`).
//
// Node: once a node is linked, the first field chooses the machine (#/launch?node=BOX
// opens on one). Everything the view asks then goes to that node's own API through this
// daemon's relay (``v.base``): its models, builds, presets and flag catalog, the plan
// and the memory bars of its devices, and the launch itself.
//
// The names, restart policies and port range the form checks come from the daemon
// (GET /api/v1/schema), never typed here. One object, ``v``, holds the view: ``v.el`` its
// controls, the rest what the form knows (catalog, values, errors...); every function
// below takes it.

import { api, fullMatch, get, schema, seg } from "../api.js";
import { h, labelled, meter, replace, toast } from "../dom.js";
import { bytes, redactArgv, shellQuote, shellSplit } from "../format.js";
import * as flags from "../flags.js";
import * as fleet from "../fleet.js";

/** Flags corral sets itself from the form (the daemon refuses them in the flag list). */
const OWNED = new Set(["--model", "--port"]);
// Flags that make llama-server print something and exit: never what a launch wants.
const EXITS = new Set(["--help", "--version", "--cache-list", "--completion-bash", "--list-devices"]);
const PLAN_DELAY_MS = 300;

export async function mount(root, { go, query }) {
  const facts = await schema();
  const node = query.get("node") || "";
  const v = {
    schema: facts,
    el: controls(facts, query),
    stop: new AbortController(),
    node, base: fleet.base(node), // the machine launched on: "" is this one
    catalog: [], sections: [], values: {}, errors: {}, rows: new Map(), builds: [], presets: null,
    // flags whose value is a secret (the daemon's ``secret_flags``): masked in the
    // command line and typed into password fields.
    secret: new Set(),
    suggested: {},
    planTimer: null,
    planSeq: 0,
  };
  replace(root, h("div", { class: "view-head" }, h("h1", {}, "Launch")), layout(v.el));
  v.el.fitWhere.textContent = node ? ` on ${node}` : "";
  wire(v, go);
  fleet.listNodes(v.stop.signal).then((nodes) => v.el.node.show(nodes, v.node)).catch(() => {});
  await loadLists(v);
  await loadCatalog(v);
  if (query.get("preset")) { v.el.preset.value = query.get("preset"); await applyPreset(v, query.get("preset")); }
  return () => { v.stop.abort(); clearTimeout(v.planTimer); };
}

function wire(v, go) {
  const { el } = v;
  el.form.addEventListener("submit", (ev) => { ev.preventDefault(); launch(v, go); });
  el.saveBtn.addEventListener("click", () => savePreset(v));
  el.preset.addEventListener("change", () => applyPreset(v, el.preset.value));
  el.build.addEventListener("change", () => loadCatalog(v));
  for (const c of [el.model, el.port, el.extra, el.name]) c.addEventListener("input", () => updateCommand(v));
  for (const c of [el.preset, el.build, el.restart, el.fitOn]) c.addEventListener("change", () => schedulePlan(v));
  el.fitApply.addEventListener("click", () => applySuggested(v));
  el.node.select.addEventListener("change", () => switchNode(v, el.node.select.value));
  el.search.addEventListener("input", () => filter(v));
  el.onlySet.addEventListener("change", () => filter(v));
}

// -- the form ------------------------------------------------------------------------------
/** Every control of the view, by name; the name pattern and policies from ``facts``. */
function controls(facts, query) {
  const nameRule = facts.instance_name;
  const el = {
    node: fleet.picker("launch-node"), // {box, select, show}: hidden while no node is linked
    model: h("input", { type: "text", id: "launch-model", name: "model", list: "model-options", required: true,
      placeholder: "model name, id or path to a .gguf", value: query.get("model") || "" }),
    modelOptions: h("datalist", { id: "model-options" }),
    preset: h("select", { id: "launch-preset", name: "preset" }, h("option", { value: "" }, "(none)")),
    build: h("select", { id: "launch-build", name: "build" }, h("option", { value: "" }, "default build")),
    name: h("input", { type: "text", id: "launch-name", name: "name", maxlength: nameRule.max_length,
      placeholder: "from the model", pattern: nameRule.pattern }),
    port: h("input", { type: "text", id: "launch-port", name: "port", inputmode: "numeric", placeholder: "auto" }),
    restart: h("select", { id: "launch-restart", name: "restart" }, facts.restart_policies.map((p) =>
      h("option", { value: p, selected: p === facts.default_restart }, p))),
    idleTtl: h("input", { type: "text", id: "launch-idle-ttl", name: "idle_ttl", inputmode: "decimal",
      placeholder: "daemon default" }),
    pinned: h("input", { type: "checkbox", id: "launch-pinned", name: "pinned" }),
    env: h("input", { type: "text", id: "launch-env", name: "env", class: "mono",
      placeholder: "CUDA_VISIBLE_DEVICES=0 GGML_CUDA_ENABLE_UNIFIED_MEMORY=1" }),
    extra: h("input", { type: "text", id: "launch-extra", name: "extra", class: "mono",
      placeholder: "more llama-server arguments, e.g. --lora a.gguf", "aria-describedby": "launch-extra-error" }),
    extraError: h("p", { id: "launch-extra-error", class: "field-error", role: "alert" }),
    cmdline: h("pre", { class: "cmdline", id: "cmdline", "aria-label": "Command line" }),
    // What the daemon says it would run (POST /api/v1/instances/plan): '*' defaults and the
    // preset merged, flags checked by the build's catalog, the name and port it would pick.
    planNote: h("p", { class: "muted small", id: "plan-note", role: "status" }),
    launchError: h("div", { id: "launch-error", class: "launch-error hidden", role: "alert" }),
    launchBtn: h("button", { type: "submit", class: "btn btn-primary", id: "launch-button" }, "Launch"),
    presetName: h("input", { type: "text", id: "preset-name", placeholder: "preset name",
      maxlength: nameRule.max_length, "aria-label": "Preset name" }),
    saveBtn: h("button", { type: "button", class: "btn", id: "save-preset" }, "Save as preset"),
    search: h("input", { type: "search", id: "flag-search", placeholder: "Search flags by name or help…",
      "aria-label": "Search flags", class: "grow" }),
    onlySet: h("input", { type: "checkbox", id: "only-set" }),
    shown: h("span", { class: "muted small", role: "status" }),
    editor: h("div", { id: "flag-editor" }, h("p", { class: "loading" }, "Reading the flag catalog…")),
    fitWhere: h("span", { class: "muted fit-where", id: "fit-where" }),
    fitOn: h("input", { type: "checkbox", id: "launch-fit", name: "fit", checked: true }),
    fitStatus: h("p", { class: "small", id: "fit-status", role: "status" }),
    fitBars: h("div", { class: "fit-bars", id: "fit-devices" }),
    fitFlags: h("code", { class: "mono", id: "fit-flags" }),
    fitApply: h("button", { type: "button", class: "btn btn-sm", id: "fit-apply" }, "Apply"),
    fitNotes: h("ul", { class: "fit-notes small", id: "fit-notes" }),
  };
  el.fitSuggest = h("div", { class: "row fit-suggest hidden", id: "fit-suggest" },
    h("span", { class: "field-label" }, "Suggested flags"), el.fitFlags, el.fitApply);
  return el;
}

/** The four cards of the view, in a form (``el.form``). */
function layout(el) {
  el.form = h("form", { class: "stack", id: "launch-form", novalidate: true },
    h("section", { class: "card" },
      h("h2", {}, "What to run"),
      h("div", { class: "form-grid" },
        el.node.box,
        labelled("launch-model", "Model", el.model, el.modelOptions),
        labelled("launch-preset", "Preset", el.preset),
        labelled("launch-build", "Build", el.build),
        labelled("launch-name", "Instance name", el.name),
        labelled("launch-port", "Port", el.port),
        labelled("launch-restart", "Restart policy", el.restart),
        labelled("launch-idle-ttl", "Idle TTL (seconds, 0 = never)", el.idleTtl),
        h("label", { class: "row small" }, el.pinned, "pinned (never stopped when idle nor evicted)")),
      labelled("launch-env", "Environment", el.env),
      labelled("launch-extra", "Extra arguments", el.extra, el.extraError)),
    h("section", { class: "card" },
      h("h2", {}, "Command line"), el.cmdline, el.planNote,
      h("div", { class: "row" }, el.launchBtn, h("span", { class: "spacer grow" }), el.presetName, el.saveBtn),
      el.launchError),
    h("section", { class: "card", id: "fit-card", "aria-labelledby": "fit-title" },
      h("div", { class: "card-head row" }, h("h2", { id: "fit-title" }, "Memory", el.fitWhere),
        h("label", { class: "row small" }, el.fitOn, "Plan memory (unchecked: launch exactly these flags, --no-fit)")),
      el.fitStatus, el.fitBars, el.fitSuggest, el.fitNotes),
    h("section", { class: "card", "aria-labelledby": "flags-title" },
      h("div", { class: "flag-tools row" }, h("h2", { id: "flags-title" }, "Flags"), el.search,
        h("label", { class: "row small" }, el.onlySet, "only set"), el.shown),
      el.editor));
  return el.form;
}

// -- the command line and the daemon's plan ------------------------------------------------
function selectedBuild(v) {
  return v.builds.find((b) => String(b.id) === v.el.build.value) || v.builds.find((b) => b.is_default);
}

function tokens(v) {
  return flags.toTokens(v.catalog, v.values);
}

/** The Extra arguments as tokens; null (and the error shown under them) when malformed. */
function extraTokens(v) {
  try {
    const t = shellSplit(v.el.extra.value);
    setExtraError(v, null);
    return t;
  } catch (err) {
    setExtraError(v, `Extra arguments: ${err.message}`);
    return null;
  }
}

function setExtraError(v, msg) {
  v.el.extraError.textContent = msg || "";
  if (msg) v.el.extra.setAttribute("aria-invalid", "true"); else v.el.extra.removeAttribute("aria-invalid");
}

function updateCommand(v) {
  const { el } = v;
  const b = selectedBuild(v);
  const argv = [b ? b.path : "llama-server", "--model", el.model.value.trim() || "<model>",
    "--host", "127.0.0.1", "--port", el.port.value.trim() || "<auto>", ...tokens(v), ...(extraTokens(v) || [])];
  el.cmdline.textContent = redactArgv(argv, v.secret).map(shellQuote).join(" ");
  schedulePlan(v);
}

function schedulePlan(v) {
  clearTimeout(v.planTimer);
  v.planTimer = setTimeout(() => refreshPlan(v), PLAN_DELAY_MS);
}

/** The port typed, as a number in the schema's range; null when empty or out of it. */
function portValue(v) {
  const text = v.el.port.value.trim();
  const p = Number(text);
  const { min, max } = v.schema.port;
  return text && Number.isInteger(p) && p >= min && p <= max ? p : null;
}

/** What to ask the daemon to plan; null while the form cannot be planned yet. */
function planBody(v) {
  const { el } = v;
  if (Object.keys(v.errors).length) return null; // shown at their rows already
  const more = extraTokens(v);
  if (more === null || (!el.model.value.trim() && !el.preset.value)) return null;
  const body = { restart: el.restart.value, flags: [...tokens(v), ...more] };
  if (el.model.value.trim()) body.model = el.model.value.trim();
  if (el.preset.value) body.preset = el.preset.value;
  if (el.name.value.trim()) body.name = el.name.value.trim();
  const port = portValue(v);
  if (port !== null) body.port = port;
  if (el.build.value) body.build = Number(el.build.value);
  return body;
}

async function refreshPlan(v) {
  const { el } = v;
  const body = planBody(v);
  const seq = ++v.planSeq;
  if (!body) { el.planNote.textContent = ""; el.planNote.classList.remove("error-text"); showFit(v, null); return; }
  if (!el.fitOn.checked) body.fit = false;
  let plan;
  try {
    plan = await api("POST", `${v.base}/api/v1/instances/plan`, body);
    if (seq !== v.planSeq || v.stop.signal.aborted) return;
    learnSecrets(v, plan.secret_flags);
    el.cmdline.textContent = redactArgv(plan.argv, v.secret).map(shellQuote).join(" ");
    el.planNote.classList.remove("error-text");
    el.planNote.textContent = `As the daemon would run it: instance ${plan.name}, port ${plan.port}` +
      (plan.preset ? `, preset ${plan.preset}` : "") + ".";
  } catch (err) {
    if (seq !== v.planSeq || v.stop.signal.aborted) return;
    el.planNote.classList.add("error-text");
    el.planNote.textContent = err.message;
    if (err.code === "no_room") await fitOf(v, body, seq, { refused: err }); // where it falls short
    else showFit(v, null);
    return;
  }
  if (!el.fitOn.checked) { showFit(v, { off: true }); return; }
  // The launch's own plan (other instances' memory counted) when the daemon plans it;
  // else (-ngl/-ts/--device set here) what those flags would take, from /api/v1/fit.
  if (plan.placement) { showFit(v, { fit: plan.placement, added: plan.placement.added || [] }); return; }
  await fitOf(v, body, seq, { fixed: true });
}

/** The /api/v1/fit plan of ``body``, shown unless a newer form state superseded it. */
async function fitOf(v, body, seq, how) {
  try {
    const fit = await api("POST", `${v.base}/api/v1/fit`, body);
    if (seq === v.planSeq && !v.stop.signal.aborted) showFit(v, { fit, ...how });
  } catch (err) {
    if (seq === v.planSeq && !v.stop.signal.aborted) showFit(v, { error: how.refused || err, refused: how.refused });
  }
}

// -- memory plan ---------------------------------------------------------------------------
/** The plan's flags that differ from what the form sets: {long: value}. */
function suggestions(v, planFlags) {
  const planned = flags.fromTokens(v.catalog, planFlags).values;
  const typed = { ...flags.fromTokens(v.catalog, extraTokens(v) || []).values, ...v.values };
  return Object.fromEntries(Object.entries(planned).filter(([long, value]) => typed[long] !== value));
}

/**
 * null: nothing to plan yet; {off}: --no-fit; {error}; {fit, added}: the launch's
 * placement (``added``: the [flag, value] pairs it adds); {fit, fixed}: a /api/v1/fit
 * plan of flags the user placed themselves (``fit.flags``: the whole list).
 */
function showFit(v, result) {
  const { el } = v;
  v.suggested = {};
  el.fitStatus.classList.remove("error-text", "ok-text");
  el.fitSuggest.classList.add("hidden");
  replace(el.fitBars);
  replace(el.fitNotes);
  if (!result) { el.fitStatus.textContent = "Choose a model to see where it goes."; return; }
  if (result.off) { el.fitStatus.textContent = "Not planned: the launch runs exactly the flags given."; return; }
  if (result.error) {
    el.fitStatus.classList.add("error-text");
    el.fitStatus.textContent = `${result.refused ? "Refused" : "No memory plan"}: ${result.error.message}`;
    return;
  }
  showPlacement(v, result);
}

/** A plan's verdict, a bar per device, the flags it suggests and its notes. */
function showPlacement(v, result) {
  const { el } = v;
  const fit = result.fit;
  const fits = fit.fits && !result.refused;
  el.fitStatus.classList.add(fits ? "ok-text" : "error-text");
  el.fitStatus.textContent = result.refused ? `Refused: ${result.refused.message}`
    : `${fits ? "Fits" : "Does not fit"}: context ${fit.context}, KV cache ${fit.cache_type_k}/${fit.cache_type_v}` +
      (result.fixed ? " (placed by your flags: the daemon adds nothing)." : ".");
  replace(el.fitBars, (fit.devices || []).map(deviceBar));
  v.suggested = !fits ? {} : suggestions(v, result.added ? result.added.flat()
    .filter((t) => t !== null && t !== undefined).map(String) : fit.flags || []);
  const suggested = flags.toTokens(v.catalog, v.suggested);
  if (suggested.length) {
    el.fitFlags.textContent = redactArgv(suggested, v.secret).map(shellQuote).join(" ");
    el.fitSuggest.classList.remove("hidden");
  }
  replace(el.fitNotes, (fit.notes || []).map((n) => h("li", {}, String(n))));
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
function applySuggested(v) {
  const list = Object.entries(v.suggested || {});
  if (!list.length) return;
  const inExtra = flags.fromTokens(v.catalog, extraTokens(v) || []);
  if (list.some(([long]) => long in inExtra.values)) {
    // the flag is typed in Extra arguments: rewrite that text without it
    v.el.extra.value = flags.toTokens(v.catalog, Object.fromEntries(Object.entries(inExtra.values)
      .filter(([long]) => !(long in v.suggested)))).concat(inExtra.rest).map(shellQuote).join(" ");
  }
  for (const [long, value] of list) v.values[long] = value;
  renderEditor(v);
  updateCommand(v);
  toast(`Applied ${list.map(([long]) => long).join(", ")}`, "ok");
}

// -- the flag editor -----------------------------------------------------------------------
/** Remember which flags hold secrets; their inputs become password fields. */
function learnSecrets(v, list) {
  if (!Array.isArray(list)) return;
  v.secret = new Set(list);
  for (const [long, row] of v.rows) maskInput(v, long, row.input);
}

function maskInput(v, long, input) {
  if (v.secret.has(long) && input.tagName === "INPUT" && input.type === "text") {
    input.type = "password";
    input.autocomplete = "off";
  }
}

function setRowError(v, long, message) {
  const row = v.rows.get(long);
  if (message) v.errors[long] = message; else delete v.errors[long];
  if (!row) return;
  row.error.textContent = message || "";
  row.el.classList.toggle("is-invalid", Boolean(message));
  if (message) row.input.setAttribute("aria-invalid", "true"); else row.input.removeAttribute("aria-invalid");
}

function setValue(v, flag, value) {
  const empty = value === "" || value === null || value === undefined || value === false;
  if (empty) delete v.values[flag.long]; else v.values[flag.long] = value;
  const row = v.rows.get(flag.long);
  if (row) row.el.classList.toggle("is-set", !empty);
  setRowError(v, flag.long, empty ? null : flags.validate(flag, value));
  updateCommand(v);
  if (v.el.onlySet.checked) filter(v);
}

/** The typed input of one flag: checkbox, select (switch with a negation, choices) or text. */
function inputFor(v, flag, id, describedBy) {
  const kind = flags.kindOf(flag);
  const current = v.values[flag.long];
  const common = { id, "aria-describedby": describedBy, "data-flag": flag.long };
  let input;
  if (kind === "switch" && !flags.negationOf(flag)) {
    input = h("input", { ...common, type: "checkbox", checked: Boolean(current) });
    input.addEventListener("change", () => setValue(v, flag, input.checked ? "on" : ""));
    return input;
  }
  if (kind === "switch" || kind === "choice") {
    const opts = kind === "switch"
      ? [["", "default"], ["on", flag.long], ["off", flags.negationOf(flag)]]
      : [["", "default"], ...flag.choices.map((c) => [c, c])];
    input = h("select", common, opts.map(([value, t]) => h("option", { value, selected: value === (current || "") }, t)));
    input.addEventListener("change", () => setValue(v, flag, input.value));
    return input;
  }
  if (flag.repeatable) {
    input = h("textarea", { ...common, rows: 2, placeholder: `${flag.value_hint} (one per line)`, value: current || "" });
  } else {
    input = h("input", { ...common, type: "text", placeholder: flag.value_hint || "",
      inputmode: kind === "number" ? "decimal" : null, value: current || "" });
  }
  input.addEventListener("input", () => setValue(v, flag, input.value));
  return input;
}

function renderEditor(v) {
  v.rows.clear();
  const bySection = new Map(v.sections.map((s) => [s, []]));
  for (const flag of v.catalog) {
    if (!bySection.has(flag.section)) bySection.set(flag.section, []);
    bySection.get(flag.section).push(flag);
  }
  const sections = [...bySection].filter(([, list]) => list.length).map(([section, list]) =>
    h("details", { class: "flag-section", open: true, "data-section": section },
      h("summary", {}, `${section} (${list.length})`), list.map((flag) => renderRow(v, flag))));
  replace(v.el.editor, sections);
  filter(v);
}

function renderRow(v, flag) {
  const key = flag.long.replace(/^-+/, "");
  const id = `flag-${key}`;
  const error = h("p", { class: "field-error", id: `${id}-error`, role: "alert" });
  const input = inputFor(v, flag, id, `${id}-help ${id}-error`);
  const meta = [flag.value_hint ? `value: ${flag.value_hint}` : "switch",
    flag.default ? `default: ${flag.default}` : null, flag.env ? `env: ${flag.env}` : null,
    flag.repeatable ? "repeatable" : null].filter(Boolean).join(" · ");
  const el = h("div", { class: "flag-row", "data-flag": flag.long },
    h("div", {}, h("label", { class: "flag-name", for: id }, flags.label(flag)),
      flag.negations && flag.negations.length ? h("div", { class: "flag-meta" }, `off: ${flag.negations.join(", ")}`) : null),
    h("div", { class: "flag-input" }, input),
    h("div", { id: `${id}-help` }, h("div", { class: "flag-help" }, flag.help || ""), h("div", { class: "flag-meta" }, meta)),
    error);
  v.rows.set(flag.long, { el, input, error, flag });
  maskInput(v, flag.long, input);
  if (flag.long in v.values) {
    el.classList.add("is-set");
    setRowError(v, flag.long, flags.validate(flag, v.values[flag.long]));
  }
  return el;
}

function filter(v) {
  const matches = new Set(flags.search(v.catalog, v.el.search.value).map((f) => f.long));
  let n = 0;
  for (const [long, row] of v.rows) {
    const visible = matches.has(long) && (!v.el.onlySet.checked || long in v.values);
    row.el.classList.toggle("hidden", !visible);
    n += visible;
  }
  for (const sec of v.el.editor.querySelectorAll(".flag-section")) {
    sec.classList.toggle("hidden", !sec.querySelector(".flag-row:not(.hidden)"));
  }
  v.el.shown.textContent = `${n} of ${v.catalog.length} flags`;
}

// -- data ----------------------------------------------------------------------------------
/**
 * Launch on ``node`` ("" for this machine) from now on: its models, builds, presets and
 * flag catalog are read again there. What is typed stays; the build goes back to the
 * node's default (build ids are each machine's own), a preset it lacks is unset.
 */
async function switchNode(v, node) {
  v.node = node;
  v.base = fleet.base(node);
  v.el.fitWhere.textContent = node ? ` on ${node}` : "";
  const { preset } = v.el;
  const kept = preset.value;
  await loadLists(v);
  v.el.build.value = "";
  preset.value = [...preset.options].some((o) => o.value === kept) ? kept : "";
  await loadCatalog(v);
}

async function loadCatalog(v) {
  const { el } = v;
  const q = el.build.value ? `?build=${encodeURIComponent(el.build.value)}` : "";
  try {
    const base = v.base;
    const cat = await get(`${base}/api/v1/flags${q}`, { signal: v.stop.signal });
    if (base !== v.base) return; // another node was chosen meanwhile: its catalog comes
    learnSecrets(v, cat.secret_flags); // when the catalog says so; the plan always does
    v.catalog = cat.flags.filter((f) => !OWNED.has(f.long) && !EXITS.has(f.long)); // set above, by corral
    v.sections = cat.sections;
    // values of flags this build lacks are kept out of the command, not lost silently
    const known = new Set(cat.flags.map((f) => f.long));
    const lost = Object.keys(v.values).filter((k) => !known.has(k));
    if (lost.length) {
      el.extra.value = [el.extra.value, ...lost.map((k) => `${k} ${v.values[k]}`)].filter(Boolean).join(" ");
      lost.forEach((k) => delete v.values[k]);
    }
    renderEditor(v);
    updateCommand(v);
  } catch (err) {
    if (!v.stop.signal.aborted) replace(el.editor, h("p", { class: "error-text", role: "alert" }, `Flag catalog: ${err.message}`));
  }
}

async function loadLists(v) {
  const { el } = v;
  const { base, stop: { signal } } = v;
  const [models, builds, presets] = await Promise.all([
    get(`${base}/api/v1/models`, { signal }).catch(() => []),
    get(`${base}/api/v1/builds`, { signal }).catch(() => []),
    get(`${base}/api/v1/presets`, { signal }).catch(() => null),
  ]);
  if (base !== v.base) return; // another node was chosen meanwhile
  replace(el.modelOptions, models.map((m) => h("option", { value: m.name }, `${m.name} · ${m.quantization || ""}`)));
  v.builds = builds;
  replace(el.build, h("option", { value: "" }, "default build"), builds.map((b) =>
    h("option", { value: String(b.id) }, `#${b.id} ${b.version || b.path}${b.is_default ? " (default)" : ""}`)));
  v.presets = Array.isArray(presets) ? presets : null;
  el.preset.disabled = el.saveBtn.disabled = !v.presets;
  el.saveBtn.title = el.presetName.title = v.presets ? "" : "presets are not available on this daemon";
  if (v.presets) {
    replace(el.preset, h("option", { value: "" }, "(none)"), v.presets.filter((p) => p.name !== "*")
      .map((p) => h("option", { value: p.name }, p.name)));
  }
}

async function applyPreset(v, presetName) {
  if (!presetName) return;
  const { el } = v;
  try {
    const p = await get(`${v.base}/api/v1/presets/${seg(presetName)}`, { signal: v.stop.signal });
    if (p.model) el.model.value = p.model;
    if (p.build !== null && p.build !== undefined) el.build.value = String(p.build);
    if (p.restart) el.restart.value = p.restart;
    el.idleTtl.value = p.idle_ttl ?? "";
    el.pinned.checked = Boolean(p.pinned);
    el.env.value = Object.entries(p.env || {}).map(([k, value]) => shellQuote(`${k}=${value}`)).join(" ");
    el.presetName.value = p.name;
    await loadCatalog(v);
    const { values, rest } = flags.fromTokens(v.catalog, p.flags || []);
    v.values = values;
    el.extra.value = rest.map(shellQuote).join(" ");
    renderEditor(v);
    updateCommand(v);
    toast(`Preset ${p.name} loaded`, "ok");
  } catch (err) {
    toast(`Preset ${presetName}: ${err.message}`, "error");
  }
}

// -- checks --------------------------------------------------------------------------------
function showLaunchError(v, msg) {
  v.el.launchError.textContent = msg || "";
  v.el.launchError.classList.toggle("hidden", !msg);
}

/** Shows the error and focuses ``control``; always null, for ``return refuse(...)``. */
function refuse(v, msg, control) {
  showLaunchError(v, msg);
  control.focus();
  return null;
}

/** Every flag checked again; the whole flag list, or null (and the first bad one shown). */
function checkAll(v) {
  for (const flag of v.catalog) {
    if (flag.long in v.values) setRowError(v, flag.long, flags.validate(flag, v.values[flag.long]));
  }
  const bad = Object.keys(v.errors);
  const more = extraTokens(v);
  if (bad.length) {
    showLaunchError(v, `Fix ${bad.length} invalid flag value${bad.length > 1 ? "s" : ""} first: ${bad.map((k) => v.errors[k]).join("; ")}`);
    const row = v.rows.get(bad[0]);
    if (row) { row.el.classList.remove("hidden"); row.input.focus(); }
    return null;
  }
  if (more === null) return refuse(v, v.el.extraError.textContent, v.el.extra);
  return [...tokens(v), ...more];
}

/** The name in ``control`` if it is empty or matches the schema's; else null, refused. */
function checkedName(v, control, what) {
  const value = control.value.trim();
  const rule = v.schema.instance_name;
  if (!value || fullMatch(rule.pattern, value)) {
    control.removeAttribute("aria-invalid");
    return value;
  }
  control.setAttribute("aria-invalid", "true");
  return refuse(v, `Invalid ${what} '${value}': it must match ${rule.pattern} ` +
    `(at most ${rule.max_length} characters).`, control);
}

/** "A=1 B='x y'" -> {A: "1", B: "x y"}; null (and an inline error) when malformed. */
function envValues(v) {
  const out = {};
  try {
    for (const pair of shellSplit(v.el.env.value)) {
      const eq = pair.indexOf("=");
      if (eq < 1) throw new Error(`'${pair}' is not NAME=value`);
      const key = pair.slice(0, eq);
      if (!fullMatch(v.schema.env_name.pattern, key)) throw new Error(`'${key}' is not a variable name`);
      out[key] = pair.slice(eq + 1);
    }
  } catch (err) {
    return refuse(v, `Environment: ${err.message}`, v.el.env);
  }
  return out;
}

/** The launch options shared by Launch and Save as preset; null when one is invalid. */
function options(v) {
  const { el } = v;
  const out = { restart: el.restart.value };
  const vars = envValues(v);
  if (vars === null) return null;
  if (Object.keys(vars).length) out.env = vars;
  if (el.idleTtl.value.trim()) {
    const ttl = Number(el.idleTtl.value.trim());
    if (!Number.isFinite(ttl) || ttl < 0) return refuse(v, "Idle TTL must be a number of seconds >= 0.", el.idleTtl);
    out.idle_ttl = ttl;
  }
  if (el.pinned.checked) out.pinned = true;
  if (el.build.value) out.build = Number(el.build.value);
  return out;
}

function showServerError(v, err) {
  const flag = flags.flagInMessage(v.catalog, err.message);
  const row = flag && v.rows.get(flag.long);
  if (row && flag.long in v.values) {
    setRowError(v, flag.long, err.message);
    row.el.classList.remove("hidden");
  } else if (flag || /argument/.test(err.message)) {
    setExtraError(v, err.message);
  }
  showLaunchError(v, err.detail ? `${err.message}\n${err.detail}` : err.message);
}

// -- actions -------------------------------------------------------------------------------
/** The body of POST /api/v1/instances; null (and the first problem shown) when invalid. */
function launchBody(v) {
  const { el } = v;
  const argv = checkAll(v);
  if (!argv) return null;
  if (!el.model.value.trim() && !el.preset.value) return refuse(v, "Choose a model (or a preset that names one).", el.model);
  const opts = options(v);
  if (!opts) return null;
  const body = { ...opts, flags: argv };
  if (!el.fitOn.checked) body.fit = false;
  if (el.model.value.trim()) body.model = el.model.value.trim();
  const name = checkedName(v, el.name, "instance name");
  if (name === null) return null;
  if (name) body.name = name;
  if (el.port.value.trim()) {
    const port = portValue(v);
    const { min, max } = v.schema.port;
    if (port === null) return refuse(v, `Port must be ${min} to ${max}.`, el.port);
    body.port = port;
  }
  if (el.preset.value) body.preset = el.preset.value;
  return body;
}

async function launch(v, go) {
  showLaunchError(v, null);
  const body = launchBody(v);
  if (!body) return;
  v.el.launchBtn.disabled = true;
  try {
    const inst = await api("POST", `${v.base}/api/v1/instances`, body);
    toast(`Launched ${inst.name} on ${v.node ? `node ${v.node}, ` : ""}port ${inst.port}`, "ok");
    go("dashboard", "", v.node ? { node: v.node } : null);
  } catch (err) {
    showServerError(v, err);
  } finally {
    v.el.launchBtn.disabled = false;
  }
}

async function savePreset(v) {
  const { el } = v;
  showLaunchError(v, null);
  const argv = checkAll(v);
  if (!argv) return;
  if (!el.presetName.value.trim()) { refuse(v, "Give the preset a name.", el.presetName); return; }
  const pname = checkedName(v, el.presetName, "preset name");
  if (pname === null) return;
  const opts = options(v);
  if (!opts) return;
  const body = { ...opts, flags: argv };
  if (el.model.value.trim()) body.model = el.model.value.trim();
  try {
    const res = await api("PUT", `${v.base}/api/v1/presets/${seg(pname)}`, body);
    toast(`Preset ${pname} saved${res && res.warnings && res.warnings.length ? `: ${res.warnings.join("; ")}` : ""}`, "ok");
    await loadLists(v);
    el.preset.value = pname;
  } catch (err) {
    showServerError(v, err);
  }
}
