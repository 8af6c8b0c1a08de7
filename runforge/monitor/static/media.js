// runforge dashboard: the run page's images, one slider per image name over the steps it was saved at.
"use strict";

// Returns { element, render(images) } where images maps a name to [{ step, file }, ...] in step order.
function mediaPanel(key) {
  const items = new Map();
  const gallery = el("div", { className: "gallery", id: "gallery" });

  function show(item) {
    const entry = item.list[Number(item.slider.value)] || item.list[item.list.length - 1];
    if (!entry) return;
    const src = fileUrl(key, entry.file);
    if (item.img.getAttribute("src") !== src) item.img.setAttribute("src", src);
    item.label.textContent = `step ${entry.step} (${Number(item.slider.value) + 1}/${item.list.length})`;
  }

  function render(images) {
    for (const [name, list] of Object.entries(images)) {
      let item = items.get(name);
      if (!item) {
        const img = el("img", { alt: name, "data-name": name });
        const slider = el("input", { type: "range", min: 0, value: 0, step: 1, className: "image-slider", "data-name": name });
        const label = el("span", { className: "num" });
        item = { img, slider, label, list: [], atEnd: true };
        slider.addEventListener("input", () => { item.atEnd = Number(slider.value) === item.list.length - 1; show(item); });
        if (!items.size) gallery.replaceChildren();
        gallery.append(el("figure", { "data-name": name }, img, el("figcaption", {}, name, slider, label)));
        items.set(name, item);
      }
      item.list = list;
      item.slider.max = String(list.length - 1);
      if (item.atEnd) item.slider.value = String(list.length - 1);
      show(item);
    }
    if (!Object.keys(images).length) gallery.replaceChildren(el("p", { className: "msg" }, "No images yet."));
  }

  return { element: gallery, render };
}
