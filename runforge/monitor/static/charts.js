// runforge dashboard: metric charts (plotly). `drawChart` draws traces into a plotly div; `metricChart` is one
// chart card (its own log-scale toggle, its note, a CSV link) for any page to reuse; `chartsPanel` is the run
// page's Metrics section (sections by key prefix, search, x axis, smoothing, zoom refetch).
// Every chart drawn here shows its hover on the page's other charts at the same x (a synced crosshair).
"use strict";

const X_AXES = { step: "step", time: "training time (s)", wall: "wall clock" };
const TRACE_COLORS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
                      "#bcbd22", "#17becf"];  // plotly's own, given explicitly: a smoothed line keeps its raw line's

// The finite values of a trace's y (a gap is null).
function finite(ys) { return ys.filter(Number.isFinite); }

// Debiased EMA (TensorBoard's smoothing): the first points are not pulled towards 0 and the EMA of a constant
// is that constant. Clamped to the data's range, which it holds in exact arithmetic: rounding must not draw
// a bump on a flat line. A gap stays a gap.
function ema(ys, weight) {
  if (!weight || !ys.length) return ys;
  const values = finite(ys);
  const lo = Math.min(...values), hi = Math.max(...values);
  const out = [];
  let last = 0, debias = 0;
  for (const y of ys) {
    if (!Number.isFinite(y)) { out.push(null); continue; }
    last = last * weight + (1 - weight) * y;
    debias = debias * weight + (1 - weight);
    out.push(Math.min(hi, Math.max(lo, last / debias)));
  }
  return out;
}

function pad2(n, width) { return String(n).padStart(width || 2, "0"); }

// Wall-clock x values come as seconds since the epoch; plotly shows date strings as given: local time.
function localTime(seconds) {
  const d = new Date(seconds * 1000);
  return `${d.getFullYear()}-${pad2(d.getMonth() + 1)}-${pad2(d.getDate())} ` +
    `${pad2(d.getHours())}:${pad2(d.getMinutes())}:${pad2(d.getSeconds())}.${pad2(d.getMilliseconds(), 3)}`;
}

// An x of a chart over `axis` (a relayout range end) as the metrics API takes it (seconds for a wall clock).
function apiX(axis, value) {
  if (axis !== "wall") return Number(value);
  const [date, time] = String(value).split(" ");
  return new Date(`${date}T${(time || "00:00:00").replace(/(\.\d{3})\d+$/, "$1")}`).getTime() / 1000;
}

// Why `traces` cannot be drawn on a log axis ("" when they can).
function logScaleProblem(traces) {
  let bad = 0, total = 0;
  for (const t of traces) for (const y of finite(t.y)) { total++; if (!(y > 0)) bad++; }
  return bad ? `log scale needs positive values: ${bad} of ${total} points ≤ 0` : "";
}

// A y range around a constant series (plotly would draw it on a -1..1 axis); undefined otherwise.
function flatRange(traces, log) {
  const ys = traces.flatMap(t => finite(t.y));
  if (!ys.length) return undefined;
  const lo = Math.min(...ys), hi = Math.max(...ys);
  if (hi - lo > Math.abs(hi) * 1e-9) return undefined;
  const pad = lo !== 0 ? Math.abs(lo) * 0.05 : 1;
  return log ? [Math.log10(lo - pad), Math.log10(hi + pad)] : [lo - pad, hi + pad];
}

// The synced crosshair: a hover on one chart is shown at the same x on every other chart of the page over the
// same x axis (`div._xAxis`, set by drawChart).
const hoverGroup = new Set();
let hoverSyncing = false;  // a hover we pass on emits plotly_hover there too: not passed on again
function syncHover(Plotly, div) {
  if (div._hoverSynced) return;
  div._hoverSynced = true;
  hoverGroup.add(div);
  const pass = (show) => {
    if (hoverSyncing) return;
    hoverSyncing = true;
    try {
      for (const other of hoverGroup) {
        if (!other.isConnected) hoverGroup.delete(other);
        else if (other !== div && other._xAxis === div._xAxis && other.offsetParent !== null) show(other);
      }
    } finally { hoverSyncing = false; }
  };
  div.on("plotly_hover", (e) => {
    // the hovered point's x, as the number Fx.hover takes (a date axis reports a date string)
    const x = e.points && e.points.length ? e.points[0].x : e.xvals && e.xvals[0];
    const xval = e.xaxes && e.xaxes[0] ? e.xaxes[0].d2c(x) : x;
    if (xval !== undefined) pass((other) => Plotly.Fx.hover(other, { xval }));
  });
  div.on("plotly_unhover", () => pass((other) => Plotly.Fx.unhover(other)));
}

// Draws `traces` ([{name, x, y}]) into the plotly div `div`. options: smooth (EMA weight, 0 for none), logy,
// axis ("step", "time" or "wall"; x as the metrics API gives it), revision (a new one resets the zoom).
// Returns the note to show beside the chart: why a log scale fell back to linear, or "".
async function drawChart(div, title, traces, options) {
  const Plotly = await loadPlotly();
  const axis = options.axis || "step";
  const note = options.logy ? logScaleProblem(traces) : "";
  const logy = options.logy && !note;
  const smoothed = options.smooth > 0;
  const data = [];
  traces.forEach((t, i) => {
    const x = axis === "wall" ? t.x.map(localTime) : t.x;
    const color = TRACE_COLORS[i % TRACE_COLORS.length];
    data.push({ x, y: t.y, name: plotText(t.name), type: "scatter", mode: t.x.length < 3 ? "markers" : "lines",
      line: { width: smoothed ? 1 : 1.6, color }, marker: { color }, opacity: smoothed ? 0.3 : 1,
      legendgroup: String(i), showlegend: !smoothed });
    if (smoothed) data.push({ x, y: ema(t.y, options.smooth), name: plotText(t.name), type: "scatter",
      mode: "lines", line: { width: 1.8, color }, legendgroup: String(i) });
  });
  const flat = flatRange(traces, logy);
  const layout = {
    title: { text: plotText(title), font: { size: 13 }, x: 0.01, xanchor: "left" },
    margin: { l: 50, r: 10, t: 30, b: 35 },
    xaxis: { title: { text: X_AXES[axis] }, type: axis === "wall" ? "date" : "linear", automargin: true,
             showspikes: true, spikemode: "across", spikethickness: 1 },
    yaxis: { type: logy ? "log" : "linear", automargin: true, exponentformat: "e",
             ...(flat ? { range: flat, autorange: false } : { autorange: true }) },
    hovermode: "x", showlegend: traces.length > 1, legend: { orientation: "h" },
    uirevision: `${options.revision}|${axis}|${logy}`,
  };
  await Plotly.react(div, data, themed(layout), { responsive: true, displaylogo: false });
  div._xAxis = axis;
  div._yReset = flat ? { "yaxis.range": flat } : { "yaxis.autorange": true };
  syncHover(Plotly, div);
  return note;
}

// One chart card in `box` (filled on the first call, then redrawn): the plotly div (`.chart`, data-metric),
// a "log" toggle of its own (options.logy is the default until it is used), the note of `drawChart`, and a
// CSV link when options.csv is a URL. Redraws only when the traces or options changed. Returns the plotly div.
async function metricChart(box, name, traces, options) {
  if (!box._chart) {
    box._chart = el("div", { className: "chart", "data-metric": name });
    box._log = el("input", { type: "checkbox", className: "chart-log",
      onchange: () => { box._logy = box._log.checked; metricChart(box, name, box._traces, box._options); } });
    box._note = el("span", { className: "chart-note" });
    box.classList.add("chart-card");
    box.setAttribute("data-metric", name);
    box.replaceChildren(box._chart, el("div", { className: "chart-tools" },
      el("label", { title: "log scale for this chart" }, box._log, " log"),
      options.csv ? el("a", { href: options.csv, download: "", className: "chart-csv" }, "CSV") : null, box._note));
  }
  const logy = box._logy ?? !!options.logy;
  box._log.checked = logy;
  box._traces = traces;
  box._options = options;
  const drawn = JSON.stringify([traces.map(t => [t.name, t.x.length, t.x[0], t.x[t.x.length - 1], t.y[t.y.length - 1]]),
                                options.smooth, options.axis, options.revision, logy]);
  if (box._drawn !== drawn) {
    box._drawn = drawn;
    box._note.textContent = await drawChart(box._chart, name, traces, { ...options, logy });
  }
  return box._chart;
}

// The x-axis picker and the smoothing slider, shared by the run and compare pages.
function axisPicker(id, onChange) {
  return el("select", { id, onchange: (e) => onChange(e.target.value) },
    Object.entries(X_AXES).map(([value, label]) => el("option", { value }, label)));
}

function smoothingSlider(id, onChange) {
  const label = el("span", { className: "num" }, "0");
  const slider = el("input", { type: "range", id, min: 0, max: 0.99, step: 0.01, value: 0,
    oninput: (e) => { label.textContent = e.target.value; onChange(Number(e.target.value)); } });
  return el("label", {}, "smoothing ", slider, " ", label);
}

// A chart's section: the part of its key before the first '.' or '/' ("main" for a key without one).
function sectionOf(name) {
  const cut = name.search(/[./]/);
  return cut > 0 ? name.slice(0, cut) : "main";
}

// Sections in the order a user looks at them: the loss, then losses, then validation and quality
// metrics, then the rest (by name within each rank); in a section the loss first, then by name.
function sectionRank(section, names) {
  if (names.includes("loss")) return 0;
  if (names.some(n => n.includes("loss"))) return 1;
  if (/^(val|valid|validation|eval|test)$/.test(section) || names.some(n => /psnr|ssim|lpips|acc/.test(n))) return 2;
  return 3;
}

function keyRank(name) { return name === "loss" ? 0 : name.includes("loss") ? 1 : 2; }

function chartSections(names) {
  const sections = new Map();
  for (const name of names) {
    const section = sectionOf(name);
    if (!sections.has(section)) sections.set(section, []);
    sections.get(section).push(name);
  }
  const byName = (a, b) => (a < b ? -1 : a > b ? 1 : 0);
  return [...sections.entries()]
    .map(([section, keys]) => [section, keys.sort((a, b) => keyRank(a) - keyRank(b) || byName(a, b))])
    .sort(([a, ka], [b, kb]) => sectionRank(a, ka) - sectionRank(b, kb) || byName(a, b));
}

// The run page's metrics: one chart per logged key in collapsible sections, redrawn on each poll; a zoomed
// chart fetches its x range again at full detail. Returns { element, refresh() -> warnings of the metrics API }.
function chartsPanel(key) {
  const state = { boxes: new Map(), sections: new Map(), ranges: new Map(), logy: false, smooth: 0, axis: "step",
                  order: "", search: "" };
  const logy = el("input", { type: "checkbox", id: "logy", onchange: (e) => {
    state.logy = e.target.checked;
    for (const box of state.boxes.values()) box._logy = undefined;  // the global switch sets every chart
    redraw();
  } });
  const search = el("input", { type: "search", id: "metric-search", placeholder: "search metrics",
    oninput: (e) => { state.search = e.target.value.trim().toLowerCase(); applySearch(); } });
  const charts = el("div", { id: "charts" });
  const resetZoom = async () => {
    const Plotly = await loadPlotly();
    state.ranges.clear();
    for (const { _chart: div } of state.boxes.values()) {
      if (div && div._yReset) Plotly.relayout(div, { "xaxis.autorange": true, ...div._yReset });
    }
  };
  const element = el("div", {},
    el("div", { className: "toolbar" }, search,
       el("label", {}, "x axis ", axisPicker("x-axis", (axis) => {
         state.axis = axis;
         state.ranges.clear();
         refresh();
       })),
       el("label", {}, logy, " log scale"),
       smoothingSlider("smooth", (weight) => { state.smooth = weight; redraw(); }),
       el("button", { id: "reset-zoom", onclick: resetZoom }, "reset zoom"),
       el("a", { id: "metrics-csv", href: `${runApi(key)}/metrics.csv`, download: "" }, "download CSV"),
       el("span", { className: "msg" }, "drag to zoom: the zoomed range is fetched again at full detail")),
    charts);

  function chartOptions(name) {
    return { logy: state.logy, smooth: state.smooth, axis: state.axis, revision: name,
             csv: `${runApi(key)}/metrics.csv?names=${encodeURIComponent(name)}` };
  }
  function draw(name, box) { return metricChart(box, name, [{ name, ...box._series }], chartOptions(name)); }
  function redraw() { for (const [name, box] of state.boxes) if (box._series) draw(name, box); }

  function section(name) {
    let found = state.sections.get(name);
    if (!found) {
      const grid = el("div", { className: "charts" });
      const fit = async () => {  // charts drawn while folded have no width yet
        if (!details.open) return;
        const Plotly = await loadPlotly();
        for (const div of grid.querySelectorAll(".js-plotly-plot")) Plotly.Plots.resize(div);
      };
      const details = el("details", { className: "chart-section", "data-section": name, open: true, ontoggle: fit },
        el("summary", {}, name), grid);
      found = { details, grid };
      state.sections.set(name, found);
    }
    return found;
  }

  // Sections and their charts in `chartSections` order; done again only when the logged keys change.
  function arrange(names) {
    const order = names.join("\n");
    if (order === state.order) return;
    state.order = order;
    const placed = chartSections(names).map(([name, keys]) => {
      const { details, grid } = section(name);
      details.querySelector("summary").textContent = `${name} (${keys.length})`;
      grid.replaceChildren(...keys.map(k => {
        if (!state.boxes.has(k)) state.boxes.set(k, el("div", {}));
        return state.boxes.get(k);
      }));
      return details;
    });
    charts.replaceChildren(...placed);
    applySearch();
  }

  async function applySearch() {
    const shown = [];
    for (const [name, box] of state.boxes) {
      const hidden = !!state.search && !name.toLowerCase().includes(state.search);
      if (box.hidden && !hidden && box._chart) shown.push(box._chart);
      box.hidden = hidden;
    }
    for (const { details, grid } of state.sections.values())
      details.hidden = ![...grid.children].some(box => !box.hidden);
    if (shown.length) {  // drawn while hidden, or the window changed meanwhile: fit them to their cards again
      const Plotly = await loadPlotly();
      for (const div of shown) Plotly.Plots.resize(div);
    }
  }

  function listenZoom(name, div) {
    if (div._listening || !div.on) return;
    div._listening = true;
    div.on("plotly_relayout", (e) => {
      if (e["xaxis.autorange"]) state.ranges.delete(name);
      else if (e["xaxis.range[0]"] !== undefined) state.ranges.set(name, [e["xaxis.range[0]"], e["xaxis.range[1]"]]);
      else return;
      refresh();
    });
  }

  async function refresh() {
    const points = Math.max(200, Math.min(3000, Math.round((charts.clientWidth || 800) * 1.5)));
    const axis = state.axis;
    const query = `${runApi(key)}/metrics?points=${points}&x=${axis}`;
    const all = await api(query);
    if (axis !== state.axis) return all.warnings || [];  // switched meanwhile: the refresh it started draws
    arrange(all.names);
    const results = Object.entries(all.series).filter(([name]) => !state.ranges.has(name));
    for (const [name, [lo, hi]] of state.ranges) {
      const range = `&xmin=${apiX(axis, lo)}&xmax=${apiX(axis, hi)}`;
      const zoomed = await api(`${query}&names=${encodeURIComponent(name)}${range}`);
      if (zoomed.series[name]) results.push([name, zoomed.series[name]]);
    }
    for (const [name, series] of results) {
      const box = state.boxes.get(name);
      if (!series || !box) continue;
      box._series = series;
      listenZoom(name, await draw(name, box));
    }
    return all.warnings || [];
  }

  return { element, refresh };
}
