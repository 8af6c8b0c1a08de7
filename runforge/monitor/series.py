"""A run's train.jsonl as columns in memory, extended as the file grows, and downsampled for charts.

Parsing JSON is the slow part (seconds for a million lines on this machine), so a
file is parsed once and afterwards only the bytes appended since are read. A file
that shrank or was replaced (a resume drops the lines after its checkpoint) is
read again from the start. The first read takes what the run's train.index holds
(columns the run's writer keeps beside the log) and parses only the lines it does
not cover: a million points come from one read of float64 arrays instead.
"""

from __future__ import annotations

import math
import mmap
import os
import threading
from pathlib import Path
from stat import S_ISREG
from typing import Any

import numpy as np

from ..run.metrics import (DAMAGE_NAMED, NOT_CHARTED, PARSE_CHUNK_BYTES, Columns, Damage, damage_message, parse_lines,
                           pieces, scan_index)

__all__ = ["NOT_CHARTED", "MetricStore", "downsample"]


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
        with self._lock:
            return sorted(self._base.keys() | self._tail.columns.keys())

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

    def chart(self, name: str, max_points: int, x_min: float | None = None,
              x_max: float | None = None) -> dict[str, Any] | None:
        """One metric, within [x_min, x_max] when given, downsampled to about `max_points`."""
        found = self.series(name)
        if found is None:
            return None
        x, y = found
        total = len(x)
        if x_min is not None or x_max is not None:
            inside = np.ones(total, dtype=bool)
            if x_min is not None:
                inside &= x >= x_min
            if x_max is not None:
                inside &= x <= x_max
            x, y = x[inside], y[inside]
        shown = len(x)
        x, y = downsample(x, y, max_points)
        return {"x": x.astype(np.int64).tolist(), "y": y.tolist(), "points": total, "in_range": shown}
