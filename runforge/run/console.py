"""What a run prints: a progress bar with ETA on a terminal, plain lines elsewhere."""

from __future__ import annotations

import sys
import time
from typing import Any


class ProgressDisplay:
    """A rich progress bar when stderr is a terminal; otherwise a line every 10% (CI logs stay short).

    `mode`: None chooses by the terminal as above, True forces the bar, "lines" the plain lines, and
    False prints nothing (a library embedding a run, such as the Lightning logger, keeps its host's
    console to itself)."""

    def __init__(self, description: str, mode: bool | str | None = None) -> None:
        self.description = description
        self.silent = mode is False
        self.interactive = sys.stderr.isatty() if mode is None else mode is True
        self._bar: Any = None
        self._task: Any = None
        self._last_decile = -1
        self._last_line = 0.0

    def update(self, step: int, total: int | None, eta: str | None) -> None:
        if self.interactive:
            if self._bar is None:
                from rich.console import Console
                from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn,
                                           TimeElapsedColumn, TimeRemainingColumn)

                self._bar = Progress(
                    TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
                    console=Console(stderr=True), transient=False,
                )
                self._bar.start()
                self._task = self._bar.add_task(self.description, total=total, completed=step)
            self._bar.update(self._task, completed=step, total=total)
            return
        if not total or self.silent:
            return
        decile = min(10, step * 10 // total)
        if decile > self._last_decile and time.monotonic() - self._last_line > 1.0 or decile == 10 > self._last_decile:
            self._last_decile = decile
            self._last_line = time.monotonic()
            print(f"{self.description}: step {step}/{total} ({decile * 10}%), ETA {eta or '?'}", file=sys.stderr, flush=True)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None
