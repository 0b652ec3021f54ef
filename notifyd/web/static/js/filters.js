// The inbox filters applied in the page (live events, events saved offline), with
// the daemon's meaning: an event matches here exactly when GET /v1/events with the
// same filters would list it. The search follows SQLite FTS5 as the daemon uses
// it (the unicode61 tokenizer, diacritics removed; the query built by
// notifyd/core/sqlite/queries.py fts_query). The TUI has the same rules in Python
// (notifyd/core/search.py); tests/test_filter_semantics.py checks both against the daemon
// with tests/data/filter_vectors.json. docs/api.md ("Search") explains the rules.

// The daemon's query words: Python's [\w\-]+ (letters, digits, "_" and "-"), the first 16.
const WORD = /[\p{L}\p{N}_-]+/gu;
const MAX_WORDS = 16;
// The combining accents FTS5 removes (those of a–z letters with one accent).
const DIACRITICS = new Set(
  [0x300, 0x301, 0x302, 0x303, 0x304, 0x306, 0x307, 0x308, 0x309, 0x30a, 0x30b, 0x30c, 0x30f,
   0x311, 0x31b, 0x323, 0x324, 0x325, 0x326, 0x327, 0x328, 0x32d, 0x32e, 0x330, 0x331].map((c) => String.fromCodePoint(c)),
);
// Case pairs where FTS5 folds further than toLowerCase.
const FOLD = { "ς": "σ", "ſ": "s", "µ": "μ", "ϐ": "β", "ϑ": "θ", "ϕ": "φ", "ϖ": "π", "ϰ": "κ", "ϱ": "ρ", "ϵ": "ε" };
const TOKEN_CHAR = /^[\p{L}\p{N}\p{Co}]$/u;
const ASCII = /^[\x00-\x7f]*$/;

function foldChar(char) {
  let out = "";
  for (let ch of char.toLowerCase()) {
    if (DIACRITICS.has(ch)) continue;
    ch = FOLD[ch] ?? ch;
    const parts = [...ch.normalize("NFD")];
    if (parts.length === 2 && parts[0] >= "a" && parts[0] <= "z" && DIACRITICS.has(parts[1])) ch = parts[0];
    out += ch;
  }
  return out;
}

/** ``text`` as FTS5's unicode61 tokenizer sees it: folded tokens, in order. */
export function tokens(text) {
  if (ASCII.test(text)) return text.toLowerCase().match(/[a-z0-9]+/g) ?? [];
  const found = [];
  let current = "";
  for (const char of text) {
    if (DIACRITICS.has(char)) continue; // part of the token, and removed
    if (TOKEN_CHAR.test(char)) current += foldChar(char);
    else if (current) {
      found.push(current);
      current = "";
    }
  }
  if (current) found.push(current);
  return found.filter(Boolean);
}

/** The phrases every match must contain and whether the last ends with a prefix; null: matches nothing. */
function parse(q) {
  const words = (q.normalize("NFC").match(WORD) ?? []).slice(0, MAX_WORDS);
  const phrases = words.map(tokens);
  const prefix = phrases.length > 0 && phrases[phrases.length - 1].length > 0;
  const kept = phrases.filter((p) => p.length > 0);
  return kept.length ? { phrases: kept, prefix } : null;
}

function contains(field, phrase, prefix) {
  const n = phrase.length;
  for (let start = 0; start + n <= field.length; start++) {
    let same = true;
    for (let i = 0; i < n - 1 && same; i++) same = field[start + i] === phrase[i];
    if (!same) continue;
    const last = field[start + n - 1];
    if (last === phrase[n - 1] || (prefix && last.startsWith(phrase[n - 1]))) return true;
  }
  return false;
}

/** Whether the daemon's q= search finds an event with this title and body. */
export function searchMatches(q, title, body) {
  const parsed = parse(String(q));
  if (!parsed) return false;
  const fields = [tokens(title ?? ""), tokens(body ?? "")];
  const last = parsed.phrases.length - 1;
  return parsed.phrases.every((phrase, i) =>
    fields.some((field) => contains(field, phrase, parsed.prefix && i === last)),
  );
}

/** The daemon's topic filter: an exact name, or a glob where "*" spans "/" too.
 * Linear, like notifyd/core/globs.py: the pieces between stars are found left to right. */
export function topicMatches(pattern, topic) {
  if (!pattern.includes("*")) return pattern === topic;
  const parts = pattern.split("*");
  const head = parts[0];
  const tail = parts[parts.length - 1];
  if (topic.length < head.length + tail.length || !topic.startsWith(head) || !topic.endsWith(tail)) return false;
  let at = head.length;
  const end = topic.length - tail.length;
  for (const piece of parts.slice(1, -1)) {
    if (!piece) continue;
    const found = topic.indexOf(piece, at);
    if (found < 0 || found + piece.length > end) return false;
    at = found + piece.length;
  }
  return true;
}

/**
 * Whether an event (with its read state) belongs in a list with filters ``f``:
 * {q, topic, category, min_priority, unread, archived: "exclude" | "only" | "include"}.
 * Empty values do not filter.
 */
export function matchesFilters(ev, f) {
  if (f.topic && !topicMatches(String(f.topic), String(ev.topic ?? ""))) return false;
  if (f.category && f.category !== ev.category) return false;
  if (f.min_priority && (ev.priority ?? 3) < Number(f.min_priority)) return false;
  if (f.unread && f.unread !== "false" && ev.read) return false;
  const archived = f.archived || "exclude";
  if (archived === "exclude" && ev.archived) return false;
  if (archived === "only" && !ev.archived) return false;
  return !f.q || searchMatches(f.q, ev.title, ev.body);
}
