// runforge dashboard: the runs table, with the config columns the user picks, the filter language
// (`parseFilter`), each run's headline metric, tags and note.
"use strict";

const COLUMNS = [
  ["name", "name", r => r.name],
  ["trainer", "trainer", r => r.trainer],
  ["status", "status", r => r.status],
  ["step", "step/max", r => r.step],
  ["eta", "ETA", r => r.eta],
  ["headline", "metric", r => r.headline ? r.headline.value : null],
  ["tags", "tags · note", r => (r.tags || []).join(" ") || null],
  ["created_at", "started", r => r.created_at],
];
const CONFIG_PREFIX = "config:";
const COLUMNS_STORAGE = "runforge-columns";

// ------------------------------------------------------------------ the filter language

const FILTER_FIELDS = ["name", "id", "trainer", "status", "tag"];
const FILTER_TERM = /^([^=!<>]+)(!=|<=|>=|=|<|>)([^=!<>]+)$/;

function asNumber(value) {
  if (typeof value === "number") return value;
  if (typeof value === "string" && value.trim() !== "" && Number.isFinite(Number(value))) return Number(value);
  return null;
}

// "lr<0.01 trainer=splat status=running" -> { terms, error }. Each whitespace-separated term is
// key=value, key!=value, key<num, key<=num, key>num, key>=num, or a bare word; a key is one of
// FILTER_FIELDS or in `keys` (the config and metric keys of the runs). `error` names the first
// term that cannot be read, and then no term is used.
function parseFilter(text, keys) {
  const terms = [];
  for (const word of String(text).split(/\s+/).filter(Boolean)) {
    if (!/[=<>]/.test(word)) { terms.push({ word: word.toLowerCase() }); continue; }
    const match = FILTER_TERM.exec(word);
    if (!match) {
      return { terms: [], error: `cannot read '${word}': write key=value, key!=value, key<number, key>=number… or a word` };
    }
    const [, key, op, value] = match;
    if (!FILTER_FIELDS.includes(key) && !keys.has(key)) return { terms: [], error: `unknown key '${key}'` };
    const number = asNumber(value);
    if (op !== "=" && op !== "!=" && number === null) return { terms: [], error: `'${word}': ${op} needs a number, not '${value}'` };
    terms.push({ key, op, value: value.toLowerCase(), number });
  }
  return { terms, error: null };
}

// The values a filter key has in a row: a config key's, else a metric's (a run may have none).
function filterValues(row, key) {
  if (key === "tag") return row.tags || [];
  if (key === "status") return row.paused ? [row.status, "paused"] : [row.status];
  if (FILTER_FIELDS.includes(key)) return [row[key]];
  if (row.config && key in row.config) return [row.config[key]];
  if (row.metrics && key in row.metrics) return [row.metrics[key]];
  return [];
}

function termMatches(row, term) {
  if (term.word !== undefined) {
    return [row.name, row.id, row.trainer, row.status, row.key, ...(row.tags || [])]
      .some(v => String(v ?? "").toLowerCase().includes(term.word));
  }
  const values = filterValues(row, term.key).filter(v => v !== null && v !== undefined);
  const equal = values.some(v => (term.number !== null && asNumber(v) !== null) ? asNumber(v) === term.number
                                                                                 : String(v).toLowerCase() === term.value);
  if (term.op === "=") return equal;
  if (term.op === "!=") return !equal;
  const compare = { "<": (a, b) => a < b, "<=": (a, b) => a <= b, ">": (a, b) => a > b, ">=": (a, b) => a >= b }[term.op];
  return values.some(v => asNumber(v) !== null && compare(asNumber(v), term.number));
}

// ------------------------------------------------------------------ cells

function headlineText(h) {
  return h ? `${h.name} ${fmt(h.value)}${h.unit ? " " + h.unit : ""}` : "";
}

function tagsCell(r) {
  const note = r.note || "";
  return el("td", { className: "tags" }, (r.tags || []).map(tag => el("span", { className: "tag" }, tag)),
    note ? el("span", { className: "note", title: note }, note.length > 40 ? note.slice(0, 40) + "…" : note) : null);
}

function storedColumns() {
  try {
    const saved = JSON.parse(localStorage.getItem(COLUMNS_STORAGE) || "[]");
    return Array.isArray(saved) ? saved.filter(k => typeof k === "string") : [];
  } catch (e) {
    return [];  // a hand-edited or foreign value: start without config columns
  }
}

// ------------------------------------------------------------------ the view

function runsView() {
  crumb.textContent = "runs";
  const state = { sort: "created_at", desc: true, filter: "", selected: new Set(), rows: [], columns: storedColumns() };
  const filter = el("input", { type: "search", id: "filter", placeholder: "filter: lr<0.01 trainer=splat tag=baseline, or a word" });
  const filterError = el("div", { className: "msg error", id: "filter-error", hidden: true });
  const compareBtn = el("button", { id: "compare-btn", className: "primary", disabled: true }, "compare selected");
  const hparamsBtn = hparamsButton(state.selected);  // hparams.js
  const count = el("span", { className: "msg", id: "runs-count" });
  const pickerList = el("div", { className: "picker-list" });
  const picker = el("details", { id: "columns-picker" }, el("summary", {}, "columns"), pickerList);
  const head = el("tr");
  const body = el("tbody");
  const roots = el("div", { className: "meta", id: "roots" });
  view.replaceChildren(roots, el("div", { className: "toolbar" }, filter, picker, compareBtn, hparamsBtn, count), filterError,
    el("table", { id: "runs-table" }, el("thead", {}, head), body));
  filter.addEventListener("input", () => { state.filter = filter.value; render(); });
  compareBtn.addEventListener("click", () => {
    location.href = "/compare?runs=" + [...state.selected].map(encodeURIComponent).join(",");
  });

  function columns() {
    const picked = state.columns.map(k => [CONFIG_PREFIX + k, k, r => (r.config || {})[k]]);
    return [...COLUMNS.slice(0, -1), ...picked, COLUMNS[COLUMNS.length - 1]];  // "started" stays last
  }

  function keysOf(part) {
    return new Set(state.rows.flatMap(r => Object.keys(r[part] || {})));
  }

  let pickerShown = "";
  function renderPicker(configKeys) {
    const keys = new Set([...configKeys, ...state.columns]);  // a picked key no run has any more can be unpicked
    const signature = JSON.stringify([...keys]);
    if (signature === pickerShown) return;  // unchanged: keep the boxes a click may be on
    pickerShown = signature;
    pickerList.replaceChildren(...[...keys].sort().map(key => el("label", {},
      el("input", { type: "checkbox", "data-column": key, checked: state.columns.includes(key), onchange: (e) => {
        state.columns = e.target.checked ? [...state.columns, key] : state.columns.filter(k => k !== key);
        localStorage.setItem(COLUMNS_STORAGE, JSON.stringify(state.columns));
        render();
      } }), " " + key)));
    if (!keys.size) pickerList.replaceChildren(el("span", { className: "msg" }, "No run has a config.json."));
  }

  function renderHead(shownColumns) {
    head.replaceChildren(el("th", {}, ""), ...shownColumns.map(([key, label]) =>
      el("th", { className: "sortable", "data-sort": key, onclick: () => {
        state.desc = state.sort === key ? !state.desc : key === "created_at";
        state.sort = key;
        render();
      } }, label)));
    for (const th of head.querySelectorAll("th.sortable")) {
      th.classList.toggle("sorted-asc", th.dataset.sort === state.sort && !state.desc);
      th.classList.toggle("sorted-desc", th.dataset.sort === state.sort && state.desc);
    }
  }

  function renderRow(r, shownColumns) {
    const box = el("input", { type: "checkbox", className: "select", "data-key": r.key, checked: state.selected.has(r.key),
      onchange: (e) => { e.target.checked ? state.selected.add(r.key) : state.selected.delete(r.key); render(); } });
    const step = r.step === null || r.step === undefined ? "" : (r.step_max ? `${r.step}/${r.step_max}` : String(r.step));
    const best = r.best_name ? `${r.best_name}: ${fmt(r.best)}` : null;
    const cells = {
      name: el("td", { className: "name" }, el("a", { className: "run-link", href: runUrl(r.key) }, r.name),
        el("span", { className: "msg" }, " " + (r.id || ""))),
      trainer: el("td", {}, r.trainer),
      status: el("td", {}, statusLabel(r.status, r.paused)),
      step: el("td", { className: "num" }, step),
      eta: el("td", { className: "num" }, r.eta || ""),
      headline: el("td", { className: "num headline", title: best }, headlineText(r.headline)),
      tags: tagsCell(r),
      created_at: el("td", {}, (r.created_at || "").replace("T", " ").replace("Z", "")),
    };
    return el("tr", { "data-key": r.key }, el("td", {}, box), shownColumns.map(([key, , get]) =>
      cells[key] || el("td", { className: "num config", "data-column": key.slice(CONFIG_PREFIX.length) }, fmt(get(r)))));
  }

  let shown = "";
  function render() {
    const signature = JSON.stringify([state.rows, state.sort, state.desc, state.filter, [...state.selected], state.columns]);
    if (signature === shown) return;  // unchanged: keep the rows a click may be on
    shown = signature;
    const configKeys = keysOf("config");
    renderPicker(configKeys);
    const shownColumns = columns();
    if (!shownColumns.some(c => c[0] === state.sort)) state.sort = "created_at";
    renderHead(shownColumns);
    const parsed = parseFilter(state.filter, new Set([...configKeys, ...keysOf("metrics")]));
    // before the first answer no key is known yet: not an error to show
    filterError.hidden = !parsed.error || !state.rows.length;
    filterError.textContent = parsed.error || "";
    const getter = shownColumns.find(c => c[0] === state.sort)[2];
    const rows = parsed.error ? [] : state.rows.filter(r => parsed.terms.every(term => termMatches(r, term)));
    rows.sort((a, b) => {
      const x = getter(a), y = getter(b);
      const missing = (x === null || x === undefined) - (y === null || y === undefined);
      if (missing) return missing;  // empty cells last, whichever the direction
      const order = typeof x === "number" && typeof y === "number" ? x - y : String(x).localeCompare(String(y));
      return state.desc ? -order : order;
    });
    body.replaceChildren(...rows.map(r => renderRow(r, shownColumns)));
    if (!rows.length) body.replaceChildren(el("tr", {}, el("td", { colspan: shownColumns.length + 1, className: "msg" },
      state.rows.length ? "No run matches the filter." : "No runs under these roots yet.")));
    compareBtn.disabled = hparamsBtn.disabled = state.selected.size < 2;
    count.textContent = `${rows.length} of ${state.rows.length} runs`;
  }

  poll(async () => {
    const data = await api("/api/runs");
    roots.textContent = "roots: " + data.roots.join(", ");
    state.rows = data.runs;
    render();
  });
}
