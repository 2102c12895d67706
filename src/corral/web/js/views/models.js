// Models: the local index with GGUF metadata; Hub search, a repo's quants and pulls with
// live progress (bytes, speed, ETA) and cancel; delete; import a local path.
//
// Once a node is linked, a Node picker heads the view: #/models?node=BOX shows that node's
// index, downloads and Hub (its own settings), pulls there and imports its paths, all
// through this daemon's relay (``base``, the prefix of the chosen machine's API).

import { api, follow, get, seg } from "../api.js";
import { badge, confirmAction, field, h, meter, replace, table, toast } from "../dom.js";
import { basename, bytes, count, duration, tokens, when } from "../format.js";
import * as fleet from "../fleet.js";

export function mount(root, { go, query }) {
  const stop = new AbortController();
  const node = query.get("node") || "";
  const base = fleet.base(node);
  const nodePick = fleet.picker("models-node");
  nodePick.select.addEventListener("change", () => go("models", "", nodePick.select.value ? { node: nodePick.select.value } : null));
  fleet.listNodes(stop.signal).then((nodes) => nodePick.show(nodes, node)).catch(() => {});
  const followed = new Set();
  const localBox = h("div", { id: "local-models" }, h("p", { class: "loading" }, "Loading models…"));
  const pullBox = h("div", { id: "pulls" });
  const hubBox = h("div", { id: "hub-results" });

  async function loadLocal() {
    try {
      renderLocal(localBox, await get(`${base}/api/v1/models`, { signal: stop.signal }), { loadLocal, go, node });
    } catch (err) {
      if (!stop.signal.aborted) replace(localBox, h("p", { class: "error-text", role: "alert" }, err.message));
    }
  }

  const pulls = new Map();
  function showPull(job) {
    pulls.set(job.id, job);
    renderPulls(pullBox, [...pulls.values()], cancelPull);
  }
  async function cancelPull(job) {
    try { showPull(await api("DELETE", `${base}/api/v1/pulls/${seg(job.id)}`)); } catch (err) { toast(err.message, "error"); }
  }
  function track(job) {
    showPull(job);
    if (followed.has(job.id) || !["queued", "running"].includes(job.state)) return;
    followed.add(job.id);
    follow(`${base}/api/v1/pulls/${seg(job.id)}/events`, (ev) => {
      const data = JSON.parse(ev.data);
      if (data.id !== job.id) return;
      const before = pulls.get(job.id).state; // the stream ends with the final view again: one toast
      showPull({ ...pulls.get(job.id), ...data });
      if (data.state === before) return;
      if (data.state === "done") { toast(`Pulled ${data.ref}${node ? ` on ${node}` : ""}`, "ok"); loadLocal(); }
      if (data.state === "failed") toast(`${data.ref}: ${data.error}`, "error");
    }, { signal: stop.signal }).catch((err) => toast(err.message, "error"))
      .finally(() => followed.delete(job.id));
  }
  async function pull(ref) {
    try { track(await api("POST", `${base}/api/v1/pulls`, { ref })); } catch (err) { toast(`${ref}: ${err.message}`, "error"); }
  }

  replace(root,
    h("div", { class: "view-head" }, h("h1", {}, "Models"), nodePick.box),
    h("section", { class: "card", "aria-labelledby": "local-title" },
      h("div", { class: "card-head" }, h("h2", { id: "local-title" }, node ? `Models on ${node}` : "Local models")), localBox,
      importForm(loadLocal, base)),
    h("section", { class: "card", "aria-labelledby": "pulls-title" },
      h("h2", { id: "pulls-title" }, node ? `Downloads on ${node}` : "Downloads"), pullBox),
    h("section", { class: "card", "aria-labelledby": "hub-title" },
      h("h2", { id: "hub-title" }, "Search the Hub"), searchForm(hubBox, pull, stop.signal, base), hubBox));

  loadLocal();
  get(`${base}/api/v1/pulls`, { signal: stop.signal }).then((jobs) => {
    jobs.slice(-10).forEach(track);
    if (!jobs.length) renderPulls(pullBox, [], cancelPull);
  }).catch(() => {});
  return () => stop.abort();
}

function renderLocal(box, models, { loadLocal, go, node }) {
  const base = fleet.base(node);
  const rows = models.map((m) => h("tr", { "data-model": m.name },
    h("td", {}, h("strong", {}, m.name), h("span", { class: "sub" }, m.id)),
    h("td", {}, m.architecture || "—"),
    h("td", {}, m.size_label || count(m.parameter_count)),
    h("td", {}, m.quantization || "—"),
    h("td", { class: "num" }, tokens(m.context_length)),
    h("td", { class: "num" }, bytes(m.size), m.files.length > 1 ? h("span", { class: "sub" }, `${m.files.length} parts`) : null),
    h("td", {}, m.source === "hub" ? m.repo : "local",
      h("span", { class: "sub file-name" }, m.filename || basename(m.path))),
    h("td", {}, h("div", { class: "actions" },
      h("button", { type: "button", class: "btn btn-sm", onclick: () => go("launch", "", node ? { model: m.name, node } : { model: m.name }),
        "aria-label": `Launch ${m.name}` }, "Launch"),
      node ? null : h("button", { type: "button", class: "btn btn-sm", onclick: () => go("chat", "", { model: m.name }),
        "aria-label": `Chat with ${m.name}` }, "Chat"),
      h("button", { type: "button", class: "btn btn-sm btn-danger", "aria-label": `Delete ${m.name}`,
        onclick: async () => {
          const what = m.owned ? "and its downloaded files" : "from the index (the files stay)";
          if (!confirmAction(`Delete ${m.name} ${what}?`)) return;
          try { await api("DELETE", `${base}/api/v1/models/${seg(m.id)}`); toast(`Deleted ${m.name}`, "ok"); } catch (err) { toast(err.message, "error"); }
          loadLocal();
        } }, "Delete")))));
  const cols = ["Name", "Arch", "Params", "Quant", "Context", "Size", "Source", "Actions"];
  replace(box, table(cols, rows, "No models yet: pull one from the Hub below, or import a GGUF file."));
}

function importForm(loadLocal, base) {
  const path = h("input", { type: "text", name: "path", required: true, placeholder: "/data/models/model.gguf or a directory", class: "grow" });
  const name = h("input", { type: "text", name: "name", placeholder: "optional", maxlength: 64 });
  const out = h("div", { role: "status" });
  const form = h("form", { class: "row bottom", "aria-label": "Import a local model" },
    h("label", { class: "field grow" }, h("span", { class: "field-label" }, "Import a path"), path),
    field("Name", name),
    h("button", { type: "submit", class: "btn" }, "Import"));
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const body = { path: path.value.trim() };
    if (name.value.trim()) body.name = name.value.trim();
    try {
      const res = await api("POST", `${base}/api/v1/models/import`, body);
      replace(out, h("p", { class: "muted" }, `Imported ${res.models.length} model(s).`),
        res.skipped.map((s) => h("p", { class: "error-text" }, s)));
      path.value = ""; name.value = "";
      loadLocal();
    } catch (err) {
      replace(out, h("p", { class: "error-text", role: "alert" }, err.message));
    }
  });
  return h("div", { class: "stack import" }, form, out);
}

function searchForm(box, pull, signal, base) {
  const q = h("input", { type: "search", name: "q", required: true, placeholder: "e.g. gemma 270m", class: "grow", "aria-label": "Search the Hub" });
  const form = h("form", { class: "row", role: "search" }, q, h("button", { type: "submit", class: "btn btn-primary" }, "Search"));
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    replace(box, h("p", { class: "loading" }, "Searching…"));
    try {
      const found = await get(`${base}/api/v1/hub/search?q=${encodeURIComponent(q.value.trim())}&limit=30`, { signal });
      renderSearch(box, found, pull, signal, base);
    } catch (err) {
      replace(box, h("p", { class: "error-text", role: "alert" }, err.message));
    }
  });
  return form;
}

function renderSearch(box, repos, pull, signal, base) {
  if (!repos.length) { replace(box, h("p", { class: "empty" }, "No GGUF repository matches.")); return; }
  replace(box, h("ul", { class: "stack", "aria-label": "Hub results" }, repos.map((r) => {
    const quants = h("div", { class: "quants" });
    const btn = h("button", { type: "button", class: "btn btn-sm", "aria-expanded": "false",
      "aria-label": `Quants of ${r.id}` }, "Quants");
    btn.addEventListener("click", async () => {
      if (btn.getAttribute("aria-expanded") === "true") {
        btn.setAttribute("aria-expanded", "false"); replace(quants); return;
      }
      btn.setAttribute("aria-expanded", "true");
      replace(quants, h("p", { class: "loading" }, "Listing files…"));
      try {
        renderQuants(quants, r.id, await get(`${base}/api/v1/hub/quants?repo=${encodeURIComponent(r.id)}`, { signal }), pull);
      } catch (err) {
        replace(quants, h("p", { class: "error-text", role: "alert" }, err.message));
      }
    });
    return h("li", { class: "hub-repo", "data-repo": r.id },
      h("div", { class: "row" }, h("strong", { class: "grow" }, r.id),
        h("span", { class: "muted small" }, `${count(r.downloads)} downloads · ${count(r.likes)} likes`,
          r.updated ? ` · updated ${String(r.updated).slice(0, 10)}` : ""), btn),
      quants);
  })));
}

function renderQuants(box, repo, groups, pull) {
  const rows = groups.map((g) => h("tr", { "data-quant": g.quant },
    h("td", {}, h("strong", {}, g.quant)),
    h("td", { class: "num" }, bytes(g.size)),
    h("td", { class: "num" }, g.parts),
    h("td", {}, g.files.map((f) => h("span", { class: "sub" }, f))),
    h("td", {}, h("button", { type: "button", class: "btn btn-sm btn-primary", "aria-label": `Pull ${repo}:${g.quant}`,
      onclick: () => pull(`${repo}:${g.quant}`) }, "Pull"))));
  replace(box, table(["Quant", "Size", "Parts", "Files", ""], rows, "This repository has no GGUF files."));
}

function renderPulls(box, jobs, cancel) {
  const rows = jobs.slice().reverse().map((j) => {
    const frac = j.total ? j.done / j.total : (j.state === "done" ? 1 : 0);
    const active = ["queued", "running"].includes(j.state);
    const label = `${Math.floor(frac * 100)} % · ${bytes(j.done)} / ${bytes(j.total)}`
      + (active && j.speed ? ` · ${bytes(j.speed)}/s · ETA ${duration(j.eta)}` : "");
    return h("tr", { "data-pull": j.id, "data-state": j.state },
      h("td", {}, h("strong", {}, j.ref), h("span", { class: "sub" }, when(j.created_at))),
      h("td", {}, badge(j.state), j.error ? h("span", { class: "sub error-text" }, j.error) : null),
      h("td", { class: "grow" }, meter(frac, label, { name: `Download of ${j.ref}` })),
      h("td", {}, active ? h("button", { type: "button", class: "btn btn-sm btn-danger",
        "aria-label": `Cancel ${j.ref}`, onclick: () => cancel(j) }, "Cancel") : null));
  });
  replace(box, table(["Reference", "State", "Progress", ""], rows, "No downloads."));
}
