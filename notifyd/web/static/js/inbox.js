// The inbox view: history pages, filters and search, live updates from the
// stream, read/archive changes (queued on this device while offline), the
// unread count.

import { announce, showUnreadCount } from "./announce.js";
import { api, NetworkError } from "./api.js";
import { eventTitle, renderCard, updateCard } from "./card.js";
import { $, refreshTimes } from "./dom.js";
import { matchesFilters } from "./filters.js";
import * as offline from "./offline.js";

const PAGE = 30;
const UNREAD_LIMIT = 500;

const CHANGES = {
  read: { read: true },
  click: { read: true },
  unread: { read: false },
  seen: { seen: true },
  archive: { archived: true },
  unarchive: { archived: false },
};

export class Inbox {
  constructor(root) {
    this.root = root;
    this.list = $("#event-list", root);
    this.status = $("#inbox-status", root);
    this.more = $("#load-more", root);
    this.form = $("#filters", root);
    this.events = new Map(); // id → event, what the list shows
    this.unread = new Map(); // id → event, for the count (newest UNREAD_LIMIT)
    this.unreadMore = false;
    // Beyond UNREAD_LIMIT the map is incomplete: the exact count comes from the server.
    this.unreadTotal = null;
    this.recountTimer = null;
    this.pending = new Set(); // ids with a queued offline change
    this.next = null;
    this.done = false;
    this.loading = false;
    this.generation = 0;
    this.offline = false;
    this.sentinelVisible = false;
    this.announceQueue = [];
    this.toKeep = [];

    this.list.addEventListener("click", (e) => this.onListClick(e));
    this.more.addEventListener("click", () => this.loadPage());
    $("#mark-all-read", root).addEventListener("click", () => this.markAllRead());
    let searchTimer;
    this.form.addEventListener("input", (e) => {
      clearTimeout(searchTimer);
      const delay = e.target.type === "search" || e.target.type === "text" ? 300 : 0;
      searchTimer = setTimeout(() => this.reload(), delay);
    });
    this.form.addEventListener("submit", (e) => {
      e.preventDefault();
      clearTimeout(searchTimer);
      this.reload();
    });
    this.form.addEventListener("reset", () => setTimeout(() => this.reload(), 0));
    if ("IntersectionObserver" in self) {
      new IntersectionObserver(
        (entries) => {
          this.sentinelVisible = entries.some((e) => e.isIntersecting);
          if (this.sentinelVisible) this.loadPage();
        },
        { rootMargin: "600px 0px" },
      ).observe(this.more);
    }
    setInterval(() => refreshTimes(this.list), 60_000);
  }

  // -- filters ----------------------------------------------------------------

  filters() {
    const data = new FormData(this.form);
    const get = (name) => String(data.get(name) ?? "").trim();
    return {
      q: get("q"),
      topic: get("topic"),
      category: get("category"),
      min_priority: get("min_priority"),
      unread: data.get("unread") ? "true" : "",
      archived: get("archived") || "exclude",
    };
  }

  /** Whether an event belongs in the list: the daemon's meaning of the filters (filters.js). */
  matches(ev, f = this.filters()) {
    return matchesFilters(ev, f);
  }

  // -- loading ----------------------------------------------------------------

  async reload() {
    this.showFilterCount();
    this.generation += 1;
    this.events.clear();
    this.list.replaceChildren();
    this.next = null;
    this.done = false;
    this.loading = false;
    this.setStatus("Loading…");
    await this.loadPage();
  }

  async loadPage() {
    if (this.loading || this.done) return;
    this.loading = true;
    const generation = this.generation;
    const filters = this.filters();
    const first = this.next === null;
    try {
      const page = await api.get("/v1/events", { ...filters, before: this.next, limit: PAGE });
      if (generation !== this.generation) return;
      this.offline = false;
      for (const ev of page.events) this.show(ev);
      this.next = page.next;
      this.done = page.next === null;
      if (first) await offline.saveEvents(page.events);
    } catch (err) {
      if (generation !== this.generation) return;
      if (err instanceof NetworkError) {
        this.offline = true;
        this.done = true;
        if (first) await this.showSaved(filters);
      } else {
        this.done = true;
        this.setStatus(`Could not load notifications: ${err.message}`, { error: true });
        return;
      }
    } finally {
      if (generation === this.generation) this.loading = false;
    }
    if (generation !== this.generation) return;
    this.more.hidden = this.done;
    this.updateStatus();
    if (this.sentinelVisible && !this.done) this.loadPage();
  }

  async showSaved(filters) {
    const saved = await offline.loadEvents();
    for (const ev of saved) if (this.matches(ev, filters)) this.show(ev);
    for (const entry of await offline.pendingStates()) this.pending.add(entry.id);
    for (const id of this.pending) this.refreshCard(id);
  }

  updateStatus() {
    const count = this.events.size;
    if (count) this.setStatus(this.offline ? "Offline: showing the notifications saved on this device." : "");
    else if (this.offline) this.setStatus("Offline, and no notifications are saved on this device.");
    else this.setStatus(this.filtered() ? "No notifications match these filters." : "No notifications yet.");
  }

  filtered() {
    const f = this.filters();
    return Boolean(f.q || f.topic || f.category || f.min_priority || f.unread || f.archived !== "exclude");
  }

  showFilterCount() {
    const f = this.filters();
    const active = [f.topic, f.category, f.min_priority, f.archived !== "exclude"].filter(Boolean).length;
    $("#filter-count", this.root).textContent = active ? `(${active} active)` : "";
  }

  setStatus(text, { error = false } = {}) {
    this.status.textContent = text;
    this.status.classList.toggle("error", error);
    this.status.hidden = !text;
  }

  /** Add or update an event in the list, keeping newest first. */
  show(ev) {
    const known = this.events.get(ev.id);
    this.events.set(ev.id, known ? { ...known, ...ev } : ev);
    const existing = document.getElementById(`event-${ev.id}`);
    if (existing) {
      this.refreshCard(ev.id);
      return;
    }
    const li = renderCard(this.events.get(ev.id));
    if (this.pending.has(ev.id)) updateCard(li, this.events.get(ev.id), { pending: true });
    const after = [...this.list.children].find((el) => Number(el.dataset.id) < ev.id);
    this.list.insertBefore(li, after ?? null);
  }

  hide(id) {
    const li = document.getElementById(`event-${id}`);
    this.events.delete(id);
    if (!li) return;
    // keep keyboard focus in the list when the focused card goes away
    if (li.contains(document.activeElement)) {
      const next = li.nextElementSibling ?? li.previousElementSibling;
      li.remove();
      (next?.querySelector("article") ?? $("#inbox-title")).focus();
    } else {
      li.remove();
    }
    this.updateStatus();
  }

  refreshCard(id) {
    const li = document.getElementById(`event-${id}`);
    const ev = this.events.get(id);
    if (li && ev) updateCard(li, ev, { pending: this.pending.has(id) });
  }

  /** Scroll to one event (deep links `#event-<id>` from pushes), loading it if needed. */
  async reveal(id) {
    if (!this.events.has(id)) {
      try {
        this.show(await api.get(`/v1/events/${id}`));
      } catch (err) {
        this.setStatus(`Notification ${id} is not available: ${err.message}`, { error: true });
        return;
      }
    }
    const li = document.getElementById(`event-${id}`);
    if (!li) return;
    li.classList.add("highlight");
    li.scrollIntoView({ block: "center" });
    li.querySelector("article").focus({ preventScroll: true });
  }

  // -- unread count -----------------------------------------------------------

  async refreshUnread() {
    try {
      const page = await api.get("/v1/events", { unread: "true", limit: UNREAD_LIMIT });
      this.unread = new Map(page.events.map((ev) => [ev.id, ev]));
      this.unreadMore = page.next !== null;
      this.unreadTotal = this.unreadMore ? await this.fetchUnreadCount() : null;
      // read state may have changed while we were not listening: reconcile the list
      const oldest = page.events.length ? page.events[page.events.length - 1].id : Infinity;
      for (const ev of this.events.values()) {
        if (this.pending.has(ev.id) || (this.unreadMore && ev.id < oldest)) continue;
        // archived events are not in the unread query: their state stays as it was
        const read = this.unread.has(ev.id) ? false : ev.archived ? ev.read : true;
        if (read !== ev.read) {
          ev.read = read;
          this.refreshCard(ev.id);
        }
      }
    } catch (err) {
      if (!(err instanceof NetworkError)) throw err;
      const saved = await offline.loadEvents();
      this.unread = new Map(saved.filter((ev) => !ev.read && !ev.archived).map((ev) => [ev.id, ev]));
      this.unreadMore = false;
      this.unreadTotal = null;
    }
    this.showCount();
  }

  async fetchUnreadCount() {
    const { count } = await api.get("/v1/inbox/count", { unread: "true" });
    return count;
  }

  showCount() {
    const exact = this.unreadTotal !== null;
    const n = exact ? this.unreadTotal : this.unread.size;
    const more = this.unreadMore && !exact;
    showUnreadCount(n, { more });
    const summary = $("#unread-summary", this.root);
    summary.textContent = n ? `${n}${more ? "+" : ""} unread` : "All caught up";
  }

  trackUnread(ev) {
    if (!ev.read && !ev.archived) this.unread.set(ev.id, ev);
    else this.unread.delete(ev.id);
    if (this.unreadMore) this.scheduleRecount();
    this.showCount();
  }

  // With more unread than the map holds, ask the server again (once per burst).
  scheduleRecount() {
    clearTimeout(this.recountTimer);
    this.recountTimer = setTimeout(async () => {
      try {
        this.unreadTotal = await this.fetchUnreadCount();
        this.showCount();
      } catch (err) {
        if (!(err instanceof NetworkError)) throw err;
      }
    }, 300);
  }

  // -- live frames ------------------------------------------------------------

  async applyFrame(frame) {
    if (frame.type === "event" && frame.event) this.onEvent(frame.event);
    else if (frame.type === "state" && frame.all) await this.onReadAll(frame);
    else if (frame.type === "state" && typeof frame.id === "number") await this.onState(frame.id, frame.state);
  }

  onEvent(raw) {
    // stream frames carry no per-user state: keep what history already told us
    const known = this.events.get(raw.id) ?? this.unread.get(raw.id);
    const defaults = { read: false, seen: false, archived: false, clicked_at: null, action: null };
    const ev = { ...defaults, ...known, ...raw };
    if (ev.collapse_key) {
      for (const other of [...this.events.values()]) {
        if (other.id < ev.id && other.topic === ev.topic && other.collapse_key === ev.collapse_key) {
          this.hide(other.id);
          this.unread.delete(other.id);
          offline.forgetEvent(other.id);
        }
      }
    }
    if (ev.expires_at && Date.parse(ev.expires_at) <= Date.now()) return;
    this.trackUnread(ev);
    this.keep(ev);
    if (this.matches(ev)) {
      this.show(ev);
      this.updateStatus();
    }
    if (!known) this.queueAnnouncement(ev);
  }

  /** Save live events for offline use, in batches (a burst is one write). */
  keep(ev) {
    this.toKeep.push(ev);
    if (this.toKeep.length > 1) return;
    setTimeout(() => {
      const batch = this.toKeep;
      this.toKeep = [];
      offline.saveEvents(batch);
    }, 500);
  }

  queueAnnouncement(ev) {
    if (ev.priority >= 5) {
      announce(`Urgent notification: ${eventTitle(ev)}`, { assertive: true });
      return;
    }
    this.announceQueue.push(ev);
    if (this.announceQueue.length > 1) return;
    // a replay after reconnecting brings many at once: one sentence for all of them
    setTimeout(() => {
      const batch = this.announceQueue;
      this.announceQueue = [];
      announce(batch.length === 1 ? `New notification: ${eventTitle(batch[0])}` : `${batch.length} new notifications`);
    }, 400);
  }

  async onState(id, state) {
    const changes = CHANGES[state];
    if (!changes) return;
    let ev = this.events.get(id) ?? this.unread.get(id);
    if (ev) Object.assign(ev, changes);
    offline.updateEvent(id, changes);
    const f = this.filters();
    if (ev && this.events.has(id)) {
      if (!this.matches(ev, f) && (state === "archive" || state === "unarchive")) this.hide(id);
      else this.refreshCard(id);
    } else if ((state === "unarchive" && f.archived !== "only") || (state === "unread" && !ev)) {
      // it may belong in the list (or the count) now: fetch it
      try {
        ev = await api.get(`/v1/events/${id}`);
      } catch {
        return;
      }
      if (this.matches(ev)) this.show(ev);
    }
    if (ev) this.trackUnread(ev);
    this.updateStatus();
  }

  async onReadAll(frame) {
    const flt = frame.filter ?? {};
    const f = { topic: flt.topic ?? "", category: flt.category ?? "", min_priority: flt.min_priority ?? "", q: flt.q ?? "" };
    for (const ev of this.events.values()) {
      if (ev.id <= frame.upto && !ev.read && this.matches(ev, { ...f, archived: "include" })) {
        ev.read = true;
        this.refreshCard(ev.id);
      }
    }
    await this.refreshUnread();
  }

  // -- changing state ---------------------------------------------------------

  async onListClick(e) {
    const target = e.target.closest("[data-act]");
    if (!target) return;
    const li = target.closest("li.event");
    const id = Number(li.dataset.id);
    const ev = this.events.get(id);
    if (!ev) return;
    switch (target.dataset.act) {
      case "toggle-read":
        await this.setState(id, ev.read ? "unread" : "read");
        break;
      case "toggle-archive":
        await this.setState(id, ev.archived ? "unarchive" : "archive");
        break;
      case "open":
        await this.click(id, null);
        break;
      case "action": {
        const action = ev.actions?.[Number(target.dataset.index)];
        if (!action) break;
        await this.click(id, action.label);
        if (action.method) {
          const note = li.querySelector(".action-note");
          let host = "";
          try {
            host = new URL(action.url).host;
          } catch {
            host = action.url;
          }
          note.textContent = `“${action.label}” recorded. HTTP actions (${action.method} ${host}) are not run from the browser.`;
        }
        break;
      }
    }
  }

  /** Change one event's state now, or queue it on this device when offline. */
  async setState(id, state) {
    const ev = this.events.get(id);
    const before = ev ? { read: ev.read, archived: ev.archived } : null;
    // optimistic: the list reflects the change at once
    await this.onState(id, state);
    try {
      await api.post(`/v1/events/${id}/${state}`);
    } catch (err) {
      if (err instanceof NetworkError) {
        await this.queue(id, state);
        return;
      }
      if (err.status === 404) {
        this.hide(id);
        this.unread.delete(id);
        this.showCount();
        return;
      }
      if (ev && before) {
        Object.assign(ev, before);
        this.refreshCard(id);
        this.trackUnread(ev);
      }
      this.setStatus(`Could not change notification: ${err.message}`, { error: true });
    }
  }

  async click(id, action) {
    const ev = this.events.get(id);
    if (ev && !ev.read) await this.onState(id, "read");
    try {
      await api.post(`/v1/events/${id}/click`, { action }, { keepalive: true });
    } catch (err) {
      if (err instanceof NetworkError) await this.queue(id, "read");
    }
  }

  async queue(id, state) {
    await offline.queueState(id, state);
    this.pending.add(id);
    this.refreshCard(id);
  }

  /** Send what was queued offline; called on "online" and at start. */
  async flush() {
    const sent = await offline.flushQueue((state, ids) => api.post("/v1/inbox/state", { ids, state }), {
      isNetworkError: (err) => err instanceof NetworkError,
    });
    for (const id of sent) {
      this.pending.delete(id);
      this.refreshCard(id);
    }
    return sent.length;
  }

  async markAllRead() {
    const f = this.filters();
    const query = { topic: f.topic, category: f.category, min_priority: f.min_priority, q: f.q };
    try {
      const result = await api.post("/v1/inbox/read-all", undefined, { query });
      await this.onReadAll({ upto: result.upto, filter: query });
      announce(result.updated === 1 ? "1 notification marked read" : `${result.updated} notifications marked read`);
    } catch (err) {
      if (!(err instanceof NetworkError)) {
        this.setStatus(`Could not mark all read: ${err.message}`, { error: true });
        return;
      }
      for (const ev of this.events.values()) if (!ev.read) await this.setState(ev.id, "read");
    }
  }
}
