"""The control channel: one file per command in `{run}/control/`.

A writer (dashboard, `runforge ctl`, a user's `touch`) drops
`control/{time_ns}-{command}.cmd`; the trainer consumes the files in name
order at its next step boundary (`Run.poll`). Files are created atomically,
so a half-written command is never read. Taking a command leaves
`control/{time_ns}-{command}.taken` holding `{"command", "step"}`, so the sender
learns the step it ran at (`taken_step`); receipts older than a minute are swept.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from .files import write_bytes, write_json
from .layout import CONTROL_DIR, RECEIPT_SUFFIX

COMMANDS = ("pause", "resume", "validate", "save", "stop")
RECEIPT_LIFETIME_S = 60.0


def send(run_dir: str | os.PathLike[str], command: str) -> Path:
    """Ask a running trainer to `pause`, `resume`, `validate`, `save` or `stop`."""
    if command not in COMMANDS:
        raise ValueError(f"unknown command {command!r}; choose from {', '.join(COMMANDS)}")
    folder = Path(run_dir) / CONTROL_DIR
    return write_bytes(folder / f"{time.time_ns():020d}-{command}.cmd", b"", durable=False)


def take(run_dir: Path) -> list[tuple[str, str]]:
    """Consume the pending commands, oldest first, as (command, file stem); unknown files are left alone."""
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
        commands.append((command, name[:-4]))
    return commands


def write_receipt(run_dir: Path, stem: str, command: str, step: int) -> None:
    """Record that the command file `stem` ran at `step` (and sweep old receipts)."""
    folder = run_dir / CONTROL_DIR
    write_json(folder / f"{stem}{RECEIPT_SUFFIX}", {"command": command, "step": step}, durable=False)
    cutoff = time.time() - RECEIPT_LIFETIME_S
    for entry in os.scandir(folder):
        if entry.name.endswith(RECEIPT_SUFFIX):
            try:
                if entry.stat().st_mtime < cutoff:
                    os.unlink(entry.path)
            except FileNotFoundError:
                pass


def taken_step(command_path: Path) -> int | None:
    """The step at which the command sent as `command_path` was taken, or None while it is pending."""
    receipt = command_path.with_suffix(RECEIPT_SUFFIX)
    try:
        data = json.loads(receipt.read_text(encoding="utf-8"))
    except (FileNotFoundError, ValueError):
        return None
    step = data.get("step") if isinstance(data, dict) else None
    return step if isinstance(step, int) else None
