// The machines a view can act on: this daemon and the nodes it links (GET /api/v1/nodes).
//
// A node's own REST API is reached through this daemon's relay, /api/v1/nodes/NAME/api/...
// (the daemon adds the node's key), so a view that works on this machine works on a node
// by putting base(node) in front of its paths: base("gpu-box") + "/api/v1/instances".
// The pickers stay hidden while no node is linked: one machine, no choice to make.

import { get, seg } from "./api.js";
import { h, replace } from "./dom.js";

/** The prefix of a node's API paths; "" for this machine. */
export function base(node) {
  return node ? `/api/v1/nodes/${seg(node)}` : "";
}

/**
 * The linked nodes (name, url, state, versions, gpus, counts...), [] when there are none
 * or this daemon cannot list them (an older build, a key without admin scope).
 */
export async function listNodes(signal) {
  try {
    const nodes = await get("/api/v1/nodes", { signal });
    return Array.isArray(nodes) ? nodes : [];
  } catch (err) {
    if (signal && signal.aborted) throw err;
    return [];
  }
}

/** "box-1", or "box-1 (down)" when it is not up: what a picker shows of a node. */
export function nodeLabel(node) {
  return node.state === "up" ? node.name : `${node.name} (${node.state})`;
}

/**
 * Fill ``select`` with "this machine" (value "") and every node; ``extra`` options go
 * first (the dashboard's "all"). A selected name no longer linked stays as an option, so
 * the view still says what it shows.
 */
export function fillPicker(select, nodes, selected, extra = []) {
  const names = new Set(nodes.map((n) => n.name));
  const options = [
    ...extra.map(([value, text]) => h("option", { value }, text)),
    h("option", { value: "" }, "this machine"),
    ...nodes.map((n) => h("option", { value: n.name }, nodeLabel(n))),
  ];
  if (selected && !names.has(selected) && !extra.some(([value]) => value === selected)) {
    options.push(h("option", { value: selected }, `${selected} (not linked)`));
  }
  replace(select, options);
  select.value = selected;
}

/**
 * A labelled node picker: {box, select}. ``box`` is hidden until ``show(nodes)`` finds
 * a node (or the view was opened on one).
 */
export function picker(id, label = "Node") {
  const select = h("select", { id, name: "node" });
  const box = h("div", { class: "field node-pick hidden" },
    h("label", { class: "field-label", for: id }, label), select);
  return {
    box,
    select,
    show(nodes, selected, extra = []) {
      fillPicker(select, nodes, selected, extra);
      const onNode = Boolean(selected) && !extra.some(([value]) => value === selected);
      box.classList.toggle("hidden", !nodes.length && !onNode);
    },
  };
}
