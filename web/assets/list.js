// The file list: an ARIA grid with virtual scrolling (only the rows in view exist in the page, so a
// folder of 100,000 entries scrolls like one of ten), list or tile layout, selection with click,
// Ctrl/⌘-click, Shift-click and the keyboard, and a roving focus (one Tab stop for the whole list).
"use strict";

import { el, icon, kindOf, formatSize, formatDate } from "./ui.js";

const ROW_H = 44; // list layout: px per row (matches app.css .row)
const TILE_W = 156; // tile layout: px per tile, gap included
const TILE_H = 164;
const OVERSCAN = 4; // lines drawn above and below the view

export class FileView {
  constructor(grid, handlers) {
    this.grid = grid;
    this.h = handlers; // {open(entry), menu(entry, x, y, returnFocus), selection(), more(), showPaths}
    this.scroller = grid.querySelector(".scroller");
    this.body = grid.querySelector(".rows");
    this.empty = grid.querySelector(".empty");
    this.items = [];
    this.more = false;
    this.loading = false;
    this.mode = "list";
    this.selected = new Set(); // paths
    this.anchor = 0;
    this.focusIndex = 0;
    this.rows = new Map(); // index -> element
    this.version = 0; // bumped when items change: rows are rebuilt
    this.showPaths = false;
    this.canSelect = true;
    this.emptyText = "";
    this.scroller.addEventListener("scroll", () => this.schedule(), { passive: true });
    new ResizeObserver(() => this.schedule()).observe(this.scroller);
    this.body.addEventListener("keydown", (e) => this.key(e));
    this.body.addEventListener("click", (e) => this.click(e));
    this.body.addEventListener("dblclick", (e) => {
      const i = this.indexOf(e.target);
      if (i !== null && !e.target.closest("button, input")) this.h.open(this.items[i]);
    });
    this.body.addEventListener("contextmenu", (e) => {
      const i = this.indexOf(e.target);
      if (i === null) return;
      e.preventDefault();
      if (!this.selected.has(this.items[i].path)) this.selectOnly(i);
      this.focusIndex = i;
      this.h.menu(this.items[i], e.clientX, e.clientY, this.focusTarget(i));
    });
  }

  // --- Data ---

  setItems(items, more, { showPaths = false, emptyText = "" } = {}) {
    this.items = items;
    this.more = more;
    this.showPaths = showPaths;
    this.emptyText = emptyText;
    this.selected.clear();
    this.anchor = 0;
    this.focusIndex = 0;
    this.scroller.scrollTop = 0;
    this.invalidate();
    this.h.selection();
  }

  append(items, more) {
    this.items.push(...items);
    this.more = more;
    this.invalidate();
  }

  setLoading(on) {
    this.loading = on;
    this.grid.setAttribute("aria-busy", on ? "true" : "false");
    this.invalidate();
  }

  /** Inserts or updates one entry (live updates); keeps the order `cmp` gives. */
  upsert(entry, cmp) {
    const i = this.items.findIndex((e) => e.path === entry.path);
    if (i >= 0) this.items[i] = entry;
    else {
      let at = this.items.findIndex((e) => cmp(entry, e) < 0);
      if (at < 0) {
        // Past the last loaded entry of a folder with more pages: that page will bring it.
        if (this.more) return;
        at = this.items.length;
      }
      this.items.splice(at, 0, entry);
      if (this.focusIndex >= at && this.items.length > 1) this.focusIndex++;
    }
    this.invalidate();
  }

  removePath(path) {
    const i = this.items.findIndex((e) => e.path === path);
    if (i < 0) return;
    this.items.splice(i, 1);
    this.selected.delete(path);
    if (this.focusIndex > i) this.focusIndex--;
    this.focusIndex = Math.min(this.focusIndex, Math.max(0, this.items.length - 1));
    this.invalidate();
    this.h.selection();
  }

  setMode(mode) {
    this.mode = mode;
    this.grid.classList.toggle("tiles", mode === "grid");
    this.invalidate();
  }

  invalidate() {
    this.version++;
    this.schedule();
  }

  // --- Selection ---

  selectedEntries() {
    return this.items.filter((e) => this.selected.has(e.path));
  }

  selectOnly(i) {
    this.selected.clear();
    if (i !== null && this.items[i]) this.selected.add(this.items[i].path);
    this.anchor = i ?? 0;
    this.refreshSelection();
  }

  toggle(i) {
    const p = this.items[i].path;
    if (this.selected.has(p)) this.selected.delete(p);
    else this.selected.add(p);
    this.anchor = i;
    this.refreshSelection();
  }

  range(i, additive = false) {
    if (!additive) this.selected.clear();
    const [a, b] = [Math.min(this.anchor, i), Math.max(this.anchor, i)];
    for (let k = a; k <= b; k++) this.selected.add(this.items[k].path);
    this.refreshSelection();
  }

  selectAll() {
    for (const e of this.items) this.selected.add(e.path);
    this.refreshSelection();
  }

  clearSelection() {
    this.selected.clear();
    this.refreshSelection();
  }

  refreshSelection() {
    for (const [i, row] of this.rows) {
      const on = this.items[i] ? this.selected.has(this.items[i].path) : false;
      row.setAttribute("aria-selected", on ? "true" : "false");
      const box = row.querySelector("input[type=checkbox]");
      if (box) box.checked = on;
    }
    this.h.selection();
  }

  // --- Layout ---

  columns() {
    if (this.mode !== "grid") return 1;
    return Math.max(1, Math.floor((this.scroller.clientWidth - 8) / TILE_W));
  }

  lineHeight() {
    return this.mode === "grid" ? TILE_H : ROW_H;
  }

  schedule() {
    if (this.pending) return;
    this.pending = requestAnimationFrame(() => {
      this.pending = 0;
      this.render();
    });
  }

  render() {
    const cols = this.columns();
    const lineH = this.lineHeight();
    const n = this.items.length;
    const lines = Math.ceil(n / cols) + (this.more || this.loading ? 1 : 0);
    this.body.style.height = `${lines * lineH}px`;
    this.grid.setAttribute("aria-rowcount", this.more ? "-1" : String(n + 1));
    const top = this.scroller.scrollTop;
    const height = this.scroller.clientHeight || 600;
    const first = Math.max(0, Math.floor(top / lineH) - OVERSCAN);
    const last = Math.ceil((top + height) / lineH) + OVERSCAN;
    const from = first * cols;
    const to = Math.min(n, last * cols);
    const active = document.activeElement;
    for (const [i, row] of this.rows) {
      const keepFocus = row.contains(active) && i === this.focusIndex && row.dataset.v === String(this.version);
      if (i < from || i >= to || row.dataset.v !== String(this.version)) {
        if (keepFocus) continue;
        const hadFocus = row.contains(active);
        row.remove();
        this.rows.delete(i);
        if (hadFocus) this.refocus = true;
      }
    }
    for (let i = from; i < to; i++) {
      let row = this.rows.get(i);
      if (!row) {
        row = this.row(i);
        this.rows.set(i, row);
        this.body.append(row);
      }
      const line = Math.floor(i / cols);
      const col = i % cols;
      row.style.transform = this.mode === "grid" ? `translate(${col * TILE_W}px, ${line * lineH}px)` : `translateY(${line * lineH}px)`;
    }
    this.updateTabStops();
    if (this.refocus && this.rows.get(this.focusIndex)) {
      this.refocus = false;
      this.focusTarget(this.focusIndex).focus({ preventScroll: true });
    }
    const status = this.loading && n === 0 ? "Loading…" : n === 0 && !this.more ? this.emptyText : "";
    this.empty.textContent = status;
    this.empty.hidden = !status;
    let loader = this.body.querySelector(".loader");
    if (this.more || (this.loading && n > 0)) {
      if (!loader) {
        loader = el("div.loader", { role: "row" }, el("div", { role: "gridcell", text: "Loading more…" }));
        this.body.append(loader);
      }
      loader.style.transform = `translateY(${Math.ceil(n / cols) * lineH}px)`;
    } else if (loader) loader.remove();
    // Fetch the next page before the reader gets to the end of what is loaded.
    if (this.more && !this.loading && to >= n - cols * 20) this.h.more();
  }

  updateTabStops() {
    if (this.focusIndex >= this.items.length) this.focusIndex = Math.max(0, this.items.length - 1);
    for (const [i, row] of this.rows) {
      const b = row.querySelector("button.name");
      if (b) b.tabIndex = i === this.focusIndex ? 0 : -1;
    }
  }

  row(i) {
    const e = this.items[i];
    const sel = this.selected.has(e.path);
    const kind = kindOf(e);
    const parent = e.path.slice(0, e.path.length - e.name.length - 1) || "/";
    const row = el(
      "div.row",
      { role: "row", "aria-rowindex": i + 2, "aria-selected": sel ? "true" : "false", "data-i": i, "data-v": this.version, "data-kind": kind },
      el("div.c-sel", { role: "gridcell" }, this.canSelect ? el("input", { type: "checkbox", tabindex: "-1", "aria-label": `Select ${e.name}`, checked: sel }) : null),
      el(
        "div.c-name",
        { role: "gridcell" },
        icon(kind, `icon kind-${kind}`),
        el(
          "span.namebox",
          {},
          el("button.name", { type: "button", tabindex: "-1", title: e.name, "aria-label": e.dir ? `${e.name}, folder` : null }, e.name),
          this.showPaths ? el("span.sub", { text: `in ${parent}` }) : null,
          !e.complete ? el("span.badge", { text: "incomplete upload" }) : e.temporary ? el("span.badge", { text: "uploading" }) : null,
        ),
      ),
      el("div.c-size", { role: "gridcell" }, e.dir ? el("span.muted", { text: "folder" }) : formatSize(e.size)),
      el("div.c-date", { role: "gridcell" }, formatDate(e.mtime)),
      el("div.c-act", { role: "gridcell" }, el("button.ghost.small", { type: "button", tabindex: "-1", "aria-label": `Actions for ${e.name}`, "aria-haspopup": "menu" }, icon("dots"))),
    );
    if (sel) row.querySelector("input")?.setAttribute("checked", "");
    return row;
  }

  indexOf(target) {
    const row = target.closest(".row");
    return row ? Number(row.dataset.i) : null;
  }

  focusTarget(i) {
    return this.rows.get(i)?.querySelector("button.name") || this.scroller;
  }

  // --- Input ---

  click(e) {
    const i = this.indexOf(e.target);
    if (i === null || !this.items[i]) return;
    this.focusIndex = i;
    this.updateTabStops();
    if (e.target.closest(".c-act button")) {
      const r = e.target.closest("button").getBoundingClientRect();
      if (!this.selected.has(this.items[i].path)) this.selectOnly(i);
      this.h.menu(this.items[i], r.left, r.bottom, this.focusTarget(i));
      return;
    }
    if (e.target.matches("input[type=checkbox]")) {
      if (e.shiftKey) this.range(i, true);
      else this.toggle(i);
      return;
    }
    if (e.target.closest("button.name") && !e.shiftKey && !e.ctrlKey && !e.metaKey) {
      this.h.open(this.items[i]);
      return;
    }
    if (!this.canSelect) return;
    if (e.shiftKey) this.range(i, e.ctrlKey || e.metaKey);
    else if (e.ctrlKey || e.metaKey) this.toggle(i);
    else this.selectOnly(i);
    if (e.target.closest("button.name")) e.preventDefault();
  }

  moveFocus(i, extend) {
    if (!this.items.length) return;
    i = Math.max(0, Math.min(this.items.length - 1, i));
    this.focusIndex = i;
    const cols = this.columns();
    const lineH = this.lineHeight();
    const y = Math.floor(i / cols) * lineH;
    if (y < this.scroller.scrollTop) this.scroller.scrollTop = y;
    else if (y + lineH > this.scroller.scrollTop + this.scroller.clientHeight) this.scroller.scrollTop = y + lineH - this.scroller.clientHeight;
    if (extend && this.canSelect) this.range(i);
    this.render();
    this.focusTarget(i).focus();
  }

  focus() {
    this.moveFocus(Math.min(this.focusIndex, this.items.length - 1), false);
  }

  key(e) {
    // The row the key was pressed in is the focused one (a click or a screen reader may have
    // moved the focus without the arrows).
    const at = this.indexOf(e.target);
    if (at !== null && this.items[at]) this.focusIndex = at;
    const i = this.focusIndex;
    const cols = this.columns();
    const page = Math.max(1, Math.floor(this.scroller.clientHeight / this.lineHeight()) * cols);
    const k = e.key;
    if (k === "ArrowDown") this.moveFocus(i + cols, e.shiftKey);
    else if (k === "ArrowUp") this.moveFocus(i - cols, e.shiftKey);
    else if (k === "ArrowRight" && this.mode === "grid") this.moveFocus(i + 1, e.shiftKey);
    else if (k === "ArrowLeft" && this.mode === "grid") this.moveFocus(i - 1, e.shiftKey);
    else if (k === "PageDown") this.moveFocus(i + page, e.shiftKey);
    else if (k === "PageUp") this.moveFocus(i - page, e.shiftKey);
    else if (k === "Home") this.moveFocus(0, e.shiftKey);
    else if (k === "End") this.moveFocus(this.items.length - 1, e.shiftKey);
    else if (k === " " && this.canSelect && this.items[i]) this.toggle(i);
    else if (k === "ContextMenu" || (k === "F10" && e.shiftKey)) {
      if (!this.items[i]) return;
      if (!this.selected.has(this.items[i].path)) this.selectOnly(i);
      const r = this.focusTarget(i).getBoundingClientRect();
      this.h.menu(this.items[i], r.left, r.bottom, this.focusTarget(i));
    } else return;
    e.preventDefault();
    e.stopPropagation();
  }
}
