"""The background writer: training never waits on disk.

One daemon thread owns every slow write of a run. Callers hand it work two ways:

- metric records are appended to a deque (append and popleft are atomic under the
  GIL, so `Run.log` takes no lock) and encoded in batches every `flush_interval`.
  The writer pops what it takes instead of swapping the container: a caller that
  fetched the container just before a swap would append to one already written;
- everything else (PNG encoding, snapshots, checkpoints) is a task in a bounded
  queue: when the queue is full the caller blocks, so memory stays bounded.

A failing task is never swallowed: it is passed to `on_error`, which decides
whether it was essential (checkpoints) or may fail soft (images, snapshots).
"""

from __future__ import annotations

import collections
import queue
import threading
import time
from typing import Any, Callable

Task = Callable[[], Any]


class BackgroundWriter:
    def __init__(
        self,
        flush_records: Callable[[list[Any]], None],
        on_error: Callable[[str, bool, BaseException], None],
        *,
        tick: Callable[[], None] | None = None,
        max_tasks: int = 16,
        flush_interval: float = 0.2,
        max_records: int = 200_000,
    ) -> None:
        self._flush_records = flush_records
        self._on_error = on_error
        self._tick = tick
        self._tasks: queue.Queue[tuple[str, bool, Task] | None] = queue.Queue(maxsize=max_tasks)
        self.records: collections.deque[Any] = collections.deque()
        self.max_records = max_records
        self._flush_interval = flush_interval
        self._records_lock = threading.Lock()  # taken by the writer and by a caller flushing itself
        self._closed = False
        self._flush_requested = False
        self.soft_records = 4096
        self._thread = threading.Thread(target=self._loop, name="runforge-writer", daemon=True)
        self._thread.start()

    def submit(self, kind: str, essential: bool, task: Task) -> None:
        """Queue `task`; blocks while the queue is full (back-pressure)."""
        if self._closed:
            raise RuntimeError("the run is closed")
        self._tasks.put((kind, essential, task))

    def drain_records(self) -> None:
        """Encode and write every pending metric record now (called by the writer, by close, and on overflow)."""
        with self._records_lock:
            self._flush_requested = False
            records = self.records
            batch = [records.popleft() for _ in range(len(records))]
            if not batch:
                return
            try:
                # in slices: the encoded lines of one slice reuse the memory of the last (no fresh pages)
                for start in range(0, len(batch), 2048):
                    self._flush_records(batch[start:start + 2048])
            except Exception as exc:  # a metrics log that cannot be written is essential
                self._on_error("metrics", True, exc)

    def request_flush(self) -> None:
        """Ask for the pending records to be written soon (called by a caller that logs fast)."""
        if not self._flush_requested:
            self._flush_requested = True
            try:
                self._tasks.put_nowait(("metrics", True, self.drain_records))
            except queue.Full:
                pass  # the timer flushes them anyway

    def _loop(self) -> None:
        next_flush = time.monotonic() + self._flush_interval
        while True:
            timeout = max(0.0, next_flush - time.monotonic())
            try:
                item = self._tasks.get(timeout=timeout)
            except queue.Empty:
                item = ()  # type: ignore[assignment]
            if item is None:
                self.drain_records()
                if self._tick is not None:
                    self._run("status", False, self._tick)
                return
            if item:
                self._run(*item)
            if time.monotonic() >= next_flush:
                self.drain_records()
                if self._tick is not None:
                    self._run("status", False, self._tick)
                next_flush = time.monotonic() + self._flush_interval

    def _run(self, kind: str, essential: bool, task: Task) -> None:
        try:
            task()
        except Exception as exc:
            self._on_error(kind, essential, exc)

    def close(self, timeout: float | None = None) -> None:
        """Finish every queued task and pending record, then stop the thread."""
        if self._closed:
            return
        self._closed = True
        self._tasks.put(None)
        self._thread.join(timeout)
