// Nodes: the corral daemons this one links to, each with its state, versions, GPUs (free
// of total), instance and model counts and when it last answered; linking one (name, URL
// and an admin key made there) and forgetting one.
//
// Live: GET /api/v1/nodes answers from the daemon's memory (its last poll of each node),
// so it is read every 3 s, and at once on the event stream's ``node`` events.
//
// The key is typed into a password field, sent once in the POST and cleared from the
// field right after, whatever the answer: the page never shows it nor keeps it.

import { api, follow, get, seg } from "../api.js";
import { badge, confirmAction, h, labelled, meter, replace, toast } from "../dom.js";
import { ago, bytes, when } from "../format.js";

const POLL_MS = 3000;

export function mount(root) {
  const stop = new AbortController();
  const listBox = h("div", { id: "node-list", class: "grid node-grid" }, h("p", { class: "loading" }, "Loading nodes…"));
  const summary = h("span", { class: "muted small", id: "node-summary", role: "status" });
  const ctx = { refresh: null, local: null };
  replace(root,
    h("div", { class: "view-head" }, h("h1", {}, "Nodes"), summary),
    h("section", { "aria-label": "Linked nodes" }, listBox),
    addForm(() => ctx.refresh()));

  let timer = null;
  let busy = false;
  ctx.refresh = async () => {
    if (busy) return;
    busy = true;
    try {
      const nodes = await get("/api/v1/nodes", { signal: stop.signal });
      renderNodes(listBox, summary, nodes, ctx);
    } catch (err) {
      if (!stop.signal.aborted) replace(listBox, h("p", { class: "error-text", role: "alert" }, err.message));
    } finally {
      busy = false;
    }
  };
  get("/healthz", { signal: stop.signal }).then((info) => { ctx.local = info.version; }).catch(() => {});
  const tick = () => ctx.refresh().finally(() => {
    if (!stop.signal.aborted) { clearTimeout(timer); timer = setTimeout(tick, POLL_MS); }
  });
  tick();
  follow("/api/v1/events", (ev) => { if (ev.event === "node") ctx.refresh(); }, { signal: stop.signal })
    .catch(() => { /* no event stream: the poll alone */ });
  return () => { stop.abort(); clearTimeout(timer); };
}

function renderNodes(box, summary, nodes, ctx) {
  const up = nodes.filter((n) => n.state === "up").length;
  summary.textContent = nodes.length ? `${nodes.length} linked · ${up} up` : "";
  if (!nodes.length) {
    replace(box, h("p", { class: "empty" },
      "No node linked yet. A node is another machine running corral serve: make an admin key there " +
      "(corral keys create controller) and link it below."));
    return;
  }
  replace(box, nodes.map((n) => nodeCard(n, ctx)));
}

function nodeCard(n, ctx) {
  const remove = h("button", { type: "button", class: "btn btn-sm btn-danger", "aria-label": `Remove node ${n.name}` }, "Remove");
  remove.addEventListener("click", async () => {
    if (!confirmAction(`Remove node ${n.name}? Its daemon and instances keep running; this daemon only stops using it.`)) return;
    remove.disabled = true;
    try {
      await api("DELETE", `/api/v1/nodes/${seg(n.name)}`);
      toast(`Removed node ${n.name}`, "ok");
    } catch (err) {
      toast(`${n.name}: ${err.message}`, "error");
    }
    ctx.refresh();
  });
  const q = `?node=${encodeURIComponent(n.name)}`;
  return h("article", { class: "card node-card", "data-node": n.name, "data-state": n.state },
    h("div", { class: "card-head" }, h("h2", {}, n.name), badge(n.state), h("span", { class: "spacer" }), remove),
    h("p", { class: "mono small muted node-url" }, n.url),
    n.error ? h("p", { class: "error-text node-error" }, n.error) : null,
    h("dl", { class: "kv" },
      h("dt", {}, "corral"), h("dd", { class: "node-version" }, n.corral_version || "—",
        ctx.local && n.corral_version && n.corral_version !== ctx.local
          ? h("span", { class: "muted small" }, ` (this daemon: ${ctx.local})`) : null),
      h("dt", {}, "llama.cpp"), h("dd", { class: "node-llama" }, n.llama_cpp_version || "—"),
      h("dt", {}, "Instances"), h("dd", { class: "node-instances" }, counted(n.instances, n.instances_ready)),
      h("dt", {}, "Models"), h("dd", { class: "node-models" }, n.models ?? "—"),
      h("dt", {}, "RAM free"), h("dd", {}, bytes(n.ram_free)),
      h("dt", {}, "Last seen"), h("dd", { title: when(n.last_seen) }, ago(n.last_seen),
        n.misses ? h("span", { class: "muted small" }, ` · ${n.misses} missed`) : null)),
    gpus(n),
    h("div", { class: "actions node-links" },
      h("a", { class: "btn btn-sm", href: `#/dashboard${q}` }, "Instances"),
      h("a", { class: "btn btn-sm", href: `#/launch${q}` }, "Launch here"),
      h("a", { class: "btn btn-sm", href: `#/models${q}` }, "Models"),
      h("a", { class: "btn btn-sm", href: `#/logs${q}` }, "Logs")));
}

function counted(total, ready) {
  if (total === null || total === undefined) return "—";
  return ready === null || ready === undefined ? String(total) : `${total} (${ready} ready)`;
}

/** A bar per GPU: used of total, the label saying what is free. */
function gpus(n) {
  const list = Array.isArray(n.gpus) ? n.gpus : [];
  if (!list.length) {
    return h("p", { class: "muted small node-gpus" }, n.state === "up" || n.corral_version ? "No GPU: instances run on the CPU." : "GPUs not known yet.");
  }
  return h("div", { class: "stack node-gpus" }, list.map((g) => {
    const known = g.vram_total && g.vram_free !== null && g.vram_free !== undefined;
    const used = known ? g.vram_total - g.vram_free : 0;
    const frac = known ? used / g.vram_total : 0;
    return h("div", { class: "field node-gpu", "data-gpu": String(g.index) },
      h("span", { class: "field-label" }, `GPU ${g.index} · ${g.name || "unknown"}`),
      known ? meter(frac, `${bytes(g.vram_free)} free of ${bytes(g.vram_total)}`,
        { name: `GPU ${g.index} of ${n.name}`, class: frac > 0.95 ? "full" : frac > 0.8 ? "hot" : "" })
        : h("span", { class: "muted small" }, "memory not reported"));
  }));
}

/** The form linking a node; its one-line error under it. */
function addForm(refresh) {
  const name = h("input", { type: "text", id: "node-name", name: "name", required: true, maxlength: 64,
    placeholder: "gpu-box", autocomplete: "off" });
  const url = h("input", { type: "text", id: "node-url", name: "url", required: true, inputmode: "url",
    placeholder: "http://gpu-box:9380", autocomplete: "off", class: "mono" });
  const key = h("input", { type: "password", id: "node-key", name: "key", required: true,
    autocomplete: "new-password", placeholder: "crl_…" });
  const button = h("button", { type: "submit", class: "btn btn-primary", id: "node-add" }, "Link node");
  const error = h("p", { class: "field-error", id: "node-add-error", role: "alert" });
  const form = h("form", { id: "node-form", class: "stack", "aria-labelledby": "node-add-title", novalidate: true },
    h("div", { class: "form-grid" },
      labelled("node-name", "Name", name), labelled("node-url", "URL", url), labelled("node-key", "Admin key", key),
      h("div", { class: "field" }, button)),
    error,
    h("p", { class: "hint" }, "The key is an admin key made on the node (corral keys create controller). " +
      "It is sent once to this daemon, which checks it with the node and keeps it; this page does not."));
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const body = { name: name.value.trim(), url: url.value.trim(), key: key.value.trim() };
    key.value = ""; // never kept in the page, whatever the answer
    const missing = [["a name", body.name, name], ["a URL", body.url, url], ["the key", body.key, key]].find(([, v]) => !v);
    if (missing) { error.textContent = `Give ${missing[0]}.`; missing[2].focus(); return; }
    error.textContent = "";
    button.disabled = true;
    try {
      const added = await api("POST", "/api/v1/nodes", body);
      toast(`Linked node ${added.name}${added.corral_version ? ` (corral ${added.corral_version})` : ""}`, "ok");
      name.value = ""; url.value = "";
      refresh();
    } catch (err) {
      error.textContent = String(err.message).split("\n")[0];
      const at = err.status === 409 || /node name/.test(err.message) ? name : /\bkey\b/.test(err.message) ? key : url;
      at.focus();
    } finally {
      button.disabled = false;
      body.key = "";
    }
  });
  return h("section", { class: "card", "aria-labelledby": "node-add-title" },
    h("h2", { id: "node-add-title" }, "Link a node"), form);
}

