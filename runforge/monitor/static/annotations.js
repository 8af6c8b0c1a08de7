// runforge dashboard: a run's tags and note on its run page, read from and written to the run's
// annotations.json through /api/run/{key}/annotations.
"use strict";

const NOTE_MAX_BYTES = 4096;  // the server's limit too (runforge/run/annotations.py)

// The editor, placed after `anchor` (an element of the run page): the tags and note as text, and
// an "edit" button that opens a form. Saving sends the control token as a control request does.
function annotationsEditor(key, anchor) {
  let current = { tags: [], note: "" };
  const tags = el("span", { id: "run-tags" });
  const note = el("div", { className: "note-text", id: "run-note" });
  const msg = el("span", { className: "msg", id: "annotations-msg" });
  const tagsInput = el("input", { type: "text", id: "tags-input", placeholder: "tags, separated by spaces or commas" });
  const noteInput = el("textarea", { id: "note-input", rows: 3, placeholder: "a note on this run" });
  const save = el("button", { id: "annotations-save", className: "primary", onclick: () => send() }, "save");
  const cancel = el("button", { id: "annotations-cancel", onclick: () => { form.hidden = true; } }, "cancel");
  const form = el("div", { className: "annotations-form", hidden: true }, tagsInput, noteInput,
    el("div", { className: "toolbar" }, save, cancel));
  const edit = el("button", { id: "annotations-edit", onclick: () => {
    tagsInput.value = current.tags.join(" ");
    noteInput.value = current.note;
    form.hidden = false;
    tagsInput.focus();
  } }, "edit tags & note");
  anchor.after(el("div", { id: "annotations" }, el("div", { className: "toolbar" }, tags, edit, msg), note, form));

  function show(annotations) {
    current = annotations;
    tags.replaceChildren(...(annotations.tags.length ? annotations.tags.map(tag => el("span", { className: "tag" }, tag))
                                                    : [el("span", { className: "msg" }, "no tags")]));
    note.textContent = annotations.note;
  }

  function post(body, tok) {
    const headers = { "Content-Type": "application/json" };
    if (tok) headers["X-Runforge-Token"] = tok;
    return api(runApi(key) + "/annotations", { method: "POST", headers, body });
  }

  async function send() {
    const body = JSON.stringify({ tags: tagsInput.value.split(/[\s,]+/).filter(Boolean), note: noteInput.value });
    if (new TextEncoder().encode(noteInput.value).length > NOTE_MAX_BYTES) {
      msg.className = "msg error";
      msg.textContent = `the note is longer than ${NOTE_MAX_BYTES} bytes`;
      return;
    }
    try {
      let saved;
      try {
        saved = await post(body, token());
      } catch (e) {
        if (e.status !== 403 || !e.message.includes("token")) throw e;
        const tok = prompt("Control token (printed when the dashboard started):") || "";
        if (!tok) throw e;
        sessionStorage.setItem("runforge-token", tok);
        saved = await post(body, tok);
      }
      show(saved);
      form.hidden = true;
      msg.className = "msg";
      msg.textContent = "saved";
    } catch (e) {
      msg.className = "msg error";
      msg.textContent = e.message;
    }
  }

  api(runApi(key) + "/annotations").then(show, e => { msg.className = "msg error"; msg.textContent = e.message; });
}
