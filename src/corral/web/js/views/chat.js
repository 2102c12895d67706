// Chat: pick a model (the router starts it on demand), stream replies with a Stop
// button, system prompt, temperature and max tokens, tokens/s. Conversations are kept by
// the daemon (/api/v1/conversations): list, rename, delete.

import { api, follow, get, seg } from "../api.js";
import { confirmAction, h, replace, toast } from "../dom.js";
import { render } from "../markdown.js";

export async function mount(root, { query }) {
  const stop = new AbortController();
  const st = { conv: null, list: [], streaming: null };

  const listBox = h("ul", { id: "conversations", "aria-label": "Conversations" });
  const newBtn = h("button", { type: "button", class: "btn btn-primary", id: "new-chat" }, "New chat");
  const model = h("select", { id: "chat-model", name: "model", required: true });
  const system = h("textarea", { id: "chat-system", rows: 2, placeholder: "You are a helpful assistant." });
  const temperature = h("input", { id: "chat-temperature", type: "number", min: 0, max: 2, step: 0.1, placeholder: "default" });
  const maxTokens = h("input", { id: "chat-max-tokens", type: "number", min: 1, step: 1, placeholder: "default" });
  const messages = h("div", { class: "messages", id: "messages", "aria-live": "polite", "aria-label": "Messages" });
  const prompt = h("textarea", { id: "chat-input", rows: 3, placeholder: "Message (Enter sends, Shift+Enter for a new line)",
    "aria-label": "Message" });
  const sendBtn = h("button", { type: "submit", class: "btn btn-primary", id: "send" }, "Send");
  const stopBtn = h("button", { type: "button", class: "btn btn-danger hidden", id: "stop" }, "Stop");
  const status = h("span", { class: "muted small", id: "chat-status", role: "status" });

  const composer = h("form", { class: "stack composer" }, prompt,
    h("div", { class: "row" }, sendBtn, stopBtn, status));
  replace(root, h("div", { class: "chat" },
    h("aside", { class: "chat-list card", "aria-label": "Conversations" }, newBtn, listBox),
    h("section", { class: "chat-main" },
      h("div", { class: "card" },
        h("div", { class: "form-grid" },
          h("div", { class: "field" }, h("label", { class: "field-label", for: "chat-model" }, "Model"), model),
          h("div", { class: "field" }, h("label", { class: "field-label", for: "chat-temperature" }, "Temperature"), temperature),
          h("div", { class: "field" }, h("label", { class: "field-label", for: "chat-max-tokens" }, "Max tokens"), maxTokens)),
        h("details", { class: "system" }, h("summary", {}, "System prompt"),
          h("label", { class: "field" }, h("span", { class: "hidden" }, "System prompt"), system))),
      messages, composer)));

  // -- conversations ----------------------------------------------------------------------
  async function loadList() {
    try {
      st.list = await get("/api/v1/conversations", { signal: stop.signal });
    } catch (err) {
      st.list = [];
      if (!stop.signal.aborted) toast(`Conversations: ${err.message}`, "error");
    }
    renderList();
  }

  function renderList() {
    replace(listBox, st.list.length ? st.list.map((c) => {
      const title = c.title || "Untitled";
      const li = h("li", { class: st.conv && st.conv.id === c.id ? "active" : "", "data-conversation": c.id },
        h("button", { type: "button", class: "title", title, onclick: () => open(c.id) }, title),
        h("button", { type: "button", class: "icon", title: "Rename", "aria-label": `Rename ${title}`, onclick: () => rename(c) }, "✎"),
        h("button", { type: "button", class: "icon", title: "Delete", "aria-label": `Delete ${title}`, onclick: () => remove(c) }, "×"));
      return li;
    }) : h("li", { class: "empty" }, "No conversations yet."));
  }

  async function open(id) {
    if (st.streaming) return;
    try {
      st.conv = await get(`/api/v1/conversations/${seg(id)}`, { signal: stop.signal });
    } catch (err) { toast(err.message, "error"); return; }
    system.value = st.conv.system || "";
    temperature.value = st.conv.params.temperature ?? "";
    maxTokens.value = st.conv.params.max_tokens ?? "";
    if (st.conv.model) selectModel(st.conv.model);
    renderMessages();
    renderList();
  }

  async function rename(c) {
    const title = window.prompt("New title", c.title || "");
    if (title === null) return;
    try {
      await api("PATCH", `/api/v1/conversations/${seg(c.id)}`, { title: title.trim().slice(0, 200) });
      if (st.conv && st.conv.id === c.id) st.conv.title = title.trim();
    } catch (err) { toast(err.message, "error"); }
    loadList();
  }

  async function remove(c) {
    if (!confirmAction(`Delete the conversation "${c.title || "Untitled"}"?`)) return;
    try {
      await api("DELETE", `/api/v1/conversations/${seg(c.id)}`);
      if (st.conv && st.conv.id === c.id) { st.conv = null; renderMessages(); }
    } catch (err) { toast(err.message, "error"); }
    loadList();
  }

  function params() {
    const p = {};
    if (temperature.value !== "") p.temperature = Number(temperature.value);
    if (maxTokens.value !== "") p.max_tokens = Number(maxTokens.value);
    return p;
  }

  async function save() {
    const body = { model: model.value || null, system: system.value, params: params(),
      messages: st.conv.messages };
    try {
      if (!st.conv.id) {
        st.conv = { ...st.conv, ...(await api("POST", "/api/v1/conversations", { ...body, title: st.conv.title })) };
      } else {
        await api("PATCH", `/api/v1/conversations/${seg(st.conv.id)}`, body);
      }
    } catch (err) { toast(`Could not save the conversation: ${err.message}`, "error"); }
    loadList();
  }

  // -- models -----------------------------------------------------------------------------
  function selectModel(name) {
    if (![...model.options].some((o) => o.value === name)) model.appendChild(h("option", { value: name }, name));
    model.value = name;
  }

  async function loadModels() {
    try {
      const res = await get("/v1/models", { signal: stop.signal });
      const ids = (res.data || []).map((m) => m.id);
      replace(model, ids.length ? ids.map((id) => h("option", { value: id }, id))
        : h("option", { value: "" }, "no models: pull or import one"));
    } catch (err) {
      replace(model, h("option", { value: "" }, `models unavailable: ${err.message}`));
    }
    if (query.get("model")) selectModel(query.get("model"));
  }

  // -- messages ---------------------------------------------------------------------------
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

  function renderMessages() {
    const list = st.conv ? st.conv.messages : [];
    replace(messages, list.length ? list.map((m) => messageNode(m))
      : h("p", { class: "empty" }, "Ask something. The model is started on demand if it is not running."));
    messages.scrollTop = messages.scrollHeight;
  }

  function setStreaming(on) {
    sendBtn.classList.toggle("hidden", on);
    stopBtn.classList.toggle("hidden", !on);
    prompt.disabled = on;
    if (!on) prompt.focus();
  }

  async function send(text) {
    if (!model.value) { toast("Choose a model first.", "error"); return; }
    if (!st.conv) st.conv = { id: null, title: text.slice(0, 60), messages: [], params: {} };
    st.conv.messages.push({ role: "user", content: text });
    const reply = { role: "assistant", content: "" };
    renderMessages();
    const node = messageNode(reply, true);
    messages.appendChild(node);
    const ctl = new AbortController();
    st.streaming = ctl;
    setStreaming(true);
    status.textContent = "Waiting for the model (it starts on demand)…";
    const history = st.conv.messages.map(({ role, content }) => ({ role, content }));
    const req = { model: model.value, stream: true, messages: system.value.trim()
      ? [{ role: "system", content: system.value }, ...history] : history, ...params() };
    const t0 = performance.now();
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
      }, { method: "POST", body: req, signal: ctl.signal });
    } catch (err) {
      reply.error = err.message;
    }
    reply.stopped = ctl.signal.aborted;
    const secs = first !== null ? (performance.now() - first) / 1000 : 0;
    const tps = serverTps || (pieces > 1 && secs > 0 ? (pieces - 1) / secs : null);
    if (tps) reply.tokens_per_second = Math.round(tps * 10) / 10;
    st.streaming = null;
    setStreaming(false);
    const took = ((performance.now() - t0) / 1000).toFixed(1);
    status.textContent = reply.error ? "" : `${reply.stopped ? "Stopped" : "Done"} in ${took} s${tps ? ` · ${tps.toFixed(1)} tok/s` : ""}`;
    if (reply.error && !reply.content) {
      st.conv.messages.pop(); // the question stays in the box to try again
      prompt.value = text;
      renderMessages();
      toast(reply.error, "error");
      return;
    }
    const { error, ...kept } = reply;
    st.conv.messages.push(kept);
    renderMessages();
    if (error) toast(error, "error");
    await save();
  }

  composer.addEventListener("submit", (ev) => {
    ev.preventDefault();
    const text = prompt.value.trim();
    if (!text || st.streaming) return;
    prompt.value = "";
    send(text);
  });
  prompt.addEventListener("keydown", (ev) => {
    if (ev.key === "Enter" && !ev.shiftKey && !ev.isComposing) { ev.preventDefault(); composer.requestSubmit(); }
  });
  stopBtn.addEventListener("click", () => { if (st.streaming) st.streaming.abort(); });
  newBtn.addEventListener("click", () => {
    if (st.streaming) return;
    st.conv = null; system.value = ""; renderMessages(); renderList(); prompt.focus();
  });

  renderMessages();
  await Promise.all([loadModels(), loadList()]);
  if (query.get("c")) await open(query.get("c"));
  return () => { stop.abort(); if (st.streaming) st.streaming.abort(); };
}
