// The notification center's entry point: sign-in, views (hash routes), the live
// stream, offline/online transitions and messages from the service worker.

import { showUnreadCount } from "./announce.js";
import {
  ApiError,
  NetworkError,
  api,
  getSession,
  getSignInMethods,
  hasCsrf,
  serverReachable,
  sessionEvents,
  setReachable,
  signIn,
  signOut,
} from "./api.js";
import { $, $$ } from "./dom.js";
import { Hooks } from "./hooks.js";
import { Inbox } from "./inbox.js";
import * as offline from "./offline.js";
import { Preferences } from "./preferences.js";
import { disablePush, registerServiceWorker } from "./push.js";
import { Settings } from "./settings.js";
import { LiveStream } from "./stream.js";

const VIEWS = ["signin", "inbox", "settings", "preferences", "hooks"];
const ROUTES = { "#/inbox": "inbox", "#/settings": "settings", "#/preferences": "preferences", "#/hooks": "hooks" };

const app = { user: null, stream: null, inbox: null, settings: null, preferences: null, hooks: null };

// -- views ---------------------------------------------------------------------

function showView(name, { focus = true } = {}) {
  for (const view of VIEWS) $(`#view-${view}`).hidden = view !== name;
  $("#view-loading").hidden = true;
  for (const link of $$("#nav a")) {
    if (link.dataset.view === name) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  // moving focus to the new view's heading tells screen-reader users where they are
  if (focus) $(`#view-${name} h1`)?.focus();
}

async function route({ focus = true } = {}) {
  if (!app.user) {
    showView("signin", { focus });
    return;
  }
  const deepLink = /^#event-(\d+)$/.exec(location.hash);
  if (deepLink) {
    showView("inbox", { focus: false });
    await app.inbox.reveal(Number(deepLink[1]));
    return;
  }
  const view = ROUTES[location.hash] ?? "inbox";
  showView(view, { focus });
  if (view === "settings") await app.settings.load();
  if (view === "hooks") await app.hooks.load();
  if (view === "preferences") {
    const channels = await app.settings.loadChannels();
    await app.preferences.load(channels.map((c) => c.name));
  }
}

function setConnection(status) {
  const el = $("#connection");
  const labels = { connecting: "Connecting…", live: "Live", offline: "Offline", stopped: "" };
  el.dataset.status = status;
  el.textContent = labels[status] ?? status;
  el.hidden = !labels[status];
}

function setOfflineBanner() {
  const banner = $("#offline-banner");
  const offline = navigator.onLine === false;
  const unreachable = !serverReachable();
  banner.hidden = !(offline || (unreachable && app.user));
  banner.firstElementChild.textContent = offline ? "You are offline." : "The server cannot be reached.";
}

// -- session -------------------------------------------------------------------

/** Start everything that needs a signed-in user. `fromCache`: the server is unreachable. */
async function startSession(user, { fromCache = false, focus = false } = {}) {
  const previous = await offline.loadMeta("user");
  if (previous && previous !== user.name) await offline.clearAll();
  await offline.saveMeta("user", user.name);
  app.user = user;
  $("#whoami").textContent = user.name;
  $("#nav").hidden = false;
  $("#account").hidden = false;
  setOfflineBanner();

  let since = await offline.loadMeta("cursor");
  if (!fromCache) {
    try {
      // live from the newest event on: the list's first page covers what came before
      const newest = await api.get("/v1/events", { limit: 1, archived: "include" });
      since = newest.events[0]?.id ?? 0;
      await offline.saveMeta("cursor", since);
    } catch {
      // keep the saved cursor; the stream replays from there
    }
  }
  await app.inbox.reload();
  await route({ focus });
  await app.inbox.refreshUnread();
  if (!fromCache) await app.inbox.flush();

  const stream = new LiveStream({ since });
  let savedCursor = since;
  stream.addEventListener("frame", (e) => {
    app.inbox.applyFrame(e.detail);
    if (stream.cursor !== savedCursor) {
      savedCursor = stream.cursor;
      offline.saveMeta("cursor", savedCursor);
    }
  });
  stream.addEventListener("status", (e) => setConnection(e.detail));
  stream.addEventListener("open", (e) => {
    setReachable(true);
    // the server is back: send what was queued, catch up on read states
    if (!e.detail.first || fromCache) serverBack();
  });
  stream.addEventListener("retrying", async (e) => {
    if (e.detail.attempt < 2 || !navigator.onLine) return;
    try {
      await getSession();
    } catch (err) {
      if (err instanceof ApiError && err.status === 401) endSession("Your session has ended. Please sign in again.");
    }
  });
  app.stream = stream;
  stream.start();
  app.settings.loadSubscriptions(); // shows the "enable push" callout when it applies
}

/** Forget the signed-in state on this page (and, when signing out, on this device). */
async function endSession(message = "", { forget = false } = {}) {
  app.stream?.stop();
  app.stream = null;
  app.user = null;
  if (forget) await offline.clearAll();
  $("#nav").hidden = true;
  $("#account").hidden = true;
  setConnection("stopped");
  setOfflineBanner();
  showUnreadCount(0);
  $("#event-list").replaceChildren();
  app.hooks?.reset(); // a webhook's secret is not left on the page for the next person
  $("#signin-note").textContent = message;
  $("#signin-note").hidden = !message;
  if (location.hash) history.replaceState(null, "", location.pathname);
  showView("signin");
}

async function onSignIn(e) {
  e.preventDefault();
  const form = e.target;
  const error = $("#signin-error");
  const submit = form.querySelector('[type="submit"]');
  error.textContent = "";
  submit.disabled = true;
  try {
    const session = await signIn(form.elements.username.value.trim(), form.elements.password.value);
    form.reset();
    $("#signin-note").hidden = true;
    $("#sso-error").textContent = "";
    await startSession(session.user, { focus: true });
  } catch (err) {
    if (err instanceof ApiError && err.status === 429) {
      const wait = Number(err.retryAfter);
      error.textContent = `Too many failed attempts. Try again ${wait ? `in ${wait} seconds` : "later"}.`;
    } else if (err instanceof ApiError && err.status === 401) {
      error.textContent = "Wrong username or password.";
    } else if (err instanceof NetworkError) {
      error.textContent = "The server cannot be reached. Check your connection and try again.";
    } else {
      error.textContent = `Could not sign in: ${err.message}`;
    }
    form.elements.password.select();
    form.elements.password.focus();
  } finally {
    submit.disabled = false;
  }
}

// What a failed single sign-on (the callback's ?sso_error=<kind>) tells the person.
const SSO_ERRORS = {
  denied: "Sign-in was cancelled at the identity provider.",
  state: "That sign-in attempt does not belong to this browser, or was replaced by a newer one (e.g. in another tab). Please try again.",
  expired: "That sign-in attempt took too long. Please try again.",
  code: "The identity provider did not accept this sign-in (it was used already or has expired). Please try again.",
  token: "The identity provider's answer could not be verified. Please try again; if this persists, tell the administrator of this server.",
  claim: "Your account at the identity provider does not say who you are in a way this server understands. Tell the administrator of this server.",
  user: "Your account cannot sign in to this server. Ask its administrator for access.",
  unavailable: "The identity provider cannot be reached right now. Try again in a moment.",
  provider: "The identity provider reported an error. Please try again.",
  off: "Single sign-on is not enabled on this server.",
};

/** Offer the ways to sign in this server has, and show why a single sign-on failed. */
async function setUpSignIn() {
  const params = new URLSearchParams(location.search);
  const failed = params.get("sso_error");
  if (failed !== null) {
    $("#sso-error").textContent = SSO_ERRORS[failed] ?? "Single sign-on failed. Please try again.";
    // a reload must not show it again
    history.replaceState(null, "", location.pathname + location.hash);
  }
  let methods;
  try {
    methods = await getSignInMethods();
  } catch {
    return; // unreachable server: the password form stays, the boot says why
  }
  const sso = methods.sso;
  $("#signin-sso").hidden = !sso;
  $("#signin-form").hidden = !methods.password;
  $("#signin-or").hidden = !(sso && methods.password);
  if (sso) {
    $("#sso-label").textContent = sso.label;
    const start = $("#sso-start");
    start.href = sso.start;
    // come back to the view that was open (the hash never reaches the server)
    start.addEventListener("click", () => {
      if (location.hash) start.href = `${sso.start}?next=${encodeURIComponent(`/${location.hash}`)}`;
    });
  }
  if (!sso && !methods.password) {
    $("#signin-note").textContent = "Signing in to this page is turned off on this server; use a token with the API, the CLI or an app.";
    $("#signin-note").hidden = false;
  }
}

async function onSignOut() {
  const button = $("#sign-out");
  button.disabled = true;
  try {
    // a signed-out browser must not keep showing this user's notifications
    await disablePush().catch(() => {});
    await signOut();
    await endSession("You are signed out.", { forget: true });
  } catch (err) {
    const reason = err instanceof NetworkError ? "the server cannot be reached" : err.message;
    $("#inbox-status").textContent = `Could not sign out: ${reason}.`;
    $("#inbox-status").hidden = false;
  } finally {
    button.disabled = false;
  }
}

async function onOnline() {
  setOfflineBanner();
  await serverBack();
}

let catchingUp = null;

/** The server answers again (browser online, stream reopened): sync what happened meanwhile. */
function serverBack() {
  catchingUp ??= catchUp().finally(() => (catchingUp = null));
  return catchingUp;
}

async function catchUp() {
  if (!app.user) return;
  try {
    if (!hasCsrf()) await getSession();
  } catch (err) {
    if (err instanceof ApiError && err.status === 401) endSession("Your session has ended. Please sign in again.");
    return;
  }
  await app.inbox.flush();
  if (app.inbox.offline) await app.inbox.reload();
  await app.inbox.refreshUnread();
}

function onWorkerMessage(e) {
  // a notification was clicked and this window was chosen to show it
  if (e.data?.type !== "open") return;
  const url = new URL(e.data.url, location.href);
  if (url.origin !== location.origin) return;
  if (url.hash && url.hash !== location.hash) location.hash = url.hash;
  else route({ focus: false });
}

// -- boot ------------------------------------------------------------------------

async function boot() {
  registerServiceWorker();
  app.inbox = new Inbox($("#view-inbox"));
  app.settings = new Settings($("#view-settings"));
  app.preferences = new Preferences($("#view-preferences"));
  app.hooks = new Hooks($("#view-hooks"));
  $("#signin-form").addEventListener("submit", onSignIn);
  $("#sign-out").addEventListener("click", onSignOut);
  addEventListener("hashchange", () => route());
  addEventListener("online", onOnline);
  addEventListener("offline", setOfflineBanner);
  sessionEvents.addEventListener("reachability", setOfflineBanner);
  sessionEvents.addEventListener("signedout", () => {
    if (app.user) endSession("Your session has ended. Please sign in again.");
  });
  navigator.serviceWorker?.addEventListener("message", onWorkerMessage);
  setOfflineBanner();
  const signInReady = setUpSignIn();

  try {
    const session = await getSession();
    await startSession(session.user);
  } catch (err) {
    const saved = err instanceof NetworkError ? await offline.loadMeta("user") : null;
    if (saved) {
      await startSession({ name: saved }, { fromCache: true });
    } else {
      if (err instanceof NetworkError) {
        $("#signin-note").textContent = "The server cannot be reached right now.";
        $("#signin-note").hidden = false;
      }
      showView("signin", { focus: false });
    }
  }
  await signInReady;
  document.body.dataset.ready = "true";
}

boot();
