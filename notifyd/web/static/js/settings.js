// The "Channels and devices" view: push on this device, the push subscriptions of
// all the user's devices, and Apprise channels (add, test, remove).

import { api, ApiError } from "./api.js";
import { $, h, srOnly, timeElement } from "./dom.js";
import { disablePush, enablePush, findOwn, pushSupported } from "./push.js";

const CALLOUT_DISMISSED = "notifyd.push-callout-dismissed";

function describeAgent(ua) {
  if (!ua) return "Unknown browser";
  const browser = /Edg\//.test(ua) ? "Edge" : /Firefox\//.test(ua) ? "Firefox" : /Chrom(e|ium)\//.test(ua) ? "Chrome" : /Safari\//.test(ua) ? "Safari" : "Browser";
  const os = /Android/.test(ua) ? "Android" : /iPhone|iPad/.test(ua) ? "iOS" : /Mac OS X/.test(ua) ? "macOS" : /Windows/.test(ua) ? "Windows" : /Linux/.test(ua) ? "Linux" : "";
  return os ? `${browser} on ${os}` : browser;
}

function deliveryInfo(item) {
  const parts = [];
  if (item.last_success_at) parts.push(h("span", {}, "Last delivered ", timeElement(item.last_success_at)));
  if (item.last_error) parts.push(h("span", { class: "error-text", text: `Last error: ${item.last_error}` }));
  return parts.length ? h("p", { class: "muted small" }, ...parts.flatMap((p, i) => (i ? [" · ", p] : [p]))) : null;
}

/** A "Remove" button that asks for confirmation in place (no blocking dialogs). */
export function removeButton(label, onConfirm) {
  const wrap = h("span", { class: "confirm" });
  const ask = h("button", { type: "button", class: "button subtle" }, "Remove", srOnly(` ${label}`));
  wrap.append(ask);
  ask.addEventListener("click", () => {
    const yes = h("button", { type: "button", class: "button danger" }, `Yes, remove ${label}`);
    const no = h("button", { type: "button", class: "button subtle", text: "Cancel" });
    const question = h("span", { class: "confirm-question" }, yes, no);
    no.addEventListener("click", () => {
      question.replaceWith(ask);
      ask.focus();
    });
    yes.addEventListener("click", async () => {
      yes.disabled = true;
      try {
        await onConfirm();
      } catch (err) {
        question.querySelector(".error-text")?.remove();
        question.append(h("span", { class: "error-text", role: "alert", text: `Could not remove: ${err.message}` }));
      } finally {
        yes.disabled = false;
      }
    });
    ask.replaceWith(question);
    yes.focus();
  });
  return wrap;
}

export class Settings {
  constructor(root) {
    this.root = root;
    this.subscriptions = [];
    this.enableButtons = [...document.querySelectorAll("[data-push-enable]")];
    for (const button of this.enableButtons) button.addEventListener("click", () => this.enable(button));
    $("#push-disable", root).addEventListener("click", () => this.disable());
    $("#push-callout-dismiss")?.addEventListener("click", () => {
      localStorage.setItem(CALLOUT_DISMISSED, "1");
      $("#push-callout").hidden = true;
      $("#inbox-title").focus();
    });
    $("#channel-form", root).addEventListener("submit", (e) => this.addChannel(e));
  }

  async load() {
    await Promise.all([this.loadSubscriptions(), this.loadChannels()]);
  }

  message(el, text, { error = false } = {}) {
    el.textContent = text;
    el.classList.toggle("error-text", error);
    el.hidden = !text;
  }

  // -- push -------------------------------------------------------------------

  async pushState() {
    if (!pushSupported()) return "unsupported";
    if (Notification.permission === "denied") return "denied";
    const own = await findOwn(this.subscriptions).catch(() => null);
    return own ? "on" : "off";
  }

  async updatePushStatus() {
    const state = await this.pushState();
    const status = $("#push-status", this.root);
    const texts = {
      unsupported: "This browser cannot receive push notifications from this address (push needs HTTPS, or localhost).",
      denied: "Notifications are blocked for this site. Allow them in the browser's site settings to turn them on.",
      on: "This device receives push notifications, also when this page is closed.",
      off: "This device does not receive push notifications yet.",
    };
    status.textContent = texts[state];
    $("#push-enable", this.root).hidden = state !== "off";
    const callout = $("#push-callout");
    if (callout) callout.hidden = state !== "off" || localStorage.getItem(CALLOUT_DISMISSED) === "1";
    $("#push-disable", this.root).hidden = state !== "on";
  }

  async enable(button) {
    const note = button.closest("#push-callout") ? $("#push-callout-status") : $("#push-message", this.root);
    button.disabled = true;
    this.message(note, "Asking for permission…");
    try {
      await enablePush();
      this.message(note, "Push notifications are on for this device.");
      await this.loadSubscriptions();
    } catch (err) {
      this.message(note, err.message, { error: true });
    } finally {
      button.disabled = false;
    }
  }

  async disable() {
    const note = $("#push-message", this.root);
    try {
      await disablePush(this.subscriptions);
      this.message(note, "Push notifications are off for this device.");
    } catch (err) {
      this.message(note, `Could not turn push off: ${err.message}`, { error: true });
    }
    await this.loadSubscriptions();
  }

  async loadSubscriptions() {
    const list = $("#subscription-list", this.root);
    let devices;
    try {
      [this.subscriptions, devices] = await Promise.all([
        api.get("/v1/webpush/subscriptions").then((r) => r.subscriptions),
        // phone apps registered for native push (FCM/APNs); absent without the mobile plugin
        api.get("/v1/devices").then((r) => r.devices, () => []),
      ]);
    } catch (err) {
      list.replaceChildren(h("li", { class: "error-text", text: `Could not load devices: ${err.message}` }));
      return;
    }
    const own = await findOwn(this.subscriptions).catch(() => null);
    if (!this.subscriptions.length && !devices.length) {
      list.replaceChildren(h("li", { class: "muted", text: "No device receives push notifications." }));
    } else {
      list.replaceChildren(
        ...this.subscriptions.map((sub) => this.subscriptionItem(sub, sub === own)),
        ...devices.map((dev) => this.deviceItem(dev)),
      );
    }
    await this.updatePushStatus();
  }

  deviceItem(dev) {
    const name = dev.label || dev.app || dev.name;
    const platform = dev.platform === "apns" ? "iOS app" : "App (Firebase)";
    return h(
      "li",
      { class: "item", dataset: { id: String(dev.id), platform: dev.platform } },
      h(
        "div",
        { class: "item-main" },
        h("p", { class: "item-title" }, name, h("span", { class: "badge", text: platform })),
        h("p", { class: "muted small" }, `${dev.app} · token ${dev.token} · added `, timeElement(dev.created_at)),
        deliveryInfo(dev),
      ),
      h(
        "div",
        { class: "item-controls" },
        removeButton(`${name} (${dev.name})`, async () => {
          await api.delete(`/v1/devices/${dev.id}`);
          await this.loadSubscriptions();
          $("#subscriptions-title", this.root).focus();
        }),
      ),
    );
  }

  subscriptionItem(sub, isOwn) {
    const name = describeAgent(sub.user_agent);
    return h(
      "li",
      { class: "item", dataset: { id: String(sub.id) } },
      h(
        "div",
        { class: "item-main" },
        h("p", { class: "item-title" }, name, isOwn ? h("span", { class: "badge", text: "This device" }) : null),
        h("p", { class: "muted small" }, `Push service ${sub.endpoint_origin ?? "unknown"} · added `, timeElement(sub.created_at)),
        deliveryInfo(sub),
      ),
      h(
        "div",
        { class: "item-controls" },
        removeButton(`${name} (${sub.name})`, async () => {
          if (isOwn) await disablePush(this.subscriptions);
          else await api.delete(`/v1/webpush/subscriptions/${sub.id}`);
          await this.loadSubscriptions();
          $("#subscriptions-title", this.root).focus();
        }),
      ),
    );
  }

  // -- channels ---------------------------------------------------------------

  async loadChannels() {
    const list = $("#channel-list", this.root);
    let channels;
    try {
      // push subscriptions and registered apps are listed with the devices above
      const devices = ["webpush", "fcm", "apns"];
      channels = (await api.get("/v1/channels")).channels.filter((c) => !devices.includes(c.kind));
    } catch (err) {
      list.replaceChildren(h("li", { class: "error-text", text: `Could not load channels: ${err.message}` }));
      return [];
    }
    this.channelNames = channels.map((c) => c.name);
    if (!channels.length) list.replaceChildren(h("li", { class: "muted", text: "No channels yet." }));
    else list.replaceChildren(...channels.map((c) => this.channelItem(c)));
    return channels;
  }

  channelItem(ch) {
    const status = h("p", { class: "small", role: "status" });
    const test = h("button", { type: "button", class: "button subtle" }, "Send test", srOnly(` to ${ch.name}`));
    test.addEventListener("click", async () => {
      test.disabled = true;
      status.textContent = "Sending…";
      status.classList.remove("error-text");
      try {
        const result = await api.post(`/v1/channels/${encodeURIComponent(ch.name)}/test`);
        status.textContent = result.ok ? "Test sent." : `Test failed: ${result.error}`;
        status.classList.toggle("error-text", !result.ok);
      } catch (err) {
        status.textContent = `Test failed: ${err.message}`;
        status.classList.add("error-text");
      } finally {
        test.disabled = false;
      }
    });
    const service = ch.config?.service ?? ch.kind;
    return h(
      "li",
      { class: "item", dataset: { name: ch.name } },
      h(
        "div",
        { class: "item-main" },
        h("p", { class: "item-title" }, ch.name, h("span", { class: "badge", text: service }),
          ch.enabled === false ? h("span", { class: "badge", text: "Disabled" }) : null,
          ch.available === false ? h("span", { class: "badge warn", text: "Plugin missing" }) : null),
        ch.config?.url ? h("p", { class: "small" }, h("code", { class: "url", text: ch.config.url })) : null,
        deliveryInfo(ch),
        status,
      ),
      h(
        "div",
        { class: "item-controls" },
        test,
        removeButton(`channel ${ch.name}`, async () => {
          await api.delete(`/v1/channels/${encodeURIComponent(ch.name)}`);
          await this.loadChannels();
          $("#channels-title", this.root).focus();
        }),
      ),
    );
  }

  async addChannel(e) {
    e.preventDefault();
    const form = e.target;
    const error = $("#channel-form-error", form);
    const fields = { name: form.elements.name, url: form.elements.url };
    for (const input of Object.values(fields)) input.removeAttribute("aria-invalid");
    this.message(error, "");
    this.message($("#channel-form-status", form), "");
    const name = fields.name.value.trim();
    const url = fields.url.value.trim();
    const submit = form.querySelector('[type="submit"]');
    submit.disabled = true;
    try {
      await api.post("/v1/channels", { name, url });
      form.reset();
      this.message($("#channel-form-status", form), `Channel ${name} added.`);
      await this.loadChannels();
    } catch (err) {
      const input = err instanceof ApiError ? (fields[err.field] ?? (err.status === 409 ? fields.name : fields.url)) : null;
      const text = err.status === 409 ? `A channel named ${name} exists already. Choose another name.` : err.message;
      this.message(error, text, { error: true });
      if (input) {
        input.setAttribute("aria-invalid", "true");
        input.focus();
      }
    } finally {
      submit.disabled = false;
    }
  }
}
