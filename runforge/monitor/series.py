"""A run's train.jsonl as columns in memory, extended as the file grows, and downsampled for charts.

Parsing JSON is the slow part (seconds for a million lines on this machine), so a
file is parsed once and afterwards only the bytes appended since are read. A file
that shrank or was replaced (a resume drops the lines after its checkpoint) is
read again from the start. The first read takes what the run's train.index holds
(columns the run's writer keeps beside the log) and parses only the lines it does
not cover: a million points come from one read of float64 arrays instead.

A chart's x axis is the step, the training time (the lines' `time` less the first:
the run's own clock, which goes on from the last kept line after a resume and counts
paused time, as train.jsonl does not say when a run was paused) or the wall clock
(run.json's `created_at` and each resume's `at`, plus the time since).
"""

from __future__ import annotations

import math
import mmap
import os
import threading
from datetime import datetime
from pathlib import Path
from stat import S_ISREG
from typing import Any

import numpy as np

from ..run.metrics import (DAMAGE_NAMED, NOT_CHARTED, PARSE_CHUNK_BYTES, TIME_COLUMN, Columns, Damage, damage_message,
                           parse_lines, pieces, scan_index)

__all__ = ["AXES", "NOT_CHARTED", "MetricStore", "downsample", "stretch_starts"]

AXES = ("step", "time", "wall")
"""A chart's x: the step, seconds of training (from train.jsonl's `time`), the wall clock (seconds since the epoch)."""


def _epoch(stamp: Any) -> float | None:
    """Seconds since the epoch of a run file's UTC time (`2026-11-22T02:44:32Z`); None for anything else."""
    if not isinstance(stamp, str):
        return None
    try:
        return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def stretch_starts(info: dict[str, Any]) -> list[tuple[float, float]]:
    """(last step before it, wall time it began) of each stretch a run trained: its start, then each resume
    run.json records. Empty when run.json gives no start time."""
    created = _epoch(info.get("created_at"))
    if created is None:
        return []
    starts = [(-math.inf, created)]
    resumes = info.get("resumes")
    for resume in resumes if isinstance(resumes, list) else []:
        at = _epoch(resume.get("at")) if isinstance(resume, dict) else None
        step = resume.get("step") if isinstance(resume, dict) else None
        if at is not None and isinstance(step, (int, float)) and not isinstance(step, bool):
            starts.append((float(step), at))
    return starts


def downsample(x: np.ndarray, y: np.ndarray, max_points: int) -> tuple[np.ndarray, np.ndarray]:
    """At most `max_points` (+2) points that keep each bucket's minimum and maximum, in x order.

    Buckets hold consecutive points, so a single spike among a million points is
    still drawn, as are the first and last point. Non-finite values are dropped.
    """
    finite = np.isfinite(y)
    if not finite.all():
        x, y = x[finite], y[finite]
    n = len(y)
    if n <= max_points:
        return x, y
    size = math.ceil(n / max(1, max_points // 2))
    buckets = math.ceil(n / size)
    padded = np.empty(buckets * size, dtype=y.dtype)
    padded[:n] = y
    padded[n:] = y[-1]  # the last bucket is padded with a value it already holds
    rows = padded.reshape(buckets, size)
    base = np.arange(buckets) * size
    low = base + rows.argmin(axis=1)
    high = base + rows.argmax(axis=1)
    keep = np.concatenate(([0, n - 1], np.minimum(low, n - 1), np.minimum(high, n - 1)))
    keep = np.unique(keep)
    return x[keep], y[keep]


class MetricStore:
    """The numeric columns of one train.jsonl: name -> (steps, values); nested names joined by '.'.
    `path` None (a log the dashboard may not read) and anything but a regular file hold no columns.

    `index` is the run's train.index (None when there is none the dashboard may read): the first
    read takes the columns it holds for the start of train.jsonl and parses only the lines after.
    """

    def __init__(self, path: Path | None, index: Path | None = None) -> None:
        self.path = path
        self.index = index
        self._lock = threading.Lock()
        self._reset()

    def _reset(self) -> None:
        self._identity: tuple[int, int] | None = None
        self._offset = 0
        self._indexed = 0  # lines with an integer step taken from the index
        self._indexed_step: int | None = None
        self._line_number = 0  # newline-terminated lines read, damaged and blank ones included
        self._damaged: list[Damage] = []  # the first few, to name them
        self._damaged_total = 0
        self._base: dict[str, tuple[np.ndarray, np.ndarray]] = {}  # from the index
        self._tail = Columns()  # parsed from train.jsonl
        self._arrays: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        self._time_lookup: tuple[Any, tuple[np.ndarray, np.ndarray]] | None = None  # (version, steps and times)

    @property
    def lines(self) -> int:
        return self._indexed + self._tail.records

    @property
    def version(self) -> tuple[Any, ...]:
        """Changes whenever the columns do (new lines read, or the file replaced)."""
        return (self._identity, self._offset)

    @property
    def last_step(self) -> int | None:
        return self._tail.last_step if self._tail.last_step is not None else self._indexed_step

    @property
    def warnings(self) -> list[str]:
        """One line naming the damaged lines left out of the columns, if there are any."""
        if not self._damaged_total:
            return []
        return [damage_message(self.path.name if self.path else "", self._damaged, self._damaged_total)]

    def refresh(self) -> None:
        """Read what was appended since the last call (or everything, if the file was replaced)."""
        with self._lock:
            path = self.path
            try:
                stat = os.stat(path) if path is not None else None
            except OSError:
                stat = None
            if path is None or stat is None or not S_ISREG(stat.st_mode):  # opening a FIFO would block
                self._reset()
                return
            identity = (stat.st_dev, stat.st_ino)
            if identity != self._identity or stat.st_size < self._offset:
                self._reset()
                self._identity = identity
            if stat.st_size == self._offset:
                return
            try:
                with open(path, "rb") as f:
                    if self._offset == 0 and self.index is not None:
                        self._load_index(f.fileno(), stat.st_size)
                    f.seek(self._offset)
                    data = f.read(stat.st_size - self._offset)
            except OSError:
                self._reset()
                return
            self._arrays.clear()
            end = data.rfind(b"\n")
            if end < 0:
                return  # only part of a line so far: the writer has not finished it
            self._offset += end + 1
            for piece in pieces(data, end + 1, PARSE_CHUNK_BYTES):
                # inexact: the columns are float64, so a 20-digit integer is rounded there in any case
                parsed = parse_lines(piece, self._line_number + 1, exact=False)
                self._line_number += parsed.lines
                if parsed.damaged:
                    self._damaged_total += len(parsed.damaged)
                    self._damaged += parsed.damaged[:DAMAGE_NAMED - len(self._damaged)]
                self._tail.add_records(parsed.records)

    def _load_index(self, log_fd: int, log_size: int) -> None:
        """Take the columns train.index holds for the start of the log (`log_fd`, `log_size` bytes).
        A missing, damaged or stale index, or one ahead of the log, gives what agrees of it: maybe nothing."""
        assert self.index is not None
        try:
            with open(self.index, "rb") as f:
                stat = os.fstat(f.fileno())
                if not S_ISREG(stat.st_mode) or stat.st_size == 0:
                    return
                # mapped, not read: the columns are copied once, by the concatenation below
                data = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        except (OSError, ValueError):
            return
        blocks = scan_index(data, log_fd, log_size)
        if not blocks:
            return
        parts: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {}
        for block in blocks:
            at = block.payload
            for name, count in block.header["columns"]:
                steps = np.frombuffer(data, np.float64, count, at)
                values = np.frombuffer(data, np.float64, count, at + 8 * count)
                at += 16 * count
                parts.setdefault(name, []).append((steps, values))
            self._line_number += block.header["lines"]
            self._indexed += block.header["records"]
            if block.header["last_step"] is not None:
                self._indexed_step = block.header["last_step"]
        self._base = {name: (np.concatenate([p[0] for p in found]), np.concatenate([p[1] for p in found]))
                      for name, found in parts.items()}
        self._offset = blocks[-1].header["end"]

    def names(self) -> list[str]:
        """The charted metrics (the lines' `time` is an x axis, not one of them)."""
        with self._lock:
            return sorted((self._base.keys() | self._tail.columns.keys()) - {TIME_COLUMN})

    def series(self, name: str) -> tuple[np.ndarray, np.ndarray] | None:
        with self._lock:
            cached = self._arrays.get(name)
            if cached is None:
                base = self._base.get(name)
                tail = self._tail.columns.get(name)
                if tail is None:
                    if base is None:
                        return None
                    cached = base
                else:
                    x, y = np.array(tail[0]), np.array(tail[1])
                    cached = (np.concatenate((base[0], x)), np.concatenate((base[1], y))) if base is not None else (x, y)
                self._arrays[name] = cached
            return cached

    def _times_by_step(self) -> tuple[np.ndarray, np.ndarray]:
        """(steps, times) of the lines that give a time, sorted by step (a repeated step keeps its lines' order)."""
        version = self.version
        with self._lock:
            kept = self._time_lookup
        if kept is not None and kept[0] == version:
            return kept[1]
        found = self.series(TIME_COLUMN)
        if found is None:
            return np.empty(0), np.empty(0)
        order = np.argsort(found[0], kind="stable")
        lookup = (found[0][order], found[1][order])
        with self._lock:
            self._time_lookup = (version, lookup)  # a refresh meanwhile changes the version: built again then
        return lookup

    def _time_of(self, steps: np.ndarray, exact: bool = True) -> np.ndarray:
        """The `time` of the last line of each step (with `exact` False: at or before it); NaN where none.
        A step logged in several lines (its loss, then its validation) is placed at the time of the last."""
        known, times = self._times_by_step()
        at = np.searchsorted(known, steps, side="right") - 1
        hit = at >= 0
        if exact:
            hit[hit] = known[at[hit]] == steps[hit]
        return np.where(hit, times[np.maximum(at, 0)] if len(times) else np.nan, np.nan)

    def x_values(self, steps: np.ndarray, axis: str, starts: list[tuple[float, float]] | None = None) -> np.ndarray:
        """`steps` on the `axis` (one of `AXES`); `starts` (`stretch_starts`) places a wall-clock x."""
        if axis == "step":
            return steps
        elapsed = self._time_of(steps)
        if axis == "time":
            times = self.series(TIME_COLUMN)
            return elapsed - times[1][0] if times is not None and len(times[1]) else elapsed
        if not starts:
            return np.full(len(steps), np.nan)
        # a resumed run's clock goes on from the time of its last kept line: each stretch has its own origin
        stretch = np.searchsorted(np.array([s for s, _ in starts]), steps, side="left") - 1
        kept = np.nan_to_num(self._time_of(np.array([step for step, _ in starts]), exact=False))
        origins = np.array([at for _, at in starts]) - kept
        return origins[np.maximum(stretch, 0)] + elapsed

    def chart(self, name: str, max_points: int, x_min: float | None = None, x_max: float | None = None,
              axis: str = "step", starts: list[tuple[float, float]] | None = None) -> dict[str, Any] | None:
        """One metric over `axis` (see `x_values`), within [x_min, x_max] of it when given, downsampled
        to about `max_points`. A point without a place on the axis (a line without a time) is left out."""
        found = self.series(name)
        if found is None:
            return None
        steps, y = found
        total = shown = len(steps)
        if x_min is None and x_max is None:
            # buckets of consecutive points are the same over any axis: only the points kept are placed on it
            steps, y = downsample(steps, y, max_points)
            x = self.x_values(steps, axis, starts)
        else:
            x = self.x_values(steps, axis, starts)
            inside = np.ones(total, dtype=bool)
            if x_min is not None:
                inside &= x >= x_min
            if x_max is not None:
                inside &= x <= x_max
            shown = int(inside.sum())
            x, y = downsample(x[inside], y[inside], max_points)
        if axis != "step":
            placed = np.isfinite(x)
            x, y = x[placed], y[placed]
        return {"x": (x.astype(np.int64) if axis == "step" else x).tolist(), "y": y.tolist(),
                "points": total, "in_range": shown}
