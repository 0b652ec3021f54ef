// The live stream: a WebSocket to /v1/stream, or Server-Sent Events from
// /v1/stream/sse when WebSockets do not get through (some proxies). The session
// cookie authenticates both. Every (re)connect asks for `since=<last event id
// seen>`, so the server replays whatever was missed — after a network drop, a
// `resync`, or a reload — exactly once and in order.

const KEEPALIVE_GRACE_MS = 70_000; // the server sends a keepalive every 25 s by default
const MAX_BACKOFF_MS = 15_000;
const WS_FAILURES_BEFORE_SSE = 2;

/**
 * Events dispatched:
 *   "frame"   detail = a parsed frame ({type: "event" | "state" | ...})
 *   "status"  detail = "connecting" | "live" | "offline" | "stopped"
 *   "open"    detail = {first: bool, transport: "websocket" | "sse"}
 *   "retrying" detail = {attempt}: the connection dropped or could not be made
 */
export class LiveStream extends EventTarget {
  constructor({ since = null } = {}) {
    super();
    this.cursor = since;
    this.transport = "websocket";
    this.socket = null;
    this.stopped = true;
    this.attempt = 0;
    this.wsFailures = 0;
    this.opens = 0;
    this.retryTimer = null;
    this.watchdog = null;
    this.onOnline = () => this.reconnect();
    this.onOffline = () => {
      this.close();
      this.setStatus("offline");
    };
  }

  start() {
    if (!this.stopped) return;
    this.stopped = false;
    addEventListener("online", this.onOnline);
    addEventListener("offline", this.onOffline);
    this.connect();
  }

  stop() {
    this.stopped = true;
    removeEventListener("online", this.onOnline);
    removeEventListener("offline", this.onOffline);
    this.close();
    this.setStatus("stopped");
  }

  /** Drop the current connection and connect again now (with since=cursor). */
  reconnect() {
    if (this.stopped) return;
    this.close();
    this.attempt = 0;
    this.connect();
  }

  url(path, scheme) {
    const url = new URL(path, location.href);
    url.protocol = scheme;
    if (this.cursor !== null && this.cursor !== undefined) url.searchParams.set("since", String(this.cursor));
    return url.href;
  }

  connect() {
    clearTimeout(this.retryTimer);
    if (this.stopped) return;
    if (navigator.onLine === false) {
      this.setStatus("offline");
      return;
    }
    this.setStatus("connecting");
    if (this.transport === "websocket" && "WebSocket" in self) this.openWebSocket();
    else this.openEventSource();
  }

  openWebSocket() {
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    let opened = false;
    const ws = new WebSocket(this.url("/v1/stream", scheme));
    this.socket = ws;
    ws.addEventListener("open", () => {
      opened = true;
      this.wsFailures = 0;
      this.opened("websocket");
    });
    ws.addEventListener("message", (e) => this.receive(e.data));
    ws.addEventListener("close", (e) => {
      if (this.socket !== ws) return;
      this.socket = null;
      if (!opened && (e.code === 1006 || e.code === 1015)) {
        this.wsFailures += 1;
        if (this.wsFailures >= WS_FAILURES_BEFORE_SSE && this.opens === 0 && "EventSource" in self) {
          this.transport = "sse";
        }
      }
      this.retry(e.code === 4000 ? 0 : undefined);
    });
  }

  openEventSource() {
    const es = new EventSource(this.url("/v1/stream/sse", location.protocol), { withCredentials: true });
    this.socket = es;
    es.addEventListener("open", () => this.opened("sse"));
    es.addEventListener("message", (e) => this.receive(e.data));
    es.addEventListener("error", () => {
      if (this.socket !== es) return;
      // EventSource would reconnect with a stale `since`; we do it ourselves
      es.close();
      this.socket = null;
      this.retry();
    });
  }

  opened(transport) {
    this.attempt = 0;
    this.setStatus("live");
    this.dispatchEvent(new CustomEvent("open", { detail: { first: this.opens === 0, transport } }));
    this.opens += 1;
    this.feedWatchdog();
  }

  receive(data) {
    this.feedWatchdog();
    let frame;
    try {
      frame = JSON.parse(data);
    } catch {
      return;
    }
    if (frame.type === "event") {
      const id = frame.event?.id;
      if (typeof id === "number") {
        if (this.cursor !== null && id <= this.cursor) return; // already seen
        this.cursor = id;
      }
    } else if (frame.type === "resync") {
      this.dispatchEvent(new CustomEvent("frame", { detail: frame }));
      this.reconnect();
      return;
    }
    this.dispatchEvent(new CustomEvent("frame", { detail: frame }));
  }

  feedWatchdog() {
    clearTimeout(this.watchdog);
    this.watchdog = setTimeout(() => this.reconnect(), KEEPALIVE_GRACE_MS);
  }

  retry(delay) {
    if (this.stopped) return;
    if (navigator.onLine === false) {
      this.setStatus("offline");
      return;
    }
    this.setStatus("connecting");
    this.dispatchEvent(new CustomEvent("retrying", { detail: { attempt: this.attempt } }));
    const backoff = Math.min(MAX_BACKOFF_MS, 500 * 2 ** this.attempt);
    this.attempt += 1;
    const wait = delay ?? backoff * (0.8 + Math.random() * 0.4);
    clearTimeout(this.retryTimer);
    this.retryTimer = setTimeout(() => this.connect(), wait);
  }

  close() {
    clearTimeout(this.retryTimer);
    clearTimeout(this.watchdog);
    const socket = this.socket;
    this.socket = null;
    if (socket) socket.close();
  }

  setStatus(status) {
    if (status === this.status) return;
    this.status = status;
    this.dispatchEvent(new CustomEvent("status", { detail: status }));
  }
}
