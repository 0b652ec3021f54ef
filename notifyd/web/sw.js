// notifyd service worker: shows pushes, handles clicks on them, and keeps the
// app shell so the page opens offline. API calls (/v1/…) are never cached here:
// the page keeps its own copy of the last notifications (IndexedDB).

const SHELL_CACHE = "notifyd-shell-v1";
const SHELL = [
  "/",
  "/manifest.webmanifest",
  "/static/app.css",
  "/static/js/announce.js",
  "/static/js/api.js",
  "/static/js/app.js",
  "/static/js/card.js",
  "/static/js/dom.js",
  "/static/js/filters.js",
  "/static/js/hooks.js",
  "/static/js/inbox.js",
  "/static/js/markdown.js",
  "/static/js/offline.js",
  "/static/js/preferences.js",
  "/static/js/push.js",
  "/static/js/settings.js",
  "/static/js/stream.js",
  "/static/icons/icon.svg",
  "/static/icons/icon-192.png",
  "/static/icons/icon-512.png",
  "/static/icons/icon-maskable-512.png",
];
const DEFAULT_ICON = "/static/icons/icon-192.png";

self.addEventListener("install", (event) => {
  event.waitUntil(
    caches
      .open(SHELL_CACHE)
      .then((cache) => cache.addAll(SHELL.map((path) => new Request(path, { cache: "reload" }))))
      .then(() => self.skipWaiting()),
  );
});

self.addEventListener("activate", (event) => {
  event.waitUntil(
    caches
      .keys()
      .then((keys) => Promise.all(keys.filter((k) => k.startsWith("notifyd-") && k !== SHELL_CACHE).map((k) => caches.delete(k))))
      .then(() => self.clients.claim()),
  );
});

// -- offline shell ----------------------------------------------------------------

self.addEventListener("fetch", (event) => {
  const request = event.request;
  if (request.method !== "GET") return;
  const url = new URL(request.url);
  if (url.origin !== self.location.origin) return;
  if (request.mode === "navigate") {
    // only the notification center itself; other top-level paths (ntfy and
    // Gotify compatibility, /metrics…) are the server's business
    if (url.pathname === "/" || url.pathname === "/index.html") event.respondWith(networkFirst(request, "/"));
    return;
  }
  if (url.pathname.startsWith("/static/") || url.pathname === "/manifest.webmanifest") {
    event.respondWith(networkFirst(request, url.pathname));
  }
});

/**
 * The network when it answers (keeping the cached copy fresh), else the cache.
 * Network first, so a daemon upgrade shows at once and no cache version has to
 * be bumped for page changes.
 */
async function networkFirst(request, cacheKey) {
  const cache = await caches.open(SHELL_CACHE);
  try {
    const response = await fetch(request);
    if (response.ok && response.type === "basic") await cache.put(cacheKey, response.clone());
    return response;
  } catch (err) {
    const cached = await cache.match(cacheKey);
    if (cached) return cached;
    throw err;
  }
}

// -- pushes ---------------------------------------------------------------------

function parsePush(event) {
  if (!event.data) return {};
  try {
    return event.data.json();
  } catch {
    return { body: event.data.text() };
  }
}

/** A pushed icon or image from another https origin, else undefined: a URL of this
 * server would be fetched with the user's cookie (see card.js). */
function foreignImage(raw) {
  try {
    const url = new URL(String(raw));
    return url.protocol === "https:" && url.origin !== self.location.origin ? url.href : undefined;
  } catch {
    return undefined;
  }
}

/** A pushed image: from another https origin, or an attachment of this server
 * (/v1/attachments/<id>, with at most the signature of its link, ?sig=…: serving a
 * file changes nothing, so fetching it with the user's cookie cannot act in their
 * name). */
function pushImage(raw) {
  try {
    const url = new URL(String(raw));
    const attachment = /^\/v1\/attachments\/[A-Za-z0-9]{1,64}$/.test(url.pathname);
    const signed = url.search === "" || /^\?sig=[A-Za-z0-9_-]{1,64}$/.test(url.search);
    if (url.origin === self.location.origin && attachment && signed) return url.href;
  } catch {
    return undefined;
  }
  return foreignImage(raw);
}

self.addEventListener("push", (event) => {
  const data = parsePush(event);
  const title = data.title || data.topic || "notifyd";
  const actions = (Array.isArray(data.actions) ? data.actions : []).slice(0, 3);
  const tag = data.tag || (data.id != null ? `event-${data.id}` : undefined);
  const options = {
    body: data.body || "",
    tag,
    renotify: Boolean(tag),
    icon: (data.icon && foreignImage(data.icon)) || DEFAULT_ICON,
    image: data.image ? pushImage(data.image) : undefined,
    badge: DEFAULT_ICON,
    timestamp: Date.now(),
    requireInteraction: data.priority >= 5,
    silent: data.priority != null && data.priority <= 1,
    actions: actions.map((a, i) => ({ action: `action-${i}`, title: String(a.label ?? `Action ${i + 1}`) })),
    data: { id: data.id ?? null, click: data.click ?? null, actions },
  };
  event.waitUntil(self.registration.showNotification(title, options));
});

self.addEventListener("notificationclick", (event) => {
  event.notification.close();
  event.waitUntil(openNotification(event.notification, event.action));
});

/**
 * What a click on a notification (or on one of its buttons, `actionId`) does:
 * open its URL — the button's own for a link button, else the notification's
 * click URL, else the notification center — and report the click to the server.
 */
async function openNotification(notification, actionId) {
  const data = notification.data || {};
  let target = data.click || "/";
  let action = null;
  const chosen = /^action-(\d)$/.exec(actionId || "");
  if (chosen) {
    const picked = (data.actions || [])[Number(chosen[1])];
    if (picked) {
      action = picked.label ?? null;
      // an HTTP action (method set) is not a page to open
      if (!picked.method && picked.url) target = picked.url;
    }
  }
  const [, opened] = await Promise.allSettled([reportClick(data.id, action), openWindow(target)]);
  if (opened.status === "rejected") throw opened.reason;
}

/** `POST /v1/events/{id}/click`, with the CSRF token of the current session. */
async function reportClick(id, action) {
  if (id == null) return;
  try {
    const session = await fetch("/v1/session", { credentials: "same-origin", cache: "no-store" });
    if (!session.ok) return; // signed out on this browser: nothing to record
    const { csrf } = await session.json();
    await fetch(`/v1/events/${encodeURIComponent(id)}/click`, {
      method: "POST",
      credentials: "same-origin",
      headers: { "Content-Type": "application/json", "X-CSRF-Token": csrf },
      body: JSON.stringify({ action: action ? String(action).slice(0, 64) : null }),
    });
  } catch {
    // offline: the click is not recorded; opening the target matters more
  }
}

/** Focus a window already showing the target, reuse an open notification center, or open one. */
async function openWindow(target) {
  let url;
  try {
    url = new URL(target, self.location.origin);
  } catch {
    url = new URL("/", self.location.origin);
  }
  if (!["http:", "https:"].includes(url.protocol)) url = new URL("/", self.location.origin);
  const windows = await self.clients.matchAll({ type: "window", includeUncontrolled: true });
  // focusing may be refused (no user activation); the window is shown either way
  const focus = (w) => w.focus().catch(() => w);
  const exact = windows.find((w) => w.url === url.href);
  if (exact) return focus(exact);
  if (url.origin === self.location.origin && url.pathname === "/") {
    const center = windows.find((w) => new URL(w.url).pathname === "/");
    if (center) {
      center.postMessage({ type: "open", url: url.href });
      return focus(center);
    }
  }
  return self.clients.openWindow(url.href);
}

// The push service replaced our subscription (expiry, key rotation): register the new one.
self.addEventListener("pushsubscriptionchange", (event) => {
  event.waitUntil(
    (async () => {
      const key = event.oldSubscription?.options?.applicationServerKey;
      const subscription =
        event.newSubscription ||
        (key ? await self.registration.pushManager.subscribe({ userVisibleOnly: true, applicationServerKey: key }) : null);
      if (!subscription) return;
      const session = await fetch("/v1/session", { credentials: "same-origin", cache: "no-store" });
      if (!session.ok) return;
      const { csrf } = await session.json();
      await fetch("/v1/webpush/subscriptions", {
        method: "POST",
        credentials: "same-origin",
        headers: { "Content-Type": "application/json", "X-CSRF-Token": csrf },
        body: JSON.stringify(subscription.toJSON()),
      });
    })().catch(() => {}),
  );
});
