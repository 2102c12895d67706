// Chat: pick a model (the router starts it on demand), stream replies with a Stop
// button, system prompt, temperature and max tokens, tokens/s. Conversations are kept by
// the daemon (/api/v1/conversations): list, rename, delete. On a controller the picker
// also lists the names only linked nodes serve ("gemma — on box"): this daemon's /v1
// relays those to the node.
//
// One object, ``v``, holds the view: ``v.el`` its controls, ``v.conv`` the open
// conversation, ``v.list`` the saved ones, ``v.streaming`` the AbortController of the reply
// being streamed (null when none); every function below takes it.

import { api, follow, get, seg } from "../api.js";
import { confirmAction, h, labelled, replace, toast } from "../dom.js";
import { render } from "../markdown.js";

export async function mount(root, { query }) {
  const v = { el: controls(), stop: new AbortController(), query, conv: null, list: [], streaming: null };
  replace(root, layout(v.el));
  const { el } = v;
  el.composer.addEventListener("submit", (ev) => {
    ev.preventDefault();
    const text = el.prompt.value.trim();
    if (!text || v.streaming) return;
    el.prompt.value = "";
    send(v, text);
  });
  el.prompt.addEventListener("keydown", (ev) => {
    if (ev.key === "Enter" && !ev.shiftKey && !ev.isComposing) { ev.preventDefault(); el.composer.requestSubmit(); }
  });
  el.stopBtn.addEventListener("click", () => { if (v.streaming) v.streaming.abort(); });
  el.newBtn.addEventListener("click", () => {
    if (v.streaming) return;
    v.conv = null; el.system.value = ""; renderMessages(v); renderList(v); el.prompt.focus();
  });

  renderMessages(v);
  await Promise.all([loadModels(v), loadList(v)]);
  if (query.get("c")) await open(v, query.get("c"));
  return () => { v.stop.abort(); if (v.streaming) v.streaming.abort(); };
}

function controls() {
  const el = {
    listBox: h("ul", { id: "conversations", "aria-label": "Conversations" }),
    newBtn: h("button", { type: "button", class: "btn btn-primary", id: "new-chat" }, "New chat"),
    model: h("select", { id: "chat-model", name: "model", required: true }),
    system: h("textarea", { id: "chat-system", rows: 2, placeholder: "You are a helpful assistant." }),
    temperature: h("input", { id: "chat-temperature", type: "number", min: 0, max: 2, step: 0.1, placeholder: "default" }),
    maxTokens: h("input", { id: "chat-max-tokens", type: "number", min: 1, step: 1, placeholder: "default" }),
    messages: h("div", { class: "messages", id: "messages", "aria-live": "polite", "aria-label": "Messages" }),
    prompt: h("textarea", { id: "chat-input", rows: 3, placeholder: "Message (Enter sends, Shift+Enter for a new line)",
      "aria-label": "Message" }),
    sendBtn: h("button", { type: "submit", class: "btn btn-primary", id: "send" }, "Send"),
    stopBtn: h("button", { type: "button", class: "btn btn-danger hidden", id: "stop" }, "Stop"),
    status: h("span", { class: "muted small", id: "chat-status", role: "status" }),
  };
  el.composer = h("form", { class: "stack composer" }, el.prompt,
    h("div", { class: "row" }, el.sendBtn, el.stopBtn, el.status));
  return el;
}

function layout(el) {
  return h("div", { class: "chat" },
    h("aside", { class: "chat-list card", "aria-label": "Conversations" }, el.newBtn, el.listBox),
    h("section", { class: "chat-main" },
      h("div", { class: "card" },
        h("div", { class: "form-grid" },
          labelled("chat-model", "Model", el.model),
          labelled("chat-temperature", "Temperature", el.temperature),
          labelled("chat-max-tokens", "Max tokens", el.maxTokens)),
        h("details", { class: "system" }, h("summary", {}, "System prompt"),
          h("label", { class: "field" }, h("span", { class: "hidden" }, "System prompt"), el.system))),
      el.messages, el.composer));
}

// -- conversations -------------------------------------------------------------------------
async function loadList(v) {
  try {
    v.list = await get("/api/v1/conversations", { signal: v.stop.signal });
  } catch (err) {
    v.list = [];
    if (!v.stop.signal.aborted) toast(`Conversations: ${err.message}`, "error");
  }
  renderList(v);
}

function renderList(v) {
  replace(v.el.listBox, v.list.length ? v.list.map((c) => {
    const title = c.title || "Untitled";
    return h("li", { class: v.conv && v.conv.id === c.id ? "active" : "", "data-conversation": c.id },
      h("button", { type: "button", class: "title", title, onclick: () => open(v, c.id) }, title),
      h("button", { type: "button", class: "icon", title: "Rename", "aria-label": `Rename ${title}`, onclick: () => rename(v, c) }, "✎"),
      h("button", { type: "button", class: "icon", title: "Delete", "aria-label": `Delete ${title}`, onclick: () => remove(v, c) }, "×"));
  }) : h("li", { class: "empty" }, "No conversations yet."));
}

async function open(v, id) {
  if (v.streaming) return;
  const { el } = v;
  try {
    v.conv = await get(`/api/v1/conversations/${seg(id)}`, { signal: v.stop.signal });
  } catch (err) { toast(err.message, "error"); return; }
  el.system.value = v.conv.system || "";
  el.temperature.value = v.conv.params.temperature ?? "";
  el.maxTokens.value = v.conv.params.max_tokens ?? "";
  if (v.conv.model) selectModel(v, v.conv.model);
  renderMessages(v);
  renderList(v);
}

async function rename(v, c) {
  const title = window.prompt("New title", c.title || "");
  if (title === null) return;
  try {
    await api("PATCH", `/api/v1/conversations/${seg(c.id)}`, { title: title.trim().slice(0, 200) });
    if (v.conv && v.conv.id === c.id) v.conv.title = title.trim();
  } catch (err) { toast(err.message, "error"); }
  loadList(v);
}

async function remove(v, c) {
  if (!confirmAction(`Delete the conversation "${c.title || "Untitled"}"?`)) return;
  try {
    await api("DELETE", `/api/v1/conversations/${seg(c.id)}`);
    if (v.conv && v.conv.id === c.id) { v.conv = null; renderMessages(v); }
  } catch (err) { toast(err.message, "error"); }
  loadList(v);
}

function params(v) {
  const p = {};
  if (v.el.temperature.value !== "") p.temperature = Number(v.el.temperature.value);
  if (v.el.maxTokens.value !== "") p.max_tokens = Number(v.el.maxTokens.value);
  return p;
}

async function save(v) {
  const body = { model: v.el.model.value || null, system: v.el.system.value, params: params(v),
    messages: v.conv.messages };
  try {
    if (!v.conv.id) {
      v.conv = { ...v.conv, ...(await api("POST", "/api/v1/conversations", { ...body, title: v.conv.title })) };
    } else {
      await api("PATCH", `/api/v1/conversations/${seg(v.conv.id)}`, body);
    }
  } catch (err) { toast(`Could not save the conversation: ${err.message}`, "error"); }
  loadList(v);
}

// -- models --------------------------------------------------------------------------------
function selectModel(v, name) {
  const model = v.el.model;
  if (![...model.options].some((o) => o.value === name)) model.appendChild(h("option", { value: name }, name));
  model.value = name;
}

/**
 * What the picker shows of one ``/v1/models`` entry: its name, and for a name only linked
 * nodes serve (``local`` false on a controller), where: "gemma — on box, box-2".
 */
export function modelLabel(m) {
  const nodes = Array.isArray(m.nodes) ? m.nodes.filter((n) => typeof n === "string") : [];
  return m.local === false && nodes.length ? `${m.id} — on ${nodes.join(", ")}` : m.id;
}

async function loadModels(v) {
  try {
    const res = await get("/v1/models", { signal: v.stop.signal });
    const models = (res.data || []).filter((m) => m && typeof m.id === "string");
    replace(v.el.model, models.length ? models.map((m) => h("option", { value: m.id }, modelLabel(m)))
      : h("option", { value: "" }, "no models: pull or import one"));
  } catch (err) {
    replace(v.el.model, h("option", { value: "" }, `models unavailable: ${err.message}`));
  }
  if (v.query.get("model")) selectModel(v, v.query.get("model"));
}

// -- messages ------------------------------------------------------------------------------
function messageNode(m, streaming = false) {
  const body = h("div", { class: "msg-body" });
  if (m.role === "assistant") body.appendChild(render(m.content)); else body.textContent = m.content;
  const meta = [];
  if (m.tokens_per_second) meta.push(`${m.tokens_per_second.toFixed(1)} tok/s`);
  if (m.stopped) meta.push("stopped");
  return h("article", { class: `msg msg-${m.role}${streaming ? " streaming" : ""}`, "data-role": m.role },
    h("div", { class: "msg-role" }, m.role === "user" ? "You" : m.role),
    body, meta.length ? h("div", { class: "msg-meta" }, meta.join(" · ")) : null);
}

function renderMessages(v) {
  const list = v.conv ? v.conv.messages : [];
  replace(v.el.messages, list.length ? list.map((m) => messageNode(m))
    : h("p", { class: "empty" }, "Ask something. The model is started on demand if it is not running."));
  v.el.messages.scrollTop = v.el.messages.scrollHeight;
}

function setStreaming(v, ctl) {
  const on = Boolean(ctl);
  v.streaming = ctl;
  v.el.sendBtn.classList.toggle("hidden", on);
  v.el.stopBtn.classList.toggle("hidden", !on);
  v.el.prompt.disabled = on;
  if (!on) v.el.prompt.focus();
}

/** The chat completion request for the conversation so far (system prompt first). */
function completionRequest(v) {
  const history = v.conv.messages.map(({ role, content }) => ({ role, content }));
  const system = v.el.system.value;
  return { model: v.el.model.value, stream: true,
    messages: system.trim() ? [{ role: "system", content: system }, ...history] : history, ...params(v) };
}

/**
 * Stream the reply into ``reply.content`` and ``node`` (painted once per frame), until
 * it ends or ``signal`` aborts; an error is kept in ``reply.error``. Resolves to the
 * tokens per second (the server's figure, else counted here) or null.
 */
async function streamReply(v, req, reply, node, signal) {
  const { status, messages } = v.el;
  let first = null;
  let pieces = 0;
  let serverTps = null;
  let painted = false;
  const paint = () => {
    painted = false;
    replace(node.querySelector(".msg-body"), render(reply.content));
    messages.scrollTop = messages.scrollHeight;
  };
  try {
    await follow("/v1/chat/completions", (ev) => {
      if (ev.data === "[DONE]") return;
      const chunk = JSON.parse(ev.data);
      if (chunk.error) throw new Error(chunk.error.message || "the model answered with an error");
      const delta = chunk.choices && chunk.choices[0] && chunk.choices[0].delta;
      if (delta && delta.content) {
        if (first === null) { first = performance.now(); status.textContent = "Generating…"; }
        reply.content += delta.content;
        pieces++;
        if (!painted) { painted = true; requestAnimationFrame(paint); }
      }
      if (chunk.timings && chunk.timings.predicted_per_second) serverTps = chunk.timings.predicted_per_second;
    }, { method: "POST", body: req, signal });
  } catch (err) {
    reply.error = err.message;
  }
  const secs = first !== null ? (performance.now() - first) / 1000 : 0;
  return serverTps || (pieces > 1 && secs > 0 ? (pieces - 1) / secs : null);
}

async function send(v, text) {
  const { el } = v;
  if (!el.model.value) { toast("Choose a model first.", "error"); return; }
  if (!v.conv) v.conv = { id: null, title: text.slice(0, 60), messages: [], params: {} };
  v.conv.messages.push({ role: "user", content: text });
  const reply = { role: "assistant", content: "" };
  renderMessages(v);
  const node = messageNode(reply, true);
  el.messages.appendChild(node);
  const ctl = new AbortController();
  setStreaming(v, ctl);
  el.status.textContent = "Waiting for the model (it starts on demand)…";
  const t0 = performance.now();
  const tps = await streamReply(v, completionRequest(v), reply, node, ctl.signal);
  reply.stopped = ctl.signal.aborted;
  if (tps) reply.tokens_per_second = Math.round(tps * 10) / 10;
  setStreaming(v, null);
  const took = ((performance.now() - t0) / 1000).toFixed(1);
  el.status.textContent = reply.error ? "" : `${reply.stopped ? "Stopped" : "Done"} in ${took} s${tps ? ` · ${tps.toFixed(1)} tok/s` : ""}`;
  if (reply.error && !reply.content) {
    v.conv.messages.pop(); // the question stays in the box to try again
    el.prompt.value = text;
    renderMessages(v);
    toast(reply.error, "error");
    return;
  }
  const { error, ...kept } = reply;
  v.conv.messages.push(kept);
  renderMessages(v);
  if (error) toast(error, "error");
  await save(v);
}
