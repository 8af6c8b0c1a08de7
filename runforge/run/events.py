"""events.log: one timestamped line per thing that happened to a run.

    events = EventLog(run_dir)
    events.write("checkpoint saved: ckpts/ckpt_100_rank0.pt")     # 2026-11-22T02:44:32Z INFO checkpoint saved: ...
    events.write("Failed to save image", "warning")               # also printed to stderr

Only rank 0 keeps the log (`enabled=False` on the other ranks), so a multi-GPU
run has one events.log, not one line per rank.
"""

from __future__ import annotations

import sys
import threading
from datetime import datetime, timezone
from pathlib import Path

from .layout import EVENTS_FILE


def utc_now() -> str:
    """The current UTC time as `2026-11-22T02:44:32Z`, the form every run file uses."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")


class EventLog:
    """Appends to `{run_dir}/events.log`; safe to call from the training loop and the writer thread at once."""

    def __init__(self, run_dir: Path, *, enabled: bool = True) -> None:
        self.path = run_dir / EVENTS_FILE
        self.enabled = enabled
        self._lock = threading.Lock()

    def write(self, message: str, level: str = "info", *, console: bool = False) -> None:
        """One line `{time} {LEVEL} {message}`; warnings and errors (or `console=True`) also reach the terminal."""
        if not self.enabled:
            return
        line = f"{utc_now()} {level.upper()} {message}\n"
        with self._lock:
            with open(self.path, "a", encoding="utf-8") as f:
                f.write(line)
        if console or level in ("warning", "error"):
            print(message, file=sys.stderr if level != "info" else sys.stdout, flush=True)
