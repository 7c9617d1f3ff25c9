// Small DOM helpers shared by the interface: element building (text only, never HTML from data),
// icons from the inline SVG sprite, sizes and dates, notifications, dialogs and the context menu.
"use strict";

/** el("button.primary", {type: "button", onclick}, "text", child…) */
export function el(spec, attrs = {}, ...children) {
  const [tag, ...classes] = spec.split(".");
  const node = document.createElement(tag || "div");
  if (classes.length) node.className = classes.join(" ");
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else if (k === "text") node.textContent = v;
    else node.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return node;
}

const SVG = "http://www.w3.org/2000/svg";

/** An icon from the sprite in index.html; decorative (the text beside it names it). */
export function icon(name, cls = "icon") {
  const svg = document.createElementNS(SVG, "svg");
  svg.setAttribute("class", cls);
  svg.setAttribute("aria-hidden", "true");
  svg.setAttribute("focusable", "false");
  const use = document.createElementNS(SVG, "use");
  use.setAttribute("href", `#i-${name}`);
  svg.append(use);
  return svg;
}

const KINDS = [
  ["image", /\.(png|jpe?g|gif|webp|svg|bmp|ico|avif)$/i],
  ["pdf", /\.pdf$/i],
  ["text", /\.(txt|md|csv|log|json|xml|ya?ml|toml|ini|conf|html?|css|js|ts|rs|py|sh|go|java|c|h|cpp|sql)$/i],
  ["archive", /\.(zip|tar|gz|tgz|bz2|xz|7z|rar|zst)$/i],
  ["audio", /\.(mp3|wav|ogg|flac|m4a|aac)$/i],
  ["video", /\.(mp4|webm|mkv|mov|avi)$/i],
  ["sheet", /\.(xlsx?|ods)$/i],
  ["doc", /\.(docx?|odt|rtf)$/i],
];

/** The kind of a file by its name: image, pdf, text, archive, … or "file". */
export function kindOf(entry) {
  if (entry.dir) return "folder";
  for (const [kind, re] of KINDS) if (re.test(entry.name)) return kind;
  return "file";
}

export const MIME = {
  png: "image/png", jpg: "image/jpeg", jpeg: "image/jpeg", gif: "image/gif", webp: "image/webp",
  svg: "image/svg+xml", bmp: "image/bmp", ico: "image/x-icon", avif: "image/avif", pdf: "application/pdf",
};

export function mimeOf(name) {
  const ext = name.split(".").pop().toLowerCase();
  return MIME[ext] || "text/plain;charset=utf-8";
}

export function formatSize(n) {
  if (n === null || n === undefined) return "";
  if (n < 1024) return `${n} B`;
  const units = ["KiB", "MiB", "GiB", "TiB"];
  let v = n / 1024;
  let i = 0;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return `${v < 10 ? v.toFixed(1) : Math.round(v)} ${units[i]}`;
}

const dateFmt = new Intl.DateTimeFormat(undefined, { dateStyle: "medium", timeStyle: "short" });
export function formatDate(d) {
  return d && !isNaN(d) ? dateFmt.format(d) : "";
}

// --- Notifications ---

/** A short message in the polite live region; errors go to the assertive one and stay longer. */
export function notify(text, { kind = "info", detail = "", timeout } = {}) {
  const box = document.getElementById(kind === "error" ? "alerts" : "toasts");
  const item = el(`div.toast.${kind}`, {}, el("strong", { text }), detail ? el("span", { text: detail }) : null);
  const close = el("button.ghost.small", { type: "button", "aria-label": "Dismiss", onclick: () => item.remove() }, icon("x"));
  item.append(close);
  box.append(item);
  while (box.children.length > 4) box.firstElementChild.remove();
  const ms = timeout ?? (kind === "error" ? 15000 : 6000);
  if (ms) setTimeout(() => item.remove(), ms);
  return item;
}

/** An ApiError as a notification: what failed, why (the problem's title and detail). */
export function showError(what, e) {
  if (e && e.name === "AbortError") return;
  const why = e && e.title ? `${e.title}${e.detail ? ": " + e.detail : ""}` : String(e && e.message ? e.message : e);
  notify(what, { kind: "error", detail: why });
}

// --- Dialogs ---

// Cancel is a plain button (so Enter in a field submits OK, the only submit button): it closes.
for (const b of document.querySelectorAll("dialog button.cancel")) {
  b.addEventListener("click", () => b.closest("dialog").close("cancel"));
}

/** A modal question; resolves true when confirmed. */
export function confirmDialog(title, body, { ok = "OK", danger = false } = {}) {
  return new Promise((resolve) => {
    const d = document.getElementById("dlg-confirm");
    d.querySelector("h2").textContent = title;
    const b = d.querySelector(".body");
    b.replaceChildren(...(Array.isArray(body) ? body : [el("p", { text: body })]));
    const okBtn = d.querySelector("button[value=ok]");
    okBtn.textContent = ok;
    okBtn.classList.toggle("danger", danger);
    d.returnValue = "";
    d.addEventListener("close", () => resolve(d.returnValue === "ok"), { once: true });
    d.showModal();
    d.querySelector("button[value=cancel]").focus();
  });
}

/** A modal with one text field; resolves with the text, or null when cancelled. */
export function promptDialog(title, label, value = "", { ok = "OK", select } = {}) {
  return new Promise((resolve) => {
    const d = document.getElementById("dlg-prompt");
    d.querySelector("h2").textContent = title;
    d.querySelector("label").textContent = label;
    const input = d.querySelector("input");
    input.value = value;
    d.querySelector("button[value=ok]").textContent = ok;
    d.returnValue = "";
    d.addEventListener("close", () => resolve(d.returnValue === "ok" ? input.value.trim() : null), { once: true });
    d.showModal();
    input.focus();
    if (select) input.setSelectionRange(...select);
    else input.select();
  });
}

// --- Context menu ---

let openMenu = null;

/** A menu of [label, iconName, action, {disabled, danger}] at (x, y); keyboard: arrows, Enter, Escape. */
export function contextMenu(items, x, y, returnFocus) {
  closeMenu();
  const menu = el("div.menu", { role: "menu", "aria-label": "Actions", tabindex: "-1" });
  for (const [label, ic, action, opts = {}] of items) {
    if (label === "-") {
      menu.append(el("div.sep", { role: "separator" }));
      continue;
    }
    const item = el(`button.${opts.danger ? "danger-text" : "plain"}`, { type: "button", role: "menuitem", tabindex: "-1", "aria-disabled": opts.disabled ? "true" : null, "aria-keyshortcuts": opts.keys || null }, icon(ic), el("span", { text: label }), opts.keys ? el("kbd", { text: opts.keys }) : null);
    item.addEventListener("click", () => {
      if (opts.disabled) return;
      closeMenu();
      action();
    });
    menu.append(item);
  }
  document.body.append(menu);
  const r = menu.getBoundingClientRect();
  menu.style.left = `${Math.max(4, Math.min(x, innerWidth - r.width - 4))}px`;
  menu.style.top = `${Math.max(4, Math.min(y, innerHeight - r.height - 4))}px`;
  const buttons = [...menu.querySelectorAll("[role=menuitem]")];
  let i = 0;
  const focus = (n) => {
    i = (n + buttons.length) % buttons.length;
    buttons[i].focus();
  };
  menu.addEventListener("keydown", (e) => {
    if (e.key === "ArrowDown") focus(i + 1);
    else if (e.key === "ArrowUp") focus(i - 1);
    else if (e.key === "Home") focus(0);
    else if (e.key === "End") focus(buttons.length - 1);
    else if (e.key === "Escape" || e.key === "Tab") {
      closeMenu();
      if (returnFocus) returnFocus.focus();
    } else return;
    e.preventDefault();
    e.stopPropagation();
  });
  openMenu = { menu, returnFocus };
  focus(0);
}

export function closeMenu() {
  if (openMenu) {
    openMenu.menu.remove();
    openMenu = null;
  }
}

document.addEventListener("pointerdown", (e) => {
  if (openMenu && !openMenu.menu.contains(e.target)) closeMenu();
});
