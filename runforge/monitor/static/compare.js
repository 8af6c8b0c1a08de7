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
    await drawChart(chart, metric.value, traces, { logy: logy.checked, smooth: 0, revision: metric.value + logy.checked });
  }

  metric.addEventListener("change", loadChart);
  logy.addEventListener("change", loadChart);
  step.addEventListener("change", loadTable);
  poll(async () => { await loadTable(); await loadChart(); });
}
