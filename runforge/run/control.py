"""The control channel: one file per command in `{run}/control/`.

A writer (dashboard, `runforge ctl`, a user's `touch`) drops
`control/{time_ns}-{command}.cmd`; the trainer consumes the files in name
order at its next step boundary (`Run.poll`). Files are created atomically,
so a half-written command is never read.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from ._atomic import write_bytes

CONTROL_DIR = "control"
COMMANDS = ("pause", "resume", "validate", "save", "stop")


def send(run_dir: str | os.PathLike[str], command: str) -> Path:
    """Ask a running trainer to `pause`, `resume`, `validate`, `save` or `stop`."""
    if command not in COMMANDS:
        raise ValueError(f"unknown command {command!r}; choose from {', '.join(COMMANDS)}")
    folder = Path(run_dir) / CONTROL_DIR
    return write_bytes(folder / f"{time.time_ns():020d}-{command}.cmd", b"", durable=False)


def take(run_dir: Path) -> list[str]:
    """Consume the pending commands, oldest first; unknown files are left alone."""
    folder = run_dir / CONTROL_DIR
    try:
        names = sorted(entry.name for entry in os.scandir(folder) if entry.name.endswith(".cmd"))
    except FileNotFoundError:
        return []
    commands = []
    for name in names:
        command = name[:-4].rpartition("-")[2]
        if command not in COMMANDS:
            continue
        try:
            os.unlink(folder / name)
        except FileNotFoundError:
            continue  # another consumer got it first
        commands.append(command)
    return commands
