// A small, safe Markdown renderer for notification bodies.
//
// It builds DOM nodes and puts every piece of text in with text nodes, so markup
// in an event (`<img onerror=…>`, `<script>`) is shown as the characters it is.
// Links keep only http:, https: and mailto: URLs and open in a new tab without a
// referrer. Images in Markdown become links (loading them would tell a third
// party who reads the notification, and when).
//
// Supported: paragraphs (single newlines are line breaks, as in chat apps),
// **strong**, *emphasis*, ~~strike~~, `code`, fenced code blocks, [links](url),
// <autolinks> and bare URLs, bullet and numbered lists (nested by indenting),
// > quotes, # headings (shown as bold lines), --- rules, and \escapes.

const MAX_DEPTH = 8;
const SAFE_PROTOCOLS = new Set(["http:", "https:", "mailto:"]);
const ESCAPABLE = "\\`*_{}[]()#+-.!~<>|\"'";

const FENCE = /^ {0,3}(`{3,}|~{3,})\s*([^`\s]*)[^`]*$/;
const HEADING = /^ {0,3}(#{1,6})(?:\s+(.*?))?(?:\s+#+)?\s*$/;
const RULE = /^ {0,3}([-*_])(?:\s*\1){2,}\s*$/;
const QUOTE = /^ {0,3}> ?/;
const ITEM = /^( {0,3})([-*+]|\d{1,9}[.)])(\s+|$)(.*)$/;
const BARE_URL = /^(?:https?:\/\/|mailto:)[^\s<>"]*[^\s<>".,:;!?'")\]}*_~]/;
const AUTOLINK = /^<((?:https?:\/\/|mailto:)[^\s<>]+)>/;

/** The URL if it is absolute and http(s)/mailto, else null. */
export function safeUrl(raw) {
  try {
    const url = new URL(String(raw).trim());
    return SAFE_PROTOCOLS.has(url.protocol) ? url.href : null;
  } catch {
    return null;
  }
}

/** A link that opens outside the app without leaking the page as referrer. */
export function externalLink(href, title) {
  const a = document.createElement("a");
  a.href = href;
  a.rel = "noopener noreferrer";
  a.target = "_blank";
  if (title) a.title = title;
  return a;
}

/** Render Markdown source into a DocumentFragment. */
export function renderMarkdown(source) {
  const fragment = document.createDocumentFragment();
  const lines = String(source ?? "").replace(/\r\n?/g, "\n").split("\n");
  parseBlocks(lines, fragment, 0);
  return fragment;
}

/** Render plain text: paragraphs on blank lines, line breaks kept, URLs linked. */
export function renderPlainText(source) {
  const fragment = document.createDocumentFragment();
  const paragraphs = String(source ?? "").replace(/\r\n?/g, "\n").split(/\n\s*\n/);
  for (const para of paragraphs) {
    if (!para.trim()) continue;
    const p = document.createElement("p");
    para.split("\n").forEach((line, i) => {
      if (i > 0) p.append(document.createElement("br"));
      linkifyInto(line, p);
    });
    fragment.append(p);
  }
  return fragment;
}

function linkifyInto(text, parent) {
  let buffer = "";
  let i = 0;
  while (i < text.length) {
    const m = atWordStart(text, i) ? BARE_URL.exec(text.slice(i)) : null;
    const href = m && safeUrl(m[0]);
    if (href) {
      if (buffer) parent.append(buffer);
      buffer = "";
      const a = externalLink(href);
      a.textContent = m[0];
      parent.append(a);
      i += m[0].length;
    } else {
      buffer += text[i];
      i += 1;
    }
  }
  if (buffer) parent.append(buffer);
}

function atWordStart(text, i) {
  return i === 0 || /[\s(\[<"']/.test(text[i - 1]);
}

// -- blocks ------------------------------------------------------------------

function startsBlock(line) {
  return FENCE.test(line) || HEADING.test(line) || RULE.test(line) || QUOTE.test(line) || ITEM.test(line);
}

function parseBlocks(lines, parent, depth) {
  let i = 0;
  while (i < lines.length) {
    const line = lines[i];
    if (!line.trim()) {
      i += 1;
      continue;
    }
    if (depth >= MAX_DEPTH) {
      // absurd nesting: the rest as plain text
      parent.append(paragraph(lines.slice(i), depth));
      return;
    }
    let m;
    if ((m = FENCE.exec(line))) {
      i = codeBlock(lines, i, m, parent);
    } else if ((m = HEADING.exec(line)) && m[2] !== undefined) {
      const p = document.createElement("p");
      p.className = `md-heading md-h${m[1].length}`;
      const strong = document.createElement("strong");
      parseInline(m[2], strong, depth);
      p.append(strong);
      parent.append(p);
      i += 1;
    } else if (RULE.test(line)) {
      parent.append(document.createElement("hr"));
      i += 1;
    } else if (QUOTE.test(line)) {
      const inner = [];
      while (i < lines.length && QUOTE.test(lines[i])) inner.push(lines[i++].replace(QUOTE, ""));
      const quote = document.createElement("blockquote");
      parseBlocks(inner, quote, depth + 1);
      parent.append(quote);
    } else if (ITEM.test(line)) {
      i = list(lines, i, parent, depth);
    } else {
      const para = [];
      while (i < lines.length && lines[i].trim() && !(para.length && startsBlock(lines[i]))) {
        para.push(lines[i++]);
      }
      parent.append(paragraph(para, depth));
    }
  }
}

function paragraph(lines, depth) {
  const p = document.createElement("p");
  lines.forEach((line, n) => {
    if (n > 0) p.append(document.createElement("br"));
    parseInline(line.trim(), p, depth);
  });
  return p;
}

function codeBlock(lines, start, match, parent) {
  const fence = match[1];
  const indent = lines[start].length - lines[start].trimStart().length;
  const body = [];
  let i = start + 1;
  while (i < lines.length) {
    const close = lines[i].trim();
    if (close[0] === fence[0] && close.length >= fence.length && /^(`+|~+)$/.test(close)) {
      i += 1;
      break;
    }
    body.push(lines[i].replace(new RegExp(`^ {0,${indent}}`), ""));
    i += 1;
  }
  const pre = document.createElement("pre");
  const code = document.createElement("code");
  if (match[2]) code.dataset.lang = match[2];
  code.textContent = body.join("\n");
  pre.append(code);
  pre.tabIndex = 0; // scrollable regions must be reachable by keyboard
  parent.append(pre);
  return i;
}

function list(lines, start, parent, depth) {
  const first = ITEM.exec(lines[start]);
  const ordered = /\d/.test(first[2]);
  const el = document.createElement(ordered ? "ol" : "ul");
  if (ordered && parseInt(first[2], 10) !== 1) el.start = parseInt(first[2], 10);
  let i = start;
  while (i < lines.length) {
    const m = ITEM.exec(lines[i]);
    if (!m || /\d/.test(m[2]) !== ordered) break;
    const contentIndent = m[1].length + m[2].length + Math.min(Math.max(m[3].length, 1), 4);
    const item = [m[4]];
    let loose = false;
    i += 1;
    while (i < lines.length) {
      const line = lines[i];
      const indent = line.length - line.trimStart().length;
      if (!line.trim()) {
        // a blank line continues the item only if indented content follows
        let j = i + 1;
        while (j < lines.length && !lines[j].trim()) j += 1;
        const next = lines[j];
        if (next !== undefined && next.length - next.trimStart().length >= contentIndent) {
          loose = true;
          for (; i < j; i += 1) item.push("");
          continue;
        }
        break;
      }
      if (indent >= Math.min(contentIndent, 2) && indent > 0) {
        item.push(line.slice(Math.min(indent, contentIndent)));
      } else if (ITEM.test(line) || startsBlock(line)) {
        break;
      } else {
        item.push(line); // lazy continuation of the item's paragraph
      }
      i += 1;
    }
    const li = document.createElement("li");
    parseBlocks(item, li, depth + 1);
    if (!loose) {
      // tight lists: item text sits directly in the <li>
      for (const child of [...li.children]) {
        if (child.tagName === "P") child.replaceWith(...child.childNodes);
      }
    }
    el.append(li);
    // a blank line between items ends the list only if no item follows
    let j = i;
    while (j < lines.length && !lines[j].trim()) j += 1;
    if (j > i && j < lines.length && ITEM.test(lines[j])) i = j;
  }
  parent.append(el);
  return i;
}

// -- inline ------------------------------------------------------------------

function parseInline(text, parent, depth) {
  let buffer = "";
  const flush = () => {
    if (buffer) parent.append(buffer);
    buffer = "";
  };
  let i = 0;
  while (i < text.length) {
    const c = text[i];
    if (c === "\\" && i + 1 < text.length && ESCAPABLE.includes(text[i + 1])) {
      buffer += text[i + 1];
      i += 2;
      continue;
    }
    if (c === "`") {
      const run = /^`+/.exec(text.slice(i))[0];
      const end = text.indexOf(run, i + run.length);
      if (end !== -1 && text[end + run.length] !== "`") {
        flush();
        let inner = text.slice(i + run.length, end);
        if (/^ .* $/.test(inner) && inner.trim()) inner = inner.slice(1, -1);
        const code = document.createElement("code");
        code.textContent = inner;
        parent.append(code);
        i = end + run.length;
      } else {
        buffer += run;
        i += run.length;
      }
      continue;
    }
    if (c === "[" || (c === "!" && text[i + 1] === "[")) {
      const isImage = c === "!";
      const link = matchLink(text, isImage ? i + 1 : i);
      if (link) {
        const href = safeUrl(link.url);
        flush();
        if (href) {
          const a = externalLink(href, link.title);
          if (isImage) a.textContent = link.label || "image";
          else if (depth < MAX_DEPTH) parseInline(link.label, a, depth + 1);
          else a.textContent = link.label;
          parent.append(a);
        } else {
          // an unsafe target (javascript:, data:, relative…): the label as text
          parseInline(link.label, parent, depth + 1);
        }
        i = link.end;
        continue;
      }
    }
    if (c === "<") {
      const m = AUTOLINK.exec(text.slice(i));
      const href = m && safeUrl(m[1]);
      if (href) {
        flush();
        const a = externalLink(href);
        a.textContent = m[1];
        parent.append(a);
        i += m[0].length;
        continue;
      }
    }
    if ((c === "h" || c === "m") && atWordStart(text, i)) {
      const m = BARE_URL.exec(text.slice(i));
      const href = m && safeUrl(m[0]);
      if (href) {
        flush();
        const a = externalLink(href);
        a.textContent = m[0];
        parent.append(a);
        i += m[0].length;
        continue;
      }
    }
    if (c === "*" || c === "_" || c === "~") {
      const span = matchEmphasis(text, i);
      if (span && depth < MAX_DEPTH) {
        flush();
        const el = document.createElement(span.tag);
        parseInline(span.inner, el, depth + 1);
        parent.append(el);
        i = span.end;
        continue;
      }
      const run = new RegExp(`^\\${c}+`).exec(text.slice(i))[0];
      buffer += run;
      i += run.length;
      continue;
    }
    buffer += c;
    i += 1;
  }
  flush();
}

/** `[label](url "title")` starting at text[start] === "[". */
function matchLink(text, start) {
  let depth = 0;
  let i = start;
  for (; i < text.length; i += 1) {
    if (text[i] === "\\") i += 1;
    else if (text[i] === "[") depth += 1;
    else if (text[i] === "]" && --depth === 0) break;
  }
  if (i >= text.length || text[i + 1] !== "(") return null;
  const m = /^\(\s*<?([^\s<>()]*(?:\([^\s<>()]*\)[^\s<>()]*)*)>?(?:\s+"([^"]*)")?\s*\)/.exec(
    text.slice(i + 1),
  );
  if (!m) return null;
  return { label: text.slice(start + 1, i), url: m[1], title: m[2] ?? null, end: i + 1 + m[0].length };
}

const isSpace = (c) => c === undefined || /\s/.test(c);
const isPunct = (c) => c !== undefined && /[\p{P}\p{S}]/u.test(c);

function runEnd(text, start) {
  let end = start;
  while (text[end] === text[start]) end += 1;
  return end;
}

/** CommonMark's flanking rules for the delimiter run text[start, end). */
function flanking(text, start, end) {
  const before = text[start - 1];
  const after = text[end];
  return {
    left: !isSpace(after) && (!isPunct(after) || isSpace(before) || isPunct(before)),
    right: !isSpace(before) && (!isPunct(before) || isSpace(after) || isPunct(after)),
  };
}

function canOpen(text, start, end) {
  const f = flanking(text, start, end);
  // "_" inside a word (snake_case) is not emphasis
  return text[start] === "_" ? f.left && (!f.right || isPunct(text[start - 1])) : f.left;
}

function canClose(text, start, end) {
  const f = flanking(text, start, end);
  return text[start] === "_" ? f.right && (!f.left || isPunct(text[end])) : f.right;
}

/**
 * Emphasis starting at text[start] ("*", "_" or "~"): {tag, inner, end} or null.
 * A simplification of CommonMark's delimiter algorithm: the opening run is
 * matched with the next run of the same character that can close it, a run of
 * two being taken as strong (so "*a **b** c*" nests).
 */
function matchEmphasis(text, start) {
  const c = text[start];
  const end = runEnd(text, start);
  if (!canOpen(text, start, end)) return null;
  const sizes = c === "~" ? [2] : end - start >= 2 ? [2, 1] : [1];
  for (const size of sizes) {
    if (end - start < size) continue;
    const tag = c === "~" ? "del" : size === 2 ? "strong" : "em";
    const open = start + size;
    for (let j = end; j < text.length; j += 1) {
      if (text[j] === "\\") {
        j += 1;
        continue;
      }
      if (text[j] === "`") {
        const run = /^`+/.exec(text.slice(j))[0];
        const close = text.indexOf(run, j + run.length);
        if (close !== -1) j = close + run.length - 1;
        else j += run.length - 1;
        continue;
      }
      if (text[j] !== c) continue;
      const k = runEnd(text, j);
      const length = k - j;
      if (length >= size && !(size === 1 && length === 2) && canClose(text, j, k)) {
        return { tag, inner: text.slice(open, k - size), end: k };
      }
      j = k - 1;
    }
  }
  return null;
}
