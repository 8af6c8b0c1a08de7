// runforge dashboard: the run page's images and videos, one series per kind (voxel's cameras and splat's
// validation views are captions of a series, not series of their own), each with a step slider over all
// its steps; a click on an image enlarges it, where the arrow keys still step through training.
"use strict";

const MEDIA_BOX = 384;  // px: the size an image is shown at in the gallery, small ones scaled up whole
const MAX_UPSCALE = 16;

// Sizes `img` (once loaded) to fit a w×h box: small images grow by a whole factor, drawn pixelated.
function fitImage(img, width, height) {
  const w = img.naturalWidth, h = img.naturalHeight;
  if (!w || !h) return;
  const fit = Math.min(width / w, height / h);
  const scale = fit >= 1 ? Math.min(MAX_UPSCALE, Math.floor(fit)) : fit;
  img.style.width = Math.round(w * scale) + "px";
  img.classList.toggle("pixelated", scale > 1);
}

// The labels over an image made of side-by-side panels (sr's LR | SR | HR, splat's ground truth | render).
function panelLabels(panels) {
  return panels ? el("div", { className: "panels" }, panels.map(p => el("span", {}, p))) : null;
}

// Returns { element, render(media) } where media is /api/run/{key}'s list of
// { kind, panels, video, shots: [{ step, view, file }] }.
function mediaPanel(key) {
  const items = new Map();
  const gallery = el("div", { className: "gallery", id: "gallery" });
  const box = lightbox(key);

  function shotElement(item, shot) {
    const src = fileUrl(key, shot.file);
    if (item.video) return el("video", { src, controls: true, preload: "metadata", "data-view": shot.view });
    const img = el("img", { src, alt: [item.kind, shot.view, `step ${shot.step}`].filter(Boolean).join(" "),
      "data-kind": item.kind, title: "click to enlarge" });
    img.addEventListener("load", () => fitImage(img, MEDIA_BOX, MEDIA_BOX));
    img.addEventListener("click", () => box.open(item, shot.view));
    return img;
  }

  function show(item) {
    const step = item.steps[item.index];
    const shots = item.byStep.get(step) || [];
    item.label.textContent = `step ${step} (${item.index + 1}/${item.steps.length})`;
    const signature = shots.map(s => s.file).join("\n");
    if (signature === item.shown) return;  // unchanged: keep the images (and a playing video) as they are
    item.shown = signature;
    item.shotsBox.replaceChildren(...shots.map(shot => el("div", { className: "shot", "data-view": shot.view },
      panelLabels(item.panels), shotElement(item, shot),
      shot.view ? el("div", { className: "view-caption" }, shot.view) : null)));
    box.refresh(item);
  }

  function setIndex(item, index) {
    item.index = Math.max(0, Math.min(item.steps.length - 1, index));
    item.atEnd = item.index === item.steps.length - 1;
    item.slider.value = String(item.index);
    show(item);
  }

  function create(series) {
    const slider = el("input", { type: "range", min: 0, value: 0, step: 1, className: "image-slider",
      "data-kind": series.kind });
    const item = { kind: series.kind, video: series.video, slider, label: el("span", { className: "num" }),
      shotsBox: el("div", { className: "shots" }), index: 0, atEnd: true, shown: null, steps: [], byStep: new Map() };
    item.setIndex = (index) => setIndex(item, index);
    slider.addEventListener("input", () => setIndex(item, Number(slider.value)));
    if (!items.size) gallery.replaceChildren();
    gallery.append(el("figure", { className: "media", "data-kind": series.kind },
      el("div", { className: "media-title" }, series.kind, series.video ? " (video)" : null),
      item.shotsBox, el("figcaption", {}, slider, item.label)));
    items.set(series.kind, item);
    return item;
  }

  function render(media) {
    for (const series of media) {
      const item = items.get(series.kind) || create(series);
      item.panels = series.panels;
      item.byStep = new Map();
      for (const shot of series.shots) {
        if (!item.byStep.has(shot.step)) item.byStep.set(shot.step, []);
        item.byStep.get(shot.step).push(shot);
      }
      item.steps = [...item.byStep.keys()];
      item.slider.max = String(item.steps.length - 1);
      setIndex(item, item.atEnd ? item.steps.length - 1 : item.index);
    }
    if (!media.length) gallery.replaceChildren(el("p", { className: "msg" }, "No images yet."));
  }

  return { element: gallery, render };
}

// The enlarged view of one image of a series: Esc or a click closes it, ←/→ and its slider step the series.
function lightbox(key) {
  const img = el("img", { id: "lightbox-image", alt: "" });
  const caption = el("span", { id: "lightbox-caption", className: "num" });
  const slider = el("input", { type: "range", id: "lightbox-slider", min: 0, step: 1 });
  const bar = el("div", { className: "lightbox-bar" }, caption, slider);
  const labels = el("div", { className: "lightbox-panels" });
  const overlay = el("div", { id: "lightbox", className: "lightbox", hidden: true },
    el("div", { className: "lightbox-stage" }, labels, img), bar);
  let item = null, view = null;
  document.body.append(overlay);

  function draw() {
    const shots = item.byStep.get(item.steps[item.index]) || [];
    const shot = shots.find(s => s.view === view) || shots[0];
    if (!shot) return;
    view = shot.view;
    const src = fileUrl(key, shot.file);
    if (img.getAttribute("src") !== src) img.setAttribute("src", src);
    else fitImage(img, innerWidth * 0.92, innerHeight * 0.8);
    labels.replaceChildren(...(item.panels ? [panelLabels(item.panels)] : []));
    caption.textContent = [item.kind, shot.view, `step ${shot.step} (${item.index + 1}/${item.steps.length})`]
      .filter(Boolean).join(" · ");
    slider.max = String(item.steps.length - 1);
    slider.value = String(item.index);
  }

  function close() {
    overlay.hidden = true;
    item = null;
    removeEventListener("keydown", onKey, true);
  }

  // Captured, and stopped there: the page's own shortcuts must not act on keys meant for the lightbox.
  function onKey(event) {
    const moves = { ArrowLeft: -1, ArrowRight: 1 };
    if (event.key === "Escape") close();
    else if (event.key in moves) item.setIndex(item.index + moves[event.key]);
    else return;
    event.preventDefault();
    event.stopPropagation();
  }

  img.addEventListener("load", () => fitImage(img, innerWidth * 0.92, innerHeight * 0.8));
  overlay.addEventListener("click", close);
  bar.addEventListener("click", event => event.stopPropagation());  // using the slider keeps it open
  slider.addEventListener("input", () => item.setIndex(Number(slider.value)));

  return {
    open(series, shotView) {
      item = series;
      view = shotView;
      overlay.hidden = false;
      addEventListener("keydown", onKey, true);
      draw();
    },
    // the series moved (its slider, a poll that brought a new step): follow it while open
    refresh(series) { if (item === series) draw(); },
  };
}
