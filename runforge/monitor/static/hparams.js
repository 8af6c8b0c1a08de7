// runforge dashboard: the hparams page (/hparams?runs=a,b,c), a parallel-coordinates view of the selected
// runs' config values and last metrics, one line per run, coloured by a chosen metric.
"use strict";

function runsQuery(keys) { return keys.map(encodeURIComponent).join(","); }
function hparamsUrl(keys) { return "/hparams?runs=" + runsQuery(keys); }

// The runs table's "hparams" button: opens the page for the runs ticked in `selected` (a Set of keys).
function hparamsButton(selected) {
  return el("button", { id: "hparams-btn", disabled: true, title: "parallel coordinates of the selected runs",
    onclick: () => { location.href = hparamsUrl([...selected]); } }, "hparams");
}

// A value as a category label: strings as they are, anything else (true, [1, 2], null) as JSON.
function categoryOf(value) { return typeof value === "string" ? value : JSON.stringify(value); }
function isNumber(value) { return typeof value === "number" && Number.isFinite(value); }

// One candidate axis per config key and per metric: { id, group, name, label, values (one per run, undefined
// where a run has none), numeric, complete (every run has one), varies }.
function hparamsDimensions(runs) {
  const configKeys = [...new Set(runs.flatMap(r => Object.keys(r.config)))].sort();
  const metricNames = [...new Set(runs.flatMap(r => Object.keys(r.metrics)))].sort();
  const describe = (group, name, label, values) => {
    const present = values.filter(v => v !== undefined);
    return { id: group + ":" + name, group, name, label, values, numeric: present.length > 0 && present.every(isNumber),
      complete: present.length === values.length, varies: new Set(values.map(categoryOf)).size > 1 };
  };
  const clash = new Set(configKeys);
  return [
    ...configKeys.map(k => describe("config", k, k, runs.map(r => r.config[k]))),
    ...metricNames.map(m => describe("metrics", m, clash.has(m) ? m + " (metric)" : m, runs.map(r => r.metrics[m]))),
  ];
}

// What is shown before the user picks: the config keys that vary, the runs' headline metrics and the
// losses every run logged (at most six metrics).
function defaultDimensions(dims, runs) {
  const headlines = new Set(runs.map(r => r.headline && r.headline.name).filter(Boolean));
  const config = dims.filter(d => d.group === "config" && d.varies);
  const metrics = dims.filter(d => d.group === "metrics" && d.complete &&
    (headlines.has(d.name) || /(^|[._])loss/.test(d.name)));
  metrics.sort((a, b) => headlines.has(b.name) - headlines.has(a.name));
  return new Set([...config, ...metrics.slice(0, 6)].map(d => d.id));
}

function parcoordsDimension(dim) {
  if (dim.numeric) return { label: plotText(dim.label), values: dim.values.map(v => isNumber(v) ? v : NaN) };
  const labels = dim.values.map(v => v === undefined ? "(none)" : categoryOf(v));
  const categories = [...new Set(labels)].sort();
  return { label: plotText(dim.label), values: labels.map(label => categories.indexOf(label)),
    tickvals: categories.map((_, i) => i), ticktext: categories.map(plotText),
    range: categories.length > 1 ? [0, categories.length - 1] : [-1, 1] };
}

function hparamsView() {
  const keys = (new URLSearchParams(location.search).get("runs") || "").split(",").filter(Boolean);
  crumb.replaceChildren(el("a", { href: "/" }, "runs"), " / hparams");
  if (!keys.length) { view.replaceChildren(el("p", {}, "Select runs in the runs table and press hparams.")); return; }
  const chart = el("div", { className: "chart", id: "hparams-chart", style: "height:460px" });
  const colorBy = el("select", { id: "hparams-color" });
  const picker = el("div", { className: "picker-list", id: "hparams-dims" });
  const table = el("table", { id: "hparams-table" });
  view.replaceChildren(el("h1", {}, `Hyperparameters of ${keys.length} runs`),
    el("div", { className: "meta" }, keys.join(" · "), " · ",
      el("a", { href: "/compare?runs=" + runsQuery(keys) }, "compare")),
    el("div", { className: "toolbar" }, el("label", {}, "colour by ", colorBy),
      el("details", { id: "hparams-picker" }, el("summary", {}, "axes"), picker)),
    chart, el("h2", {}, "Runs"), table);

  api("/api/hparams?runs=" + runsQuery(keys)).then(data => {
    const runs = data.runs;
    const dims = hparamsDimensions(runs);
    const shown = defaultDimensions(dims, runs);
    const metrics = dims.filter(d => d.group === "metrics" && d.numeric);
    for (const d of metrics) colorBy.append(el("option", { value: d.id }, d.label));
    const headline = metrics.find(d => runs.some(r => r.headline && r.headline.name === d.name));
    if (headline) colorBy.value = headline.id;
    for (const group of ["config", "metrics"]) {
      picker.append(el("div", { className: "msg" }, group));
      for (const d of dims.filter(x => x.group === group)) {
        picker.append(el("label", {}, el("input", { type: "checkbox", "data-dim": d.id, checked: shown.has(d.id),
          onchange: (e) => { e.target.checked ? shown.add(d.id) : shown.delete(d.id); draw(); } }), " " + d.label));
      }
    }
    colorBy.addEventListener("change", draw);

    async function draw() {
      const picked = dims.filter(d => shown.has(d.id));
      const color = dims.find(d => d.id === colorBy.value);
      const line = !color ? {} : { color: color.values.map(v => isNumber(v) ? v : NaN), colorscale: "Viridis",
        showscale: true, colorbar: { title: { text: plotText(color.label) } } };
      const Plotly = await loadPlotly();
      await Plotly.react(chart, [{ type: "parcoords", line, dimensions: picked.map(parcoordsDimension) }],
        themed({ margin: { l: 70, r: 70, t: 60, b: 30 } }), { responsive: true, displaylogo: false });
      table.replaceChildren(el("thead", {}, el("tr", {}, el("th", {}, "run"), picked.map(d => el("th", {}, d.label)))),
        el("tbody", {}, runs.map((r, i) => el("tr", { "data-key": r.key },
          el("td", {}, el("a", { href: runUrl(r.key) }, r.name)),
          picked.map(d => el("td", { className: "num" }, fmt(d.values[i])))))));
    }
    return draw();
  }).catch(e => view.replaceChildren(el("p", { className: "msg error", id: "hparams-error" }, e.message)));
}
