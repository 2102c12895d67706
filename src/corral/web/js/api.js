// The one door to the daemon: JSON requests, API-key handling and error decoding.
//
// When the daemon answers 401, the UI asks for the key once (concurrent requests share
// the same prompt), keeps it in sessionStorage for this tab's session and retries.

import { readEvents } from "./sse.js";

const KEY_STORE = "corral.apiKey";
let prompter = null;
let pending = null;

/** An API error with the daemon's status, code and one-line message. */
export class ApiError extends Error {
  constructor(status, code, message, detail) {
    super(message);
    this.status = status;
    this.code = code;
    this.detail = detail || null;
  }

  /** True when the endpoint does not exist on this daemon (an older build). */
  get missing() {
    return this.status === 404 && this.code === "not_found" && /^Not Found$/i.test(this.message)
      || this.status === 405;
  }
}

/** app.js installs the function that shows the key dialog (resolves to a key or null). */
export function setKeyPrompter(fn) {
  prompter = fn;
}

export function apiKey() {
  return sessionStorage.getItem(KEY_STORE);
}

async function askForKey(wasWrong) {
  if (!prompter) return false;
  if (!pending) {
    pending = prompter(wasWrong).finally(() => { pending = null; });
  }
  const key = await pending;
  if (!key) return false;
  sessionStorage.setItem(KEY_STORE, key);
  return true;
}

async function errorOf(resp) {
  let body = null;
  try { body = await resp.json(); } catch { /* not JSON */ }
  const err = body && typeof body === "object" ? body.error : null;
  if (err && typeof err === "object") {
    const code = typeof err.code === "string" ? err.code : err.type || "error";
    return new ApiError(resp.status, code, String(err.message || resp.statusText), err.detail);
  }
  if (body && typeof body.detail === "string") return new ApiError(resp.status, "error", body.detail);
  return new ApiError(resp.status, "http_error", `${resp.status} ${resp.statusText}`.trim());
}

/** A path of a node's API through this daemon's relay: /api/v1/nodes/NAME/api/... */
const RELAYED = /^\/api\/v1\/nodes\/([^/?]+)\/api\//;

/** A node's 401 said as such (its own message alone would read as this daemon's). */
function relayedError(err, relayed) {
  if (!relayed || err.status !== 401) return err;
  const node = decodeURIComponent(relayed[1]);
  return new ApiError(err.status, err.code,
    `node ${node} refused this daemon's key for it (${err.message}): remove the node and add it again with a new key`,
    err.detail);
}

/**
 * fetch() with the key and JSON body; returns the Response once it is not a 401
 * (after asking for a key), throwing ApiError for any other error status.
 */
export async function send(method, path, body, { signal, accept = "application/json" } = {}) {
  for (let attempt = 0; ; attempt++) {
    const headers = { Accept: accept };
    const key = apiKey();
    if (key) headers.Authorization = `Bearer ${key}`;
    const init = { method, headers, signal, cache: "no-store" };
    if (body !== undefined) {
      headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    const resp = await fetch(path, init);
    // A 401 relayed from a node is the node refusing this daemon's key for it: asking the
    // user for this daemon's key would not help (and would loop), so it is an error.
    const relayed = RELAYED.exec(path);
    if (resp.status === 401 && !relayed && attempt < 5 && await askForKey(Boolean(key))) continue;
    if (!resp.ok) throw relayedError(await errorOf(resp), relayed);
    return resp;
  }
}

/** A JSON request: ``api("GET", "/api/v1/instances")``. */
export async function api(method, path, body, opts) {
  const resp = await send(method, path, body, opts);
  const text = await resp.text();
  return text ? JSON.parse(text) : null;
}

export const get = (path, opts) => api("GET", path, undefined, opts);

/**
 * Follow an SSE endpoint: calls onEvent({event, data}) for each event until the stream
 * ends or ``signal`` aborts. Resolves when it ends; rejects on errors (not on abort).
 */
export async function follow(path, onEvent, { signal, method = "GET", body } = {}) {
  try {
    const resp = await send(method, path, body, { signal, accept: "text/event-stream" });
    for await (const ev of readEvents(resp)) onEvent(ev);
  } catch (err) {
    if (signal && signal.aborted) return;
    throw err;
  }
}

let schemaOnce = null;

/**
 * What the daemon checks and the forms check before they send (``GET /api/v1/schema``):
 * the instance-name pattern, restart policies, port range, environment-name pattern.
 * Fetched once per page and shared by every view; a failed fetch is tried again next time.
 */
export function schema() {
  if (!schemaOnce) schemaOnce = get("/api/v1/schema").catch((err) => { schemaOnce = null; throw err; });
  return schemaOnce;
}

/** True when ``value`` matches the schema's ``pattern`` whole (patterns are full-match). */
export function fullMatch(pattern, value) {
  return new RegExp(`^(?:${pattern})$`).test(String(value));
}

/** Encode one path segment (instance names, model ids with slashes stay one segment). */
export function seg(value) {
  return encodeURIComponent(String(value));
}
