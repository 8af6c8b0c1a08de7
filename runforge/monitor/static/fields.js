// runforge dashboard: how a snapshot or status field's value is shown (run page and compare page tables).
"use strict";

// Epoch seconds between 2001 and 2286: a `*_time` field outside that range is a duration (splat's
// ellipse_time), not a moment.
const EPOCH_RANGE = [1e9, 1e10];

function isTimestamp(name, value) {
  return typeof value === "number" && /(_time|_at|_timestamp)$/.test(name)
    && value >= EPOCH_RANGE[0] && value < EPOCH_RANGE[1];
}

// "2026-12-06 14:30:01" in the browser's time zone.
function localDateTime(seconds) {
  const d = new Date(seconds * 1000);
  const two = (n) => String(n).padStart(2, "0");
  return `${d.getFullYear()}-${two(d.getMonth() + 1)}-${two(d.getDate())} `
    + `${two(d.getHours())}:${two(d.getMinutes())}:${two(d.getSeconds())}`;
}

// A table cell for field `name`'s value: null greyed, a timestamp as a local date-time (the raw
// seconds in its tooltip), anything else as `fmt` writes it.
function fieldCell(name, value) {
  if (value === null || value === undefined) return el("td", { className: "msg" }, "null");
  if (isTimestamp(name, value)) {
    return el("td", { className: "num timestamp", title: String(value), "data-raw": value }, localDateTime(value));
  }
  return el("td", { className: "num" }, fmt(value));
}
