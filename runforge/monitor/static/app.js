// runforge dashboard: runs table, run page, compare page. Polls the JSON API once a second.
// Everything a run wrote is put on the page as text (textContent / attributes), never as HTML.
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

async function api(path, options) {
  const response = await fetch(path, options);
  let data = null;
  try { data = await response.json(); } catch (e) { data = { error: response.statusText }; }
  if (!response.ok) throw new Error((data && data.error) || response.statusText);
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
    catch (e) { live.textContent = "update failed: " + e.message; }
    finally { busy = false; }
  };
  tick();
  timer = setInterval(tick, POLL_MS);
}

// ------------------------------------------------------------------ runs table

const COLUMNS = [
  ["name", "name", r => r.name],
  ["trainer", "trainer", r => r.trainer],
  ["status", "status", r => r.status],
  ["step", "step/max", r => r.step],
  ["eta", "ETA", r => r.eta],
  ["best", "best metric", r => r.best],
  ["created_at", "started", r => r.created_at],
];

function runsView() {
  crumb.textContent = "runs";
  const state = { sort: "created_at", desc: true, filter: "", selected: new Set(), rows: [] };
  const filter = el("input", { type: "search", id: "filter", placeholder: "filter by name, trainer, status…" });
  const compareBtn = el("button", { id: "compare-btn", className: "primary", disabled: true }, "compare selected");
  const count = el("span", { className: "msg", id: "runs-count" });
  const head = el("tr", {}, el("th", {}, ""), COLUMNS.map(([key, label]) =>
    el("th", { className: "sortable", "data-sort": key, onclick: () => {
      state.desc = state.sort === key ? !state.desc : key === "created_at";
      state.sort = key;
      render();
    } }, label)));
  const body = el("tbody");
  const roots = el("div", { className: "meta", id: "roots" });
  view.replaceChildren(roots, el("div", { className: "toolbar" }, filter, compareBtn, count),
    el("table", { id: "runs-table" }, el("thead", {}, head), body));
  filter.addEventListener("input", () => { state.filter = filter.value.toLowerCase(); render(); });
  compareBtn.addEventListener("click", () => {
    location.href = "/compare?runs=" + [...state.selected].map(encodeURIComponent).join(",");
  });

  let shown = "";
  function render() {
    const signature = JSON.stringify([state.rows, state.sort, state.desc, state.filter, [...state.selected]]);
    if (signature === shown) return;  // unchanged: keep the rows a click may be on
    shown = signature;
    for (const th of head.querySelectorAll("th.sortable")) {
      th.classList.toggle("sorted-asc", th.dataset.sort === state.sort && !state.desc);
      th.classList.toggle("sorted-desc", th.dataset.sort === state.sort && state.desc);
    }
    const getter = COLUMNS.find(c => c[0] === state.sort)[2];
    const rows = state.rows.filter(r => !state.filter ||
      [r.name, r.id, r.trainer, r.status, r.key].some(v => String(v || "").toLowerCase().includes(state.filter)));
    rows.sort((a, b) => {
      const x = getter(a), y = getter(b);
      const missing = (x === null || x === undefined) - (y === null || y === undefined);
      if (missing) return missing;  // empty cells last, whichever the direction
      const order = typeof x === "number" && typeof y === "number" ? x - y : String(x).localeCompare(String(y));
      return state.desc ? -order : order;
    });
    body.replaceChildren(...rows.map(r => {
      const box = el("input", { type: "checkbox", className: "select", "data-key": r.key, checked: state.selected.has(r.key),
        onchange: (e) => { e.target.checked ? state.selected.add(r.key) : state.selected.delete(r.key); render(); } });
      const step = r.step === null || r.step === undefined ? "" : (r.step_max ? `${r.step}/${r.step_max}` : String(r.step));
      return el("tr", { "data-key": r.key },
        el("td", {}, box),
        el("td", { className: "name" }, el("a", { className: "run-link", href: runUrl(r.key) }, r.name),
           el("span", { className: "msg" }, " " + (r.id || ""))),
        el("td", {}, r.trainer), el("td", {}, statusLabel(r.status, r.paused)), el("td", { className: "num" }, step),
        el("td", { className: "num" }, r.eta || ""),
        el("td", { className: "num", title: r.best_name || "" }, fmt(r.best)),
        el("td", {}, (r.created_at || "").replace("T", " ").replace("Z", "")));
    }));
    if (!rows.length) body.replaceChildren(el("tr", {}, el("td", { colspan: COLUMNS.length + 1, className: "msg" },
      state.rows.length ? "No run matches the filter." : "No runs under these roots yet.")));
    compareBtn.disabled = state.selected.size < 2;
    count.textContent = `${rows.length} of ${state.rows.length} runs`;
  }

  poll(async () => {
    const data = await api("/api/runs");
    roots.textContent = "roots: " + data.roots.join(", ");
    state.rows = data.runs;
    render();
  });
}

// ------------------------------------------------------------------ charts

function ema(ys, weight) {
  if (!weight) return ys;
  const out = [];
  let last = 0, debias = 0;
  for (const y of ys) {
    last = last * weight + (1 - weight) * y;
    debias = debias * weight + (1 - weight);
    out.push(last / debias);
  }
  return out;
}

function drawChart(div, title, traces, options) {
  const data = [];
  traces.forEach((t, i) => {
    const smoothed = options.smooth > 0;
    data.push({ x: t.x, y: t.y, name: plotText(t.name), type: "scatter", mode: t.x.length < 3 ? "markers" : "lines",
      line: { width: smoothed ? 1 : 1.6 }, opacity: smoothed ? 0.3 : 1, legendgroup: String(i), showlegend: !smoothed });
    if (smoothed) data.push({ x: t.x, y: ema(t.y, options.smooth), name: plotText(t.name), type: "scatter",
      mode: "lines", line: { width: 1.8, color: undefined }, legendgroup: String(i) });
  });
  const layout = {
    title: { text: plotText(title), font: { size: 13 }, x: 0.01, xanchor: "left" }, margin: { l: 50, r: 10, t: 30, b: 35 },
    xaxis: { title: { text: "step" } }, yaxis: { type: options.logy ? "log" : "linear" },
    showlegend: traces.length > 1, legend: { orientation: "h" }, uirevision: options.revision,
  };
  Plotly.react(div, data, layout, { responsive: true, displaylogo: false });
}

// ------------------------------------------------------------------ run page

function runView(key) {
  const state = { detail: null, charts: new Map(), ranges: new Map(), images: new Map(), snapshot: null,
                  logy: false, smooth: 0 };
  crumb.replaceChildren(el("a", { href: "/" }, "runs"), " / ", key);
  const title = el("h1", { id: "run-title" }, key);
  const meta = el("div", { className: "meta", id: "run-meta" });
  const bar = el("progress", { id: "progress", max: 1, value: 0 });
  const progressText = el("span", { id: "progress-text", className: "num" });
  const statusBox = el("span", { id: "run-status" });
  const notes = el("div", { className: "meta", id: "run-notes" });
  // voxel and splat runs: the command that opens their maps / PLYs in 3D (a separate viser server)
  const viewCommand = el("div", { className: "meta", id: "view-command", hidden: true });
  const msg = el("span", { className: "msg", id: "control-msg" });
  const buttons = {};
  for (const command of ["pause", "resume", "validate", "save", "stop"]) {
    buttons[command] = el("button", { id: "btn-" + command, "data-command": command,
      onclick: () => sendControl(command) }, command);
  }
  const logy = el("input", { type: "checkbox", id: "logy", onchange: (e) => { state.logy = e.target.checked; redraw(); } });
  const smooth = el("input", { type: "range", id: "smooth", min: 0, max: 0.99, step: 0.01, value: 0,
    oninput: (e) => { state.smooth = Number(e.target.value); smoothLabel.textContent = e.target.value; redraw(); } });
  const smoothLabel = el("span", { className: "num" }, "0");
  const charts = el("div", { className: "charts", id: "charts" });
  const gallery = el("div", { className: "gallery", id: "gallery" });
  const snapshots = el("ul", { className: "snapshots", id: "snapshots" });
  const snapshotView = el("div", { id: "snapshot-view" }, el("p", { className: "msg" }, "Select a snapshot."));
  const config = el("pre", { id: "config" });
  const status = el("pre", { id: "status" });
  const events = el("pre", { id: "events" });

  view.replaceChildren(
    title, meta,
    el("div", { className: "progress" }, statusBox, bar, progressText), notes, viewCommand,
    el("div", { className: "toolbar", style: "margin-top:10px" }, Object.values(buttons), msg),
    el("h2", {}, "Metrics"),
    el("div", { className: "toolbar" }, el("label", {}, logy, " log scale"),
       el("label", {}, "smoothing ", smooth, " ", smoothLabel),
       el("button", { id: "reset-zoom", onclick: () => { state.ranges.clear(); for (const div of state.charts.values()) Plotly.relayout(div, { "xaxis.autorange": true, "yaxis.autorange": true }); } }, "reset zoom"),
       el("span", { className: "msg" }, "drag to zoom: the zoomed range is fetched again at full detail")),
    charts,
    el("h2", {}, "Images"), gallery,
    el("h2", {}, "Statistics snapshots"),
    el("div", { className: "columns" }, snapshots, snapshotView),
    el("div", { className: "columns" },
      el("div", {}, el("h2", {}, "Config"), config),
      el("div", {}, el("h2", {}, "Status"), status)),
    el("h2", {}, "Events"), events);

  async function sendControl(command) {
    if (command === "stop" && !confirm("Stop this run after its current step (with a checkpoint)?")) return;
    const headers = { "Content-Type": "application/json" };
    let tok = token();
    if (state.detail && state.detail.control_needs_token && !tok) {
      tok = prompt("Control token (printed when the dashboard started):") || "";
      if (tok) sessionStorage.setItem("runforge-token", tok);
    }
    if (tok) headers["X-Runforge-Token"] = tok;
    try {
      const result = await api(runApi(key) + "/control/" + command, { method: "POST", headers, body: "{}" });
      msg.className = "msg";
      msg.textContent = `sent ${result.sent} at step ${result.step ?? "?"}`;
    } catch (e) {
      msg.className = "msg error";
      msg.textContent = e.message;
    }
  }

  function redraw() {
    for (const [name, div] of state.charts) if (div._series) drawChart(div, name, [{ name, ...div._series }], chartOptions(name));
  }
  function chartOptions(name) { return { logy: state.logy, smooth: state.smooth, revision: name + state.logy }; }

  function ensureChart(name) {
    let div = state.charts.get(name);
    if (div) return div;
    div = el("div", { className: "chart", "data-metric": name });
    charts.append(div);
    state.charts.set(name, div);
    return div;
  }

  function listenZoom(name, div) {
    if (div._listening || !div.on) return;
    div._listening = true;
    div.on("plotly_relayout", (e) => {
      if (e["xaxis.autorange"]) state.ranges.delete(name);
      else if (e["xaxis.range[0]"] !== undefined) state.ranges.set(name, [e["xaxis.range[0]"], e["xaxis.range[1]"]]);
      else return;
      refreshCharts();
    });
  }

  async function refreshCharts() {
    const points = Math.max(200, Math.min(3000, Math.round((charts.clientWidth || 800) * 1.5)));
    const all = await api(`${runApi(key)}/metrics?points=${points}`);
    const results = Object.entries(all.series);
    for (const [name, [lo, hi]] of state.ranges) {
      const zoomed = await api(`${runApi(key)}/metrics?points=${points}&names=${encodeURIComponent(name)}&xmin=${lo}&xmax=${hi}`);
      if (zoomed.series[name]) results.push([name, zoomed.series[name]]);
    }
    for (const [name, series] of results) {
      if (!series) continue;
      const div = ensureChart(name);
      div._series = series;
      drawChart(div, name, [{ name, ...series }], chartOptions(name));
      listenZoom(name, div);
    }
    return all.warnings || [];
  }

  function renderImages(images) {
    for (const [name, list] of Object.entries(images)) {
      let item = state.images.get(name);
      if (!item) {
        const img = el("img", { alt: name, "data-name": name });
        const slider = el("input", { type: "range", min: 0, value: 0, step: 1, className: "image-slider", "data-name": name });
        const label = el("span", { className: "num" });
        item = { img, slider, label, list: [], atEnd: true };
        slider.addEventListener("input", () => { item.atEnd = Number(slider.value) === item.list.length - 1; show(item); });
        gallery.append(el("figure", { "data-name": name }, img, el("figcaption", {}, name, slider, label)));
        state.images.set(name, item);
      }
      item.list = list;
      item.slider.max = String(list.length - 1);
      if (item.atEnd) item.slider.value = String(list.length - 1);
      show(item);
    }
    if (!Object.keys(images).length) gallery.replaceChildren(el("p", { className: "msg" }, "No images yet."));
  }
  function show(item) {
    const entry = item.list[Number(item.slider.value)] || item.list[item.list.length - 1];
    if (!entry) return;
    const src = fileUrl(key, entry.file);
    if (item.img.getAttribute("src") !== src) item.img.setAttribute("src", src);
    item.label.textContent = `step ${entry.step} (${Number(item.slider.value) + 1}/${item.list.length})`;
  }

  function renderSnapshots(list, groups) {
    const signature = list.map(s => s.step + ":" + s.file).join(",");
    if (signature === state.snapshotSignature) return;  // unchanged: keep the elements a click may be on
    state.snapshotSignature = signature;
    const items = list.slice().reverse().map(s => {
      const li = el("li", { "data-step": s.step, className: state.snapshot === s.step ? "selected" : "" },
        el("button", { className: "view-snapshot", onclick: () => openSnapshot(s.step, groups) }, "view"),
        el("span", { className: "num" }, "step " + s.step),
        el("a", { href: fileUrl(key, s.file) + "?download=1", className: "download", download: "" }, "download JSON"),
        el("span", { className: "msg" }, s.file));
      return li;
    });
    snapshots.replaceChildren(...(items.length ? items : [el("li", { className: "msg" }, "No snapshots yet.")]));
    // follow the newest snapshot unless the user picked an older one
    const newest = list.length ? list[list.length - 1].step : null;
    if (newest !== null && (state.snapshot === null || state.followLatest) && state.snapshot !== newest) openSnapshot(newest, groups);
  }

  async function openSnapshot(step, groups) {
    state.snapshot = step;
    const steps = state.detail ? state.detail.snapshots.map(s => s.step) : [];
    state.followLatest = !steps.length || step === Math.max(...steps);
    for (const li of snapshots.children) li.classList.toggle("selected", Number(li.dataset.step) === step);
    const result = await api(`${runApi(key)}/snapshot/${step}`);
    const data = result.data;
    const rows = [];
    const shown = new Set();
    const valueCell = (v) => v === null || v === undefined ? el("td", { className: "msg" }, "null") : el("td", { className: "num" }, fmt(v));
    for (const [group, fields] of Object.entries(groups)) {
      const present = fields.filter(f => f in data);
      present.forEach(f => shown.add(f));
      if (!present.length) continue;
      if (present.every(f => data[f] === null)) {  // a trainer without this part: one line, not a column of nulls
        rows.push(el("tr", { className: "group" }, el("td", {}, group), el("td", { className: "msg" }, "null (" + present.join(", ") + ")")));
        continue;
      }
      rows.push(el("tr", { className: "group" }, el("td", { colspan: 2 }, group)));
      for (const f of present) rows.push(el("tr", {}, el("td", {}, f), valueCell(data[f])));
    }
    // the groups are the ones the run's run.json declares; fields it writes beyond them come last
    const other = Object.keys(data).filter(f => !shown.has(f));
    if (other.length) {
      rows.push(el("tr", { className: "group" }, el("td", { colspan: 2 }, "other")));
      for (const f of other) rows.push(el("tr", {}, el("td", {}, f), valueCell(data[f])));
    }
    snapshotView.replaceChildren(el("div", { className: "meta" }, `${result.file} (step ${step})`),
      el("table", { id: "snapshot-table" }, el("tbody", {}, rows)));
  }

  poll(async () => {
    const detail = await api(runApi(key));
    state.detail = detail;
    const info = detail.info, st = detail.status || {}, summary = detail.summary || {};
    title.textContent = `${info.name}_${info.id}`;
    document.title = `${info.name} · runforge`;
    meta.textContent = `${info.trainer} · started ${info.created_at || "?"} · ${info.host || ""} · ${summary.dir || ""}`;
    const runStatus = summary.status || info.status;
    statusBox.replaceChildren(statusLabel(runStatus, runStatus === "running" && st.training_paused));
    const step = summary.step ?? st.step_current ?? 0, max = summary.step_max ?? st.step_max;
    bar.max = max || 1; bar.value = max ? step : 0;
    const pieces = [`step ${step}` + (max ? ` / ${max}` : "")];
    if (runStatus === "running" && st.eta_total_formatted) pieces.push("ETA " + st.eta_total_formatted);
    if (st.iteration_duration) pieces.push(fmt(st.iteration_duration) + " s/it");
    if (st.validation_running) pieces.push("validating…");
    progressText.textContent = pieces.join(" · ");
    const lines = (detail.warnings || []).slice();
    if (summary.resume) lines.unshift("the training process is gone; resume with: " + summary.resume);
    notes.replaceChildren(...lines.map(line => el("div", {}, line)));
    viewCommand.hidden = !detail.view_command;
    if (detail.view_command) viewCommand.replaceChildren("3D view: ", el("code", {}, detail.view_command));
    const running = runStatus === "running";
    buttons.pause.disabled = !running || !!st.training_paused;
    buttons.resume.disabled = !running || !st.training_paused;
    for (const c of ["validate", "save", "stop"]) buttons[c].disabled = !running;
    config.textContent = JSON.stringify(detail.config, null, 2);
    status.textContent = JSON.stringify(st, null, 2);
    renderImages(detail.images);
    renderSnapshots(detail.snapshots, detail.snapshot_groups);
    // after the notes were replaced above, so a damaged-log warning shows as long as the log is damaged
    for (const line of await refreshCharts()) notes.append(el("div", {}, line));
    const ev = await api(runApi(key) + "/events?tail=200");
    const atBottom = events.scrollTop + events.clientHeight >= events.scrollHeight - 4;
    events.textContent = ev.lines.join("\n");
    if (atBottom) events.scrollTop = events.scrollHeight;
  });
}

// ------------------------------------------------------------------ compare page

function compareView() {
  const params = new URLSearchParams(location.search);
  const keys = (params.get("runs") || "").split(",").filter(Boolean);
  crumb.replaceChildren(el("a", { href: "/" }, "runs"), " / compare");
  if (keys.length < 1) { view.replaceChildren(el("p", {}, "Select runs in the runs table to compare.")); return; }
  const metric = el("select", { id: "metric" });
  const step = el("select", { id: "step" });
  const logy = el("input", { type: "checkbox", id: "compare-logy" });
  const chart = el("div", { className: "chart", id: "compare-chart", style: "height:380px" });
  const table = el("table", { id: "compare-table" });
  const note = el("div", { className: "meta", id: "compare-source" });
  view.replaceChildren(el("h1", {}, "Compare " + keys.length + " runs"),
    el("div", { className: "meta" }, keys.join(" · ")),
    el("div", { className: "toolbar" }, el("label", {}, "metric ", metric), el("label", {}, logy, " log scale")),
    chart, el("h2", {}, "Snapshots side by side"),
    el("div", { className: "toolbar" }, el("label", {}, "step ", step)), note, table);
  const runsParam = keys.map(encodeURIComponent).join(",");

  async function loadTable() {
    const query = step.value ? `&step=${encodeURIComponent(step.value)}` : "";
    const result = await api(`/api/compare?runs=${runsParam}${query}`);
    if (!metric.options.length) {
      for (const name of result.metrics) metric.append(el("option", { value: name }, name));
      if (result.metrics.includes("loss")) metric.value = "loss";
    }
    if (!step.options.length) {
      step.append(el("option", { value: "" }, "latest common"));
      for (const s of result.common_steps.slice().reverse()) step.append(el("option", { value: s }, s));
    }
    note.textContent = result.source;
    const head = el("tr", {}, el("th", {}, "field"), result.runs.map(r => el("th", {}, r)),
      result.runs.length === 2 ? el("th", {}, "B − A") : null);
    table.replaceChildren(el("thead", {}, head), el("tbody", {}, result.rows.map(row =>
      el("tr", {}, el("td", {}, row.field), row.values.map(v => el("td", { className: "num" }, fmt(v))),
         result.runs.length === 2 ? el("td", { className: "num" }, fmt(row.diff)) : null))));
  }

  async function loadChart() {
    if (!metric.value) return;
    const result = await api(`/api/compare?runs=${runsParam}&metric=${encodeURIComponent(metric.value)}`);
    const traces = Object.entries(result.series).filter(([, s]) => s).map(([k, s]) => ({ name: k, ...s }));
    drawChart(chart, metric.value, traces, { logy: logy.checked, smooth: 0, revision: metric.value + logy.checked });
  }

  metric.addEventListener("change", loadChart);
  logy.addEventListener("change", loadChart);
  step.addEventListener("change", loadTable);
  poll(async () => { await loadTable(); await loadChart(); });
}

// ------------------------------------------------------------------ routing

token();
if (location.pathname.startsWith("/run/")) runView(decodeURIComponent(location.pathname.slice(5)));
else if (location.pathname === "/compare") compareView();
else runsView();
