// The daemon's HTTP API as the page uses it: same-origin fetch with the session
// cookie, the CSRF token on every state-changing request, JSON errors as ApiError.

export class ApiError extends Error {
  constructor(status, code, message, field = null, retryAfter = null) {
    super(message);
    this.name = "ApiError";
    this.status = status;
    this.code = code;
    this.field = field;
    this.retryAfter = retryAfter;
  }
}

/** The request never reached the server (offline, server down, connection reset). */
export class NetworkError extends Error {
  constructor(cause) {
    super("The server cannot be reached.");
    this.name = "NetworkError";
    this.cause = cause;
  }
}

/**
 * "signedout": the server stopped accepting our session (401).
 * "reachability": detail = true/false when requests start/stop reaching the server.
 */
export const sessionEvents = new EventTarget();

let reachable = true;

export function serverReachable() {
  return reachable;
}

export function setReachable(value) {
  if (value === reachable) return;
  reachable = value;
  sessionEvents.dispatchEvent(new CustomEvent("reachability", { detail: value }));
}

let csrfToken = null;

export function hasCsrf() {
  return csrfToken !== null;
}

function buildUrl(path, query) {
  const url = new URL(path, location.origin);
  for (const [key, value] of Object.entries(query ?? {})) {
    if (value !== undefined && value !== null && value !== "") url.searchParams.set(key, value);
  }
  return url;
}

async function send(method, path, { body, query, keepalive } = {}) {
  const headers = { Accept: "application/json" };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  if (method !== "GET" && csrfToken) headers["X-CSRF-Token"] = csrfToken;
  let response;
  try {
    response = await fetch(buildUrl(path, query), {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      credentials: "same-origin",
      cache: "no-store",
      keepalive: Boolean(keepalive),
    });
  } catch (err) {
    setReachable(false);
    throw new NetworkError(err);
  }
  setReachable(true);
  if (response.status === 204) return null;
  let data = null;
  const text = await response.text().catch(() => "");
  if (text) {
    try {
      data = JSON.parse(text);
    } catch {
      data = null;
    }
  }
  if (!response.ok) {
    const err = data?.error ?? {};
    throw new ApiError(
      response.status,
      err.code ?? `http_${response.status}`,
      err.message ?? `The server answered ${response.status} ${response.statusText}.`,
      err.field ?? null,
      response.headers.get("Retry-After"),
    );
  }
  return data;
}

/**
 * One API call. A 403 "csrf" (the token rotated, e.g. after signing in on
 * another tab) is retried once with a fresh token; a 401 on anything but the
 * session endpoint means the session is gone.
 */
export async function request(method, path, options = {}) {
  try {
    return await send(method, path, options);
  } catch (err) {
    if (err instanceof ApiError && err.status === 403 && err.code === "csrf" && method !== "GET") {
      await getSession();
      return send(method, path, options);
    }
    if (err instanceof ApiError && err.status === 401 && !path.startsWith("/v1/session")) {
      csrfToken = null;
      sessionEvents.dispatchEvent(new Event("signedout"));
    }
    throw err;
  }
}

export const api = {
  get: (path, query) => request("GET", path, { query }),
  post: (path, body, options = {}) => request("POST", path, { body, ...options }),
  put: (path, body) => request("PUT", path, { body }),
  delete: (path, query) => request("DELETE", path, { query }),
};

// -- session --------------------------------------------------------------

/** The current session ({user, csrf}); ApiError 401 when signed out. */
export async function getSession() {
  const session = await send("GET", "/v1/session");
  csrfToken = session.csrf;
  return session;
}

/** The ways to sign in: {password: bool, sso: null | {label, start}} (anonymous). */
export async function getSignInMethods() {
  return send("GET", "/v1/session/methods");
}

export async function signIn(username, password) {
  const session = await send("POST", "/v1/session", { body: { username, password } });
  csrfToken = session.csrf;
  return session;
}

export async function signOut() {
  try {
    await send("DELETE", "/v1/session");
  } finally {
    csrfToken = null;
  }
}
