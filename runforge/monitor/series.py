"""A run's train.jsonl as columns in memory, extended as the file grows, and downsampled for charts.

Parsing JSON is the slow part (seconds for a million lines on this machine), so a
file is parsed once and afterwards only the bytes appended since are read. A file
that shrank or was replaced (a resume drops the lines after its checkpoint) is
read again from the start.
"""

from __future__ import annotations

import math
import os
import threading
from array import array
from pathlib import Path
from stat import S_ISREG
from typing import Any

import numpy as np

from ..run.metrics import DAMAGE_NAMED, PARSE_CHUNK_BYTES, Damage, damage_message, parse_lines, pieces

NOT_CHARTED = ("step", "time", "nonfinite")
"""Keys of a train.jsonl line that are not metrics."""


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
    `path` None (a log the dashboard may not read) and anything but a regular file hold no columns."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._reset()

    def _reset(self) -> None:
        self._identity: tuple[int, int] | None = None
        self._offset = 0
        self._lines = 0
        self._line_number = 0  # newline-terminated lines read, damaged and blank ones included
        self._damaged: list[Damage] = []  # the first few, to name them
        self._damaged_total = 0
        self._last_step: int | None = None
        self._columns: dict[str, tuple[array, array]] = {}
        self._arrays: dict[str, tuple[np.ndarray, np.ndarray]] = {}

    @property
    def lines(self) -> int:
        return self._lines

    @property
    def version(self) -> tuple[Any, ...]:
        """Changes whenever the columns do (new lines read, or the file replaced)."""
        return (self._identity, self._offset)

    @property
    def last_step(self) -> int | None:
        return self._last_step

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
                    f.seek(self._offset)
                    data = f.read(stat.st_size - self._offset)
            except OSError:
                self._reset()
                return
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
                self._add(parsed.records)
            self._arrays.clear()

    def _add(self, records: list[dict[str, Any]]) -> None:
        add = self._add_value
        for record in records:
            step = record.get("step")
            if type(step) is not int:
                continue
            self._lines += 1
            self._last_step = step
            for key, value in record.items():
                kind = type(value)
                if kind is float or kind is int:
                    if key not in NOT_CHARTED:
                        add(key, step, value)
                elif kind is dict:
                    self._add_nested(key + ".", value, step)
                elif value is None and key not in NOT_CHARTED:
                    add(key, step, math.nan)  # a non-finite value the run layer wrote as null

    def _add_nested(self, prefix: str, values: dict[str, Any], step: int) -> None:
        for key, value in values.items():
            kind = type(value)
            if kind is float or kind is int:
                self._add_value(prefix + key, step, value)
            elif kind is dict:
                self._add_nested(f"{prefix}{key}.", value, step)
            elif value is None:
                self._add_value(prefix + key, step, math.nan)

    def _add_value(self, name: str, step: int, value: float) -> None:
        column = self._columns.get(name)
        if column is None:
            column = self._columns[name] = (array("d"), array("d"))
        column[0].append(step)
        column[1].append(value)

    def names(self) -> list[str]:
        with self._lock:
            return sorted(self._columns)

    def series(self, name: str) -> tuple[np.ndarray, np.ndarray] | None:
        with self._lock:
            cached = self._arrays.get(name)
            if cached is None:
                column = self._columns.get(name)
                if column is None:
                    return None
                cached = self._arrays[name] = (np.array(column[0]), np.array(column[1]))
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
