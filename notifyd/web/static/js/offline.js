// What the page keeps on this device so it works offline (IndexedDB):
//   events  the newest notifications last seen, shown when the server is unreachable
//   queue   read/archive changes made offline, sent when the browser is back online
//   meta    who is signed in here and the stream cursor (the last event id seen)
// Signing out clears all of it. Without IndexedDB (some private modes) the same
// API works from memory, so nothing survives a reload but nothing breaks either.

const DB_NAME = "notifyd";
const DB_VERSION = 1;
const KEEP_EVENTS = 200;

// read/unread and archive/unarchive are independent: the newest change of each
// kind per event is what the server must end up with
const AXIS = { read: "read", unread: "read", seen: "read", archive: "archive", unarchive: "archive" };

let dbPromise = null;
const memory = { events: new Map(), queue: new Map(), meta: new Map() };

function openDb() {
  if (!dbPromise) {
    dbPromise = new Promise((resolve) => {
      if (!("indexedDB" in self)) return resolve(null);
      let req;
      try {
        req = indexedDB.open(DB_NAME, DB_VERSION);
      } catch {
        return resolve(null);
      }
      req.onupgradeneeded = () => {
        const db = req.result;
        db.createObjectStore("events", { keyPath: "id" });
        db.createObjectStore("queue", { keyPath: "key" });
        db.createObjectStore("meta", { keyPath: "key" });
      };
      req.onsuccess = () => resolve(req.result);
      req.onerror = () => resolve(null);
      req.onblocked = () => resolve(null);
    });
  }
  return dbPromise;
}

/** Run fn(store) in a transaction; resolves with fn's request result when it commits. */
async function tx(storeName, mode, fn) {
  const db = await openDb();
  if (!db) return fn(null);
  return new Promise((resolve, reject) => {
    const t = db.transaction(storeName, mode);
    let result;
    const req = fn(t.objectStore(storeName));
    if (req && "onsuccess" in req) req.onsuccess = () => (result = req.result);
    t.oncomplete = () => resolve(result);
    t.onerror = () => reject(t.error);
    t.onabort = () => reject(t.error);
  });
}

// -- events -----------------------------------------------------------------

export async function loadEvents() {
  const events = await tx("events", "readonly", (store) =>
    store ? store.getAll() : [...memory.events.values()],
  );
  return (events ?? []).sort((a, b) => b.id - a.id);
}

/** Remember these events (merged with what is kept), dropping all but the newest. */
export async function saveEvents(events) {
  const kept = new Map((await loadEvents()).map((e) => [e.id, e]));
  for (const e of events) kept.set(e.id, e);
  const newest = [...kept.values()].sort((a, b) => b.id - a.id);
  const keep = newest.slice(0, KEEP_EVENTS);
  const drop = newest.slice(KEEP_EVENTS).map((e) => e.id);
  await tx("events", "readwrite", (store) => {
    if (!store) {
      memory.events = new Map(keep.map((e) => [e.id, e]));
      return null;
    }
    for (const e of keep) store.put(e);
    for (const id of drop) store.delete(id);
    return null;
  });
}

/** Update the kept copy of one event, if it is kept. */
export async function updateEvent(id, changes) {
  const kept = (await loadEvents()).find((e) => e.id === id);
  if (kept) await saveEvents([{ ...kept, ...changes }]);
}

export async function forgetEvent(id) {
  await tx("events", "readwrite", (store) => (store ? store.delete(id) : memory.events.delete(id)));
}

// -- queue ------------------------------------------------------------------

/** Queue a state change made while offline (the newest per event and kind wins). */
export async function queueState(id, state) {
  const entry = { key: `${id}:${AXIS[state] ?? state}`, id, state, at: Date.now() };
  await tx("queue", "readwrite", (store) => (store ? store.put(entry) : memory.queue.set(entry.key, entry)));
}

export async function pendingStates() {
  const entries = await tx("queue", "readonly", (store) =>
    store ? store.getAll() : [...memory.queue.values()],
  );
  return (entries ?? []).sort((a, b) => a.at - b.at);
}

async function dropQueued(keys) {
  await tx("queue", "readwrite", (store) => {
    for (const key of keys) {
      if (store) store.delete(key);
      else memory.queue.delete(key);
    }
    return null;
  });
}

/**
 * Send the queued changes, one request per state (`POST /v1/inbox/state`).
 * `post(state, ids)` does the request. Stops at the first network error (still
 * offline) and leaves the rest queued; a change the server refuses (e.g. the
 * event expired meanwhile) is dropped, since retrying cannot help.
 * Returns the ids that were sent.
 */
export async function flushQueue(post, { isNetworkError }) {
  const entries = await pendingStates();
  const byState = new Map();
  for (const entry of entries) {
    if (!byState.has(entry.state)) byState.set(entry.state, []);
    byState.get(entry.state).push(entry);
  }
  const sent = [];
  for (const [state, group] of byState) {
    for (let n = 0; n < group.length; n += 500) {
      const chunk = group.slice(n, n + 500);
      try {
        await post(
          state,
          chunk.map((e) => e.id),
        );
      } catch (err) {
        if (isNetworkError(err)) return sent;
        if (err?.status === 401) return sent; // signed out meanwhile: keep for next sign-in
      }
      await dropQueued(chunk.map((e) => e.key));
      sent.push(...chunk.map((e) => e.id));
    }
  }
  return sent;
}

// -- meta -------------------------------------------------------------------

export async function loadMeta(key) {
  const row = await tx("meta", "readonly", (store) =>
    store ? store.get(key) : { key, value: memory.meta.get(key) },
  );
  return row?.value ?? null;
}

export async function saveMeta(key, value) {
  await tx("meta", "readwrite", (store) =>
    store ? store.put({ key, value }) : memory.meta.set(key, value),
  );
}

/** Forget everything kept for the signed-in user. */
export async function clearAll() {
  for (const name of ["events", "queue", "meta"]) {
    await tx(name, "readwrite", (store) => (store ? store.clear() : memory[name].clear()));
  }
}
