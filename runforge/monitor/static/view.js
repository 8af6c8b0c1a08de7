// runforge dashboard: the "open 3D view" button of a voxel or splat run's page. The dashboard starts
// (or finds) the run's `runforge view` server through POST /api/run/{key}/view and the viewer opens
// in a new tab; its address is shown as a link as well.
"use strict";

// Fills `box` (the run page's #view-command) with the command, the button, the link and a message;
// called on every refresh, it rebuilds nothing while the command is unchanged (a link stays put).
function showViewCommand(box, key, command, needsToken) {
  if (box.dataset.command === command) return;
  box.dataset.command = command;
  const link = el("a", { id: "view-link", target: "_blank", rel: "noopener", hidden: true });
  const msg = el("span", { className: "msg", id: "view-msg" });
  const button = el("button", { id: "view-open", onclick: () => openViewer() }, "open 3D view");
  box.replaceChildren("3D view: ", el("code", {}, command), " ", button, " ", link, msg);

  async function openViewer() {
    // the tab is opened at the click, as a popup blocker allows; the viewer may take seconds to start
    const tab = window.open("about:blank", "_blank");
    if (tab) tab.opener = null;
    const headers = writeHeaders(needsToken);
    button.disabled = true;
    msg.className = "msg";
    msg.textContent = "starting the viewer…";
    try {
      const { url } = await api(runApi(key) + "/view", { method: "POST", headers, body: "{}" });
      link.href = url;
      link.textContent = url;
      link.hidden = false;
      msg.textContent = "";
      if (tab) tab.location.href = url;
    } catch (e) {
      if (tab) tab.close();
      msg.className = "msg error";
      msg.textContent = e.message;
    } finally {
      button.disabled = false;
    }
  }
}
