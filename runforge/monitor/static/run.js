// runforge dashboard: the run page (status, controls, charts, images, snapshots, config, events).
"use strict";

function runView(key) {
  const state = { detail: null, snapshot: null };
  const chartPanel = chartsPanel(key);
  const media = mediaPanel(key);
  crumb.replaceChildren(el("a", { href: "/" }, "runs"), " / ", key);
  const title = el("h1", { id: "run-title" }, key);
  const meta = el("div", { className: "meta", id: "run-meta" });
  const bar = el("progress", { id: "progress", max: 1, value: 0 });
  const progressText = el("span", { id: "progress-text", className: "num" });
  const statusBox = el("span", { id: "run-status" });
  const heartbeat = el("span", { id: "last-update", className: "msg" });
  const notes = el("div", { className: "meta", id: "run-notes" });
  // voxel and splat runs: the command that opens their maps / PLYs in 3D (a separate viser server)
  const viewCommand = el("div", { className: "meta", id: "view-command", hidden: true });
  const msg = el("span", { className: "msg", id: "control-msg" });
  const buttons = {};
  for (const command of ["pause", "resume", "validate", "save", "stop"]) {
    buttons[command] = el("button", { id: "btn-" + command, "data-command": command,
      onclick: () => sendControl(command) }, command);
  }
  const snapshots = el("ul", { className: "snapshots", id: "snapshots" });
  const snapshotView = el("div", { id: "snapshot-view" }, el("p", { className: "msg" }, "Select a snapshot."));
  const config = el("pre", { id: "config" });
  const status = el("pre", { id: "status" });
  const events = el("pre", { id: "events" });

  view.replaceChildren(
    title, meta,
    el("div", { className: "progress" }, statusBox, bar, progressText, heartbeat), notes, viewCommand,
    el("div", { className: "toolbar", style: "margin-top:10px" }, Object.values(buttons), msg),
    el("h2", {}, "Metrics"),
    chartPanel.element,
    systemSection(key),  // system.js: CPU, memory and GPU charts from system.jsonl
    el("h2", {}, "Images"), media.element,
    el("h2", {}, "Statistics snapshots"),
    el("div", { className: "columns" }, snapshots, snapshotView),
    el("div", { className: "columns" },
      el("div", {}, el("h2", {}, "Config"), config),
      el("div", {}, el("h2", {}, "Status"), status)),
    el("h2", {}, "Events"), events);
  annotationsEditor(key, meta);  // annotations.js: tags and note under the title

  async function sendControl(command) {
    if (command === "stop" && !confirm("Stop this run after its current step (with a checkpoint)?")) return;
    const headers = writeHeaders(state.detail && state.detail.control_needs_token);
    try {
      const result = await api(runApi(key) + "/control/" + command, { method: "POST", headers, body: "{}" });
      msg.className = "msg";
      msg.textContent = `sent ${result.sent} at step ${result.step ?? "?"}`;
    } catch (e) {
      msg.className = "msg error";
      msg.textContent = e.message;
    }
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
    for (const [group, fields] of Object.entries(groups)) {
      const present = fields.filter(f => f in data);
      present.forEach(f => shown.add(f));
      if (!present.length) continue;
      if (present.every(f => data[f] === null)) {  // a trainer without this part: one line, not a column of nulls
        rows.push(el("tr", { className: "group" }, el("td", {}, group), el("td", { className: "msg" }, "null (" + present.join(", ") + ")")));
        continue;
      }
      rows.push(el("tr", { className: "group" }, el("td", { colspan: 2 }, group)));
      for (const f of present) rows.push(el("tr", {}, el("td", {}, f), fieldCell(f, data[f])));
    }
    // the groups are the ones the run's run.json declares; fields it writes beyond them come last
    const other = Object.keys(data).filter(f => !shown.has(f));
    if (other.length) {
      rows.push(el("tr", { className: "group" }, el("td", { colspan: 2 }, "other")));
      for (const f of other) rows.push(el("tr", {}, el("td", {}, f), fieldCell(f, data[f])));
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
    bar.max = max || 1;
    // a finished run did all its steps, whether its last step number is step_max or step_max − 1 (0-based)
    bar.value = runStatus === "finished" ? bar.max : max ? step : 0;
    const pieces = [`step ${step}` + (max ? ` / ${max}` : "")];
    if (runStatus === "running" && st.eta_total_formatted) pieces.push("ETA " + st.eta_total_formatted);
    if (st.iteration_duration) pieces.push(fmt(st.iteration_duration) + " s/it");
    if (st.validation_running) pieces.push("validating…");
    progressText.textContent = pieces.join(" · ");
    if (isTimestamp("last_update_time", st.last_update_time)) {
      heartbeat.textContent = "last update " + localDateTime(st.last_update_time);
      heartbeat.title = `status.json last_update_time ${st.last_update_time}`;
    }
    const lines = (detail.warnings || []).slice();
    if (summary.resume) lines.unshift("the training process is gone; resume with: " + summary.resume);
    notes.replaceChildren(...lines.map(line => el("div", {}, line)));
    viewCommand.hidden = !detail.view_command;
    // view.js: the command and the button that opens the viewer
    if (detail.view_command) showViewCommand(viewCommand, key, detail.view_command, detail.control_needs_token);
    const running = runStatus === "running";
    buttons.pause.disabled = !running || !!st.training_paused;
    buttons.resume.disabled = !running || !st.training_paused;
    for (const c of ["validate", "save", "stop"]) buttons[c].disabled = !running;
    config.textContent = JSON.stringify(detail.config, null, 2);
    status.textContent = JSON.stringify(st, null, 2);
    media.render(detail.media);
    renderSnapshots(detail.snapshots, detail.snapshot_groups);
    // after the notes were replaced above, so a damaged-log warning shows as long as the log is damaged
    for (const line of await chartPanel.refresh()) notes.append(el("div", {}, line));
    const ev = await api(runApi(key) + "/events?tail=200");
    const atBottom = events.scrollTop + events.clientHeight >= events.scrollHeight - 4;
    events.textContent = ev.lines.join("\n");
    if (atBottom) events.scrollTop = events.scrollHeight;
  });
}
