// <notifyd-inbox>: notifyd's notification center for an application's own pages.
//
//   <script type="module" src="https://notify.example.org/embed/notifyd-inbox.js"></script>
//   <notifyd-inbox server="https://notify.example.org" topics="user/alice/*"></notifyd-inbox>
//   document.querySelector("notifyd-inbox").tokenProvider = async () => (await fetch("/notifyd-token")).text();
//
// A bell with the unread count opens a panel with the live list. The credential is
// a bearer token (an nfy_ token or a JWT notifyd trusts): the `token` attribute, or
// better the `tokenProvider` property, an async function returning a fresh token,
// called at start, shortly before a JWT's `exp`, and after any 401. The page must
// be on an origin listed in notifyd's `cors_origins`. Live updates come from
// /v1/stream/sse read with fetch() (so the token travels in a header, not the URL);
// every reconnect asks for `since=<last id>`, so nothing published meanwhile is
// missed. Event content only ever reaches the DOM as text. No build step, no
// dependencies: docs/embedding.md documents attributes, properties, events,
// custom properties and parts.

const LIST_LIMIT = 30;
const KEEPALIVE_GRACE_MS = 70_000; // the server sends a keepalive every 25 s by default
const MAX_BACKOFF_MS = 30_000;
const RECOUNT_DELAY_MS = 250;
const SIGNED_OUT = Symbol("signed out");

const STYLE = `
:host {
  --_accent: var(--notifyd-accent, #1d4ed8);
  --_accent-fg: var(--notifyd-accent-fg, #ffffff);
  --_bg: var(--notifyd-bg, #ffffff);
  --_fg: var(--notifyd-fg, #1f2937);
  --_muted: var(--notifyd-muted, #4b5563);
  --_border: var(--notifyd-border, #d1d5db);
  --_unread-bg: var(--notifyd-unread-bg, #eff6ff);
  --_badge-bg: var(--notifyd-badge-bg, #b91c1c);
  --_badge-fg: var(--notifyd-badge-fg, #ffffff);
  --_focus: var(--notifyd-focus, #c2410c);
  --_shadow: var(--notifyd-shadow, 0 10px 30px rgb(0 0 0 / 0.18));
  display: inline-block;
  position: relative;
  font-family: var(--notifyd-font, system-ui, -apple-system, "Segoe UI", Roboto, sans-serif);
  font-size: var(--notifyd-font-size, 0.95rem);
  line-height: 1.4;
  color-scheme: light;
}
@media (prefers-color-scheme: dark) {
  :host(:not([theme="light"])) {
    --_accent: var(--notifyd-accent, #93c5fd);
    --_accent-fg: var(--notifyd-accent-fg, #0b1120);
    --_bg: var(--notifyd-bg, #111827);
    --_fg: var(--notifyd-fg, #f3f4f6);
    --_muted: var(--notifyd-muted, #a3aab8);
    --_border: var(--notifyd-border, #4b5563);
    --_unread-bg: var(--notifyd-unread-bg, #172554);
    --_badge-bg: var(--notifyd-badge-bg, #fca5a5);
    --_badge-fg: var(--notifyd-badge-fg, #0b1120);
    --_focus: var(--notifyd-focus, #fdba74);
    color-scheme: dark;
  }
}
:host([theme="dark"]) {
  --_accent: var(--notifyd-accent, #93c5fd);
  --_accent-fg: var(--notifyd-accent-fg, #0b1120);
  --_bg: var(--notifyd-bg, #111827);
  --_fg: var(--notifyd-fg, #f3f4f6);
  --_muted: var(--notifyd-muted, #a3aab8);
  --_border: var(--notifyd-border, #4b5563);
  --_unread-bg: var(--notifyd-unread-bg, #172554);
  --_badge-bg: var(--notifyd-badge-bg, #fca5a5);
  --_badge-fg: var(--notifyd-badge-fg, #0b1120);
  --_focus: var(--notifyd-focus, #fdba74);
  color-scheme: dark;
}
[hidden] { display: none !important; }
.sr-only {
  position: absolute; width: 1px; height: 1px; padding: 0; margin: -1px;
  overflow: hidden; clip: rect(0 0 0 0); white-space: nowrap; border: 0;
}
button { font: inherit; color: inherit; cursor: pointer; }
:focus-visible { outline: 3px solid var(--_focus); outline-offset: 2px; }
.bell {
  position: relative; display: inline-grid; place-items: center;
  width: 2.5rem; height: 2.5rem; padding: 0; border-radius: 999px;
  border: 1px solid var(--_border); background: var(--_bg); color: var(--_fg);
}
.bell svg { width: 1.3rem; height: 1.3rem; }
.badge {
  position: absolute; top: -0.35rem; inset-inline-end: -0.35rem;
  min-width: 1.25rem; height: 1.25rem; padding: 0 0.3rem; box-sizing: border-box;
  border-radius: 999px; background: var(--_badge-bg); color: var(--_badge-fg);
  font-size: 0.75rem; font-weight: 700; line-height: 1.25rem; text-align: center;
}
.panel {
  position: absolute; z-index: var(--notifyd-z-index, 1000);
  top: calc(100% + 0.5rem); inset-inline-end: 0;
  width: var(--notifyd-panel-width, min(24rem, calc(100vw - 1rem)));
  max-height: var(--notifyd-panel-max-height, min(32rem, 80vh));
  display: flex; flex-direction: column;
  background: var(--_bg); color: var(--_fg);
  border: 1px solid var(--_border); border-radius: var(--notifyd-radius, 0.75rem);
  box-shadow: var(--_shadow); overflow: hidden;
}
.panel[data-align="start"] { inset-inline-end: auto; inset-inline-start: 0; }
.panel:focus { outline: none; }
.header {
  display: flex; align-items: center; gap: 0.5rem;
  padding: 0.6rem 0.75rem; border-bottom: 1px solid var(--_border);
}
.heading { margin: 0; font-size: 1rem; font-weight: 650; flex: 1; }
.link-button {
  border: 0; background: none; padding: 0.25rem 0.4rem; border-radius: 0.35rem;
  color: var(--_accent); text-decoration: underline; text-underline-offset: 0.15em;
}
.link-button:disabled { color: var(--_muted); text-decoration: none; cursor: default; }
.close {
  border: 0; background: none; width: 2rem; height: 2rem; border-radius: 0.35rem;
  font-size: 1.25rem; line-height: 1; color: var(--_fg);
}
.notice { margin: 0; padding: 0.6rem 0.75rem; color: var(--_muted); border-bottom: 1px solid var(--_border); }
.list { list-style: none; margin: 0; padding: 0; overflow-y: auto; overscroll-behavior: contain; }
.item { padding: 0.65rem 0.75rem; border-bottom: 1px solid var(--_border); }
.item:last-child { border-bottom: 0; }
.item[data-unread="true"] { background: var(--_unread-bg); }
.item:focus-visible { outline-offset: -3px; }
.line { display: flex; gap: 0.5rem; align-items: baseline; }
.dot { flex: none; width: 0.5rem; height: 0.5rem; border-radius: 50%; background: transparent; transform: translateY(-0.1rem); }
.item[data-unread="true"] .dot { background: var(--_accent); }
.title { margin: 0; font-size: 0.95rem; font-weight: 600; flex: 1; overflow-wrap: anywhere; }
.title a { color: var(--_accent); }
.time { flex: none; color: var(--_muted); font-size: 0.8rem; }
.body { margin: 0.25rem 0 0 1rem; white-space: pre-wrap; overflow-wrap: anywhere; max-height: 8.5em; overflow: hidden; }
.meta { margin: 0.2rem 0 0 1rem; color: var(--_muted); font-size: 0.8rem; }
.controls { display: flex; flex-wrap: wrap; gap: 0.35rem; margin: 0.45rem 0 0 1rem; align-items: center; }
.button {
  border: 1px solid var(--_border); background: var(--_bg); color: var(--_fg);
  padding: 0.2rem 0.6rem; border-radius: 0.4rem; font-size: 0.85rem;
  text-decoration: none; display: inline-block;
}
.button.primary { background: var(--_accent); border-color: var(--_accent); color: var(--_accent-fg); }
.note { color: var(--_muted); font-size: 0.8rem; }
.empty { margin: 0; padding: 1.5rem 0.75rem; text-align: center; color: var(--_muted); }
@media (prefers-reduced-motion: no-preference) {
  .item { transition: background-color 0.3s; }
}
`;

let sharedSheet = null;

function styleFor(root) {
  // a constructed sheet is not inline style: host pages with a strict
  // Content-Security-Policy (no 'unsafe-inline') still style the component
  if ("adoptedStyleSheets" in root && typeof CSSStyleSheet === "function" && "replaceSync" in CSSStyleSheet.prototype) {
    if (!sharedSheet) {
      sharedSheet = new CSSStyleSheet();
      sharedSheet.replaceSync(STYLE);
    }
    root.adoptedStyleSheets = [sharedSheet];
    return null;
  }
  const style = document.createElement("style");
  style.textContent = STYLE;
  return style;
}

/** An element; `props` are attributes, except text (textContent) and on* (listeners). */
function h(tag, props = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (value === null || value === undefined || value === false) continue;
    if (key === "text") el.textContent = value;
    else if (key.startsWith("on")) el.addEventListener(key.slice(2), value);
    else el.setAttribute(key, value === true ? "" : String(value));
  }
  for (const child of children) if (child) el.append(child);
  return el;
}

function bellIcon() {
  const ns = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(ns, "svg");
  svg.setAttribute("viewBox", "0 0 24 24");
  svg.setAttribute("aria-hidden", "true");
  svg.setAttribute("focusable", "false");
  const path = document.createElementNS(ns, "path");
  path.setAttribute("fill", "none");
  path.setAttribute("stroke", "currentColor");
  path.setAttribute("stroke-width", "2");
  path.setAttribute("stroke-linecap", "round");
  path.setAttribute("stroke-linejoin", "round");
  path.setAttribute("d", "M6 8a6 6 0 0 1 12 0c0 7 3 9 3 9H3s3-2 3-9M10.3 21a1.94 1.94 0 0 0 3.4 0");
  svg.append(path);
  return svg;
}

/** `url` if it is an absolute http(s) URL, else null: no javascript:, data: … */
function safeUrl(url) {
  if (typeof url !== "string" || !url) return null;
  try {
    const parsed = new URL(url);
    return parsed.protocol === "http:" || parsed.protocol === "https:" ? parsed.href : null;
  } catch {
    return null;
  }
}

/**
 * Whether `topic` matches the glob `pattern` (`*`: any run of characters, `/`
 * included), as notifyd matches them. Greedy with one backtrack point: at most
 * pattern × topic steps, never exponential.
 */
function globMatch(pattern, topic) {
  let p = 0;
  let t = 0;
  let star = -1;
  let mark = 0;
  while (t < topic.length) {
    if (p < pattern.length && pattern[p] === "*") {
      star = p++;
      mark = t;
    } else if (p < pattern.length && pattern[p] === topic[t]) {
      p++;
      t++;
    } else if (star >= 0) {
      p = star + 1;
      t = ++mark;
    } else {
      return false;
    }
  }
  while (p < pattern.length && pattern[p] === "*") p++;
  return p === pattern.length;
}

/** Markdown as plain text: the marks that would only be noise go, the words stay. */
function markdownAsText(text) {
  return text
    .replace(/!\[([^\]\n]*)\]\([^)\n]*\)/g, "$1")
    .replace(/\[([^\]\n]*)\]\([^)\n]*\)/g, "$1")
    .replace(/^ {0,3}#{1,6}[ \t]+/gm, "")
    .replace(/^ {0,3}>[ \t]?/gm, "")
    .replace(/(\*\*|__|~~|`)/g, "");
}

/**
 * How long a token lives, in ms: a JWT's `exp - iat` (or `exp` - now without
 * `iat`); null for a token without `exp` (an nfy_ token). Using the token's own
 * lifetime rather than its `exp` keeps a skewed browser clock from refreshing too
 * late or in a loop. The payload is only read, not verified: notifyd verifies it.
 */
function tokenLifetime(token) {
  const parts = token.split(".");
  if (parts.length !== 3) return null;
  try {
    const b64 = parts[1].replace(/-/g, "+").replace(/_/g, "/");
    const claims = JSON.parse(atob(b64 + "=".repeat((4 - (b64.length % 4)) % 4)));
    if (typeof claims.exp !== "number") return null;
    return typeof claims.iat === "number" ? (claims.exp - claims.iat) * 1000 : claims.exp * 1000 - Date.now();
  } catch {
    return null;
  }
}

class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

const relative = typeof Intl !== "undefined" && Intl.RelativeTimeFormat ? new Intl.RelativeTimeFormat(undefined, { numeric: "auto" }) : null;

function ago(iso) {
  const then = Date.parse(iso);
  if (Number.isNaN(then)) return "";
  const seconds = Math.round((then - Date.now()) / 1000);
  if (!relative) return new Date(then).toLocaleString();
  const abs = Math.abs(seconds);
  if (abs < 45) return "just now";
  if (abs < 45 * 60) return relative.format(Math.round(seconds / 60), "minute");
  if (abs < 22 * 3600) return relative.format(Math.round(seconds / 3600), "hour");
  if (abs < 7 * 86400) return relative.format(Math.round(seconds / 86400), "day");
  return new Date(then).toLocaleDateString();
}

let instances = 0;

export class NotifydInbox extends HTMLElement {
  static observedAttributes = ["server", "topics", "token"];

  constructor() {
    super();
    this.uid = `ni${++instances}`;
    this.events = new Map(); // id → event (with this user's read/archived state)
    this.notes = new Map(); // id → what happened to its last action
    this.unread = 0;
    this.cursor = null;
    this.status = "idle";
    this.isOpen = false;
    this._provider = null;
    this._token = null;
    this._refreshAt = Infinity;
    this._pendingToken = null;
    this._generation = 0;
    this._abort = null;
    this._timers = new Set();
    this._recountTimer = null;
    this._refreshTimer = null;
    this._restartTimer = null;
    this._wake = null;
    this._opens = 0;
    this._onDocPointer = (e) => {
      if (this.isOpen && !e.composedPath().includes(this)) this.close({ restoreFocus: false });
    };
    this._onOnline = () => this.reconnect();
    this.render();
    this.addEventListener("focusout", (e) => {
      // focus moved to the host page (inside the shadow root, relatedTarget is this element)
      const to = e.relatedTarget;
      if (this.isOpen && to && to !== this && !this.contains(to)) this.close({ restoreFocus: false });
    });
  }

  // -- public API -------------------------------------------------------------

  /** An async function returning a fresh token (a JWT or nfy_ token), or null when signed out. */
  get tokenProvider() {
    return this._provider;
  }

  set tokenProvider(fn) {
    this._provider = typeof fn === "function" ? fn : null;
    this._token = null;
    this.restartSoon();
  }

  /** The unread count shown on the badge. */
  get unreadCount() {
    return this.unread;
  }

  /** The notifications in the panel, newest first (copies). */
  get notifications() {
    return this.sorted().map((ev) => ({ ...ev }));
  }

  open() {
    if (this.isOpen) return;
    this.isOpen = true;
    this.$panel.hidden = false;
    this.placePanel();
    this.$bell.setAttribute("aria-expanded", "true");
    document.addEventListener("pointerdown", this._onDocPointer, true);
    this.renderTimes();
    const first = this.$list.querySelector('li[tabindex="0"]');
    (first ?? this.$panel).focus();
    this.emit("notifyd-toggle", { open: true });
  }

  /** Open the panel towards the side with room (the `align` attribute forces one). */
  placePanel() {
    const forced = this.getAttribute("align");
    if (forced === "start" || forced === "end") {
      this.$panel.dataset.align = forced;
      return;
    }
    const bell = this.$bell.getBoundingClientRect();
    const rtl = getComputedStyle(this).direction === "rtl";
    const width = this.$panel.offsetWidth;
    const roomBefore = rtl ? innerWidth - bell.left : bell.right; // room when aligned to the end
    this.$panel.dataset.align = roomBefore >= width || roomBefore >= innerWidth / 2 ? "end" : "start";
  }

  close({ restoreFocus = true } = {}) {
    if (!this.isOpen) return;
    const hadFocus = this.shadowRoot.activeElement !== null;
    this.isOpen = false;
    this.$panel.hidden = true;
    this.$bell.setAttribute("aria-expanded", "false");
    document.removeEventListener("pointerdown", this._onDocPointer, true);
    if (restoreFocus && hadFocus) this.$bell.focus();
    this.emit("notifyd-toggle", { open: false });
  }

  toggle() {
    if (this.isOpen) this.close();
    else this.open();
  }

  /** Mark every notification (under `topics`) read. */
  async markAllRead() {
    const filters = this.topicList() ?? [null];
    await Promise.all(filters.map((topic) => this.api("POST", "/v1/inbox/read-all", { query: { topic } })));
    for (const ev of this.events.values()) ev.read = true;
    this.renderList();
    this.setUnread(0);
    this.recountSoon();
  }

  /** Forget the current token, ask for a new one and reconnect (e.g. after the user signed in). */
  refresh() {
    this._token = null;
    this.restartSoon();
  }

  /** Drop the live connection and open it again now (with since=<last id>). */
  reconnect() {
    if (this._abort) this._abort.abort();
    if (this._wake) this._wake();
  }

  // -- lifecycle --------------------------------------------------------------

  connectedCallback() {
    // a page may set tokenProvider before this module defined the element: that
    // own property hides the class's setter until it is moved over
    if (Object.prototype.hasOwnProperty.call(this, "tokenProvider")) {
      const provider = this.tokenProvider;
      delete this.tokenProvider;
      this.tokenProvider = provider;
    }
    addEventListener("online", this._onOnline);
    this.restartSoon();
  }

  disconnectedCallback() {
    removeEventListener("online", this._onOnline);
    document.removeEventListener("pointerdown", this._onDocPointer, true);
    this.stop();
  }

  attributeChangedCallback(name, before, after) {
    if (before === after) return;
    if (name === "token") this._token = null;
    this.restartSoon();
  }

  restartSoon() {
    // attributes and the provider are often set one after the other: start once
    clearTimeout(this._restartTimer);
    this._restartTimer = setTimeout(() => {
      if (this.isConnected) this.start();
    }, 0);
  }

  stop() {
    this._generation += 1;
    if (this._abort) this._abort.abort();
    this._abort = null;
    if (this._wake) this._wake();
    for (const t of this._timers) clearTimeout(t);
    this._timers.clear();
    this._news = [];
    clearTimeout(this._recountTimer);
    this._recountTimer = null;
    this._pendingToken = null;
    clearTimeout(this._refreshTimer);
    clearInterval(this._clock);
  }

  start() {
    this.stop();
    const generation = this._generation;
    this.events.clear();
    this.cursor = null;
    this._opens = 0;
    this.renderList();
    this.setUnread(0);
    this._clock = setInterval(() => this.isOpen && this.renderTimes(), 60_000);
    this.run(generation).catch((err) => this.fail(err));
  }

  alive(generation) {
    return generation === this._generation && this.isConnected;
  }

  // -- credentials ----------------------------------------------------------

  /** The current token; a new one from the provider when `force`, or when none is held or it expires soon. */
  async credential(force = false) {
    if (!this._provider) {
      const attr = this.getAttribute("token");
      return attr ? attr : SIGNED_OUT;
    }
    if (!force && this._token && !this.expiresSoon()) return this._token;
    if (!this._pendingToken) {
      // one provider call at a time; stop() forgets it, so a restart asks again
      const generation = this._generation;
      const pending = (async () => {
        await null; // `pending` is assigned before the finally below runs
        try {
          const token = await this._provider();
          if (generation !== this._generation) return SIGNED_OUT; // a restart asks again
          this._token = typeof token === "string" && token.trim() ? token.trim() : null;
          this.scheduleRefresh(generation);
          return this._token ?? SIGNED_OUT;
        } finally {
          if (this._pendingToken === pending) this._pendingToken = null;
        }
      })();
      this._pendingToken = pending;
    }
    return this._pendingToken;
  }

  expiresSoon() {
    return Date.now() >= this._refreshAt;
  }

  /** Ask for the next token when 80 % of this one's life has passed (at most a minute before its end). */
  scheduleRefresh(generation) {
    clearTimeout(this._refreshTimer);
    const lifetime = this._token ? tokenLifetime(this._token) : null;
    if (lifetime === null) {
      this._refreshAt = Infinity;
      return;
    }
    const margin = Math.max(500, Math.min(60_000, lifetime * 0.2));
    // at least a second: a token that is (or looks) expired must not make a loop
    const wait = Math.max(1000, lifetime - margin);
    this._refreshAt = Date.now() + wait;
    this._refreshTimer = setTimeout(async () => {
      if (!this.alive(generation)) return;
      try {
        await this.credential(true);
      } catch (err) {
        this.emit("notifyd-error", { message: String(err?.message ?? err) });
        return;
      }
      // the stream was opened with the old token: open it again with the new one
      // (since=<last id>, so nothing is lost in between)
      this.reconnect();
    }, wait);
  }

  // -- HTTP -------------------------------------------------------------------

  base() {
    const server = this.getAttribute("server") || new URL("../", import.meta.url).href;
    return new URL(server.endsWith("/") ? server : server + "/", location.href);
  }

  topicList() {
    const raw = this.getAttribute("topics");
    if (!raw) return null;
    const list = raw.split(",").map((t) => t.trim()).filter(Boolean);
    return list.length ? list : null;
  }

  url(path, query = {}) {
    const url = new URL(path.replace(/^\//, ""), this.base());
    for (const [k, v] of Object.entries(query)) if (v !== null && v !== undefined && v !== "") url.searchParams.set(k, String(v));
    return url;
  }

  /** One API call with the bearer token; after a 401 a fresh token is fetched and the call made once more. */
  async api(method, path, { query, body } = {}) {
    for (let attempt = 0; ; attempt++) {
      const token = await this.credential(attempt > 0);
      if (token === SIGNED_OUT) throw new ApiError(401, "not signed in");
      const headers = { Accept: "application/json", Authorization: `Bearer ${token}` };
      if (body !== undefined) headers["Content-Type"] = "application/json";
      const response = await fetch(this.url(path, query), {
        method,
        headers,
        body: body === undefined ? undefined : JSON.stringify(body),
        credentials: "omit",
        cache: "no-store",
      });
      if (response.status === 401 && attempt === 0 && this._provider) continue;
      const data = await response.json().catch(() => null);
      if (!response.ok) throw new ApiError(response.status, data?.error?.message ?? `HTTP ${response.status}`);
      return data;
    }
  }

  // -- the live loop ----------------------------------------------------------

  async run(generation) {
    let attempt = 0;
    let loaded = false;
    while (this.alive(generation)) {
      try {
        const token = await this.credential();
        if (!this.alive(generation)) return;
        if (token === SIGNED_OUT) {
          this.setStatus("signed-out");
          return; // until the token attribute, the provider or refresh() starts again
        }
        if (!loaded) {
          this.setStatus("connecting");
          await this.load();
          loaded = true;
        }
        if (!this.alive(generation)) return;
        const opened = await this.stream(generation, token);
        if (opened) attempt = 0;
      } catch (err) {
        if (!this.alive(generation)) return;
        if (err instanceof ApiError && err.status === 401) {
          // the provider was asked already (api() and stream() retry once)
          if (!this._provider) {
            this.setStatus("signed-out");
            return;
          }
          this._token = null;
        }
        this.setStatus(navigator.onLine === false ? "offline" : "error");
        this.emit("notifyd-error", { message: String(err?.message ?? err), status: err?.status ?? null });
      }
      if (!this.alive(generation)) return;
      const backoff = Math.min(MAX_BACKOFF_MS, 500 * 2 ** attempt) * (0.8 + Math.random() * 0.4);
      attempt += 1;
      if (this.status === "live") this.setStatus("connecting");
      // a stream that ended after it opened (a reconnect, a new token) opens again at once
      await this.sleep(attempt === 1 && this.status !== "error" ? 50 : backoff);
    }
  }

  sleep(ms) {
    return new Promise((resolve) => {
      const t = setTimeout(done, ms);
      this._timers.add(t);
      const self = this;
      function done() {
        clearTimeout(t);
        self._timers.delete(t);
        if (self._wake === done) self._wake = null;
        resolve();
      }
      this._wake = done;
    });
  }

  /** The newest notifications and the unread count; the cursor the stream resumes from. */
  async load() {
    const filters = this.topicList() ?? [null];
    // the newest id the user can see, archived ones included: the stream replays from there
    const newest = await Promise.all(
      filters.map((topic) => this.api("GET", "/v1/events", { query: { topic, limit: 1, archived: "include" } })),
    );
    const ids = newest.flatMap((page) => page.events.map((ev) => ev.id));
    this.cursor = ids.length ? Math.max(...ids) : 0;
    const pages = await Promise.all(filters.map((topic) => this.api("GET", "/v1/events", { query: { topic, limit: LIST_LIMIT } })));
    for (const page of pages) for (const ev of page.events) this.events.set(ev.id, ev);
    this.trim();
    this.renderList();
    await this.recount();
  }

  /** Read one SSE connection until it ends; true if it opened. */
  async stream(generation, token) {
    const controller = new AbortController();
    this._abort = controller;
    let watchdog = null;
    const feed = () => {
      clearTimeout(watchdog);
      watchdog = setTimeout(() => controller.abort(), KEEPALIVE_GRACE_MS);
    };
    try {
      const query = { since: this.cursor ?? undefined, topics: this.topicList()?.join(",") };
      feed();
      const response = await fetch(this.url("/v1/stream/sse", query), {
        headers: { Accept: "text/event-stream", Authorization: `Bearer ${token}` },
        credentials: "omit",
        cache: "no-store",
        signal: controller.signal,
      });
      if (response.status === 401) {
        if (!this._provider) throw new ApiError(401, "the token was refused");
        await this.credential(true);
        return false;
      }
      if (!response.ok || !response.body) {
        const data = await response.json().catch(() => null);
        throw new ApiError(response.status, data?.error?.message ?? `HTTP ${response.status}`);
      }
      this.setStatus("live");
      if (this._opens++ > 0) {
        // read state may have changed while the stream was away: state frames are not replayed
        this.recountSoon(0);
        this.reloadSoon();
      }
      const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
      let buffer = "";
      let data = [];
      while (this.alive(generation)) {
        const { value, done } = await reader.read();
        if (done) break;
        feed();
        buffer += value;
        let newline;
        while ((newline = buffer.indexOf("\n")) >= 0) {
          let line = buffer.slice(0, newline);
          buffer = buffer.slice(newline + 1);
          if (line.endsWith("\r")) line = line.slice(0, -1);
          if (line === "") {
            if (data.length) this.receive(data.join("\n"));
            data = [];
          } else if (line.startsWith("data:")) {
            data.push(line.slice(line[5] === " " ? 6 : 5));
          }
        }
      }
      return true;
    } catch (err) {
      if (controller.signal.aborted) return true; // reconnect() or the watchdog
      throw err;
    } finally {
      clearTimeout(watchdog);
      if (this._abort === controller) this._abort = null;
      controller.abort();
    }
  }

  receive(text) {
    let frame;
    try {
      frame = JSON.parse(text);
    } catch {
      return;
    }
    if (frame.type === "event" && frame.event && typeof frame.event.id === "number") {
      if (this.cursor !== null && frame.event.id <= this.cursor) return;
      this.cursor = frame.event.id;
      this.onEvent(frame.event);
    } else if (frame.type === "state") {
      this.onState(frame);
    } else if (frame.type === "resync") {
      this.reconnect();
    }
  }

  onEvent(raw) {
    if (raw.expires_at && Date.parse(raw.expires_at) <= Date.now()) return;
    const known = this.events.get(raw.id);
    const ev = { read: false, seen: false, archived: false, ...known, ...raw };
    if (ev.collapse_key) {
      for (const other of [...this.events.values()]) {
        if (other.id < ev.id && other.topic === ev.topic && other.collapse_key === ev.collapse_key) this.events.delete(other.id);
      }
    }
    this.events.set(ev.id, ev);
    this.trim();
    this.renderList();
    if (!known) {
      if (!ev.read) this.setUnread(this.unread + 1);
      this.announce(ev);
      this.emit("notifyd-notification", { event: { ...ev } });
    }
    this.recountSoon();
  }

  onState(frame) {
    if (frame.all) {
      const filter = frame.filter ?? {};
      if (Object.keys(filter).some((key) => key !== "topic")) {
        // read-all by category, priority or search elsewhere: ask the server which
        this.reloadSoon();
      } else {
        for (const ev of this.events.values()) {
          if (ev.id <= frame.upto && (!filter.topic || globMatch(filter.topic, ev.topic))) ev.read = true;
        }
        this.renderList();
      }
      this.recountSoon(0);
      return;
    }
    const ev = this.events.get(frame.id);
    if (ev) {
      const wasUnread = !ev.read && !ev.archived;
      if (frame.state === "read" || frame.state === "click") ev.read = true;
      else if (frame.state === "unread") ev.read = false;
      else if (frame.state === "archive") ev.archived = true;
      else if (frame.state === "unarchive") ev.archived = false;
      if (ev.archived) this.events.delete(ev.id);
      const isUnread = !ev.read && !ev.archived;
      if (wasUnread !== isUnread) this.setUnread(Math.max(0, this.unread + (isUnread ? 1 : -1)));
      this.renderList();
    } else if (frame.state === "unarchive") {
      this.reloadSoon();
    }
    this.recountSoon(0);
  }

  reloadSoon() {
    const t = setTimeout(async () => {
      this._timers.delete(t);
      try {
        const filters = this.topicList() ?? [null];
        const pages = await Promise.all(filters.map((topic) => this.api("GET", "/v1/events", { query: { topic, limit: LIST_LIMIT } })));
        const fresh = pages.flatMap((page) => page.events);
        const newest = Math.max(0, ...fresh.map((ev) => ev.id));
        // the server's list and state, and what arrived live after it was read
        const later = [...this.events.values()].filter((ev) => ev.id > newest);
        this.events = new Map([...fresh, ...later].map((ev) => [ev.id, ev]));
        this.trim();
        this.renderList();
      } catch {
        // the next event or reconnect brings the list up to date
      }
    }, RECOUNT_DELAY_MS);
    this._timers.add(t);
  }

  recountSoon(delay = RECOUNT_DELAY_MS) {
    if (this._recountTimer) return;
    this._recountTimer = setTimeout(() => {
      this._recountTimer = null;
      this.recount().catch(() => {});
    }, delay);
  }

  async recount() {
    const generation = this._generation;
    const filters = this.topicList() ?? [null];
    const counts = await Promise.all(filters.map((topic) => this.api("GET", "/v1/inbox/count", { query: { topic, unread: "true" } })));
    if (generation === this._generation) this.setUnread(counts.reduce((sum, c) => sum + (c?.count ?? 0), 0));
  }

  sorted() {
    return [...this.events.values()].filter((ev) => !ev.archived).sort((a, b) => b.id - a.id);
  }

  trim() {
    const keep = this.sorted().slice(0, LIST_LIMIT);
    if (keep.length === this.events.size) return;
    const ids = new Set(keep.map((ev) => ev.id));
    for (const id of [...this.events.keys()]) if (!ids.has(id)) this.events.delete(id);
  }

  // -- actions on one notification --------------------------------------------

  async setState(ev, state) {
    const before = { read: ev.read, archived: ev.archived };
    const wasUnread = !ev.read && !ev.archived;
    if (state === "read" || state === "unread") ev.read = state === "read";
    if (state === "archive") ev.archived = true;
    const isUnread = !ev.read && !ev.archived;
    if (ev.archived) this.events.delete(ev.id);
    if (wasUnread !== isUnread) this.setUnread(Math.max(0, this.unread + (isUnread ? 1 : -1)));
    const focusNext = state === "archive" ? this.neighbourOf(ev.id) : null;
    this.renderList();
    if (state === "archive") {
      this.say(`Archived “${ev.title || ev.topic}”.`);
      (focusNext ? this.$list.querySelector(`li[data-id="${focusNext}"]`) : this.$panel)?.focus();
    }
    try {
      await this.api("POST", `/v1/events/${ev.id}/${state}`);
    } catch (err) {
      Object.assign(ev, before);
      if (!ev.archived) this.events.set(ev.id, ev);
      this.renderList();
      this.recountSoon(0);
      this.say(`Could not change “${ev.title || ev.topic}”: ${err.message}`);
    }
  }

  neighbourOf(id) {
    const list = this.sorted();
    const i = list.findIndex((ev) => ev.id === id);
    return (list[i + 1] ?? list[i - 1])?.id ?? null;
  }

  async clicked(ev, action = null) {
    const wasUnread = !ev.read;
    ev.read = true;
    if (wasUnread) this.setUnread(Math.max(0, this.unread - 1));
    // after the click's default action (following the link) has run
    setTimeout(() => this.renderList(), 0);
    try {
      await this.api("POST", `/v1/events/${ev.id}/click`, { body: action ? { action } : {} });
    } catch {
      this.recountSoon(0);
    }
  }

  onLink(e, ev, url) {
    const allowed = this.emit("notifyd-click", { event: { ...ev }, url }, true);
    if (!allowed) e.preventDefault();
    this.clicked(ev);
  }

  async runAction(ev, action) {
    const url = safeUrl(action.url);
    if (!url) return;
    const note = (text) => {
      this.notes.set(ev.id, text);
      const el = this.$list.querySelector(`li[data-id="${ev.id}"] .note`);
      if (el) el.textContent = text;
    };
    note("Sending…");
    try {
      // another origin's endpoint: its answer is not readable (no-cors), and no
      // cookie of this page travels with it
      await fetch(url, { method: "POST", mode: "no-cors", credentials: "omit", keepalive: true });
      note(`${action.label}: sent`);
      await this.clicked(ev, action.label);
    } catch {
      note(`${action.label}: could not be sent`);
    }
  }

  // -- rendering ---------------------------------------------------------------

  render() {
    const root = this.attachShadow({ mode: "open" });
    const style = styleFor(root);
    const id = this.uid;
    this.$badge = h("span", { class: "badge", part: "badge", "aria-hidden": "true", hidden: true });
    this.$bell = h(
      "button",
      {
        type: "button",
        class: "bell",
        part: "bell",
        "aria-expanded": "false",
        "aria-haspopup": "dialog",
        "aria-controls": `${id}-panel`,
        "aria-label": "Notifications",
        onclick: () => this.toggle(),
      },
      bellIcon(),
      this.$badge,
    );
    this.$live = h("div", { class: "sr-only", role: "status", "aria-live": "polite" });
    this.$markAll = h("button", {
      type: "button",
      class: "link-button",
      part: "mark-all",
      text: "Mark all read",
      onclick: () => this.markAllRead().catch((err) => this.say(`Could not mark all read: ${err.message}`)),
    });
    this.$notice = h("p", { class: "notice", part: "notice", hidden: true });
    this.$list = h("ul", { class: "list", part: "list", "aria-labelledby": `${id}-heading`, onkeydown: (e) => this.onListKey(e) });
    this.$empty = h("p", { class: "empty", part: "empty", text: "No notifications" });
    this.$panel = h(
      "div",
      {
        id: `${id}-panel`,
        class: "panel",
        part: "panel",
        role: "dialog",
        "aria-labelledby": `${id}-heading`,
        tabindex: "-1",
        hidden: true,
        onkeydown: (e) => {
          if (e.key === "Escape") {
            e.stopPropagation();
            this.close();
          }
        },
      },
      h(
        "div",
        { class: "header", part: "header" },
        h("h2", { class: "heading", part: "heading", id: `${id}-heading`, text: "Notifications" }),
        this.$markAll,
        h("button", { type: "button", class: "close", part: "close", "aria-label": "Close notifications", text: "×", onclick: () => this.close() }),
      ),
      this.$notice,
      this.$list,
      this.$empty,
    );
    root.append(...[style, this.$bell, this.$live, this.$panel].filter(Boolean));
    this.$bell.addEventListener("keydown", (e) => {
      if (e.key === "Escape" && this.isOpen) this.close();
    });
  }

  renderList() {
    const focused = this.shadowRoot.activeElement;
    const focusedId = focused?.closest?.("li")?.dataset.id ?? null;
    const focusedPart = focused?.dataset?.role ?? null;
    const items = this.sorted().map((ev) => this.renderItem(ev));
    this.$list.replaceChildren(...items);
    this.$empty.hidden = items.length > 0;
    let current = focusedId ? this.$list.querySelector(`li[data-id="${focusedId}"]`) : null;
    current ??= this.$list.firstElementChild;
    if (current) current.tabIndex = 0;
    if (focusedId && current && current.dataset.id === focusedId) {
      const again = focusedPart ? current.querySelector(`[data-role="${focusedPart}"]`) : null;
      (again ?? current).focus();
    }
  }

  renderItem(ev) {
    const id = `${this.uid}-e${ev.id}`;
    const unread = !ev.read;
    const title = ev.title || ev.topic;
    const click = safeUrl(ev.click);
    const titleContent = click
      ? h("a", {
          href: click,
          part: "link",
          "data-role": "link",
          target: new URL(click).origin === location.origin ? null : "_blank",
          rel: "noopener noreferrer",
          text: title,
          onclick: (e) => this.onLink(e, ev, click),
        })
      : title;
    const when = h("time", { class: "time", part: "time", datetime: ev.created_at, title: new Date(ev.created_at).toLocaleString(), text: ago(ev.created_at) });
    const urgency = ev.priority >= 5 ? "Urgent" : ev.priority === 4 ? "High priority" : null;
    const meta = urgency ? h("p", { class: "meta", part: "meta", text: urgency }) : null;
    const body = ev.body ? h("p", { class: "body", part: "body", text: ev.format === "markdown" ? markdownAsText(ev.body) : ev.body }) : null;
    const note = h("span", { class: "note", part: "note", role: "status", text: this.notes.get(ev.id) ?? "" });
    const actions = (ev.actions ?? []).slice(0, 3).flatMap((action, index) => {
      const url = safeUrl(action?.url);
      if (!url || typeof action.label !== "string") return [];
      const method = String(action.method ?? "GET").toUpperCase();
      if (method === "GET") {
        return [
          h("a", {
            class: "button primary",
            part: "action",
            "data-role": `action-${index}`,
            href: url,
            target: "_blank",
            rel: "noopener noreferrer",
            text: action.label,
            onclick: () => this.clicked(ev, action.label),
          }),
        ];
      }
      return [
        h("button", {
          type: "button",
          class: "button primary",
          part: "action",
          "data-role": `action-${index}`,
          title: `${method} ${new URL(url).host}`,
          text: action.label,
          onclick: () => this.runAction(ev, action),
        }),
      ];
    });
    const li = h(
      "li",
      {
        class: "item",
        part: unread ? "item unread" : "item",
        "data-id": String(ev.id),
        "data-unread": unread ? "true" : "false",
        "aria-labelledby": `${id}-title`,
        "aria-describedby": `${id}-state`,
        tabindex: "-1",
      },
      h(
        "div",
        { class: "line" },
        h("span", { class: "dot", "aria-hidden": "true" }),
        h("h3", { class: "title", part: "title", id: `${id}-title` }, titleContent),
        when,
      ),
      h("span", { class: "sr-only", id: `${id}-state`, text: unread ? "Unread" : "Read" }),
      meta,
      body,
      h(
        "div",
        { class: "controls", part: "controls" },
        ...actions,
        h("button", {
          type: "button",
          class: "button",
          part: "button toggle-read",
          "data-role": "toggle-read",
          "aria-describedby": `${id}-title`,
          text: unread ? "Mark read" : "Mark unread",
          onclick: () => this.setState(ev, unread ? "read" : "unread"),
        }),
        h("button", {
          type: "button",
          class: "button",
          part: "button archive",
          "data-role": "archive",
          "aria-describedby": `${id}-title`,
          text: "Archive",
          onclick: () => this.setState(ev, "archive"),
        }),
        note,
      ),
    );
    return li;
  }

  renderTimes() {
    for (const time of this.$list.querySelectorAll("time")) time.textContent = ago(time.getAttribute("datetime"));
  }

  onListKey(e) {
    const items = [...this.$list.children];
    const li = e.target.closest?.("li");
    if (!li || !items.length) return;
    const i = items.indexOf(li);
    let next = null;
    if (e.key === "ArrowDown") next = items[Math.min(items.length - 1, i + 1)];
    else if (e.key === "ArrowUp") next = items[Math.max(0, i - 1)];
    else if (e.key === "Home") next = items[0];
    else if (e.key === "End") next = items[items.length - 1];
    if (!next) return;
    e.preventDefault();
    for (const item of items) item.tabIndex = -1;
    next.tabIndex = 0;
    next.focus();
  }

  setUnread(n) {
    const count = Math.max(0, n | 0);
    const changed = count !== this.unread;
    this.unread = count;
    this.$badge.textContent = count > 99 ? "99+" : String(count);
    this.$badge.hidden = count === 0 || this.status === "signed-out";
    this.updateLabel();
    if (changed) this.emit("notifyd-unread-change", { count });
  }

  updateLabel() {
    let label = "Notifications";
    if (this.status === "signed-out") label += ", not signed in";
    else label += this.unread ? `, ${this.unread} unread` : ", no unread";
    this.$bell.setAttribute("aria-label", label);
    this.$bell.title = label;
  }

  setStatus(status) {
    if (status === this.status) return;
    this.status = status;
    this.dataset.status = status;
    const notices = {
      "signed-out": "Not signed in.",
      offline: "Offline: new notifications will appear when the connection is back.",
      error: "Cannot reach the notification server; retrying…",
    };
    this.$notice.textContent = notices[status] ?? "";
    this.$notice.hidden = !notices[status];
    if (status === "signed-out") {
      this.events.clear();
      this.renderList();
    }
    this.setUnread(status === "signed-out" ? 0 : this.unread);
    this.updateLabel();
    this.emit("notifyd-status", { status });
  }

  /** Tell screen readers about new notifications, one sentence per burst. */
  announce(ev) {
    this._news = [...(this._news ?? []), ev];
    if (this._news.length > 1) return;
    const t = setTimeout(() => {
      this._timers.delete(t);
      const news = this._news;
      this._news = [];
      const latest = news[news.length - 1];
      const what = latest.title || latest.body?.slice(0, 120) || latest.topic;
      this.say(news.length === 1 ? `New notification: ${what}` : `${news.length} new notifications. The latest: ${what}`);
    }, 300);
    this._timers.add(t);
  }

  say(message) {
    const line = document.createElement("p");
    line.textContent = message;
    this.$live.append(line);
    while (this.$live.childElementCount > 3) this.$live.firstElementChild.remove();
  }

  fail(err) {
    this.setStatus("error");
    this.emit("notifyd-error", { message: String(err?.message ?? err) });
  }

  emit(type, detail, cancelable = false) {
    return this.dispatchEvent(new CustomEvent(type, { detail, bubbles: true, composed: true, cancelable }));
  }
}

if (!customElements.get("notifyd-inbox")) customElements.define("notifyd-inbox", NotifydInbox);
