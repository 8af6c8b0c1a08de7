// runforge dashboard: keyboard shortcuts on every page. None fires while the focus is in a text field.
// Esc hides every element marked data-overlay (this help, and any other overlay that opts in).
"use strict";

const SHORTCUTS = [
  ["?", "show or hide this help"],
  ["/", "focus the page's filter or search box"],
  ["g r", "go to the runs table"],
  ["d", "switch dark / light mode"],
  ["Esc", "close overlays"],
];
const PREFIX_MS = 1500;

function isTyping(target) {
  return target instanceof Element && (target.isContentEditable || target.matches("input, textarea, select"));
}

let shortcutHelp = null;
function toggleShortcutHelp() {
  if (!shortcutHelp) {
    shortcutHelp = el("div", { id: "shortcut-help", className: "overlay", "data-overlay": true, hidden: true,
      onclick: (e) => { if (e.target === shortcutHelp) shortcutHelp.hidden = true; } },
      el("div", { className: "overlay-box", role: "dialog", "aria-label": "keyboard shortcuts" },
        el("h2", {}, "Keyboard shortcuts"),
        el("table", {}, el("tbody", {}, SHORTCUTS.map(([keys, what]) =>
          el("tr", {}, el("td", {}, keys.split(" ").map(k => el("kbd", {}, k))), el("td", {}, what)))))));
    document.body.append(shortcutHelp);
  }
  shortcutHelp.hidden = !shortcutHelp.hidden;
}

function closeOverlays() {
  for (const overlay of document.querySelectorAll("[data-overlay]")) overlay.hidden = true;
}

let pendingG = 0;
document.addEventListener("keydown", (e) => {
  if (e.ctrlKey || e.metaKey || e.altKey || e.defaultPrevented || isTyping(e.target)) return;
  const afterG = Date.now() - pendingG < PREFIX_MS;
  pendingG = 0;
  if (e.key === "Escape") closeOverlays();
  else if (e.key === "?") toggleShortcutHelp();
  else if (e.key === "d") toggleTheme();
  else if (e.key === "g") pendingG = Date.now();
  else if (e.key === "r" && afterG) location.href = "/";
  else if (e.key === "/") {
    const box = view.querySelector("input[type=search]");
    if (!box) return;
    e.preventDefault();  // the "/" is not typed into the box
    box.focus();
  }
});
document.getElementById("shortcuts-button").addEventListener("click", toggleShortcutHelp);
