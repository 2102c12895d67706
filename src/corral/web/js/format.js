// Human-readable numbers: sizes, speeds, durations.

const UNITS = ["B", "KB", "MB", "GB", "TB"];

/** 1536 -> "1.5 KB" (decimal units, as the Hub and disk tools print them). */
export function bytes(n) {
  if (n === null || n === undefined || !Number.isFinite(Number(n))) return "—";
  let v = Number(n);
  let i = 0;
  while (Math.abs(v) >= 1000 && i < UNITS.length - 1) { v /= 1000; i++; }
  return `${v.toFixed(i === 0 || v >= 100 ? 0 : 1)} ${UNITS[i]}`;
}

/** Seconds -> "3s", "4m 05s", "2h 03m", "3d 4h". */
export function duration(s) {
  if (s === null || s === undefined || !Number.isFinite(Number(s))) return "—";
  s = Math.max(0, Math.round(Number(s)));
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m ${String(s % 60).padStart(2, "0")}s`;
  if (s < 86400) return `${Math.floor(s / 3600)}h ${String(Math.floor(s / 60) % 60).padStart(2, "0")}m`;
  return `${Math.floor(s / 86400)}d ${Math.floor(s / 3600) % 24}h`;
}

/** 1234567 -> "1.2M"; parameter counts and downloads. */
export function count(n) {
  if (n === null || n === undefined || !Number.isFinite(Number(n))) return "—";
  const v = Number(n);
  for (const [div, suf] of [[1e12, "T"], [1e9, "B"], [1e6, "M"], [1e3, "k"]]) {
    if (Math.abs(v) >= div) return `${(v / div).toFixed(v / div >= 100 ? 0 : 1)}${suf}`;
  }
  return String(v);
}

/** Context lengths the way model cards print them: 4096 -> "4k", 131072 -> "128k". */
export function tokens(n) {
  if (!n) return "—";
  return n % 1024 === 0 ? `${n / 1024}k` : String(n);
}

/** Epoch seconds -> local date and time. */
export function when(epoch) {
  if (!epoch) return "—";
  return new Date(epoch * 1000).toLocaleString();
}

/** Epoch seconds -> "12s ago", "4m 05s ago"; "—" when never. */
export function ago(epoch, now = Date.now() / 1000) {
  if (!epoch) return "—";
  return `${duration(Math.max(0, now - epoch))} ago`;
}

/** The file name of a path. */
export function basename(path) {
  return String(path || "").split(/[\\/]/).pop();
}

/** Quote one argv token the way a POSIX shell would need it, for display only. */
export function shellQuote(token) {
  const t = String(token);
  return /^[\w@%+=:,./-]+$/.test(t) ? t : `'${t.replace(/'/g, "'\\''")}'`;
}

/**
 * ``argv`` with the value of every flag in ``secret`` (a Set, from the daemon's
 * ``secret_flags``: corral/redact.py is the one list) shown as ``***``, like the daemon
 * shows it: ``--api-key K`` and ``--api-key=K`` alike.
 */
export function redactArgv(argv, secret) {
  const out = [];
  let hideNext = false;
  for (const arg of argv) {
    if (hideNext) { out.push("***"); hideNext = false; continue; }
    const s = String(arg);
    const eq = s.indexOf("=");
    const name = eq < 0 ? s : s.slice(0, eq);
    if (secret && secret.has(name)) {
      if (eq < 0) { out.push(s); hideNext = true; } else out.push(`${name}=***`);
      continue;
    }
    out.push(s);
  }
  return out;
}

/** Split a typed command-line fragment into tokens (quotes and backslashes like a shell). */
export function shellSplit(text) {
  const out = [];
  let cur = null;
  let quote = null;
  for (let i = 0; i < text.length; i++) {
    const c = text[i];
    if (quote) {
      if (c === quote) quote = null;
      else if (c === "\\" && quote === '"' && i + 1 < text.length) cur += text[++i];
      else cur += c;
    } else if (c === "'" || c === '"') {
      quote = c; cur = cur ?? "";
    } else if (c === "\\" && i + 1 < text.length) {
      cur = (cur ?? "") + text[++i];
    } else if (/\s/.test(c)) {
      if (cur !== null) { out.push(cur); cur = null; }
    } else {
      cur = (cur ?? "") + c;
    }
  }
  if (quote) throw new Error(`unclosed ${quote} quote`);
  if (cur !== null) out.push(cur);
  return out;
}
