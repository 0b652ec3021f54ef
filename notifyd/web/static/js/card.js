// One notification in the inbox list: <li><article>…</article></li>.
// Every field of the event goes into the DOM as text or as a checked URL.

import { h, timeElement } from "./dom.js";
import { externalLink, renderMarkdown, renderPlainText, safeUrl } from "./markdown.js";

const PRIORITY_NAMES = { 1: "Min", 2: "Low", 3: null, 4: "High", 5: "Urgent" };

export function eventTitle(ev) {
  return ev.title || ev.topic || `Notification ${ev.id}`;
}

function image(url, className, alt) {
  const src = imageUrl(url);
  if (!src) return null;
  const img = h("img", {
    class: className,
    src,
    alt,
    loading: "lazy",
    decoding: "async",
    referrerpolicy: "no-referrer",
  });
  // an image that fails to load takes no room and shows no broken-image icon
  img.addEventListener("error", () => (img.closest("figure, .event-icon") ?? img).remove());
  return img;
}

/** An event's images load only from https URLs of other origins. The publisher
 * picks the URL, and a GET to this server would carry the reader's session cookie:
 * an "image" pointing at one of our URLs must not act in the reader's name. */
function imageUrl(raw) {
  const href = safeUrl(raw);
  if (!href) return null;
  const url = new URL(href);
  return url.protocol === "https:" && url.origin !== location.origin ? href : null;
}

/** Attachment types shown inline as pictures; anything else is a download link. */
const IMAGE_TYPES = new Set(["image/png", "image/jpeg", "image/gif", "image/webp"]);

/** "1.5 MB"-style size, or "" when unknown. */
export function humanSize(bytes) {
  if (typeof bytes !== "number" || !Number.isFinite(bytes) || bytes < 0) return "";
  if (bytes < 1024) return `${bytes} B`;
  const units = ["KiB", "MiB", "GiB"];
  let size = bytes / 1024;
  let unit = 0;
  while (size >= 1024 && unit < units.length - 1) {
    size /= 1024;
    unit += 1;
  }
  return `${size.toFixed(size < 10 ? 1 : 0)} ${units[unit]}`;
}

/** What a reader is told about a file besides its name: type and size. */
function fileFacts(att) {
  return [att.type, humanSize(att.size)].filter(Boolean).join(", ");
}

/**
 * An event's attachment. An uploaded file (with an id) is served by this server
 * at /v1/attachments/<id> (built from the id, never taken from the event): an
 * image there is shown inline, anything else is a download link. Unlike an
 * event's `image`, these same-origin URLs are safe to load: serving a file
 * changes nothing on the server. A file elsewhere (no id) is a plain link.
 */
function attachment(ev) {
  const att = ev.attachment;
  if (!att || typeof att !== "object") return null;
  const name = String(att.name || "attachment");
  const type = String(att.type || "").split(";")[0].trim().toLowerCase();
  const facts = fileFacts({ type, size: att.size });
  const expired = att.expires_at && Date.parse(att.expires_at) <= Date.now();
  if (att.id) {
    const href = `/v1/attachments/${encodeURIComponent(String(att.id))}`;
    if (expired) {
      return h("p", { class: "event-attachment muted" }, `Attachment ${name} (${facts ? `${facts}, ` : ""}expired)`);
    }
    const link = h("a", { href, download: name, class: "attachment-link" }, h("span", { class: "attachment-name", text: name }));
    if (IMAGE_TYPES.has(type)) {
      const img = h("img", { class: "event-image attachment-image", src: href, alt: name, loading: "lazy", decoding: "async" });
      const figure = h(
        "figure",
        { class: "event-figure event-attachment" },
        h("a", { href, class: "attachment-picture", "aria-label": `Open ${name}` }, img),
        h("figcaption", { class: "small muted" }, link, facts ? ` (${facts})` : ""),
      );
      // A live event can arrive a moment before the server serves its file to
      // readers, and networks hiccup: try again twice before saying it cannot be
      // shown (gone, expired, or the server out of reach), never a broken picture.
      let retries = [1000, 3000];
      img.addEventListener("error", () => {
        const wait = retries.shift();
        if (wait !== undefined) {
          setTimeout(() => {
            img.src = `${href}${retries.length ? "?retry=1" : "?retry=2"}`;
          }, wait);
          return;
        }
        figure.replaceWith(h("p", { class: "event-attachment muted", text: `Attachment ${name} cannot be shown (expired, or the server cannot be reached)` }));
      });
      return figure;
    }
    return h("p", { class: "event-attachment" }, h("span", { class: "muted", text: "Attached file: " }), link, facts ? h("span", { class: "muted small", text: ` (${facts})` }) : null);
  }
  const url = safeUrl(att.url);
  if (!url || url.startsWith("mailto:")) return null;
  const a = externalLink(url);
  a.className = "attachment-link";
  a.textContent = name;
  return h("p", { class: "event-attachment" }, h("span", { class: "muted", text: "Linked file: " }), a, facts ? h("span", { class: "muted small", text: ` (${facts})` }) : null);
}

function meta(ev) {
  const parts = [];
  const prio = PRIORITY_NAMES[ev.priority];
  if (prio) parts.push(h("span", { class: `prio prio-${ev.priority}`, text: prio }));
  parts.push(h("span", { class: "topic", text: ev.topic }));
  if (ev.category && ev.category !== "general") parts.push(h("span", { class: "category", text: ev.category }));
  if (ev.sensitive) parts.push(h("span", { class: "tag", text: "Sensitive" }));
  for (const tag of ev.tags ?? []) parts.push(h("span", { class: "tag", text: `#${tag}` }));
  if (ev.created_at) parts.push(timeElement(ev.created_at));
  return h("p", { class: "event-meta" }, h("span", { class: "state-label" }), parts);
}

function body(ev) {
  if (!ev.body) return null;
  const content = ev.format === "markdown" ? renderMarkdown(ev.body) : renderPlainText(ev.body);
  return h("div", { class: `event-body${ev.format === "markdown" ? " markdown" : ""}` }, content);
}

function title(ev) {
  const text = eventTitle(ev);
  const click = safeUrl(ev.click);
  const heading = h("h2", { class: "event-title", id: `event-${ev.id}-title` });
  if (click) {
    const a = externalLink(click);
    a.dataset.act = "open";
    a.textContent = text;
    heading.append(a);
  } else {
    heading.textContent = text;
  }
  return heading;
}

function actions(ev) {
  const list = (ev.actions ?? []).slice(0, 3);
  if (!list.length) return null;
  const group = h("div", { class: "event-actions", role: "group", "aria-label": `Actions for ${eventTitle(ev)}` });
  list.forEach((action, index) => {
    const url = safeUrl(action.url);
    if (action.method) {
      // the page may only talk to its own server (CSP connect-src 'self'), so an
      // HTTP action is recorded as taken and its target is named
      group.append(
        h("button", {
          type: "button",
          class: "button",
          dataset: { act: "action", index: String(index) },
          title: url ? `${action.method} ${new URL(url).host}` : null,
          text: action.label,
        }),
      );
    } else if (url) {
      const a = externalLink(url);
      a.className = "button";
      a.dataset.act = "action";
      a.dataset.index = String(index);
      a.textContent = action.label;
      group.append(a);
    }
  });
  return group;
}

function controls() {
  return h(
    "div",
    { class: "event-controls" },
    h("button", { type: "button", class: "button subtle", dataset: { act: "toggle-read" } }),
    h("button", { type: "button", class: "button subtle", dataset: { act: "toggle-archive" } }),
    h("span", { class: "sync-note", hidden: true, text: "Saved on this device; syncs when online" }),
    h("span", { class: "action-note", role: "status" }),
  );
}

/** A new list item for the event. */
export function renderCard(ev) {
  const icon = ev.icon ? image(ev.icon, "icon", "") : null;
  const picture = ev.image ? image(ev.image, "event-image", `Image attached to “${eventTitle(ev)}”`) : null;
  const article = h(
    "article",
    { class: "event-card", "aria-labelledby": `event-${ev.id}-title`, tabindex: "-1" },
    icon ? h("div", { class: "event-icon" }, icon) : null,
    h(
      "div",
      { class: "event-main" },
      title(ev),
      meta(ev),
      body(ev),
      picture ? h("figure", { class: "event-figure" }, picture) : null,
      attachment(ev),
      h("div", { class: "event-footer" }, actions(ev), controls()),
    ),
  );
  const li = h("li", { class: "event", id: `event-${ev.id}`, dataset: { id: String(ev.id) } }, article);
  updateCard(li, ev);
  return li;
}

/** Reflect the event's read/archive state (and a pending offline change). */
export function updateCard(li, ev, { pending = false } = {}) {
  const state = ev.read ? "read" : "unread";
  li.dataset.state = state;
  li.dataset.archived = ev.archived ? "true" : "false";
  li.classList.toggle("unread", !ev.read);
  li.classList.toggle("urgent", ev.priority >= 5);
  li.classList.toggle("high", ev.priority === 4);
  li.classList.toggle("archived", Boolean(ev.archived));
  li.querySelector(".state-label").textContent = ev.read ? "" : "Unread";
  // the visible label, and the notification's title for screen readers going by buttons
  const label = (act, text) => {
    const button = li.querySelector(`[data-act="${act}"]`);
    button.textContent = text;
    button.setAttribute("aria-label", `${text}: ${eventTitle(ev)}`);
  };
  label("toggle-read", ev.read ? "Mark unread" : "Mark read");
  label("toggle-archive", ev.archived ? "Unarchive" : "Archive");
  li.querySelector(".sync-note").hidden = !pending;
}
