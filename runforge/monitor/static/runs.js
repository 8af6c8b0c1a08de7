// runforge dashboard: the runs table.
"use strict";

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
