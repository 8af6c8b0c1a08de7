// runforge dashboard: the run page's System section, charts of what the run layer samples into system.jsonl
// (every 10 s by default) over the run's training time: CPU %, RSS, RAM %, GPU memory and utilisation.
"use strict";

const SYSTEM_POLL_MS = 5000;
const SYSTEM_CHARTS = [
  // [chart id, title, [[series name, trace name, scale], ...]]
  ["cpu", "CPU % (100 = one core)", [["cpu_percent", "cpu %", 1]]],
  ["rss", "process memory, RSS (GiB)", [["rss_bytes", "rss GiB", 1 / 2 ** 30]]],
  ["ram", "machine RAM used %", [["ram_percent", "ram %", 1]]],
  ["gpu-mem", "GPU memory (GiB)", [["gpu_mem_allocated_gb", "allocated", 1], ["gpu_mem_reserved_gb", "reserved", 1]]],
  ["gpu-util", "GPU utilisation %", [["gpu_util_percent", "gpu %", 1]]],
];

// The section element; it fetches /api/run/{key}/system itself and redraws when a sample was added.
function systemSection(key) {
  const charts = el("div", { className: "charts", id: "system-charts" });
  const note = el("p", { className: "msg", id: "system-note" });
  const drawn = new Map();
  let samples = -1;

  async function refresh() {
    const data = await api(`${runApi(key)}/system?points=1500`);
    if (data.samples === samples) return;
    samples = data.samples;
    note.textContent = samples ? `${samples} samples of system.jsonl` : "No system samples (system.jsonl) yet.";
    for (const [id, title, parts] of SYSTEM_CHARTS) {
      const traces = parts.filter(([name]) => data.series[name])
        .map(([name, label, scale]) => ({ name: label, x: data.time,
          y: data.series[name].map(v => v === null ? null : v * scale) }));
      if (!traces.length) continue;
      let div = drawn.get(id);
      if (!div) {
        div = el("div", { className: "chart", "data-system": id });
        charts.append(div);
        drawn.set(id, div);
      }
      await drawChart(div, title, traces, { axis: "time", logy: false, smooth: 0, revision: "system-" + id });
    }
  }

  const tick = () => refresh().catch(e => { note.textContent = "system samples: " + e.message; });
  tick();
  setInterval(tick, SYSTEM_POLL_MS);
  return el("section", { id: "system" }, el("h2", {}, "System"), note, charts);
}
