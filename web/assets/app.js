// The filegate web interface: login, the folder view, uploads, search, file actions, previews,
// live updates from the gateway's event stream and the statistics view. Plain ES modules, no
// framework, no build step (docs/web.md says why).
"use strict";

import * as api from "./api.js";
import { Upload, capabilities, pendingUploads, forget } from "./tus.js";
import { FileView } from "./list.js";
import { el, icon, kindOf, mimeOf, formatSize, formatDate, notify, showError, confirmDialog, promptDialog, contextMenu, closeMenu } from "./ui.js";

const $ = (id) => document.getElementById(id);
const ALL_PERMISSIONS = ["list", "read", "write", "delete", "mkdir", "rename"];
const PARALLEL_UPLOADS = 3;
const PAGE = 1000;

const S = {
  session: null,
  user: "",
  perms: new Set(),
  home: null, // the store path of the home, when the gateway says it (maps events to folders)
  cwd: "/",
  next: null, // cursor of the next page of the open folder (or search)
  token: 0, // bumped on every navigation: late answers of an older one are dropped
  query: "",
  searchAvailable: true,
  sort: load("filegate.sort", { key: "name", order: "asc" }),
  mode: load("filegate.view", "list"),
  uploads: [],
  live: null,
  activity: [], // events seen live, newest last (statistics)
  stats: false,
};

function load(key, fallback) {
  try {
    const v = JSON.parse(localStorage.getItem(key));
    return v ?? fallback;
  } catch {
    return fallback;
  }
}

function save(key, value) {
  try {
    localStorage.setItem(key, JSON.stringify(value));
  } catch {
    /* private mode: not remembered */
  }
}

const can = (p) => S.perms.has(p);

function join(dir, name) {
  return (dir === "/" ? "" : dir.replace(/\/$/, "")) + "/" + name;
}

function parentOf(path) {
  const i = path.lastIndexOf("/");
  return i <= 0 ? "/" : path.slice(0, i);
}

function baseName(path) {
  return path.split("/").filter(Boolean).pop() || "";
}

// --- The file view ---

const view = new FileView($("files"), {
  open: (e) => open(e),
  menu: (e, x, y, back) => entryMenu(e, x, y, back),
  selection: () => selectionChanged(),
  more: () => loadMore(),
});

function compare(a, b) {
  const k = S.sort.key;
  let d = 0;
  if (k === "size") d = (a.size ?? -1) - (b.size ?? -1);
  else if (k === "mtime") d = (a.mtime?.getTime() ?? 0) - (b.mtime?.getTime() ?? 0);
  if (d === 0) d = a.name < b.name ? -1 : a.name > b.name ? 1 : 0;
  return S.sort.order === "desc" ? -d : d;
}

function selectionChanged() {
  const sel = view.selectedEntries();
  const n = sel.length;
  $("sel-count").textContent = n ? `${n} selected` : "";
  for (const b of document.querySelectorAll(".toolbar [data-sel]")) {
    const need = b.dataset.sel;
    b.disabled = need === "one" ? n !== 1 : n < 1;
  }
  const all = $("select-all");
  all.checked = n > 0 && n === view.items.length;
  all.indeterminate = n > 0 && n < view.items.length;
}

function applySortHeaders() {
  for (const h of document.querySelectorAll("[data-sort]")) {
    const on = h.dataset.sort === S.sort.key;
    h.setAttribute("aria-sort", on ? (S.sort.order === "asc" ? "ascending" : "descending") : "none");
  }
}

function applyMode() {
  view.setMode(S.mode);
  $("btn-list").setAttribute("aria-pressed", String(S.mode === "list"));
  $("btn-grid").setAttribute("aria-pressed", String(S.mode === "grid"));
}

// --- Navigation ---

function pathFromHash() {
  const h = location.hash.replace(/^#/, "");
  const segs = (h || "/").split("/").filter(Boolean);
  try {
    return "/" + segs.map(decodeURIComponent).join("/");
  } catch {
    return "/";
  }
}

function hashOf(path) {
  return "#/" + path.split("/").filter(Boolean).map(encodeURIComponent).join("/");
}

function go(path) {
  const h = hashOf(path);
  if (location.hash === h) route();
  else location.hash = h;
}

function crumbs(path) {
  const ol = $("crumbs");
  ol.replaceChildren();
  const segs = path.split("/").filter(Boolean);
  const items = [["Home", "/"]];
  segs.forEach((s, i) => items.push([s, "/" + segs.slice(0, i + 1).join("/")]));
  items.forEach(([name, p], i) => {
    const last = i === items.length - 1;
    const a = el("a", { href: hashOf(p), "aria-current": last && !S.query ? "page" : null }, i === 0 ? icon("home") : null, name);
    ol.append(el("li", {}, a));
  });
  if (S.query) ol.append(el("li", {}, el("span", { "aria-current": "page", text: `Search: “${S.query}”` })));
}

function route() {
  if (!S.session) return;
  const path = pathFromHash();
  if (S.query) {
    S.query = "";
    $("search").value = "";
  }
  showStats(false);
  loadDir(path);
}

async function loadDir(path) {
  const token = ++S.token;
  S.cwd = path;
  S.next = null;
  crumbs(path);
  $("view-title").textContent = path === "/" ? "Files in your home folder" : `Files in ${path}`;
  document.title = `${path === "/" ? "Home" : baseName(path)} – filegate`;
  view.setItems([], false, { emptyText: "" });
  view.setLoading(true);
  const t0 = performance.now();
  try {
    const page = await api.list(path, { limit: PAGE, sort: S.sort.key, order: S.sort.order });
    if (token !== S.token) return;
    let entries = page.entries;
    if (!page.next) entries = entries.slice().sort(compare);
    S.next = page.next;
    view.setItems(entries, !!page.next, { emptyText: can("write") ? "This folder is empty. Drop files here or use Upload." : "This folder is empty." });
    window.filegateFirstListingMs = performance.now() - t0;
    // When the first rows are on screen (tests/clients/web_ui.py measures this).
    requestAnimationFrame(() => (window.filegateListedAt = window.filegateListedAt || performance.now()));
  } catch (e) {
    if (token !== S.token) return;
    view.setItems([], false, { emptyText: `This folder cannot be shown: ${e.title}${e.detail ? " — " + e.detail : ""}` });
    if (e.status === 401) return expired();
    showError(`Cannot open ${path}`, e);
  } finally {
    if (token === S.token) view.setLoading(false);
  }
}

async function loadMore() {
  if (!S.next || view.loading) return;
  const token = S.token;
  const cursor = S.next;
  view.setLoading(true);
  try {
    const page = S.query ? await api.search(S.query, { cursor }) : await api.list(S.cwd, { cursor, limit: PAGE, sort: S.sort.key, order: S.sort.order });
    if (token !== S.token) return;
    S.next = page.next;
    view.append(page.entries, !!page.next);
  } catch (e) {
    if (token === S.token) showError("Cannot load more entries", e);
  } finally {
    if (token === S.token) view.setLoading(false);
  }
}

function refresh() {
  if (S.query) runSearch(S.query);
  else loadDir(S.cwd);
}

// --- Search ---

let searchTimer = 0;
let searchAbort = null;

function onSearchInput() {
  clearTimeout(searchTimer);
  const q = $("search").value.trim();
  searchTimer = setTimeout(() => {
    if (!q) {
      if (S.query) {
        S.query = "";
        loadDir(S.cwd);
      }
      return;
    }
    runSearch(q);
  }, 200);
}

async function runSearch(q) {
  const token = ++S.token;
  S.query = q;
  showStats(false);
  crumbs(S.cwd);
  $("view-title").textContent = `Search results for ${q}`;
  if (searchAbort) searchAbort.abort();
  searchAbort = new AbortController();
  view.setLoading(true);
  try {
    let page;
    if (S.searchAvailable) {
      try {
        page = await api.search(q, { signal: searchAbort.signal });
      } catch (e) {
        if (e.status !== 404) throw e;
        S.searchAvailable = false;
      }
    }
    if (!page) {
      // No search endpoint on this gateway: the open folder's loaded entries, filtered by name.
      const all = await api.list(S.cwd, { limit: 10000 });
      const needle = q.toLowerCase();
      page = { entries: all.entries.filter((e) => e.name.toLowerCase().includes(needle)), next: null };
      notify("Searching this folder only", { detail: "this gateway has no search across folders" });
    }
    if (token !== S.token) return;
    S.next = page.next;
    view.setItems(page.entries, !!page.next, { showPaths: true, emptyText: `Nothing is named like “${q}”.` });
    $("search-status").textContent = `${page.entries.length}${page.next ? "+" : ""} found`;
  } catch (e) {
    if (e.name === "AbortError" || token !== S.token) return;
    showError("Search failed", e);
  } finally {
    if (token === S.token) view.setLoading(false);
  }
}

// --- Opening and previews ---

function open(entry) {
  if (entry.dir) {
    go(entry.path);
    return;
  }
  const kind = kindOf(entry);
  if (can("read") && ["image", "pdf", "text"].includes(kind)) preview(entry);
  else download([entry]);
}

let previewUrl = null;
let previewList = [];
let previewIndex = 0;

async function preview(entry) {
  const d = $("dlg-preview");
  const kind = kindOf(entry);
  previewList = kind === "image" ? view.items.filter((e) => kindOf(e) === "image") : [entry];
  previewIndex = Math.max(0, previewList.findIndex((e) => e.path === entry.path));
  if (!d.open) d.showModal();
  await showPreview();
  $("preview-close").focus();
}

async function showPreview() {
  const entry = previewList[previewIndex];
  const kind = kindOf(entry);
  const body = $("preview-body");
  $("preview-title").textContent = entry.name;
  const many = previewList.length > 1;
  $("preview-pos").textContent = many ? `${previewIndex + 1} of ${previewList.length}` : "";
  $("preview-prev").hidden = !many;
  $("preview-next").hidden = !many;
  const dl = $("preview-download");
  dl.href = api.authMode() === "cookie" ? api.fileUrl(entry.path) : "#";
  dl.setAttribute("download", entry.name);
  body.replaceChildren(el("p.muted", { text: "Loading…" }));
  if (previewUrl) URL.revokeObjectURL(previewUrl);
  previewUrl = null;
  try {
    const range = kind === "text" ? "bytes=0-524287" : undefined;
    const blob = await api.blob(entry.path, { range });
    if (previewList[previewIndex] !== entry) return;
    if (kind === "text") {
      const text = await blob.text();
      const cut = entry.size > 524288 ? el("p.muted", { text: `The first 512 KiB of ${formatSize(entry.size)}.` }) : null;
      body.replaceChildren(cut || "", el("pre.text", { tabindex: "0", "aria-label": `Content of ${entry.name}` }, text));
      return;
    }
    previewUrl = URL.createObjectURL(new Blob([blob], { type: mimeOf(entry.name) }));
    if (kind === "image") body.replaceChildren(el("img", { src: previewUrl, alt: entry.name }));
    else body.replaceChildren(el("iframe", { src: previewUrl, title: `PDF ${entry.name}` }));
  } catch (e) {
    body.replaceChildren(el("p.form-error", { text: `No preview: ${e.title || e.message}${e.detail ? " — " + e.detail : ""}` }));
  }
}

function stepPreview(delta) {
  if (previewList.length < 2) return;
  previewIndex = (previewIndex + delta + previewList.length) % previewList.length;
  showPreview();
}

function closePreview() {
  $("dlg-preview").close();
}

// --- Actions ---

function targets() {
  const sel = view.selectedEntries();
  if (sel.length) return sel;
  const f = view.items[view.focusIndex];
  return f ? [f] : [];
}

function saveBlob(blob, name) {
  const url = URL.createObjectURL(blob);
  const a = el("a", { href: url, download: name });
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 60000);
}

async function download(entries) {
  if (!entries.length || !can("read")) return;
  try {
    if (entries.length === 1 && !entries[0].dir) {
      const e = entries[0];
      if (api.authMode() === "cookie") {
        // Streamed by the browser's download manager, never held in this page's memory.
        const a = el("a", { href: api.fileUrl(e.path), download: e.name });
        document.body.append(a);
        a.click();
        a.remove();
      } else saveBlob(await api.blob(e.path), e.name);
      return;
    }
    if (entries.length === 1 && api.authMode() === "cookie") {
      const a = el("a", { href: `${api.fileUrl(entries[0].path)}?download=zip`, download: `${entries[0].name}.zip` });
      document.body.append(a);
      a.click();
      a.remove();
      return;
    }
    notify(`Preparing a zip of ${entries.length} entries…`);
    const name = entries.length === 1 ? `${entries[0].name}.zip` : `${baseName(S.cwd) || S.user || "files"}.zip`;
    saveBlob(await api.zip(entries.map((e) => e.path), name), name);
  } catch (e) {
    if (e.status === 404 || e.status === 405) showError("Zip downloads are not available on this gateway", { title: "Download the files one at a time" });
    else showError("Download failed", e);
  }
}

async function newFolder() {
  if (!can("mkdir")) return;
  const name = await promptDialog("New folder", "Folder name", "", { ok: "Create" });
  if (!name) return;
  if (name.includes("/")) return showError("Not created", { title: "A name cannot contain “/”" });
  const path = join(S.cwd, name);
  try {
    await api.mkdir(path);
    const st = await api.stat(path);
    if (st && !S.query) view.upsert(st, compare);
    notify(`Folder ${name} created`);
  } catch (e) {
    showError(`Cannot create the folder ${name}`, e);
  }
}

async function rename(entry) {
  if (!can("rename") || !entry) return;
  const dot = entry.dir ? -1 : entry.name.lastIndexOf(".");
  const name = await promptDialog(`Rename ${entry.name}`, "New name", entry.name, { ok: "Rename", select: [0, dot > 0 ? dot : entry.name.length] });
  if (!name || name === entry.name) return;
  if (name.includes("/")) return showError("Not renamed", { title: "A name cannot contain “/”" });
  const to = join(parentOf(entry.path), name);
  try {
    await api.move(entry.path, to);
    view.removePath(entry.path);
    const st = await api.stat(to);
    if (st && parentOf(to) === S.cwd && !S.query) view.upsert(st, compare);
    notify(`Renamed ${entry.name} to ${name}`);
  } catch (e) {
    showError(`Cannot rename ${entry.name}`, e);
  }
}

async function moveEntries(entries) {
  if (!can("rename") || !entries.length) return;
  const label = entries.length === 1 ? entries[0].name : `${entries.length} entries`;
  const dest = await promptDialog(`Move ${label}`, "To the folder (from your home, e.g. /archive/2024)", S.cwd, { ok: "Move" });
  if (dest === null) return;
  const dir = "/" + dest.split("/").filter(Boolean).join("/");
  let moved = 0;
  for (const e of entries) {
    try {
      await api.move(e.path, join(dir, e.name));
      view.removePath(e.path);
      moved++;
    } catch (err) {
      showError(`Cannot move ${e.name}`, err);
    }
  }
  if (moved) notify(`Moved ${moved === 1 ? entries[0].name : moved + " entries"} to ${dir}`);
}

async function deleteEntries(entries) {
  if (!can("delete") || !entries.length) return;
  const dirs = entries.filter((e) => e.dir).length;
  const names = entries.slice(0, 8).map((e) => el("li", {}, e.dir ? `${e.name} (folder)` : e.name));
  if (entries.length > 8) names.push(el("li", { text: `and ${entries.length - 8} more` }));
  const body = [el("p", { text: `Delete ${entries.length === 1 ? "this entry" : `these ${entries.length} entries`}? This cannot be undone.` }), el("ul.names", {}, names)];
  if (dirs) body.push(el("p.warn", { text: "Folders are deleted with everything in them." }));
  const ok = await confirmDialog(entries.length === 1 ? `Delete ${entries[0].name}?` : `Delete ${entries.length} entries?`, body, { ok: "Delete", danger: true });
  if (!ok) return;
  try {
    const results = await api.remove(entries.map((e) => e.path));
    let done = 0;
    for (const r of results) {
      if (r.ok) {
        view.removePath(r.path.startsWith("/") ? r.path : "/" + r.path);
        done++;
      } else showError(`Not deleted: ${r.path}`, r.error);
    }
    if (done) notify(`Deleted ${done === 1 ? baseName(results.find((r) => r.ok).path) : done + " entries"}`);
  } catch (e) {
    showError("Delete failed", e);
  }
}

function entryMenu(entry, x, y, back) {
  const sel = view.selectedEntries();
  const many = sel.length > 1;
  const items = [];
  items.push([entry.dir ? "Open" : "Preview or open", entry.dir ? "folder" : "search", () => open(entry), { keys: "Enter" }]);
  if (can("read")) items.push([many ? `Download ${sel.length} as zip` : "Download", "download", () => download(many ? sel : [entry]), { keys: "d" }]);
  if (can("rename")) {
    items.push(["Rename", "pencil", () => rename(entry), { disabled: many, keys: "F2" }]);
    items.push([many ? `Move ${sel.length}` : "Move", "move", () => moveEntries(many ? sel : [entry]), { keys: "m" }]);
  }
  if (can("delete")) items.push(["-"], [many ? `Delete ${sel.length}` : "Delete", "trash", () => deleteEntries(many ? sel : [entry]), { danger: true, keys: "Delete" }]);
  contextMenu(items, x, y, back);
}

// --- Uploads ---

/** [{file, rel}] into `dir`: checks sizes and quota first, makes the folders, then queues. */
async function upload(items, dir = S.cwd) {
  if (!can("write")) {
    showError("You may not upload here", { title: "Your account can read files only" });
    return;
  }
  items = items.filter((i) => i.file);
  if (!items.length) return;
  const caps = await capabilities();
  if (caps.maxSize) {
    const big = items.filter((i) => i.file.size > caps.maxSize);
    for (const i of big) showError(`${i.file.name} is not uploaded`, { title: `It has ${formatSize(i.file.size)}; the largest file this gateway takes has ${formatSize(caps.maxSize)}` });
    items = items.filter((i) => i.file.size <= caps.maxSize);
    if (!items.length) return;
  }
  const total = items.reduce((n, i) => n + i.file.size, 0);
  try {
    const u = await api.usage();
    if (u.quota_bytes != null && u.bytes + total > u.quota_bytes) {
      showError(`Not uploaded: ${items.length === 1 ? items[0].file.name : items.length + " files"} need ${formatSize(total)}`, {
        title: `Your quota has ${formatSize(Math.max(0, u.quota_bytes - u.bytes))} left (${formatSize(u.bytes)} of ${formatSize(u.quota_bytes)} used)`,
        detail: "delete files you no longer need, or ask the administrator for more room",
      });
      return;
    }
    if (u.quota_files != null && u.files + items.length > u.quota_files) {
      showError(`Not uploaded: ${items.length} files`, { title: `Your quota allows ${u.quota_files} files and you have ${u.files}`, detail: "delete files you no longer need first" });
      return;
    }
  } catch (e) {
    if (e.status !== 404 && e.status !== 405) showError("Cannot check your quota", e);
    // No usage endpoint: the session's quota (whoami), else the gateway's own 413/507 say it.
    const q = S.session?.quota || S.session?.home_quota;
    if (q && q.quota_bytes != null && q.used_bytes != null && q.used_bytes + total > q.quota_bytes) {
      showError(`Not uploaded: ${items.length === 1 ? items[0].file.name : items.length + " files"} need ${formatSize(total)}`, {
        title: `Your quota has ${formatSize(Math.max(0, q.quota_bytes - q.used_bytes))} left`,
        detail: "delete files you no longer need, or ask the administrator for more room",
      });
      return;
    }
  }
  // Folders dropped or chosen: their directories first (mkdir -p), shallowest first.
  const dirs = [...new Set(items.map((i) => parentOf(join(dir, i.rel))))].filter((d) => d !== dir && d !== "/").sort();
  for (const d of dirs) {
    try {
      await api.request("POST", `${api.pathUrl("dirs", d)}?parents=true`);
    } catch (e) {
      if (e.status !== 409) return showError(`Cannot create the folder ${d}`, e);
    }
  }
  if (dirs.length && !S.query) {
    for (const d of dirs.filter((x) => parentOf(x) === S.cwd)) {
      const st = await api.stat(d).catch(() => null);
      if (st) view.upsert(st, compare);
    }
  }
  const pending = pendingUploads(S.user);
  for (const { file, rel } of items) {
    // A file chosen again after a reload resumes where its earlier upload got to.
    const earlier = pending.find((p) => p.name === file.name && p.size === file.size && p.key.endsWith(`\u0000${file.lastModified}`));
    const target = earlier && rel === file.name ? earlier.target : join(dir, rel);
    const up = new Upload(file, target, { user: S.user, onChange: drawUpload });
    S.uploads.push(up);
    drawUpload(up);
  }
  $("uploads").hidden = false;
  $("pending").hidden = true;
  pump();
}

function pump() {
  let running = S.uploads.filter((u) => u.state === "uploading").length;
  for (const u of S.uploads) {
    if (running >= PARALLEL_UPLOADS) break;
    if (u.state !== "queued") continue;
    running++;
    u.run().then(() => finished(u));
  }
  summary();
}

async function finished(u) {
  pump();
  if (u.state !== "done") return;
  if (!S.query && parentOf(u.target) === S.cwd) {
    const st = await api.stat(u.target).catch(() => null);
    if (st) view.upsert(st, compare);
  }
}

function summary() {
  const active = S.uploads.filter((u) => ["queued", "uploading"].includes(u.state));
  const done = S.uploads.filter((u) => u.state === "done").length;
  $("uploads-summary").textContent = active.length ? `${active.length} running, ${done} done` : `${done} done`;
}

function drawUpload(u) {
  let li = u.li;
  if (!li) {
    const bar = el("progress", { max: String(Math.max(1, u.file.size)), value: "0", "aria-label": `Upload of ${u.file.name}` });
    const status = el("span.ustatus");
    const pause = el("button.ghost.small", { type: "button", "data-act": "pause" });
    const cancel = el("button.ghost.small", { type: "button", "data-act": "cancel", "aria-label": `Cancel the upload of ${u.file.name}` }, icon("x"));
    pause.addEventListener("click", () => {
      if (u.state === "uploading" || u.state === "queued") u.pause();
      else if (u.state === "paused" || u.state === "failed") {
        u.state = "queued";
        pump();
      }
    });
    cancel.addEventListener("click", () => {
      u.cancel();
      pump();
    });
    li = el("li.upload", {}, el("div.uname", {}, icon(kindOf({ name: u.file.name }), "icon"), el("span", { text: u.target })), bar, el("div.urow", {}, status, pause, cancel));
    u.li = li;
    u.bar = bar;
    u.statusEl = status;
    u.pauseBtn = pause;
    $("upload-list").append(li);
  }
  li.dataset.state = u.state;
  u.bar.value = u.sent;
  const pct = u.file.size ? Math.floor((u.sent / u.file.size) * 100) : u.state === "done" ? 100 : 0;
  li.dataset.pct = String(pct);
  const secs = ((u.finished || performance.now()) - u.started) / 1000;
  const rate = u.started && secs > 0.5 ? ` · ${formatSize(Math.round((u.sent - (u.resumedAt || 0)) / secs))}/s` : "";
  const resumed = u.resumedAt ? ` · resumed at ${Math.floor((u.resumedAt / u.file.size) * 100)} %` : "";
  const text = {
    queued: "Waiting",
    uploading: `${pct} % · ${formatSize(u.sent)} of ${formatSize(u.file.size)}${rate}${resumed}`,
    paused: `Paused at ${pct} %${u.resumable ? "" : " (starts again from the beginning: this gateway cannot resume)"}`,
    done: `Done · ${formatSize(u.file.size)}${rate}${resumed}`,
    failed: `Failed: ${u.error ? u.error.title + (u.error.detail ? " — " + u.error.detail : "") : ""}`,
    cancelled: "Cancelled",
  }[u.state];
  u.statusEl.textContent = text;
  const paused = u.state === "paused" || u.state === "failed";
  u.pauseBtn.hidden = ["done", "cancelled"].includes(u.state);
  u.pauseBtn.replaceChildren(icon(paused ? "play" : "pause"));
  u.pauseBtn.setAttribute("aria-label", `${paused ? (u.state === "failed" ? "Retry" : "Resume") : "Pause"} the upload of ${u.file.name}`);
  li.querySelector("[data-act=cancel]").hidden = ["done", "cancelled"].includes(u.state);
  if (u.state !== u.lastState) {
    u.lastState = u.state;
    summary();
    if (u.state === "failed") showError(`Upload of ${u.file.name} failed`, u.error);
  }
}

/** Files of a drop, folders walked (webkitGetAsEntry), each with its path relative to the drop. */
async function droppedFiles(dt) {
  const out = [];
  const entries = [...(dt.items || [])].map((i) => (i.kind === "file" ? { entry: i.webkitGetAsEntry && i.webkitGetAsEntry(), file: i.getAsFile() } : null)).filter(Boolean);
  const walk = async (entry, prefix) => {
    if (entry.isFile) {
      const file = await new Promise((res, rej) => entry.file(res, rej));
      out.push({ file, rel: prefix + file.name });
    } else if (entry.isDirectory) {
      const reader = entry.createReader();
      for (;;) {
        const batch = await new Promise((res, rej) => reader.readEntries(res, rej));
        if (!batch.length) break;
        for (const e of batch) await walk(e, `${prefix}${entry.name}/`);
      }
    }
  };
  if (!entries.length) for (const f of dt.files || []) out.push({ file: f, rel: f.name });
  for (const { entry, file } of entries) {
    if (entry) await walk(entry, "");
    else if (file) out.push({ file, rel: file.name });
  }
  return out;
}

async function showPendingUploads() {
  const box = $("pending");
  const list = pendingUploads(S.user);
  if (!list.length || !can("write")) {
    box.hidden = true;
    return;
  }
  const rows = [];
  for (const p of list) {
    let pct = "";
    try {
      const r = await fetch(p.url, { method: "HEAD", headers: { ...api.authHeaders("HEAD"), "Tus-Resumable": "1.0.0" }, cache: "no-store" });
      if (r.status === 404 || r.status === 410) {
        forget(p.key);
        continue;
      }
      const off = Number(r.headers.get("Upload-Offset") || 0);
      pct = p.size ? ` (${Math.floor((off / p.size) * 100)} % uploaded)` : "";
    } catch {
      /* shown without a percentage */
    }
    rows.push(el("li", {}, `${p.target}${pct} `, el("button.ghost.small", { type: "button", onclick: () => (forget(p.key), showPendingUploads()) }, `Forget ${p.name}`)));
  }
  if (!rows.length) {
    box.hidden = true;
    return;
  }
  box.replaceChildren(
    el("p", {}, el("strong", { text: `${rows.length === 1 ? "An upload was" : rows.length + " uploads were"} interrupted.` }), " Choose the same file again to continue where it stopped: "),
    el("ul", {}, rows),
    el("button.primary", { type: "button", onclick: () => $("file-input").click() }, icon("upload"), "Choose the files to resume"),
  );
  box.hidden = false;
}

// --- Live updates ---

function setLive(state, text, why = "") {
  const l = $("live");
  l.dataset.state = state;
  l.querySelector(".live-text").textContent = text;
  l.title = why || text;
  l.setAttribute("aria-label", why ? `${text}: ${why}` : text);
}

async function startLive() {
  stopLive();
  if (api.authMode() !== "cookie") {
    setLive("off", "No live updates", "this gateway has no session login, which the event stream needs");
    return;
  }
  let last;
  try {
    last = await api.lastSeq();
  } catch (e) {
    last = null;
  }
  if (last === null) {
    setLive("off", "No live updates", "this gateway has no event stream (GET /api/v1/events); reload to see changes");
    return;
  }
  // The browser resumes after a drop with Last-Event-ID itself; `after` only sets the start.
  const es = new EventSource(`${api.API}/events?after=${last}`);
  S.live = es;
  setLive("wait", "Connecting…");
  es.onopen = () => setLive("on", "Live");
  es.onerror = () => setLive(es.readyState === EventSource.CLOSED ? "off" : "wait", es.readyState === EventSource.CLOSED ? "Live updates stopped" : "Reconnecting…");
  es.onmessage = (m) => {
    try {
      onEvent(JSON.parse(m.data));
    } catch (e) {
      console.warn("filegate: an event that is not JSON", e);
    }
  };
}

function stopLive() {
  if (S.live) S.live.close();
  S.live = null;
}

/** A store path as a path in the home; null when it is outside (or the home is not known). */
function relPath(storePath) {
  if (!storePath) return null;
  if (S.home === null) return null;
  const home = S.home.replace(/\/$/, "");
  if (!home) return storePath;
  if (storePath === home) return "/";
  return storePath.startsWith(home + "/") ? storePath.slice(home.length) : null;
}

/** Where an event's path would be in the open folder: the home-relative path, or (home not known)
 * the open folder + the name when the event's folder ends like the open folder; null otherwise. */
function inOpenFolder(storePath) {
  const rel = relPath(storePath);
  if (rel !== null) return parentOf(rel) === S.cwd ? rel : null;
  if (S.home !== null || !storePath) return null;
  const parent = parentOf(storePath);
  if (S.cwd !== "/" && !(parent === S.cwd || parent.endsWith(S.cwd))) return null;
  return join(S.cwd, baseName(storePath));
}

const VERBS = {
  "file.created": "uploaded",
  "file.modified": "replaced",
  "file.incomplete": "left an incomplete upload of",
  "file.deleted": "deleted",
  "file.renamed": "renamed",
  "dir.created": "created the folder",
  "dir.deleted": "deleted the folder",
  "dir.renamed": "renamed the folder",
};

function describe(ev) {
  const d = ev.data || {};
  const type = String(ev.type || "").replace(/^io\.filegate\./, "");
  const show = (p) => relPath(p) ?? baseName(p || "");
  const who = d.user === S.user ? "You" : d.user || "Someone";
  let what = `${VERBS[type] || type} ${show(d.path)}`;
  if (type.endsWith("renamed") && d.old_path) what = `${VERBS[type]} ${show(d.old_path)} to ${show(d.path)}`;
  const over = d.protocol ? ` over ${String(d.protocol).toUpperCase()}` : "";
  return { who, what, over, type, text: `${who} ${what}${over}` };
}

async function onEvent(ev) {
  S.activity.push(ev);
  if (S.activity.length > 200) S.activity.shift();
  const d = ev.data || {};
  const info = describe(ev);
  const incomplete = info.type === "file.incomplete" || d.complete === false;
  // What this user did over HTTP (most likely in this page) is shown by the page itself already.
  const mine = d.user === S.user && d.protocol === "http";
  if (!mine || incomplete) notify(info.text, { kind: incomplete ? "warn" : "info", detail: incomplete ? "the upload was cut off: the file is not complete" : "" });
  if (S.stats) drawActivity();
  if (S.query) return;
  const gone = [];
  const here = [];
  if (info.type.endsWith("deleted")) gone.push(d.path);
  else {
    // A rename, or an upload finished under a temporary name (announced as created or modified,
    // with the temporary name as old_path): the old name has left the folder.
    if (d.old_path) gone.push(d.old_path);
    here.push(d.path);
  }
  for (const p of gone) {
    const rel = inOpenFolder(p);
    if (!rel) continue;
    // Checked when the home is not known: a same-named entry here may be another one.
    if (S.home === null && (await api.stat(rel).catch(() => null))) continue;
    view.removePath(rel);
  }
  for (const p of here) {
    const rel = inOpenFolder(p);
    if (!rel) continue;
    const st = await api.stat(rel).catch(() => null);
    if (st && parentOf(rel) === S.cwd && !S.query) view.upsert(st, compare);
  }
}

// --- Statistics ---

function showStats(on) {
  S.stats = on;
  $("stats-section").hidden = !on;
  $("files-section").hidden = on;
  $("btn-stats").setAttribute("aria-pressed", String(on));
  if (on) {
    $("view-title").textContent = "Statistics";
    drawStats();
  }
}

async function drawStats() {
  $("st-note").textContent = "";
  try {
    const u = await api.usage();
    $("st-files").textContent = u.files.toLocaleString();
    $("st-bytes").textContent = formatSize(u.bytes);
    const m = $("st-meter");
    if (u.quota_bytes != null) {
      const share = u.quota_bytes ? u.bytes / u.quota_bytes : 1;
      $("st-quota").textContent = `${Math.round(share * 100)} % of ${formatSize(u.quota_bytes)} used`;
      m.hidden = false;
      m.max = u.quota_bytes;
      m.value = u.bytes;
      m.high = u.quota_bytes * 0.9;
    } else {
      $("st-quota").textContent = "No byte quota";
      m.hidden = true;
    }
    if (u.quota_files != null) $("st-quota").textContent += ` · files: ${u.files} of ${u.quota_files}`;
  } catch (e) {
    for (const id of ["st-files", "st-bytes", "st-quota"]) $(id).textContent = "—";
    $("st-note").textContent = e.status === 404 ? "This gateway does not report usage yet." : `Usage: ${e.title} ${e.detail}`;
  }
  try {
    const history = await api.recentEvents(50);
    if (history === null) $("st-note").textContent += " No event history on this gateway: only changes seen since this page opened are listed.";
    else {
      const seen = new Set(S.activity.map((e) => e.id));
      S.activity = [...history.filter((e) => !seen.has(e.id)), ...S.activity].slice(-200);
    }
  } catch (e) {
    $("st-note").textContent += ` Activity: ${e.title}`;
  }
  drawActivity();
}

function drawActivity() {
  const rows = S.activity
    .slice(-50)
    .reverse()
    .map((ev) => {
      const i = describe(ev);
      const incomplete = i.type === "file.incomplete" || ev.data?.complete === false;
      return el("tr", {}, el("td", { text: formatDate(new Date(ev.time)) }), el("td", { text: ev.data?.user || "" }), el("td", {}, i.what, incomplete ? el("span.badge", { text: "incomplete" }) : null), el("td", { text: String(ev.data?.protocol || "").toUpperCase() }));
    });
  $("st-activity").replaceChildren(...(rows.length ? rows : [el("tr", {}, el("td", { colspan: "4", text: "No activity yet." }))]));
}

// --- Session ---

function applyPermissions() {
  for (const b of document.querySelectorAll("[data-perm]")) b.hidden = !can(b.dataset.perm);
  view.canSelect = true;
  document.body.classList.toggle("readonly", !can("write"));
}

function showLogin(message = "") {
  stopLive();
  S.session = null;
  $("app-view").hidden = true;
  $("login-view").hidden = false;
  $("login-error").textContent = message;
  $("login-user").focus();
}

function showApp(session) {
  S.session = session;
  S.user = session.user;
  S.perms = new Set(Array.isArray(session.permissions) ? session.permissions.map((p) => String(p).toLowerCase()) : ALL_PERMISSIONS);
  S.home = typeof session.home === "string" ? session.home : null;
  $("who").textContent = session.user;
  $("login-view").hidden = true;
  $("app-view").hidden = false;
  applyPermissions();
  applySortHeaders();
  applyMode();
  route();
  startLive();
  showPendingUploads();
}

function expired() {
  showLogin("Your session has ended. Log in again.");
}

async function onLogin(e) {
  e.preventDefault();
  const user = $("login-user").value.trim();
  const password = $("login-password").value;
  if (!user || !password) {
    $("login-error").textContent = "Enter your user name and password.";
    return;
  }
  const btn = e.target.querySelector("button[type=submit]");
  btn.disabled = true;
  $("login-error").textContent = "";
  try {
    const session = await api.login(user, password);
    $("login-password").value = "";
    showApp(session);
  } catch (err) {
    $("login-error").textContent =
      err.status === 401 ? "Wrong user name or password." : err.status === 429 ? `Too many failed logins from this address: ${err.detail || "wait and try again"}` : `${err.title}${err.detail ? ": " + err.detail : ""}`;
    $("login-password").focus();
  } finally {
    btn.disabled = false;
  }
}

async function onLogout() {
  for (const u of S.uploads) if (u.state === "uploading") u.pause();
  try {
    await api.logout();
  } catch (e) {
    showError("Logout failed", e);
  }
  S.uploads = [];
  $("upload-list").replaceChildren();
  $("uploads").hidden = true;
  showLogin("You are logged out.");
}

// --- Keyboard ---

function onKey(e) {
  if (!S.session || document.querySelector("dialog[open]") || document.querySelector(".menu")) return;
  const t = e.target;
  const typing = t.matches?.("input, textarea, select, [contenteditable]");
  if (e.key === "Escape") {
    if (t === $("search") && $("search").value) {
      $("search").value = "";
      onSearchInput();
    } else view.clearSelection();
    return;
  }
  if (typing) return;
  const k = e.key;
  const plain = !e.ctrlKey && !e.metaKey && !e.altKey;
  if (k === "?") $("dlg-help").showModal();
  else if (k === "/" && plain) $("search").focus();
  else if ((k === "a" || k === "A") && (e.ctrlKey || e.metaKey)) view.selectAll();
  else if (k === "Delete" && can("delete")) deleteEntries(targets());
  else if (k === "F2" && can("rename")) rename(targets()[0]);
  else if (k === "m" && plain && can("rename")) moveEntries(targets());
  else if (k === "d" && plain && can("read")) download(targets());
  else if (k === "n" && plain && can("mkdir")) newFolder();
  else if (k === "u" && plain && can("write")) $("file-input").click();
  else if (k === "g" && plain) toggleMode();
  else if (k === "s" && plain) showStats(!S.stats);
  else if ((k === "Backspace" && plain) || (k === "ArrowUp" && e.altKey)) {
    if (S.cwd !== "/") go(parentOf(S.cwd));
  } else return;
  e.preventDefault();
}

function toggleMode() {
  S.mode = S.mode === "list" ? "grid" : "list";
  save("filegate.view", S.mode);
  applyMode();
}

// --- Wiring ---

function wire() {
  $("login-form").addEventListener("submit", onLogin);
  $("btn-logout").addEventListener("click", onLogout);
  $("btn-upload").addEventListener("click", () => $("file-input").click());
  $("btn-upload-dir").addEventListener("click", () => $("dir-input").click());
  $("file-input").addEventListener("change", (e) => {
    upload([...e.target.files].map((file) => ({ file, rel: file.name })));
    e.target.value = "";
  });
  $("dir-input").addEventListener("change", (e) => {
    upload([...e.target.files].map((file) => ({ file, rel: file.webkitRelativePath || file.name })));
    e.target.value = "";
  });
  $("btn-mkdir").addEventListener("click", newFolder);
  $("btn-download").addEventListener("click", () => download(view.selectedEntries()));
  $("btn-rename").addEventListener("click", () => rename(view.selectedEntries()[0]));
  $("btn-move").addEventListener("click", () => moveEntries(view.selectedEntries()));
  $("btn-delete").addEventListener("click", () => deleteEntries(view.selectedEntries()));
  $("btn-list").addEventListener("click", () => S.mode !== "list" && toggleMode());
  $("btn-grid").addEventListener("click", () => S.mode !== "grid" && toggleMode());
  $("btn-stats").addEventListener("click", () => showStats(!S.stats));
  $("btn-help").addEventListener("click", () => $("dlg-help").showModal());
  $("select-all").addEventListener("change", (e) => (e.target.checked ? view.selectAll() : view.clearSelection()));
  for (const h of document.querySelectorAll("[data-sort] button")) {
    h.addEventListener("click", () => {
      const key = h.parentElement.dataset.sort;
      S.sort = { key, order: S.sort.key === key && S.sort.order === "asc" ? "desc" : "asc" };
      save("filegate.sort", S.sort);
      applySortHeaders();
      refresh();
    });
  }
  $("search").addEventListener("input", onSearchInput);
  $("uploads-clear").addEventListener("click", () => {
    S.uploads = S.uploads.filter((u) => {
      const over = ["done", "cancelled"].includes(u.state);
      if (over) u.li.remove();
      return !over;
    });
    summary();
    if (!S.uploads.length) $("uploads").hidden = true;
  });
  $("uploads-close").addEventListener("click", () => ($("uploads").hidden = true));
  $("preview-prev").addEventListener("click", () => stepPreview(-1));
  $("preview-next").addEventListener("click", () => stepPreview(1));
  $("preview-close").addEventListener("click", closePreview);
  $("preview-download").addEventListener("click", (e) => {
    if (api.authMode() !== "cookie") {
      e.preventDefault();
      download([previewList[previewIndex]]);
    }
  });
  $("dlg-preview").addEventListener("keydown", (e) => {
    if (e.key === "ArrowRight") stepPreview(1);
    else if (e.key === "ArrowLeft") stepPreview(-1);
    else return;
    e.preventDefault();
  });
  $("dlg-preview").addEventListener("close", () => {
    if (previewUrl) URL.revokeObjectURL(previewUrl);
    previewUrl = null;
    $("preview-body").replaceChildren();
    view.focus();
  });
  document.addEventListener("keydown", onKey);
  window.addEventListener("hashchange", route);
  // Drag and drop anywhere on the main area.
  const main = $("main");
  let depth = 0;
  main.addEventListener("dragenter", (e) => {
    if (!can("write") || !e.dataTransfer?.types?.includes("Files")) return;
    depth++;
    $("drop-hint").hidden = false;
  });
  main.addEventListener("dragleave", () => {
    depth = Math.max(0, depth - 1);
    if (!depth) $("drop-hint").hidden = true;
  });
  main.addEventListener("dragover", (e) => {
    if (can("write")) e.preventDefault();
  });
  main.addEventListener("drop", async (e) => {
    e.preventDefault();
    depth = 0;
    $("drop-hint").hidden = true;
    if (!can("write")) return showError("You may not upload here", { title: "Your account can read files only" });
    upload(await droppedFiles(e.dataTransfer));
  });
}

async function boot() {
  wire();
  try {
    const session = await api.whoami();
    if (session) showApp(session);
    else showLogin();
  } catch (e) {
    showLogin(`The gateway answered: ${e.title}${e.detail ? " — " + e.detail : ""}`);
  }
}

// The tests read these (docs/web.md, measurements); harmless for a person.
window.filegate = { state: S, view, upload, go };

boot();
