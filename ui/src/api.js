// The REST API of flowhawk as the UI uses it: every call carries the session's bearer
// token, a 401 anywhere ends the session (back to sign-in), and errors carry the API's
// own message. The token lives in sessionStorage: it is gone when the tab closes.

const KEY = "flowhawk.token";
export const BASE = "/api/v1";

let onSignedOut = () => {};

/** Called whenever the API refuses the token (expired, revoked, signed out). */
export function whenSignedOut(fn) {
  onSignedOut = fn;
}

export const session = {
  get token() {
    return sessionStorage.getItem(KEY);
  },
  set(token) {
    sessionStorage.setItem(KEY, token);
  },
  clear() {
    sessionStorage.removeItem(KEY);
  },
};

export class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

/** A query string from an object: arrays repeat their key, empty values are left out. */
export function query(params) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params || {})) {
    for (const one of Array.isArray(v) ? v : [v]) {
      if (one !== undefined && one !== null && one !== "") q.append(k, String(one));
    }
  }
  const s = q.toString();
  return s ? `?${s}` : "";
}

function headers(json) {
  const h = { Accept: "application/json" };
  if (session.token) h.Authorization = `Bearer ${session.token}`;
  if (json) h["Content-Type"] = "application/json";
  return h;
}

function detail(body, status) {
  const d = body && body.detail;
  if (typeof d === "string") return d;
  if (Array.isArray(d)) {
    return d.map((e) => `${(e.loc || []).slice(1).join(".")}: ${e.msg}`).join("; ");
  }
  return `HTTP ${status}`;
}

/**
 * One API call. `auth: false` keeps a 401 to the caller (the sign-in form's wrong
 * password) instead of ending the session.
 */
export async function api(path, { method = "GET", params, body, signal, auth = true } = {}) {
  const res = await fetch(BASE + path + query(params), {
    method,
    headers: headers(body !== undefined),
    body: body === undefined ? undefined : JSON.stringify(body),
    signal,
    cache: "no-store",
  });
  if (res.status === 401 && auth) {
    session.clear();
    onSignedOut();
    throw new ApiError(401, "your session ended: sign in again");
  }
  if (res.status === 204) return null;
  const type = res.headers.get("content-type") || "";
  const data = type.includes("json") ? await res.json() : await res.text();
  if (!res.ok) throw new ApiError(res.status, detail(data, res.status));
  return data;
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/**
 * Follows GET /events/stream (Server-Sent Events) with the bearer token, which
 * EventSource cannot send: fetch() and a stream reader parse the `data:` lines.
 * Reconnects with a growing delay when the connection drops. Returns a function that
 * stops it. `onStatus` hears "live", "reconnecting" and "overflow".
 */
export function follow(params, onEvent, onStatus = () => {}) {
  const ctl = new AbortController();
  let stopped = false;
  (async () => {
    let delay = 1000;
    while (!stopped) {
      try {
        const res = await fetch(`${BASE}/events/stream${query(params)}`, {
          headers: { ...headers(false), Accept: "text/event-stream" },
          signal: ctl.signal,
          cache: "no-store",
        });
        if (res.status === 401) {
          session.clear();
          onSignedOut();
          return;
        }
        if (res.ok && res.body) {
          onStatus("live");
          delay = 1000;
          await read(res.body, onEvent, onStatus);
        }
      } catch {
        // dropped or aborted: retried below unless stopped
      }
      if (stopped) return;
      onStatus("reconnecting");
      await sleep(delay);
      delay = Math.min(delay * 2, 30000);
    }
  })();
  return () => {
    stopped = true;
    ctl.abort();
  };
}

async function read(body, onEvent, onStatus) {
  const reader = body.pipeThrough(new TextDecoderStream()).getReader();
  let buf = "";
  let data = [];
  let type = "message";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buf += value;
    let nl;
    while ((nl = buf.indexOf("\n")) >= 0) {
      const line = buf.slice(0, nl).replace(/\r$/, "");
      buf = buf.slice(nl + 1);
      if (line === "") {
        if (type === "overflow") onStatus("overflow");
        else if (data.length) dispatch(data.join("\n"), onEvent);
        data = [];
        type = "message";
      } else if (line.startsWith("data:")) {
        data.push(line.slice(5).replace(/^ /, ""));
      } else if (line.startsWith("event:")) {
        type = line.slice(6).trim();
      }
    }
  }
}

function dispatch(text, onEvent) {
  let doc;
  try {
    doc = JSON.parse(text);
  } catch {
    return;
  }
  if (doc && doc.id) onEvent(doc);
}
