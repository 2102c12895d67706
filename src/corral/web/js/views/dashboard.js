// Dashboard: the host (CPU, RAM) and each GPU's VRAM, live; every instance with its
// state, model, port, the devices its memory plan put it on (and, once loaded, what
// llama-server really allocated there), uptime, restarts and tok/s, and the actions on it.
//
// Live: the daemon's event stream (/api/v1/events) triggers a refresh on every instance
// event; a 3 s poll keeps memory figures current and covers daemons without events.

import { api, follow, get, seg } from "../api.js";
import { badge, confirmAction, h, meter, replace, table, toast } from "../dom.js";
import { basename, bytes, duration } from "../format.js";

const POLL_MS = 3000;

export function mount(root, { go }) {
  const hostBox = h("div", { class: "grid", id: "host" }, h("p", { class: "loading" }, "Reading host…"));
  const instBox = h("div", { id: "instances" }, h("p", { class: "loading" }, "Loading instances…"));
  replace(root,
    h("div", { class: "view-head" }, h("h1", {}, "Dashboard"), h("span", { class: "spacer" }),
      h("a", { class: "btn btn-primary", href: "#/launch" }, "Launch an instance")),
    h("section", { "aria-labelledby": "host-title" },
      h("h2", { id: "host-title", class: "hidden" }, "Host"), hostBox),
    h("section", { class: "card", "aria-labelledby": "inst-title" },
      h("div", { class: "card-head" }, h("h2", { id: "inst-title" }, "Instances")), instBox));

  const stop = new AbortController();
  let timer = null;
  let busy = false;

  async function refresh() {
    if (busy) return;
    busy = true;
    try {
      const [system, instances, usage] = await Promise.all([
        get("/api/v1/system", { signal: stop.signal }),
        get("/api/v1/instances", { signal: stop.signal }),
        get("/api/v1/usage", { signal: stop.signal }).catch(() => null),
      ]);
      renderHost(hostBox, system);
      renderInstances(instBox, instances, usage, { refresh, go });
    } catch (err) {
      if (!stop.signal.aborted) replace(instBox, h("p", { class: "error-text", role: "alert" }, err.message));
    } finally {
      busy = false;
    }
  }

  const schedule = () => { clearTimeout(timer); timer = setTimeout(tick, POLL_MS); };
  const tick = () => refresh().finally(() => { if (!stop.signal.aborted) schedule(); });
  tick();
  follow("/api/v1/events", (ev) => { if (ev.event === "instance") refresh(); }, { signal: stop.signal })
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

function renderInstances(box, instances, usage, ctx) {
  const now = Date.now() / 1000;
  const rows = instances.map((inst) => {
    const live = ["starting", "ready", "unhealthy"].includes(inst.state);
    const uptime = live && inst.started_at ? duration(now - inst.started_at) : "—";
    return h("tr", { "data-instance": inst.name },
      h("td", {}, h("strong", {}, inst.name),
        inst.origin === "router" ? h("span", { class: "sub" }, "started by the router") : null),
      h("td", {}, badge(inst.state),
        inst.last_error && !live ? h("span", { class: "sub", title: inst.last_error }, inst.last_error.split("\n")[0]) : null),
      h("td", {}, basename(inst.model), h("span", { class: "sub" }, inst.model)),
      h("td", { class: "num" }, inst.port),
      devicesCell(inst.placement),
      h("td", { class: "num" }, uptime),
      h("td", { class: "num" }, inst.restarts),
      h("td", { class: "num" }, tokensPerSecond(usage, inst.name)),
      h("td", {}, actions(inst, live, ctx)));
  });
  replace(box, table(["Name", "State", "Model", "Port", "Devices", "Uptime", "Restarts", "tok/s", "Actions"], rows,
    "No instances. Launch one, or send a chat request to a model: the router starts it."));
  box.querySelectorAll("th").forEach((th, i) => { if (i === 3 || (i >= 5 && i <= 7)) th.classList.add("num"); });
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

function actions(inst, live, { refresh, go }) {
  const call = (verb, method = "POST") => async (ev) => {
    ev.currentTarget.disabled = true;
    try {
      if (method === "DELETE") await api("DELETE", `/api/v1/instances/${seg(inst.name)}`);
      else await api("POST", `/api/v1/instances/${seg(inst.name)}/${verb}`);
      toast(`${inst.name}: ${verb === "start" ? "starting" : verb === "stop" ? "stopped" : verb === "restart" ? "restarting" : "removed"}`, "ok");
    } catch (err) {
      toast(`${inst.name}: ${err.message}`, "error");
    }
    refresh();
  };
  const label = (verb) => `${verb} ${inst.name}`;
  return h("div", { class: "actions" },
    live || inst.desired === "running"
      ? h("button", { type: "button", class: "btn btn-sm", onclick: call("stop"), "aria-label": label("Stop") }, "Stop")
      : h("button", { type: "button", class: "btn btn-sm", onclick: call("start"), "aria-label": label("Start") }, "Start"),
    h("button", { type: "button", class: "btn btn-sm", onclick: call("restart"), "aria-label": label("Restart") }, "Restart"),
    h("a", { class: "btn btn-sm", href: `#/logs/${encodeURIComponent(inst.name)}`, "aria-label": label("Logs of") }, "Logs"),
    h("button", { type: "button", class: "btn btn-sm", disabled: inst.state !== "ready",
      onclick: () => go("chat", "", { model: inst.name }), "aria-label": label("Chat with") }, "Chat"),
    h("a", { class: "btn btn-sm", href: inst.url, target: "_blank", rel: "noopener noreferrer",
      "aria-label": `Open the llama-server page of ${inst.name}` }, "Open ↗"),
    live ? null : h("button", { type: "button", class: "btn btn-sm btn-danger", "aria-label": label("Delete"),
      onclick: (ev) => { if (confirmAction(`Delete instance ${inst.name}?`)) call("delete", "DELETE")(ev); } }, "Delete"));
}

