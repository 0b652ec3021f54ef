// Small DOM helpers. Everything that comes from the server goes in as text
// (textContent / attribute values), never as markup.

/**
 * Create an element.
 *   h("button", {class: "primary", type: "button", onclick: fn, "aria-label": "…"}, "Text", child)
 * Keys starting with "on" add listeners; `class`, `text`, `hidden`, `dataset`
 * are handled specially; everything else becomes an attribute (skipped when
 * null/undefined/false). Children are nodes or strings (added as text).
 */
export function h(tag, props = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (value === null || value === undefined || value === false) continue;
    if (key.startsWith("on") && typeof value === "function") {
      el.addEventListener(key.slice(2), value);
    } else if (key === "class") {
      el.className = value;
    } else if (key === "text") {
      el.textContent = value;
    } else if (key === "hidden") {
      el.hidden = true;
    } else if (key === "dataset") {
      Object.assign(el.dataset, value);
    } else if (key === "value") {
      el.value = value;
    } else if (key === "checked") {
      el.checked = true;
    } else {
      el.setAttribute(key, value === true ? "" : String(value));
    }
  }
  append(el, children);
  return el;
}

export function append(parent, children) {
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    parent.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return parent;
}

export function clear(el) {
  el.replaceChildren();
  return el;
}

export const $ = (selector, root = document) => root.querySelector(selector);
export const $$ = (selector, root = document) => [...root.querySelectorAll(selector)];

/** Text for screen readers only (visually hidden). */
export const srOnly = (text) => h("span", { class: "sr-only", text });

/** Format an RFC 3339 time as "5 min ago" (with the absolute time in a tooltip). */
const relative = new Intl.RelativeTimeFormat(undefined, { numeric: "auto", style: "short" });
const absolute = new Intl.DateTimeFormat(undefined, { dateStyle: "medium", timeStyle: "short" });

export function relativeTime(iso, now = Date.now()) {
  const then = Date.parse(iso);
  if (Number.isNaN(then)) return "";
  const seconds = Math.round((then - now) / 1000);
  const abs = Math.abs(seconds);
  if (abs < 45) return "just now";
  if (abs < 3600) return relative.format(Math.round(seconds / 60), "minute");
  if (abs < 86400) return relative.format(Math.round(seconds / 3600), "hour");
  if (abs < 7 * 86400) return relative.format(Math.round(seconds / 86400), "day");
  return absolute.format(then);
}

export function absoluteTime(iso) {
  const then = Date.parse(iso);
  return Number.isNaN(then) ? "" : absolute.format(then);
}

export function timeElement(iso) {
  return h("time", { datetime: iso, title: absoluteTime(iso), text: relativeTime(iso) });
}

/** Refresh every <time datetime> under root (called once a minute). */
export function refreshTimes(root) {
  const now = Date.now();
  for (const el of root.querySelectorAll("time[datetime]")) {
    el.textContent = relativeTime(el.getAttribute("datetime"), now);
  }
}
