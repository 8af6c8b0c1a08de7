// runforge dashboard: light and dark theme. style.css gives every colour a light and a dark value; with no
// choice saved the page follows the system's prefers-color-scheme, the header's button (and `d`) saves one.
// Loaded before the other scripts and not deferred, so a saved choice applies before the first paint.
// charts.js passes each chart's layout through themed(); toggling restyles the charts already drawn.
"use strict";

const THEME_KEY = "runforge-theme";
const systemDark = window.matchMedia("(prefers-color-scheme: dark)");

function savedTheme() {
  const theme = localStorage.getItem(THEME_KEY);
  return theme === "dark" || theme === "light" ? theme : null;
}

function currentTheme() {
  return document.documentElement.dataset.theme || (systemDark.matches ? "dark" : "light");
}

// The page's colour variables as the browser resolves them now (light or dark), for plotly.
function themeColors() {
  const probe = document.createElement("span");
  probe.hidden = true;
  document.body.append(probe);
  const colors = {};
  for (const name of ["fg", "muted", "line", "panel"]) {
    probe.style.color = `var(--${name})`;
    colors[name] = getComputedStyle(probe).color;
  }
  probe.remove();
  return colors;
}

// The plotly layout attributes that carry the theme's colours.
function themeLayout() {
  const c = themeColors();
  const axis = { color: c.muted, gridcolor: c.line, zerolinecolor: c.line, linecolor: c.line };
  return { paper_bgcolor: c.panel, plot_bgcolor: c.panel, font: { color: c.fg }, xaxis: axis, yaxis: { ...axis } };
}

function isPlainObject(value) { return value !== null && typeof value === "object" && !Array.isArray(value); }

// `layout` with the theme's colours merged in, at any depth (a chart's own axis title stays).
function themed(layout) {
  const merge = (into, patch) => {
    const out = { ...into };
    for (const [key, value] of Object.entries(patch)) {
      out[key] = isPlainObject(value) && isPlainObject(out[key]) ? merge(out[key], value) : value;
    }
    return out;
  };
  return merge(layout, themeLayout());
}

// themeLayout() as plotly.relayout's dotted attribute names, for charts drawn before a switch.
function flatThemeLayout() {
  const flat = {};
  const walk = (prefix, value) => {
    if (!isPlainObject(value)) flat[prefix] = value;
    else for (const [key, inner] of Object.entries(value)) walk(prefix ? `${prefix}.${key}` : key, inner);
  };
  walk("", themeLayout());
  return flat;
}

function restyleCharts() {
  if (!window.Plotly) return;  // no chart drawn yet: each will be drawn themed
  const patch = flatThemeLayout();
  for (const chart of document.querySelectorAll(".js-plotly-plot")) window.Plotly.relayout(chart, patch);
}

function showTheme() {
  const button = document.getElementById("theme-toggle");
  if (button) button.textContent = currentTheme() === "dark" ? "light mode" : "dark mode";
}

function setTheme(theme) {
  document.documentElement.dataset.theme = theme;
  localStorage.setItem(THEME_KEY, theme);
  showTheme();
  restyleCharts();
}

function toggleTheme() { setTheme(currentTheme() === "dark" ? "light" : "dark"); }

if (savedTheme()) document.documentElement.dataset.theme = savedTheme();
systemDark.addEventListener("change", () => { if (!savedTheme()) { showTheme(); restyleCharts(); } });
document.addEventListener("DOMContentLoaded", () => {
  showTheme();
  document.getElementById("theme-toggle").addEventListener("click", toggleTheme);
});
