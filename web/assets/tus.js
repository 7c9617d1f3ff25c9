// A small tus 1.0 client (core + creation + termination, https://tus.io/protocols/resumable-upload)
// for one file: creates the upload, sends the file in PATCH requests with XMLHttpRequest (which,
// unlike fetch, reports upload progress), resumes from the server's Upload-Offset after a pause, a
// network drop or a page reload (the upload URL is kept in localStorage under the file's name,
// size and mtime). A gateway without tus gets a plain PUT (progress, no resume).
"use strict";

import { API, authHeaders, fileUrl, ApiError } from "./api.js";

const TUS = "1.0.0";
/**
 * Bytes per PATCH. First the whole rest of the file in one request, as tus-js-client does: one
 * request is what a browser sends fastest (measured: as fast as the browser's own PUT of the file,
 * while 16 MiB PATCHes cost a quarter of the speed), and a drop loses nothing, because the gateway
 * keeps every byte that arrived and the next PATCH starts from its Upload-Offset. A proxy in front
 * that limits request bodies answers 413: then the PATCHes shrink, step by step, to what it takes.
 */
export const SMALLER_CHUNKS = [16 * 1024 * 1024, 4 * 1024 * 1024, 1024 * 1024];
const STORE_PREFIX = "filegate.tus.";
/** Waits between attempts after a network error (a drop), then the upload stops as failed. */
const RETRY_DELAYS = [500, 1000, 2000, 4000, 8000];

let tusSupport = null; // null: not asked yet; then {ok, maxSize}

/** Whether the gateway speaks tus, and its Tus-Max-Size (OPTIONS /api/v1/uploads). */
export async function capabilities() {
  if (tusSupport) return tusSupport;
  try {
    const r = await fetch(`${API}/uploads`, { method: "OPTIONS", headers: { ...authHeaders("OPTIONS"), "Tus-Resumable": TUS }, credentials: "same-origin" });
    const ok = (r.status === 200 || r.status === 204) && !!r.headers.get("Tus-Version");
    const max = Number(r.headers.get("Tus-Max-Size") || 0);
    tusSupport = { ok, maxSize: max > 0 ? max : null };
  } catch {
    tusSupport = { ok: false, maxSize: null };
  }
  return tusSupport;
}

export function resetCapabilities() {
  tusSupport = null;
}

function b64(text) {
  return btoa(String.fromCharCode(...new TextEncoder().encode(text)));
}

/** The localStorage key of a file's upload: who, where, and which file (name, size, mtime). */
export function storageKey(user, target, file) {
  return `${STORE_PREFIX}${user}\u0000${target}\u0000${file.name}\u0000${file.size}\u0000${file.lastModified}`;
}

/** Uploads begun and not finished (for the "choose the file again to resume" list). */
export function pendingUploads(user) {
  const out = [];
  for (let i = 0; i < localStorage.length; i++) {
    const key = localStorage.key(i);
    if (!key || !key.startsWith(STORE_PREFIX)) continue;
    const parts = key.slice(STORE_PREFIX.length).split("\u0000");
    if (parts[0] !== user) continue;
    try {
      out.push({ key, target: parts[1], name: parts[2], size: Number(parts[3]), ...JSON.parse(localStorage.getItem(key)) });
    } catch {
      localStorage.removeItem(key);
    }
  }
  return out;
}

export function forget(key) {
  localStorage.removeItem(key);
}

function problemFromXhr(xhr) {
  try {
    const p = JSON.parse(xhr.responseText);
    return new ApiError(xhr.status, p.title || `HTTP ${xhr.status}`, p.detail || "", p.type);
  } catch {
    return new ApiError(xhr.status, xhr.statusText || `HTTP ${xhr.status}`, (xhr.responseText || "").slice(0, 200));
  }
}

/**
 * One file's upload. `onChange(upload)` is called on progress and state changes; `state` is
 * queued | uploading | paused | done | failed | cancelled; `sent`/`file.size` the progress.
 */
export class Upload {
  constructor(file, target, { user, onChange }) {
    this.file = file;
    this.target = target; // path relative to the home, "/a/b.txt"
    this.user = user;
    this.onChange = onChange || (() => {});
    this.state = "queued";
    this.sent = 0;
    this.resumedAt = null; // the offset an earlier page or attempt had reached
    this.error = null;
    this.url = null;
    this.xhr = null;
    this.resumable = true;
    this.key = storageKey(user, target, file);
    this.started = 0;
    this.finished = 0;
    this.chunk = Infinity; // bytes per PATCH; shrinks when a proxy refuses a body as too large
  }

  changed() {
    this.onChange(this);
  }

  /** Runs until done, paused, cancelled or failed; resolves either way. */
  async run() {
    if (["done", "cancelled", "uploading"].includes(this.state)) return;
    this.state = "uploading";
    this.error = null;
    this.started = this.started || performance.now();
    this.changed();
    const caps = await capabilities();
    this.resumable = caps.ok;
    let attempt = 0;
    for (;;) {
      try {
        if (this.resumable) await this.runTus();
        else await this.runPut();
        this.state = "done";
        this.finished = performance.now();
        this.sent = this.file.size;
        localStorage.removeItem(this.key);
        this.changed();
        return;
      } catch (e) {
        if (this.state !== "uploading") return; // paused or cancelled: the abort is not an error
        const network = e instanceof ApiError ? e.status === 0 : true;
        if (network && this.resumable && attempt < RETRY_DELAYS.length) {
          await new Promise((r) => setTimeout(r, RETRY_DELAYS[attempt++]));
          if (this.state !== "uploading") return;
          continue;
        }
        this.state = "failed";
        this.error = e instanceof ApiError ? e : new ApiError(0, "Upload failed", String(e.message || e));
        this.changed();
        return;
      }
    }
  }

  pause() {
    if (this.state !== "uploading" && this.state !== "queued") return;
    this.state = "paused";
    if (this.xhr) this.xhr.abort();
    this.changed();
  }

  async cancel() {
    const was = this.state;
    this.state = "cancelled";
    if (this.xhr) this.xhr.abort();
    localStorage.removeItem(this.key);
    this.changed();
    if (this.url && was !== "done") {
      // Termination: the server drops what it holds of the upload.
      await fetch(this.url, { method: "DELETE", headers: { ...authHeaders("DELETE"), "Tus-Resumable": TUS }, credentials: "same-origin" }).catch(() => {});
    }
  }

  async runTus() {
    if (!this.url) {
      const saved = localStorage.getItem(this.key);
      if (saved) {
        try {
          this.url = JSON.parse(saved).url;
        } catch {
          this.url = null;
        }
      }
    }
    let offset = null;
    if (this.url) offset = await this.offset();
    if (offset === null) {
      this.url = await this.create();
      offset = 0;
    } else if (offset > 0 && this.resumedAt === null) {
      this.resumedAt = offset;
    }
    this.sent = offset;
    this.changed();
    // An empty file is complete at creation (Upload-Length: 0).
    while (offset < this.file.size) {
      offset = await this.patch(offset);
      this.sent = offset;
      this.changed();
    }
  }

  /** The server's offset for our upload, or null when it no longer knows it. */
  async offset() {
    const r = await fetch(this.url, { method: "HEAD", headers: { ...authHeaders("HEAD"), "Tus-Resumable": TUS }, credentials: "same-origin", cache: "no-store" }).catch(() => {
      throw new ApiError(0, "The gateway cannot be reached", "the upload continues when it is back");
    });
    if (r.status === 404 || r.status === 410 || r.status === 403) {
      localStorage.removeItem(this.key);
      return null;
    }
    if (!r.ok) throw new ApiError(r.status, r.statusText, "cannot ask the gateway how far the upload got");
    const length = r.headers.get("Upload-Length");
    if (length !== null && Number(length) !== this.file.size) {
      localStorage.removeItem(this.key);
      return null;
    }
    return Number(r.headers.get("Upload-Offset") || 0);
  }

  async create() {
    const meta = [`path ${b64(this.target)}`, `filename ${b64(this.file.name)}`];
    if (this.file.type) meta.push(`filetype ${b64(this.file.type)}`);
    const r = await fetch(`${API}/uploads`, {
      method: "POST",
      headers: { ...authHeaders("POST"), "Tus-Resumable": TUS, "Upload-Length": String(this.file.size), "Upload-Metadata": meta.join(",") },
      credentials: "same-origin",
    }).catch(() => {
      throw new ApiError(0, "The gateway cannot be reached", "check the connection and resume the upload");
    });
    if (r.status !== 201) {
      const text = await r.text();
      try {
        const p = JSON.parse(text);
        throw new ApiError(r.status, p.title || `HTTP ${r.status}`, p.detail || "", p.type);
      } catch (e) {
        if (e instanceof ApiError) throw e;
        throw new ApiError(r.status, r.statusText || `HTTP ${r.status}`, text.slice(0, 200));
      }
    }
    const url = new URL(r.headers.get("Location"), location.href).pathname;
    localStorage.setItem(this.key, JSON.stringify({ url, created: Date.now() }));
    return url;
  }

  /** One PATCH from `offset`; resolves with the server's new offset. */
  patch(offset) {
    return new Promise((resolve, reject) => {
      const end = Math.min(offset + this.chunk, this.file.size);
      const xhr = new XMLHttpRequest();
      this.xhr = xhr;
      xhr.open("PATCH", this.url);
      const h = { ...authHeaders("PATCH"), "Tus-Resumable": TUS, "Upload-Offset": String(offset), "Content-Type": "application/offset+octet-stream" };
      for (const [k, v] of Object.entries(h)) xhr.setRequestHeader(k, v);
      xhr.upload.onprogress = (ev) => {
        this.sent = offset + ev.loaded;
        this.changed();
      };
      xhr.onload = () => {
        this.xhr = null;
        if (xhr.status === 204 || xhr.status === 200) {
          resolve(Number(xhr.getResponseHeader("Upload-Offset") || end));
        } else if (xhr.status === 413 && SMALLER_CHUNKS.some((c) => c < Math.min(this.chunk, end - offset))) {
          // Too large for a proxy on the way (the gateway itself takes any PATCH up to
          // Upload-Length): send the same bytes again in smaller requests.
          this.chunk = SMALLER_CHUNKS.find((c) => c < Math.min(this.chunk, end - offset));
          this.offset().then((o) => (o === null ? reject(problemFromXhr(xhr)) : resolve(o)), reject);
        } else if (xhr.status === 409) {
          // Our offset and the server's differ (a PATCH that broke off kept some bytes): ask again.
          this.offset().then((o) => (o === null ? reject(problemFromXhr(xhr)) : resolve(o)), reject);
        } else {
          reject(problemFromXhr(xhr));
        }
      };
      xhr.onerror = () => {
        this.xhr = null;
        reject(new ApiError(0, "The connection broke off", "the upload resumes from where the gateway got to"));
      };
      xhr.onabort = () => {
        this.xhr = null;
        reject(new ApiError(0, "aborted", ""));
      };
      xhr.send(this.file.slice(offset, end));
    });
  }

  /** A gateway without tus: one PUT of the whole file (restarts from the start after a pause). */
  runPut() {
    return new Promise((resolve, reject) => {
      const xhr = new XMLHttpRequest();
      this.xhr = xhr;
      this.sent = 0;
      xhr.open("PUT", `${fileUrl(this.target)}?parents=true`);
      for (const [k, v] of Object.entries(authHeaders("PUT"))) xhr.setRequestHeader(k, v);
      xhr.upload.onprogress = (ev) => {
        this.sent = ev.loaded;
        this.changed();
      };
      xhr.onload = () => {
        this.xhr = null;
        if (xhr.status === 200 || xhr.status === 201) resolve();
        else reject(problemFromXhr(xhr));
      };
      xhr.onerror = () => {
        this.xhr = null;
        reject(new ApiError(0, "The connection broke off", "start the upload again"));
      };
      xhr.onabort = () => {
        this.xhr = null;
        reject(new ApiError(0, "aborted", ""));
      };
      xhr.send(this.file);
    });
  }
}
