"""The dashboard's memory of the chart answers it has already encoded."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any, Hashable

ChartKey = tuple[Path, tuple[str, ...] | None, int, float | None, float | None, str]
"""(run directory, chosen names or None for all, points, x min, x max, x axis): one chart request."""


class ChartCache:
    """Encoded `/api/run/{key}/metrics` bodies, one per chart request (`ChartKey`).

    Every open page of a run asks for the same series each second, so the answer is
    kept and served again as long as the run's train.jsonl is unchanged: an entry is
    stored with the `MetricStore.version` it was built from and counts as absent once
    the store has read new lines or the file was replaced (the version then differs).
    Many viewers thus cost about as much as one. When `limit` entries are held, all
    are dropped: requests with ever-new zoom ranges must not grow memory without end.
    """

    def __init__(self, limit: int = 256) -> None:
        self.limit = limit
        self._lock = threading.Lock()  # requests are answered from a thread pool
        self._entries: dict[ChartKey, tuple[Hashable, bytes]] = {}

    def get(self, key: ChartKey, version: Any) -> bytes | None:
        """The body stored for `key`, if it was built from `version` of the run's metrics."""
        with self._lock:
            hit = self._entries.get(key)
        if hit is None or hit[0] != version:
            return None
        return hit[1]

    def put(self, key: ChartKey, version: Any, body: bytes) -> None:
        with self._lock:
            if len(self._entries) >= self.limit:
                self._entries.clear()
            self._entries[key] = (version, body)

    def __len__(self) -> int:
        return len(self._entries)
