// The "Preferences" view: a form over the preferences document of
// `/v1/preferences` (docs/preferences.md): time zone, quiet hours, muted topics,
// the rules table, digest windows and the rate limit. The server validates;
// its 422 names the field, which the form points at.
//
// "Muted topics" are the plain mute rules (`{"topic": …, "mute": true}`) at the
// start of the rules list; every other rule is a row of the table. Saving writes
// the muted topics first, then the table, so loading and saving keeps the order.

import { api, ApiError } from "./api.js";
import { $, h } from "./dom.js";

const PRIORITIES = [
  ["1", "Any"],
  ["2", "Low and above"],
  ["3", "Default and above"],
  ["4", "High and above"],
  ["5", "Urgent only"],
];
const DELIVER = [
  ["all", "Inbox and all channels"],
  ["inbox", "Inbox only"],
  ["some", "Inbox and these channels"],
];
const FIELD_NAMES = { topic: "topic", category: "category", min_priority: "minimum priority", channels: "channels", mute: "mute" };

class FormError extends Error {
  constructor(message, control) {
    super(message);
    this.control = control;
  }
}

function isPlainMute(rule) {
  return rule.mute && rule.category == null && (rule.min_priority ?? 1) <= 1 && rule.channels == null;
}

function options(pairs, selected) {
  return pairs.map(([value, label]) => h("option", { value, selected: value === String(selected) }, label));
}

export class Preferences {
  constructor(root) {
    this.root = root;
    this.form = $("#prefs-form", root);
    this.rules = $("#rules-body", root);
    this.digests = $("#digests-body", root);
    this.error = $("#prefs-error", root);
    this.status = $("#prefs-status", root);
    this.form.addEventListener("submit", (e) => this.save(e));
    $("#add-rule", root).addEventListener("click", () => {
      const row = this.ruleRow({ topic: "", channels: null });
      this.rules.append(row);
      this.renumber();
      row.querySelector("input").focus();
    });
    $("#add-digest", root).addEventListener("click", () => {
      const row = this.digestRow("", 600);
      this.digests.append(row);
      this.renumber();
      row.querySelector("input").focus();
    });
    $("#p-quiet-on", root).addEventListener("change", () => this.syncQuiet());
    this.rules.addEventListener("change", (e) => {
      if (e.target.matches("select.deliver")) this.syncDeliver(e.target.closest("tr"));
    });
    const zones = $("#tz-list", root);
    if (Intl.supportedValuesOf && !zones.childElementCount) {
      zones.append(...Intl.supportedValuesOf("timeZone").map((zone) => h("option", { value: zone })));
    }
  }

  async load(channelNames = []) {
    const names = $("#channel-names", this.root);
    names.replaceChildren(...channelNames.map((name) => h("option", { value: name })));
    this.showError(null);
    this.status.textContent = "";
    // the form appears once it holds the stored document, so no edit is lost to the load
    const loading = $("#prefs-loading", this.root);
    this.form.hidden = true;
    loading.textContent = "Loading preferences…";
    loading.hidden = false;
    try {
      this.fill(await api.get("/v1/preferences"));
      this.form.hidden = false;
    } catch (err) {
      loading.textContent = `Could not load preferences: ${err.message}`;
      return;
    }
    loading.hidden = true;
  }

  fill(doc) {
    const rules = doc.rules ?? [];
    let muted = 0;
    while (muted < rules.length && isPlainMute(rules[muted])) muted += 1;
    $("#p-timezone", this.root).value = doc.timezone ?? "UTC";
    $("#p-quiet-on", this.root).checked = Boolean(doc.quiet_hours);
    $("#p-quiet-start", this.root).value = doc.quiet_hours?.start ?? "22:00";
    $("#p-quiet-end", this.root).value = doc.quiet_hours?.end ?? "07:00";
    $("#p-mute", this.root).value = rules.slice(0, muted).map((r) => r.topic).join("\n");
    this.rules.replaceChildren(...rules.slice(muted).map((r) => this.ruleRow(r)));
    this.digests.replaceChildren(...Object.entries(doc.digests ?? {}).map(([name, s]) => this.digestRow(name, s)));
    $("#p-rate", this.root).value = doc.rate_limit_per_minute ?? "";
    this.syncQuiet();
    this.renumber();
  }

  syncQuiet() {
    const on = $("#p-quiet-on", this.root).checked;
    $("#p-quiet-start", this.root).disabled = !on;
    $("#p-quiet-end", this.root).disabled = !on;
  }

  syncDeliver(row) {
    const some = row.querySelector("select.deliver").value === "some";
    row.querySelector("input.channels").disabled = !some;
  }

  ruleRow(rule) {
    const deliver = rule.channels == null ? "all" : rule.channels.length ? "some" : "inbox";
    const row = h(
      "tr",
      {},
      h("td", { "data-label": "Topic" }, h("input", { class: "topic", value: rule.topic ?? "*", placeholder: "*", autocomplete: "off", spellcheck: "false" })),
      h("td", { "data-label": "Category" }, h("input", { class: "category", value: rule.category ?? "", placeholder: "any", autocomplete: "off", spellcheck: "false" })),
      h("td", { "data-label": "Minimum priority" }, h("select", { class: "priority" }, options(PRIORITIES, rule.min_priority ?? 1))),
      h("td", { "data-label": "Deliver to" }, h("select", { class: "deliver" }, options(DELIVER, deliver))),
      h("td", { "data-label": "Channels" }, h("input", { class: "channels", value: (rule.channels ?? []).join(", "), placeholder: "phone, email", list: "channel-names", autocomplete: "off" })),
      h("td", { "data-label": "Mute", class: "center" }, h("input", { type: "checkbox", class: "mute", checked: Boolean(rule.mute) })),
      h(
        "td",
        { class: "row-controls" },
        h("button", { type: "button", class: "button subtle icon-button", dataset: { move: "up" } }, "Up"),
        h("button", { type: "button", class: "button subtle icon-button", dataset: { move: "down" } }, "Down"),
        h("button", { type: "button", class: "button subtle", dataset: { remove: "" } }, "Remove"),
      ),
    );
    row.addEventListener("click", (e) => this.rowControl(e, row));
    this.syncDeliver(row);
    return row;
  }

  digestRow(name, seconds) {
    const row = h(
      "tr",
      {},
      h("td", { "data-label": "Channel" }, h("input", { class: "digest-name", value: name, list: "channel-names", autocomplete: "off", spellcheck: "false" })),
      h("td", { "data-label": "Window (seconds)" }, h("input", { class: "digest-seconds", type: "number", min: "60", max: "86400", step: "1", value: String(seconds) })),
      h("td", { class: "row-controls" }, h("button", { type: "button", class: "button subtle", dataset: { remove: "" } }, "Remove")),
    );
    row.addEventListener("click", (e) => this.rowControl(e, row));
    return row;
  }

  rowControl(e, row) {
    const button = e.target.closest("button");
    if (!button) return;
    const body = row.parentElement;
    if (button.dataset.move === "up" && row.previousElementSibling) {
      body.insertBefore(row, row.previousElementSibling);
      button.focus();
    } else if (button.dataset.move === "down" && row.nextElementSibling) {
      body.insertBefore(row.nextElementSibling, row);
      button.focus();
    } else if ("remove" in button.dataset) {
      const next = row.nextElementSibling ?? row.previousElementSibling;
      row.remove();
      (next?.querySelector("input") ?? $(body === this.rules ? "#add-rule" : "#add-digest", this.root)).focus();
    }
    this.renumber();
  }

  /** Give every control in the tables a label naming its row ("Topic, rule 2"). */
  renumber() {
    [...this.rules.rows].forEach((row, i) => {
      const n = i + 1;
      const label = (selector, text) => row.querySelector(selector).setAttribute("aria-label", `${text}, rule ${n}`);
      label("input.topic", "Topic pattern");
      label("input.category", "Category");
      label("select.priority", "Minimum priority");
      label("select.deliver", "Deliver to");
      label("input.channels", "Channels (comma-separated)");
      label("input.mute", "Mute");
      label('[data-move="up"]', "Move up");
      label('[data-move="down"]', "Move down");
      label("[data-remove]", "Remove");
    });
    [...this.digests.rows].forEach((row, i) => {
      const n = i + 1;
      row.querySelector(".digest-name").setAttribute("aria-label", `Channel, digest ${n}`);
      row.querySelector(".digest-seconds").setAttribute("aria-label", `Window in seconds, digest ${n}`);
      row.querySelector("[data-remove]").setAttribute("aria-label", `Remove digest ${n}`);
    });
    for (const body of [this.rules, this.digests]) {
      const empty = body.rows.length === 0;
      body.closest(".table-wrap").hidden = empty;
      $(body === this.rules ? "#rules-empty" : "#digests-empty", this.root).hidden = !empty;
    }
  }

  /** The document to PUT, and which control each of its fields came from. */
  collect() {
    const fields = new Map();
    const labels = new Map();
    const rules = [];
    const mute = $("#p-mute", this.root);
    const mutedTopics = mute.value.split("\n").map((s) => s.trim()).filter(Boolean);
    mutedTopics.forEach((topic, k) => {
      fields.set(`rules[${rules.length}]`, mute);
      labels.set(`rules[${rules.length}]`, `Muted topics, line ${k + 1}`);
      rules.push({ topic, mute: true });
    });
    [...this.rules.rows].forEach((row, k) => {
      const index = rules.length;
      const value = (sel) => row.querySelector(sel).value.trim();
      const deliver = value("select.deliver");
      const channels = value("input.channels").split(",").map((s) => s.trim()).filter(Boolean);
      rules.push({
        topic: value("input.topic") || "*",
        category: value("input.category") || null,
        min_priority: Number(value("select.priority")),
        channels: deliver === "all" ? null : deliver === "inbox" ? [] : channels,
        mute: row.querySelector("input.mute").checked,
      });
      labels.set(`rules[${index}]`, `Rule ${k + 1}`);
      fields.set(`rules[${index}]`, row.querySelector("input.topic"));
      fields.set(`rules[${index}].topic`, row.querySelector("input.topic"));
      fields.set(`rules[${index}].category`, row.querySelector("input.category"));
      fields.set(`rules[${index}].min_priority`, row.querySelector("select.priority"));
      fields.set(`rules[${index}].channels`, row.querySelector("input.channels"));
      fields.set(`rules[${index}].mute`, row.querySelector("input.mute"));
    });
    const quietOn = $("#p-quiet-on", this.root).checked;
    const digests = {};
    for (const row of this.digests.rows) {
      const nameInput = row.querySelector(".digest-name");
      const secondsInput = row.querySelector(".digest-seconds");
      const name = nameInput.value.trim();
      if (!name && !secondsInput.value) continue;
      if (!name) throw new FormError("Digests: give the channel's name", nameInput);
      const seconds = secondsInput.value === "" ? null : Number(secondsInput.value);
      digests[name] = seconds;
      fields.set(`digests.${name}`, secondsInput);
      labels.set(`digests.${name}`, `Digest for ${name}`);
    }
    fields.set("digests", this.digests.rows[0]?.querySelector("input") ?? $("#add-digest", this.root));
    const rate = $("#p-rate", this.root).value;
    fields.set("timezone", $("#p-timezone", this.root));
    fields.set("quiet_hours", $("#p-quiet-start", this.root));
    fields.set("quiet_hours.start", $("#p-quiet-start", this.root));
    fields.set("quiet_hours.end", $("#p-quiet-end", this.root));
    fields.set("rate_limit_per_minute", $("#p-rate", this.root));
    fields.set("rules", $("#add-rule", this.root));
    const doc = {
      rules,
      quiet_hours: quietOn ? { start: $("#p-quiet-start", this.root).value, end: $("#p-quiet-end", this.root).value } : null,
      timezone: $("#p-timezone", this.root).value.trim() || "UTC",
      digests,
      rate_limit_per_minute: rate === "" ? null : Number(rate),
    };
    return { doc, fields, labels };
  }

  async save(e) {
    e.preventDefault();
    this.showError(null);
    this.status.textContent = "";
    let collected;
    try {
      collected = this.collect();
    } catch (err) {
      this.showError(err.message, err.control);
      return;
    }
    const submit = this.form.querySelector('[type="submit"]');
    submit.disabled = true;
    try {
      this.fill(await api.put("/v1/preferences", collected.doc));
      this.status.textContent = "Preferences saved.";
    } catch (err) {
      if (err instanceof ApiError && err.field) {
        const { field, message } = err;
        const control = this.control(collected.fields, field);
        this.showError(`${this.describe(collected.labels, field)}: ${message.replace(`${field}: `, "")}`, control);
      } else {
        this.showError(`Could not save preferences: ${err.message}`);
      }
    } finally {
      submit.disabled = false;
    }
  }

  control(fields, field) {
    for (let path = field; path; path = path.replace(/(\.[^.[\]]+|\[\d+\])$/, "")) {
      if (fields.has(path)) return fields.get(path);
      if (!/(\.[^.[\]]+|\[\d+\])$/.test(path)) break;
    }
    return null;
  }

  describe(labels, field) {
    const rule = /^(rules\[\d+\])(?:\.(\w+))?/.exec(field);
    if (rule) {
      const base = labels.get(rule[1]) ?? "Rules";
      return rule[2] && !base.startsWith("Muted") ? `${base}, ${FIELD_NAMES[rule[2]] ?? rule[2]}` : base;
    }
    if (labels.has(field)) return labels.get(field);
    const names = {
      timezone: "Time zone",
      "quiet_hours.start": "Quiet hours start",
      "quiet_hours.end": "Quiet hours end",
      quiet_hours: "Quiet hours",
      rate_limit_per_minute: "Rate limit",
      digests: "Digests",
      rules: "Rules",
    };
    return names[field] ?? field;
  }

  showError(text, control = null) {
    for (const el of this.form.querySelectorAll('[aria-describedby="prefs-error"]')) {
      el.removeAttribute("aria-invalid");
      el.removeAttribute("aria-describedby");
    }
    this.error.textContent = text ?? "";
    this.error.hidden = !text;
    if (control instanceof Element) {
      if (control.matches("input, select, textarea")) control.setAttribute("aria-invalid", "true");
      control.setAttribute("aria-describedby", "prefs-error");
      control.focus();
    }
  }
}
