// runforge dashboard: metric charts (plotly), and the run page's chart panel with its zoom refetch.
"use strict";

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

async function drawChart(div, title, traces, options) {
  const Plotly = await loadPlotly();
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
  await Plotly.react(div, data, layout, { responsive: true, displaylogo: false });
}

// The run page's metrics: one chart per logged key, redrawn on each poll; a zoomed chart fetches its
// x range again at full detail. Returns { element, refresh() -> warnings of the metrics API }.
function chartsPanel(key) {
  const state = { charts: new Map(), ranges: new Map(), logy: false, smooth: 0 };
  const logy = el("input", { type: "checkbox", id: "logy", onchange: (e) => { state.logy = e.target.checked; redraw(); } });
  const smoothLabel = el("span", { className: "num" }, "0");
  const smooth = el("input", { type: "range", id: "smooth", min: 0, max: 0.99, step: 0.01, value: 0,
    oninput: (e) => { state.smooth = Number(e.target.value); smoothLabel.textContent = e.target.value; redraw(); } });
  const charts = el("div", { className: "charts", id: "charts" });
  const resetZoom = async () => {
    const Plotly = await loadPlotly();
    state.ranges.clear();
    for (const div of state.charts.values()) Plotly.relayout(div, { "xaxis.autorange": true, "yaxis.autorange": true });
  };
  const element = el("div", {},
    el("div", { className: "toolbar" }, el("label", {}, logy, " log scale"),
       el("label", {}, "smoothing ", smooth, " ", smoothLabel),
       el("button", { id: "reset-zoom", onclick: resetZoom }, "reset zoom"),
       el("span", { className: "msg" }, "drag to zoom: the zoomed range is fetched again at full detail")),
    charts);

  function chartOptions(name) { return { logy: state.logy, smooth: state.smooth, revision: name + state.logy }; }
  function redraw() {
    for (const [name, div] of state.charts) if (div._series) drawChart(div, name, [{ name, ...div._series }], chartOptions(name));
  }

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
      refresh();
    });
  }

  async function refresh() {
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
      await drawChart(div, name, [{ name, ...series }], chartOptions(name));
      listenZoom(name, div);
    }
    return all.warnings || [];
  }

  return { element, refresh };
}
