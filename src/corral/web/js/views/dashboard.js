// Dashboard: the host (CPU, RAM) and each GPU's VRAM, live; every instance with its
// state, model, port, the devices its memory plan put it on (and, once loaded, what
// llama-server really allocated there), uptime, restarts and tok/s, and the actions on it.
//
// Live: the daemon's event stream (/api/v1/events) triggers a refresh on every instance
// event; a 3 s poll keeps memory figures current and covers daemons without events.
//
// Nodes: once a node is linked, the nodes' instances join the table (GET
// /api/v1/nodes/instances, asked of the nodes on each refresh) with a Node column and a
// filter (all, this machine, one node; #/dashboard?node=NAME opens on one). A node's
// instance is stopped, started, restarted and deleted through the relay, and its Chat
// opens the chat view on its name (this daemon's /v1 relays it to the node); a node that
// did not answer is named under the table.

import { api, follow, get, seg } from "../api.js";
import { badge, confirmAction, h, meter, replace, table, toast } from "../dom.js";
import { basename, bytes, duration } from "../format.js";
import * as fleet from "../fleet.js";

const POLL_MS = 3000;
/** The filter's value for every machine ("" is this machine, else a node's name). */
const ALL = "*";

export function mount(root, { go, query }) {
  const hostBox = h("div", { class: "grid", id: "host" }, h("p", { class: "loading" }, "Reading host…"));
  const instBox = h("div", { id: "instances" }, h("p", { class: "loading" }, "Loading instances…"));
  const pick = fleet.picker("node-filter", "Show");
  replace(root,
    h("div", { class: "view-head" }, h("h1", {}, "Dashboard"), h("span", { class: "spacer" }),
      h("a", { class: "btn btn-primary", href: "#/launch" }, "Launch an instance")),
    h("section", { "aria-labelledby": "host-title" },
      h("h2", { id: "host-title", class: "hidden" }, "Host"), hostBox),
    h("section", { class: "card", "aria-labelledby": "inst-title" },
      h("div", { class: "card-head" }, h("h2", { id: "inst-title" }, "Instances"), h("span", { class: "spacer" }), pick.box),
      instBox));

  const stop = new AbortController();
  let timer = null;
  let busy = false;
  // the last answers, drawn again when the filter changes
  const seen = { instances: [], usage: null, nodes: [], remote: null, choice: query.get("node") ?? ALL };
  const draw = () => {
    pick.show(seen.nodes, seen.choice, [[ALL, "all nodes"]]);
    renderInstances(instBox, seen, { refresh, go });
  };
  pick.select.addEventListener("change", () => { seen.choice = pick.select.value; draw(); });

  async function refresh() {
    if (busy) return;
    busy = true;
    try {
      const signal = stop.signal;
      const [system, instances, usage, nodes, remote] = await Promise.all([
        get("/api/v1/system", { signal }),
        get("/api/v1/instances", { signal }),
        get("/api/v1/usage", { signal }).catch(() => null),
        fleet.listNodes(signal),
        get("/api/v1/nodes/instances", { signal }).catch(() => null), // [] fast without nodes
      ]);
      renderHost(hostBox, system);
      Object.assign(seen, { instances, usage, nodes, remote });
      draw();
    } catch (err) {
      if (!stop.signal.aborted) replace(instBox, h("p", { class: "error-text", role: "alert" }, err.message));
    } finally {
      busy = false;
    }
  }

  const schedule = () => { clearTimeout(timer); timer = setTimeout(tick, POLL_MS); };
  const tick = () => refresh().finally(() => { if (!stop.signal.aborted) schedule(); });
  tick();
  follow("/api/v1/events", (ev) => { if (ev.event === "instance" || ev.event === "node") refresh(); }, { signal: stop.signal })
    .catch(() => { /* an older daemon without events: polling alone */ });

  return () => { stop.abort(); clearTimeout(timer); };
}

function renderHost(box, sys) {
  const ramUsed = sys.ram_total - sys.ram_free;
  const cards = [h("div", { class: "card", "data-testid": "host-card" },
    h("h2", {}, "Host"),
    h("dl", { class: "kv" },
      h("dt", {}, "CPU"), h("dd", {}, sys.cpu_model || "unknown"),
      h("dt", {}, "Cores"), h("dd", {}, `${sys.cores} cores · ${sys.threads} threads`),
      h("dt", {}, "Backend"), h("dd", {}, sys.backend ? `${sys.backend.name} (${sys.backend.reason})` : "—")),
    typeof sys.cpu_percent === "number" ? h("div", { class: "field" },
      h("span", { class: "field-label" }, "CPU use"),
      meter(sys.cpu_percent / 100, `${Math.round(sys.cpu_percent)} %` +
        (sys.load_average ? ` · load ${sys.load_average.map((l) => l.toFixed(2)).join(" ")}` : ""),
      { name: "CPU use", class: sys.cpu_percent > 95 ? "full" : sys.cpu_percent > 80 ? "hot" : "" })) : null,
    h("div", { class: "field" }, h("span", { class: "field-label" }, "RAM"),
      usageMeter(ramUsed, sys.ram_total, "RAM")))];
  for (const gpu of sys.gpus || []) {
    const known = gpu.vram_total && gpu.vram_free !== null && gpu.vram_free !== undefined;
    cards.push(h("div", { class: "card", "data-testid": "gpu-card" },
      h("h2", {}, `GPU ${gpu.index}`),
      h("p", { class: "muted small" }, gpu.name, gpu.driver_version ? ` · driver ${gpu.driver_version}` : ""),
      h("div", { class: "field" }, h("span", { class: "field-label" }, "VRAM"),
        known ? usageMeter(gpu.vram_total - gpu.vram_free, gpu.vram_total, `GPU ${gpu.index} VRAM`)
          : h("span", { class: "muted" }, "not reported"))));
  }
  if (!(sys.gpus || []).length) {
    cards.push(h("div", { class: "card" }, h("h2", {}, "GPUs"),
      h("p", { class: "muted" }, "No GPU found: instances run on the CPU.")));
  }
  replace(box, cards);
}

function usageMeter(used, total, name) {
  const frac = total ? used / total : 0;
  return meter(frac, `${bytes(used)} / ${bytes(total)} (${Math.round(frac * 100)} %)`,
    { name, class: frac > 0.95 ? "full" : frac > 0.8 ? "hot" : "" });
}

function tokensPerSecond(usage, name) {
  const u = usage && usage.instances ? usage.instances[name] : null;
  return u && u.tokens_per_second ? `${u.tokens_per_second.toFixed(1)}` : "—";
}

/** This machine's instances and, once a node is linked, the nodes' (``node`` set), filtered. */
function shownInstances(seen) {
  const remote = seen.nodes.length && seen.remote ? seen.remote.instances || [] : [];
  const all = [...seen.instances.map((i) => ({ ...i, node: "" })), ...remote];
  return seen.choice === ALL ? all : all.filter((i) => i.node === seen.choice);
}

function renderInstances(box, seen, { refresh, go }) {
  const now = Date.now() / 1000;
  const withNodes = seen.nodes.length > 0;
  const readyHere = new Set(seen.instances.filter((i) => i.state === "ready").map((i) => i.name));
  const ctx = { refresh, go, readyHere };
  const rows = shownInstances(seen).map((inst) => {
    const live = ["starting", "ready", "unhealthy"].includes(inst.state);
    const uptime = live && inst.started_at ? duration(now - inst.started_at) : "—";
    return h("tr", { "data-instance": inst.name, "data-node": inst.node || null },
      h("td", {}, h("strong", {}, inst.name),
        inst.origin === "router" ? h("span", { class: "sub" }, "started by the router") : null),
      withNodes ? h("td", { class: "node-cell" }, inst.node || h("span", { class: "muted" }, "this machine")) : null,
      h("td", {}, badge(inst.state),
        inst.last_error && !live ? h("span", { class: "sub", title: inst.last_error }, inst.last_error.split("\n")[0]) : null),
      h("td", {}, basename(inst.model), h("span", { class: "sub" }, inst.model)),
      h("td", { class: "num" }, inst.port),
      devicesCell(inst.placement),
      h("td", { class: "num" }, uptime),
      h("td", { class: "num" }, inst.restarts),
      h("td", { class: "num" }, inst.node ? "—" : tokensPerSecond(seen.usage, inst.name)),
      h("td", {}, actions(inst, live, ctx)));
  });
  const columns = ["Name", withNodes ? "Node" : null, "State", "Model", "Port", "Devices", "Uptime", "Restarts", "tok/s", "Actions"]
    .filter(Boolean);
  const empty = seen.choice && seen.choice !== ALL && withNodes
    ? `No instances on ${seen.choice || "this machine"}.`
    : "No instances. Launch one, or send a chat request to a model: the router starts it.";
  const numeric = new Set(["Port", "Uptime", "Restarts", "tok/s"]);
  replace(box, table(columns, rows, empty), unreachable(seen));
  box.querySelectorAll("th").forEach((th, i) => { if (numeric.has(columns[i])) th.classList.add("num"); });
}

/** One line per node that did not answer for its instances (shown only when it matters). */
function unreachable(seen) {
  const why = seen.nodes.length && seen.remote ? Object.entries(seen.remote.unreachable || {}) : [];
  const shown = why.filter(([node]) => seen.choice === ALL || seen.choice === node);
  if (!shown.length) return null;
  return h("ul", { class: "node-unreachable small", id: "nodes-unreachable" },
    shown.map(([node, text]) => h("li", { "data-node": node }, h("strong", {}, node), ": ", text)));
}

/**
 * One line per device the plan uses: "gpu0 2.1 GB planned", and once llama-server has
 * reported its buffers, "gpu0 2.0 GB real / 2.1 GB planned". "—" when not planned
 * (--no-fit, -ngl/-ts/--device fixed by the user, or a model that cannot be estimated).
 */
function devicesCell(placement) {
  const cell = h("td", { class: "devices-cell", "data-testid": "devices" });
  if (!placement || typeof placement !== "object") { cell.textContent = "—"; return cell; }
  const planned = new Map();
  for (const d of placement.devices || []) if (d && Number(d.used_bytes) > 0) planned.set(String(d.id), d);
  const real = placement.real && typeof placement.real === "object" ? placement.real : null;
  const ids = [...new Set([...planned.keys(), ...Object.keys(real || {})])];
  const lines = ids.map((id) => {
    const d = planned.get(id);
    const plannedText = d ? `${bytes(d.used_bytes)} planned` : "not planned";
    const text = real && id in real ? `${id} ${bytes(real[id])} real / ${plannedText}` : `${id} ${plannedText}`;
    return h("span", { class: "sub", "data-device": id, title: d && d.layers ? `${d.layers} layers` : null }, text);
  });
  if (placement.fits === false) lines.push(h("span", { class: "sub error-text" }, "does not fit"));
  if (!lines.length) cell.textContent = "—"; else replace(cell, lines);
  return cell;
}

/**
 * Why the Chat button of a node's instance cannot reach it, or null. Chat goes through
 * this daemon's /v1, which routes by name and serves a name from its own ready instance
 * before any node's: a node's instance named like one ready here would not be asked.
 */
function chatBlocked(inst, readyHere) {
  if (!inst.node || !readyHere.has(inst.name)) return null;
  return `This machine's own ${inst.name} is ready: chat by that name goes to it, not to ${inst.node}`;
}

/**
 * The actions on one instance; a node's go through the relay. Chat goes through this
 * daemon's /v1/chat/completions (which relays a name only a node has to that node); no
 * Open on a node's row: its llama-server listens on the node's own loopback.
 */
function actions(inst, live, { refresh, go, readyHere }) {
  const path = `${fleet.base(inst.node)}/api/v1/instances/${seg(inst.name)}`;
  const who = inst.node ? `${inst.name} on ${inst.node}` : inst.name;
  const call = (verb, method = "POST") => async (ev) => {
    ev.currentTarget.disabled = true;
    try {
      if (method === "DELETE") await api("DELETE", path);
      else await api("POST", `${path}/${verb}`);
      toast(`${who}: ${verb === "start" ? "starting" : verb === "stop" ? "stopped" : verb === "restart" ? "restarting" : "removed"}`, "ok");
    } catch (err) {
      toast(`${who}: ${err.message}`, "error");
    }
    refresh();
  };
  const label = (verb) => `${verb} ${who}`;
  const blocked = chatBlocked(inst, readyHere);
  const logs = `#/logs/${encodeURIComponent(inst.name)}${inst.node ? `?node=${encodeURIComponent(inst.node)}` : ""}`;
  return h("div", { class: "actions" },
    live || inst.desired === "running"
      ? h("button", { type: "button", class: "btn btn-sm", onclick: call("stop"), "aria-label": label("Stop") }, "Stop")
      : h("button", { type: "button", class: "btn btn-sm", onclick: call("start"), "aria-label": label("Start") }, "Start"),
    h("button", { type: "button", class: "btn btn-sm", onclick: call("restart"), "aria-label": label("Restart") }, "Restart"),
    h("a", { class: "btn btn-sm", href: logs, "aria-label": label("Logs of") }, "Logs"),
    h("button", { type: "button", class: "btn btn-sm", disabled: inst.state !== "ready" || Boolean(blocked),
      title: blocked, onclick: () => go("chat", "", { model: inst.name }), "aria-label": label("Chat with") }, "Chat"),
    inst.node ? null : h("a", { class: "btn btn-sm", href: inst.url, target: "_blank", rel: "noopener noreferrer",
      "aria-label": `Open the llama-server page of ${inst.name}` }, "Open ↗"),
    live ? null : h("button", { type: "button", class: "btn btn-sm btn-danger", "aria-label": label("Delete"),
      onclick: (ev) => { if (confirmAction(`Delete instance ${who}?`)) call("delete", "DELETE")(ev); } }, "Delete"));
}
