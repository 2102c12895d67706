// A small, safe Markdown renderer for chat replies. It builds DOM nodes directly (text
// nodes and a fixed set of elements), so model output can never become markup.
//
// Supported: fenced code blocks, headings, bullet and numbered lists, block quotes,
// paragraphs, inline code, **strong**, *emphasis* / _emphasis_, and [links](https://...)
// whose target is http(s) (rel="noopener noreferrer", new tab). Anything else is text.

import { h } from "./dom.js";

const FENCE = /^\s{0,3}(```|~~~)\s*([\w+#.-]*)\s*$/;
const BULLET = /^\s{0,3}[-*+]\s+(.*)$/;
const NUMBERED = /^\s{0,3}(\d{1,9})[.)]\s+(.*)$/;
const HEADING = /^\s{0,3}(#{1,6})\s+(.*?)\s*#*\s*$/;
const QUOTE = /^\s{0,3}>\s?(.*)$/;
const LINK = /^\[([^\]\n]+)\]\(\s*(https?:\/\/[^\s)]+)\s*\)/;

/** Render ``text`` into a DocumentFragment. */
export function render(text) {
  const frag = document.createDocumentFragment();
  const lines = String(text ?? "").replace(/\r\n?/g, "\n").split("\n");
  let i = 0;
  while (i < lines.length) {
    const line = lines[i];
    if (!line.trim()) { i++; continue; }
    const fence = line.match(FENCE);
    if (fence) {
      i = codeBlock(frag, lines, i, fence);
    } else if (HEADING.test(line)) {
      const [, hashes, body] = line.match(HEADING);
      frag.appendChild(h(`h${Math.min(6, hashes.length + 2)}`, {}, inline(body)));
      i++;
    } else if (BULLET.test(line) || NUMBERED.test(line)) {
      i = list(frag, lines, i);
    } else if (QUOTE.test(line)) {
      const body = [];
      while (i < lines.length && QUOTE.test(lines[i])) body.push(lines[i++].match(QUOTE)[1]);
      frag.appendChild(h("blockquote", {}, render(body.join("\n"))));
    } else {
      const body = [];
      while (i < lines.length && lines[i].trim() && !startsBlock(lines[i])) body.push(lines[i++]);
      frag.appendChild(h("p", {}, inline(body.join("\n"))));
    }
  }
  return frag;
}

function startsBlock(line) {
  return FENCE.test(line) || HEADING.test(line) || BULLET.test(line) || NUMBERED.test(line)
    || QUOTE.test(line);
}

function codeBlock(frag, lines, i, fence) {
  const body = [];
  i++;
  while (i < lines.length && !lines[i].trim().startsWith(fence[1])) body.push(lines[i++]);
  const code = h("code", fence[2] ? { "data-lang": fence[2] } : {}, body.join("\n"));
  frag.appendChild(h("pre", { class: "code" }, code));
  return i + 1; // past the closing fence (or the end while a reply still streams)
}

function list(frag, lines, i) {
  const ordered = NUMBERED.test(lines[i]);
  const pattern = ordered ? NUMBERED : BULLET;
  const first = ordered ? Number(lines[i].match(NUMBERED)[1]) : 1;
  const items = [];
  while (i < lines.length) {
    const line = lines[i];
    const m = line.match(pattern);
    if (m) {
      items.push([ordered ? m[2] : m[1]]);
    } else if (items.length && line.trim() && /^\s+/.test(line) && !FENCE.test(line)) {
      items[items.length - 1].push(line.trim()); // a continuation line of the last item
    } else {
      break;
    }
    i++;
  }
  frag.appendChild(h(ordered ? "ol" : "ul", first !== 1 ? { start: first } : {},
    items.map((parts) => h("li", {}, inline(parts.join(" "))))));
  return i;
}

/** Inline spans of one paragraph or list item. */
export function inline(text) {
  const out = document.createDocumentFragment();
  let buf = "";
  const flush = () => { if (buf) { out.appendChild(document.createTextNode(buf)); buf = ""; } };
  let i = 0;
  while (i < text.length) {
    const rest = text.slice(i);
    const c = text[i];
    if (c === "\\" && i + 1 < text.length && /[\\`*_[\]()#+\-.!>]/.test(text[i + 1])) {
      buf += text[i + 1]; i += 2; continue;
    }
    if (c === "`") {
      const run = rest.match(/^`+/)[0];
      const end = text.indexOf(run, i + run.length);
      if (end > 0) {
        flush();
        out.appendChild(h("code", {}, text.slice(i + run.length, end).trim() || text.slice(i + run.length, end)));
        i = end + run.length; continue;
      }
    }
    if (rest.startsWith("**") || rest.startsWith("__")) {
      const mark = rest.slice(0, 2);
      const end = text.indexOf(mark, i + 2);
      if (end > i + 2) {
        flush();
        out.appendChild(h("strong", {}, inline(text.slice(i + 2, end))));
        i = end + 2; continue;
      }
    }
    if ((c === "*" || c === "_") && emphasisOpens(text, i)) {
      const end = findClosing(text, i + 1, c);
      if (end > i + 1) {
        flush();
        out.appendChild(h("em", {}, inline(text.slice(i + 1, end))));
        i = end + 1; continue;
      }
    }
    if (c === "[") {
      const m = rest.match(LINK);
      if (m) {
        flush();
        out.appendChild(h("a", { href: m[2], rel: "noopener noreferrer", target: "_blank" }, m[1]));
        i += m[0].length; continue;
      }
    }
    buf += c;
    i++;
  }
  flush();
  return out;
}

function emphasisOpens(text, i) {
  const next = text[i + 1];
  if (!next || /\s/.test(next) || next === text[i]) return false;
  // snake_case_words are not emphasis
  return text[i] === "*" || i === 0 || !/[\p{L}\p{N}]/u.test(text[i - 1]);
}

function findClosing(text, from, mark) {
  for (let j = from; j < text.length; j++) {
    if (text[j] === "\n" && text[j + 1] === "\n") return -1;
    if (text[j] === mark && !/\s/.test(text[j - 1]) && text[j + 1] !== mark) {
      if (mark === "_" && /[\p{L}\p{N}]/u.test(text[j + 1] || "")) continue;
      return j;
    }
  }
  return -1;
}
