// The REST API under /api/v1 (docs/http.md), as the interface uses it: one place that adds the
// session's CSRF header to unsafe requests and turns problem+json answers into ApiError.
"use strict";

export const API = "/api/v1";

/** A failed request: the problem's title and detail (RFC 9457), or what the browser saw. */
export class ApiError extends Error {
  constructor(status, title, detail, type) {
    super(detail ? `${title}: ${detail}` : title);
    this.status = status;
    this.title = title;
    this.detail = detail || "";
    this.type = type || "";
  }
}

const auth = {
  // "cookie": the session cookie (POST /api/v1/session) with X-CSRF-Token on unsafe requests.
  // "basic": a server without sessions; the credentials stay in this page's memory only.
  mode: "cookie",
  csrf: "",
  basic: "",
};

/** The headers a request needs to be let in, for the given method. */
export function authHeaders(method) {
  const h = {};
  if (auth.mode === "basic" && auth.basic) h.Authorization = auth.basic;
  if (auth.mode === "cookie" && auth.csrf && !["GET", "HEAD", "OPTIONS"].includes(method)) {
    h["X-CSRF-Token"] = auth.csrf;
  }
  return h;
}

export function authMode() {
  return auth.mode;
}

/** The URL of a path relative to the home under an endpoint, each segment percent-encoded. */
export function pathUrl(endpoint, path) {
  const segs = String(path || "")
    .split("/")
    .filter((s) => s !== "")
    .map(encodeURIComponent);
  return `${API}/${endpoint}${segs.length ? "/" + segs.join("/") : "/"}`;
}

export function fileUrl(path) {
  return pathUrl("files", path);
}

/** A problem+json body (or any text) as an ApiError. */
export async function problemOf(response) {
  let title = response.statusText || `HTTP ${response.status}`;
  let detail = "";
  let type = "";
  try {
    const text = await response.text();
    try {
      const p = JSON.parse(text);
      title = p.title || title;
      detail = p.detail || "";
      type = p.type || "";
    } catch {
      detail = text.slice(0, 300);
    }
  } catch {
    /* the body is gone; the status says enough */
  }
  return new ApiError(response.status, title, detail, type);
}

/** fetch with the session's headers; throws ApiError unless the status is in `ok`. */
export async function request(method, url, { json, body, headers, ok, signal } = {}) {
  const h = { ...authHeaders(method), ...(headers || {}) };
  if (json !== undefined) {
    h["Content-Type"] = "application/json";
    body = JSON.stringify(json);
  }
  let response;
  try {
    response = await fetch(url, { method, headers: h, body, credentials: "same-origin", signal });
  } catch (e) {
    if (e.name === "AbortError") throw e;
    throw new ApiError(0, "The gateway cannot be reached", "check the network connection and try again");
  }
  const good = ok || ((s) => s >= 200 && s < 300);
  if (!good(response.status)) throw await problemOf(response);
  return response;
}

async function getJson(url, opts) {
  const r = await request("GET", url, { headers: { Accept: "application/json" }, ...opts });
  return r.json();
}

// --- Session ---

function remember(session) {
  auth.mode = "cookie";
  auth.csrf = session.csrf_token || "";
  return session;
}

/** whoami: the session JSON, or null when not logged in. */
export async function whoami() {
  const r = await fetch(`${API}/session`, { headers: { Accept: "application/json" }, credentials: "same-origin" });
  if (r.status === 401) return null;
  if (r.status === 404 || r.status === 405) return null; // a gateway without sessions: log in by form
  if (!r.ok) throw await problemOf(r);
  return remember(await r.json());
}

/** Logs in: a session cookie when the gateway has sessions, else Basic kept in memory. */
export async function login(user, password) {
  const r = await fetch(`${API}/session`, {
    method: "POST",
    headers: { "Content-Type": "application/json", Accept: "application/json" },
    body: JSON.stringify({ user, password }),
    credentials: "same-origin",
  });
  if (r.status !== 404 && r.status !== 405) {
    if (!r.ok) throw await problemOf(r);
    return remember(await r.json());
  }
  // No session endpoint on this gateway (an older API): HTTP Basic on every request.
  auth.mode = "basic";
  auth.basic = "Basic " + btoa(String.fromCharCode(...new TextEncoder().encode(`${user}:${password}`)));
  try {
    await getJson(`${API}/files/?limit=1`);
  } catch (e) {
    auth.basic = "";
    throw e;
  }
  return { user, permissions: null, basic: true };
}

export async function logout() {
  if (auth.mode === "cookie") {
    await request("DELETE", `${API}/session`, { ok: (s) => s < 300 || s === 401 || s === 404 });
  }
  auth.csrf = "";
  auth.basic = "";
  auth.mode = "cookie";
}

// --- Files ---

/** One listing page: {entries, next}; entries normalised to {name, path, dir, size, mtime, complete}. */
export async function list(dir, { cursor, limit, sort, order, signal } = {}) {
  const q = new URLSearchParams();
  q.set("limit", String(limit || 1000));
  if (cursor) q.set("cursor", cursor);
  if (sort) q.set("sort", sort);
  if (order) q.set("order", order);
  const page = await getJson(`${fileUrl(dir)}?${q}`, { signal });
  const base = dir === "/" ? "" : dir.replace(/\/$/, "");
  return {
    next: page.next || page.next_cursor || null,
    entries: (page.entries || []).map((e) => normalise(e, `${base}/${e.name}`)),
  };
}

export function normalise(e, path) {
  const kind = e.type || e.kind;
  return {
    name: e.name,
    path: e.path ? "/" + String(e.path).replace(/^\/+/, "") : path,
    dir: kind === "dir" || kind === "directory",
    size: typeof e.size === "number" ? e.size : null,
    mtime: e.mtime ? new Date(e.mtime) : null,
    complete: e.complete !== false,
    // A name the gateway treats as temporary (events.temp_patterns): an upload still going on.
    temporary: e.temporary === true,
  };
}

/** HEAD of a path: its entry, or null when it does not exist. */
export async function stat(path) {
  const r = await fetch(fileUrl(path), { method: "HEAD", headers: authHeaders("HEAD"), credentials: "same-origin" });
  if (r.status === 404) return null;
  if (!r.ok) throw new ApiError(r.status, r.statusText || `HTTP ${r.status}`, `cannot look at ${path}`);
  const name = path.split("/").pop();
  const isDir = (r.headers.get("Content-Type") || "").startsWith("application/json");
  const lm = r.headers.get("Last-Modified");
  return {
    name,
    path,
    dir: isDir,
    size: isDir ? null : Number(r.headers.get("Content-Length") || 0),
    mtime: lm ? new Date(lm) : new Date(),
    complete: r.headers.get("X-Filegate-Complete") !== "false",
  };
}

export async function search(q, { cursor, path, signal } = {}) {
  const p = new URLSearchParams({ q, limit: "200" });
  if (path) p.set("path", path);
  if (cursor) p.set("cursor", cursor);
  const page = await getJson(`${API}/search?${p}`, { signal });
  return {
    next: page.next_cursor || page.next || null,
    entries: (page.entries || []).map((e) => normalise(e, e.path)),
  };
}

export async function usage() {
  return getJson(`${API}/usage`);
}

export async function mkdir(path) {
  await request("POST", `${pathUrl("dirs", path)}`);
}

export async function move(from, to, replace = false) {
  await request("POST", `${API}/move`, { json: { from, to, replace } });
}

/** Deletes paths (folders with everything in them); [{path, ok, error}] for each. */
export async function remove(paths) {
  let r;
  try {
    r = await request("POST", `${API}/delete`, { json: { paths, recursive: true } });
  } catch (e) {
    if (e.status !== 404 && e.status !== 405) throw e;
    // A gateway without batch delete: one DELETE each.
    const out = [];
    for (const path of paths) {
      try {
        await request("DELETE", `${fileUrl(path)}?recursive=true`);
        out.push({ path, ok: true });
      } catch (err) {
        out.push({ path, ok: false, error: err });
      }
    }
    return out;
  }
  const body = await r.json();
  return (body.results || []).map((x) => {
    const ok = typeof x.status === "number" ? x.status < 300 : ["ok", "deleted"].includes(x.status);
    const p = x.problem || {};
    return { path: x.path, ok, error: ok ? null : new ApiError(p.status || x.status, p.title || "Not deleted", p.detail || "") };
  });
}

/** The content of a file as a Blob (previews; downloads without a session cookie). */
export async function blob(path, { range, signal } = {}) {
  const headers = range ? { Range: range } : {};
  const r = await request("GET", fileUrl(path), { headers, signal });
  return r.blob();
}

/** A zip of several paths, as a Blob. */
export async function zip(paths, name) {
  const r = await request("POST", `${API}/zip`, { json: { paths, name } });
  return r.blob();
}

// --- Events ---

/** The newest event's seq, or null when this gateway has no event history endpoint. */
export async function lastSeq() {
  const r = await fetch(`${API}/events?limit=1`, {
    headers: { Accept: "application/json", ...authHeaders("GET") },
    credentials: "same-origin",
  });
  if (r.status === 404 || r.status === 405) return null;
  if (!r.ok) throw await problemOf(r);
  const page = await r.json();
  return Number(page.last_seq ?? page.next_after ?? 0);
}

/** Up to `n` most recent events (oldest first). */
export async function recentEvents(n) {
  const last = await lastSeq();
  if (last === null) return null;
  const after = Math.max(0, last - n);
  try {
    const page = await getJson(`${API}/events?after=${after}&limit=${n}`);
    return page.events || [];
  } catch (e) {
    if (e.status === 410) return [];
    throw e;
  }
}
