// Web Push on this device: the service worker registration, the browser's
// PushSubscription (made with the daemon's VAPID key) and its record on the
// server (`/v1/webpush/subscriptions`).

import { api } from "./api.js";

export function pushSupported() {
  return "serviceWorker" in navigator && "PushManager" in self && "Notification" in self && isSecureContext;
}

/** Register the service worker (offline shell and pushes); resolves to the registration or null. */
export async function registerServiceWorker() {
  if (!("serviceWorker" in navigator)) return null;
  try {
    return await navigator.serviceWorker.register("/sw.js", { scope: "/" });
  } catch {
    return null; // e.g. plain http on a LAN address: the page still works, without offline or push
  }
}

function base64UrlToBytes(text) {
  const base64 = text.replace(/-/g, "+").replace(/_/g, "/").padEnd(Math.ceil(text.length / 4) * 4, "=");
  return Uint8Array.from(atob(base64), (c) => c.charCodeAt(0));
}

function sameBytes(a, b) {
  if (!a || !b) return false;
  const x = new Uint8Array(a);
  return x.length === b.length && x.every((v, i) => v === b[i]);
}

export async function currentSubscription() {
  if (!pushSupported()) return null;
  const reg = await navigator.serviceWorker.getRegistration("/");
  return reg ? reg.pushManager.getSubscription() : null;
}

/**
 * The server names a subscription `webpush-` + the first hex digits of the
 * SHA-256 of its endpoint: find ours among the listed ones.
 */
export async function findOwn(subscriptions, subscription = null) {
  const sub = subscription ?? (await currentSubscription());
  if (!sub || !crypto.subtle) return null;
  const digest = await crypto.subtle.digest("SHA-256", new TextEncoder().encode(sub.endpoint));
  const hex = [...new Uint8Array(digest)].map((b) => b.toString(16).padStart(2, "0")).join("");
  return subscriptions.find((s) => s.name.startsWith("webpush-") && hex.startsWith(s.name.slice(8))) ?? null;
}

/** Ask for permission, subscribe with the VAPID key and register with the server. */
export async function enablePush() {
  if (!pushSupported()) {
    throw new Error("This browser cannot receive push notifications here (it needs HTTPS and a recent browser).");
  }
  const permission = await Notification.requestPermission();
  if (permission === "denied") {
    throw new Error("Notifications are blocked for this site. Allow them in the browser's site settings, then try again.");
  }
  if (permission !== "granted") throw new Error("Notifications were not allowed.");
  const reg = (await navigator.serviceWorker.getRegistration("/")) ?? (await registerServiceWorker());
  if (!reg) throw new Error("The service worker could not be installed.");
  await navigator.serviceWorker.ready;
  const { public_key: publicKey } = await api.get("/v1/webpush/vapid-public-key");
  const key = base64UrlToBytes(publicKey);
  let sub = await reg.pushManager.getSubscription();
  if (sub && !sameBytes(sub.options?.applicationServerKey, key)) {
    // subscribed with another server key (the daemon's key changed): start over
    await sub.unsubscribe();
    sub = null;
  }
  if (!sub) {
    try {
      sub = await reg.pushManager.subscribe({ userVisibleOnly: true, applicationServerKey: key });
    } catch (err) {
      throw new Error(`The browser's push service refused the subscription (${err.message}).`);
    }
  }
  return api.post("/v1/webpush/subscriptions", sub.toJSON());
}

/** Stop pushes to this device: remove the server's record, then the browser's subscription. */
export async function disablePush(subscriptions) {
  const sub = await currentSubscription();
  if (!sub) return;
  const own = await findOwn(subscriptions ?? (await api.get("/v1/webpush/subscriptions")).subscriptions, sub);
  if (own) await api.delete(`/v1/webpush/subscriptions/${own.id}`);
  await sub.unsubscribe();
}
