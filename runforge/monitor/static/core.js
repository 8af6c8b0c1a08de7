// runforge dashboard, shared helpers: DOM building, the JSON API, polling, number formatting.
// Everything a run wrote is put on the page as text (textContent / attributes), never as HTML.
// The page scripts are classic scripts sharing one global scope, loaded in the order index.html
// lists them: theme.js first (it sets the colours before the page paints), core.js, then one script
// per part of a page, and main.js last, which picks the page from the URL.
"use strict";
const POLL_MS = 1000;
const view = document.getElementById("view");
const crumb = document.getElementById("crumb");
const live = document.getElementById("live");

// ------------------------------------------------------------------ helpers

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else if (key === "className") node.className = value;
    else node.setAttribute(key, value === true ? "" : String(value));
  }
  for (const child of children.flat()) {
    if (child === undefined || child === null) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

// Plotly renders a few HTML-like tags in titles and legends: give it entities so names stay text.
function plotText(s) {
  return String(s).replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;").replace(/"/g, "&quot;");
}

function token() {
  const fromUrl = new URLSearchParams(location.search).get("token");
  if (fromUrl) sessionStorage.setItem("runforge-token", fromUrl);
  return sessionStorage.getItem("runforge-token") || "";
}

// Headers of a request that changes something (control, viewer): asks for the token once when the
// dashboard needs one and this tab has none.
function writeHeaders(needsToken) {
  const headers = { "Content-Type": "application/json" };
  let tok = token();
  if (needsToken && !tok) {
    tok = prompt("Control token (printed when the dashboard started):") || "";
    if (tok) sessionStorage.setItem("runforge-token", tok);
  }
  if (tok) headers["X-Runforge-Token"] = tok;
  return headers;
}

async function api(path, options) {
  const response = await fetch(path, options);
  let data = null;
  try { data = await response.json(); } catch (e) { data = { error: response.statusText }; }
  if (!response.ok) throw Object.assign(new Error((data && data.error) || response.statusText), { status: response.status });
  return data;
}

function fmt(value) {
  if (value === null || value === undefined) return "";
  if (typeof value === "number") {
    if (Number.isInteger(value)) return String(value);
    const a = Math.abs(value);
    return (a !== 0 && (a < 1e-3 || a >= 1e5)) ? value.toExponential(3) : value.toPrecision(4).replace(/\.?0+$/, "");
  }
  if (typeof value === "object") return JSON.stringify(value);
  return String(value);
}

function runUrl(key) { return "/run/" + encodeURIComponent(key); }
function runApi(key) { return "/api/run/" + encodeURIComponent(key); }
function fileUrl(key, file) { return runApi(key) + "/file/" + file.split("/").map(encodeURIComponent).join("/"); }

function statusLabel(status, paused) {
  const label = paused ? "paused" : status;
  return el("span", { className: "status " + label, "data-status": label }, label);
}

let timer = null;
function poll(fn) {
  let busy = false;
  const tick = async () => {
    if (busy) return;
    busy = true;
    try { await fn(); live.textContent = "updated " + new Date().toLocaleTimeString(); }
    catch (e) {
      live.textContent = "update failed: " + e.message;
      if (e.final) clearInterval(timer);  // asking again cannot help (an unknown run): stop polling
    }
    finally { busy = false; }
  };
  tick();
  timer = setInterval(tick, POLL_MS);
}

// plotly.min.js is 4.8 MB: only pages that draw a chart load it, once.
let plotlyLoading = null;
function loadPlotly() {
  if (!plotlyLoading) plotlyLoading = new Promise((resolve, reject) => {
    const script = el("script", { src: "/static/plotly.min.js" });
    script.addEventListener("load", () => resolve(window.Plotly));
    script.addEventListener("error", () => reject(new Error("could not load plotly.min.js")));
    document.head.append(script);
  });
  return plotlyLoading;
}
