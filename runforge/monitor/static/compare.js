// runforge dashboard: the compare page (one metric overlaid, snapshots side by side).
"use strict";

function compareView() {
  const params = new URLSearchParams(location.search);
  const keys = (params.get("runs") || "").split(",").filter(Boolean);
  crumb.replaceChildren(el("a", { href: "/" }, "runs"), " / compare");
  if (keys.length < 1) { view.replaceChildren(el("p", {}, "Select runs in the runs table to compare.")); return; }
  const metric = el("select", { id: "metric" });
  const step = el("select", { id: "step" });
  const logy = el("input", { type: "checkbox", id: "compare-logy" });
  const chart = el("div", { className: "chart", id: "compare-chart", style: "height:380px" });
  const chartState = { smooth: 0, axis: "step" };
  const chartNote = el("span", { className: "chart-note", id: "compare-note" });
  const table = el("table", { id: "compare-table" });
  const note = el("div", { className: "meta", id: "compare-source" });
  view.replaceChildren(el("h1", {}, "Compare " + keys.length + " runs"),
    el("div", { className: "meta" }, keys.join(" · "), " · ", el("a", { id: "hparams-link", href: hparamsUrl(keys) }, "hparams view")),
    el("div", { className: "toolbar" }, el("label", {}, "metric ", metric),
      el("label", {}, "x axis ", axisPicker("compare-x-axis", (axis) => { chartState.axis = axis; loadChart(); })),
      el("label", {}, logy, " log scale"),
      smoothingSlider("compare-smooth", (weight) => { chartState.smooth = weight; loadChart(); }), chartNote),
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
    const two = result.runs.length === 2;
    const head = el("tr", {}, el("th", {}, "field"), result.runs.map(r => el("th", {}, r)),
      two ? el("th", {}, "B − A") : null);
    // a field no run fills (another trainer's part of the vocabulary) is one line, not a row of empty cells
    const isNull = (row) => row.values.every(v => v === null || v === undefined);
    const nulls = result.rows.filter(isNull).map(row => row.field);
    const rows = result.rows.filter(row => !isNull(row)).map(row =>
      el("tr", {}, el("td", {}, row.field), row.values.map(v => fieldCell(row.field, v)),
         two ? el("td", { className: "num" }, fmt(row.diff)) : null));
    if (nulls.length) rows.push(el("tr", { className: "group", id: "compare-nulls" },
      el("td", { className: "msg", colspan: result.runs.length + (two ? 2 : 1) }, "null in all runs: " + nulls.join(", "))));
    table.replaceChildren(el("thead", {}, head), el("tbody", {}, rows));
  }

  async function loadChart() {
    if (!metric.value) return;
    const axis = chartState.axis;
    const result = await api(`/api/compare?runs=${runsParam}&metric=${encodeURIComponent(metric.value)}&x=${axis}`);
    const traces = Object.entries(result.series).filter(([, s]) => s).map(([k, s]) => ({ name: k, ...s }));
    chartNote.textContent = await drawChart(chart, metric.value, traces,
      { logy: logy.checked, smooth: chartState.smooth, axis, revision: metric.value });
  }

  metric.addEventListener("change", loadChart);
  logy.addEventListener("change", loadChart);
  step.addEventListener("change", loadTable);
  poll(async () => {
    try { await loadTable(); } catch (e) {
      // a run key that is not served (/compare?runs=nope): say which, and stop asking
      if (e.status === 404) view.replaceChildren(el("p", { className: "msg error", id: "compare-error" }, e.message));
      throw Object.assign(e, { final: e.status === 404 });
    }
    await loadChart();
  });
}
