// The flag catalog of a llama-server build (GET /api/v1/flags), typed for the editor:
// which input each flag gets, client-side validation, and turning the editor's values
// into argv tokens. The daemon validates again on launch (catalog.normalize).

const NUMERIC_HINTS = new Set(["N", "M", "P", "L", "SEED", "INDEX", "SECONDS", "PORT"]);
const NUMBER = /^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$/;
const RANGE = /^<(-?\d+)\.\.\.(-?\d+)>$/;
// llama.cpp's is_truthy / is_falsey / is_autoy synonyms for on/off/auto choices.
const SYNONYMS = { on: ["on", "enabled", "true", "1"], off: ["off", "disabled", "false", "0"], auto: ["auto", "-1"] };

/** "switch" | "choice" | "number" | "pair" | "text" */
export function kindOf(flag) {
  if (!flag.takes_value) return "switch";
  if (flag.choices && flag.choices.length) return "choice";
  if ((flag.nargs || 1) > 1) return "pair";
  if (NUMERIC_HINTS.has(flag.value_hint) || RANGE.test(flag.value_hint || "")) return "number";
  return "text";
}

/** Words a numeric flag also takes, quoted in its help: -ngl takes 'auto' and 'all'. */
export function wordsOf(flag) {
  return [...String(flag.help || "").matchAll(/'([a-z][\w-]*)'/g)].map((m) => m[1]);
}

/** The spelling a user recognises: "-c, --ctx-size". */
export function label(flag) {
  return flag.names.join(", ");
}

/** An error message for ``value`` of ``flag``, or null when it is acceptable. */
export function validate(flag, value) {
  const kind = kindOf(flag);
  const v = String(value ?? "");
  if (kind === "switch") return null;
  if (/[\n\r\0]/.test(v) && !flag.repeatable) return `${flag.long}: one line only`;
  const values = flag.repeatable ? v.split("\n").map((s) => s.trim()).filter(Boolean) : [v.trim()];
  for (const one of values) {
    const err = validateOne(flag, kind, one);
    if (err) return err;
  }
  return null;
}

function validateOne(flag, kind, v) {
  if (v === "") return `${flag.long} needs a value (${flag.value_hint})`;
  if (kind === "choice") {
    const ok = flag.choices.some((c) => (SYNONYMS[c] || [c]).includes(v));
    return ok ? null : `${flag.long}: '${v}' is not one of ${flag.choices.join(", ")}`;
  }
  if (kind === "number") {
    if (wordsOf(flag).includes(v)) return null;
    if (!NUMBER.test(v)) {
      const words = wordsOf(flag);
      return `${flag.long} takes a number${words.length ? ` or ${words.join(", ")}` : ""} (got '${v}')`;
    }
    const range = (flag.value_hint || "").match(RANGE);
    if (range && (Number(v) < Number(range[1]) || Number(v) > Number(range[2]))) {
      return `${flag.long} takes ${range[1]} to ${range[2]} (got ${v})`;
    }
    return null;
  }
  if (kind === "pair" && v.split(/\s+/).length !== flag.nargs) {
    return `${flag.long} takes ${flag.nargs} values: ${flag.value_hint}`;
  }
  return null;
}

/**
 * argv tokens for the editor's values, in catalog order. ``values`` maps a flag's long
 * name to: true / "on" (switch on), "off" (its negation), or the typed value
 * (repeatable flags: one value per line).
 */
export function toTokens(catalog, values) {
  const tokens = [];
  for (const flag of catalog) {
    if (!(flag.long in values)) continue;
    const v = values[flag.long];
    if (!flag.takes_value) {
      if (v === "off") { if (negationOf(flag)) tokens.push(negationOf(flag)); } else if (v) tokens.push(flag.long);
      continue;
    }
    const list = flag.repeatable ? String(v).split("\n").map((s) => s.trim()).filter(Boolean) : [String(v).trim()];
    for (const one of list) {
      tokens.push(flag.long);
      if ((flag.nargs || 1) > 1) tokens.push(...one.split(/\s+/));
      else tokens.push(one);
    }
  }
  return tokens;
}

/** The canonical negated spelling (--no-mmap), or null. */
export function negationOf(flag) {
  const negs = flag.negations || [];
  return negs.find((n) => n.startsWith("--")) || negs[0] || null;
}

/**
 * Read argv tokens (a preset's flags) back into editor values. Tokens the catalog does
 * not know are returned in ``rest`` so they are never silently dropped.
 */
export function fromTokens(catalog, tokens) {
  const index = new Map();
  for (const f of catalog) for (const n of [...f.names, ...(f.negations || [])]) if (!index.has(n)) index.set(n, f);
  const values = {};
  const rest = [];
  for (let i = 0; i < tokens.length; i++) {
    const [name, inlineValue] = splitEq(tokens[i]);
    const flag = index.get(name) || index.get(name.replace(/_/g, "-"));
    if (!flag) { rest.push(tokens[i]); continue; }
    if (!flag.takes_value) {
      values[flag.long] = (flag.negations || []).includes(name) ? "off" : "on";
      continue;
    }
    const need = flag.nargs || 1;
    const parts = inlineValue !== null ? [inlineValue] : [];
    while (parts.length < need && i + 1 < tokens.length) parts.push(tokens[++i]);
    const v = parts.join(" ");
    values[flag.long] = flag.repeatable && values[flag.long] ? `${values[flag.long]}\n${v}` : v;
  }
  return { values, rest };
}

function splitEq(token) {
  const eq = token.indexOf("=");
  return token.startsWith("--") && eq > 0 ? [token.slice(0, eq), token.slice(eq + 1)] : [token, null];
}

/** The catalog flag a daemon error message names ("invalid value 'x' for --flash-attn"). */
export function flagInMessage(catalog, message) {
  const names = String(message).match(/--?[A-Za-z0-9][\w-]*/g) || [];
  for (const name of names) {
    const flag = catalog.find((f) => f.names.includes(name) || (f.negations || []).includes(name));
    if (flag) return flag;
  }
  return null;
}

/** Flags matching a search (names, env var, help), by name first like the daemon's. */
export function search(catalog, text) {
  const needle = text.trim().toLowerCase();
  if (!needle) return catalog;
  const byName = catalog.filter((f) => f.names.some((n) => n.toLowerCase().includes(needle)));
  const byText = catalog.filter((f) => !byName.includes(f)
    && (String(f.help).toLowerCase().includes(needle) || String(f.env || "").toLowerCase().includes(needle)));
  return [...byName, ...byText];
}
