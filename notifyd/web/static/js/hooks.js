// The "Webhooks" view: inbound webhooks that other tools (Alertmanager, Grafana,
// GitHub, Gitea, GitLab, Slack-style senders, Apprise API clients…) post their
// own JSON to. List, create (the URL with its secret is shown once), send a test
// (rendered events, nothing published) and remove.

import { api, ApiError } from "./api.js";
import { $, h, srOnly, timeElement } from "./dom.js";
import { removeButton } from "./settings.js";

const PRIORITY_NAMES = { 1: "min", 2: "low", 3: "default", 4: "high", 5: "urgent" };
const TEMPLATE_LABELS = {
  alertmanager: "Prometheus Alertmanager",
  grafana: "Grafana alerting",
  github: "GitHub",
  gitea: "Gitea / Forgejo",
  gitlab: "GitLab",
  slack: "Slack incoming webhook",
  apprise: "Apprise API",
  json: "Custom JSON",
};
/** The form's inputs by the API field a server error may name. */
const FORM_FIELDS = ["name", "topic", "template", "priority", "category", "tags"];

/** One rendered event of a test, as a small card (everything as text). */
function renderedEvent(ev) {
  const facts = [];
  if (ev.topic) facts.push(`topic ${ev.topic}`);
  if (ev.priority != null) facts.push(`priority ${PRIORITY_NAMES[ev.priority] ?? ev.priority}`);
  if (ev.category) facts.push(`category ${ev.category}`);
  if (Array.isArray(ev.tags) && ev.tags.length) facts.push(`tags ${ev.tags.join(", ")}`);
  if (ev.collapse_key) facts.push(`collapse key ${ev.collapse_key}`);
  return h(
    "li",
    { class: "rendered-event" },
    h("p", { class: "item-title", text: ev.title || "(no title)" }),
    facts.length ? h("p", { class: "muted small", text: facts.join(" · ") }) : null,
    ev.body ? h("p", { class: "rendered-body", text: ev.body }) : null,
    ev.click ? h("p", { class: "small" }, "Opens ", h("code", { class: "url", text: ev.click })) : null,
  );
}

/** Copy text to the clipboard; the clipboard API needs a secure context, so fall
 * back to selecting the field (the person can press Ctrl+C). */
async function copyText(input) {
  try {
    await navigator.clipboard.writeText(input.value);
    return true;
  } catch {
    input.focus();
    input.select();
    return false;
  }
}

export class Hooks {
  constructor(root) {
    this.root = root;
    this.form = $("#hook-form", root);
    this.form.addEventListener("submit", (e) => this.create(e));
    this.form.elements.template.addEventListener("change", () => this.showFields());
    $("#hook-created-done", root).addEventListener("click", () => this.hideCreated());
    for (const button of root.querySelectorAll("[data-copy]")) {
      button.addEventListener("click", () => this.copy(button));
    }
    this.showFields();
  }

  message(el, text, { error = false } = {}) {
    el.textContent = text;
    el.classList.toggle("error-text", error);
    el.hidden = !text;
  }

  /** The json template's field editor shows only for that template. */
  showFields() {
    $("#hook-fields", this.root).hidden = this.form.elements.template.value !== "json";
  }

  /** Forget the secret shown once (signing out, or the person is done with it). */
  reset() {
    const box = $("#hook-created", this.root);
    box.hidden = true;
    $("#hook-created-url", this.root).value = "";
    $("#hook-created-secret", this.root).value = "";
    this.message($("#hook-copy-status", this.root), "");
  }

  hideCreated() {
    this.reset();
    $("#hooks-list-title", this.root).focus();
  }

  async copy(button) {
    const input = $(`#${button.dataset.copy}`, this.root);
    const what = button.dataset.copy.endsWith("secret") ? "Secret" : "URL";
    const copied = await copyText(input);
    this.message(
      $("#hook-copy-status", this.root),
      copied ? `${what} copied to the clipboard.` : `${what} selected: press Ctrl+C (⌘C) to copy it.`,
    );
  }

  async load() {
    const list = $("#hook-list", this.root);
    let hooks;
    try {
      hooks = (await api.get("/v1/hooks")).hooks;
    } catch (err) {
      list.replaceChildren(h("li", { class: "error-text", text: `Could not load webhooks: ${err.message}` }));
      return;
    }
    if (!hooks.length) list.replaceChildren(h("li", { class: "muted", text: "No webhooks yet." }));
    else list.replaceChildren(...hooks.map((hook) => this.item(hook)));
  }

  item(hook) {
    const results = h("div", { class: "hook-test", "aria-live": "polite" });
    const payloadId = `hook-payload-${hook.id}`;
    const payload = h("textarea", { id: payloadId, class: "hook-payload", rows: "4", spellcheck: "false", "aria-describedby": `${payloadId}-hint` });
    const own = h(
      "details",
      { class: "hook-own-payload" },
      h("summary", {}, "Test with your own payload", srOnly(` (${hook.name})`)),
      h(
        "div",
        { class: "field" },
        h("label", { for: payloadId, text: `Payload for ${hook.name} (JSON)` }),
        payload,
        h("p", { id: `${payloadId}-hint`, class: "hint", text: "What the sender would post. Empty: the template's own sample." }),
      ),
    );
    const test = h("button", { type: "button", class: "button subtle" }, "Send a test", srOnly(` to ${hook.name}`));
    test.addEventListener("click", () => this.test(hook, test, results, payload));
    const defaults = [];
    if (hook.priority != null) defaults.push(`priority ${PRIORITY_NAMES[hook.priority] ?? hook.priority}`);
    if (hook.category) defaults.push(`category ${hook.category}`);
    if (Array.isArray(hook.tags) && hook.tags.length) defaults.push(`tags ${hook.tags.join(", ")}`);
    return h(
      "li",
      { class: "item", dataset: { id: String(hook.id), name: hook.name } },
      h(
        "div",
        { class: "item-main" },
        h("p", { class: "item-title" }, hook.name, h("span", { class: "badge", text: TEMPLATE_LABELS[hook.template] ?? hook.template })),
        h(
          "p",
          { class: "muted small" },
          `Publishes to ${hook.topic}`,
          hook.user ? ` as ${hook.user}` : "",
          defaults.length ? ` · ${defaults.join(" · ")}` : "",
          " · ",
          hook.last_used_at ? h("span", {}, "last used ", timeElement(hook.last_used_at)) : "never used",
        ),
        h("p", { class: "small" }, h("span", { class: "sr-only", text: "URL without its secret: " }), h("code", { class: "url", text: hook.url })),
        own,
        results,
      ),
      h(
        "div",
        { class: "item-controls" },
        test,
        removeButton(`webhook ${hook.name}`, async () => {
          await api.delete(`/v1/hooks/${encodeURIComponent(hook.id)}`);
          await this.load();
          $("#hooks-list-title", this.root).focus();
        }),
      ),
    );
  }

  /** Render a payload (the one typed in, else the template's sample) without
   * publishing; show the events. */
  async test(hook, button, results, payloadInput) {
    const text = payloadInput.value.trim();
    const body = {};
    payloadInput.removeAttribute("aria-invalid");
    if (text) {
      try {
        body.payload = JSON.parse(text);
      } catch (err) {
        payloadInput.setAttribute("aria-invalid", "true");
        results.replaceChildren(h("p", { class: "small error-text", text: `The payload is not JSON: ${err.message}` }));
        payloadInput.focus();
        return;
      }
    }
    const which = text ? "Your payload" : "The sample payload";
    button.disabled = true;
    results.replaceChildren(h("p", { class: "small", text: "Rendering…" }));
    try {
      const { events } = await api.post(`/v1/hooks/${encodeURIComponent(hook.id)}/test`, body);
      const heading = h("p", { class: "small", text: events.length
        ? `${which} makes ${events.length === 1 ? "this notification" : `these ${events.length} notifications`} (nothing was published):`
        : `${which} makes no notification.` });
      results.replaceChildren(heading, events.length ? h("ol", { class: "rendered-events" }, events.map(renderedEvent)) : null);
    } catch (err) {
      results.replaceChildren(h("p", { class: "small error-text", text: `Test failed: ${err.message}` }));
    } finally {
      button.disabled = false;
    }
  }

  /** The request body from the form; fields of the json template only when chosen. */
  body() {
    const el = this.form.elements;
    const body = { name: el.name.value.trim(), topic: el.topic.value.trim(), template: el.template.value };
    if (el.priority.value) body.priority = Number(el.priority.value);
    if (el.category.value.trim()) body.category = el.category.value.trim();
    const tags = el.tags.value.split(",").map((t) => t.trim()).filter(Boolean);
    if (tags.length) body.tags = tags;
    if (body.template === "json") {
      const fields = {};
      for (const input of this.form.querySelectorAll("[data-hook-field]")) {
        if (input.value.trim()) fields[input.dataset.hookField] = input.value;
      }
      body.fields = fields;
    }
    return body;
  }

  /** The input a server error names ("fields.title" → the title field's input). */
  inputFor(field) {
    if (!field) return null;
    const [head, sub] = String(field).split(".");
    if (head === "fields" && sub) return this.form.querySelector(`[data-hook-field="${CSS.escape(sub)}"]`);
    return FORM_FIELDS.includes(head) ? this.form.elements[head] : null;
  }

  async create(e) {
    e.preventDefault();
    const form = this.form;
    const error = $("#hook-form-error", form);
    for (const input of form.querySelectorAll("[aria-invalid]")) input.removeAttribute("aria-invalid");
    this.message(error, "");
    const body = this.body();
    const missing = ["name", "topic"].find((k) => !body[k]);
    if (missing) {
      this.message(error, `Give the webhook a ${missing}.`, { error: true });
      form.elements[missing].setAttribute("aria-invalid", "true");
      form.elements[missing].focus();
      return;
    }
    const submit = form.querySelector('[type="submit"]');
    submit.disabled = true;
    try {
      const created = await api.post("/v1/hooks", body);
      form.reset();
      this.showFields();
      this.showCreated(created);
      await this.load();
      $("#hook-created-title", this.root).focus();
    } catch (err) {
      const input = err instanceof ApiError ? (this.inputFor(err.field) ?? (err.status === 409 ? form.elements.name : null)) : null;
      const text = err.status === 409 ? `A webhook named ${body.name} exists already. Choose another name.` : err.message;
      this.message(error, text, { error: true });
      if (input) {
        input.setAttribute("aria-invalid", "true");
        input.focus();
      }
    } finally {
      submit.disabled = false;
    }
  }

  showCreated(created) {
    $("#hook-created-name", this.root).textContent = created.name;
    $("#hook-created-url", this.root).value = created.url ?? "";
    $("#hook-created-secret", this.root).value = created.secret ?? "";
    this.message($("#hook-copy-status", this.root), "");
    $("#hook-created", this.root).hidden = false;
  }
}
