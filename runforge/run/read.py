"""Reading runs: the functions the CLI, the dashboard and a user's notebook share."""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ..errors import BadInputError, RunNotFoundError
from . import system
from .layout import CONFIG_FILE, IMAGES_DIR, RUN_FILE, STATUS_FILE
from .metrics import read_metrics

HEARTBEAT_STALE_SECONDS = 30.0
"""status.json is rewritten every second by a live run's writer thread, even while it
validates or is paused; a run whose heartbeat is older than this and whose process is
gone is shown as `crashed`. On another host the pid cannot be checked: ten times this."""


@dataclass
class RunSummary:
    dir: str
    name: str
    id: str
    trainer: str
    status: str
    step: int | None
    step_max: int | None
    created_at: str | None
    eta: str | None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _load(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
        return None


def read_info(run_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """run.json of a run, raising a one-line error when it is not a run."""
    path = Path(run_dir) / RUN_FILE
    if not path.exists():
        raise RunNotFoundError(f"{run_dir}: not a run directory ({RUN_FILE} is missing)")
    info = _load(path)
    if not isinstance(info, dict):
        raise BadInputError(path, "is not a valid run.json")
    return info


def read_config(run_dir: str | os.PathLike[str]) -> dict[str, Any] | None:
    config = _load(Path(run_dir) / CONFIG_FILE)
    return config if isinstance(config, dict) else None


def read_status(run_dir: str | os.PathLike[str]) -> dict[str, Any] | None:
    status = _load(Path(run_dir) / STATUS_FILE)
    return status if isinstance(status, dict) else None


def effective_status(info: dict[str, Any], status: dict[str, Any] | None, now: float | None = None) -> str:
    """run.json's status, except `crashed` for a run that says running but is gone."""
    recorded = info.get("status", "unknown")
    if recorded != "running":
        return str(recorded)
    now = time.time() if now is None else now
    heartbeat = (status or {}).get("last_update_time")
    age = now - heartbeat if isinstance(heartbeat, (int, float)) else float("inf")
    if age <= HEARTBEAT_STALE_SECONDS:
        return "running"
    pid = info.get("pid")
    if info.get("host") == system.host() and isinstance(pid, int):
        return "running" if system.pid_alive(pid, info.get("pid_start")) else "crashed"
    return "crashed" if age > 10 * HEARTBEAT_STALE_SECONDS else "running"


def summarize(run_dir: str | os.PathLike[str]) -> RunSummary:
    info = read_info(run_dir)
    status = read_status(run_dir)
    step = (status or {}).get("step_current", info.get("step"))
    if info.get("status") != "running":
        step = info.get("step", step)
    shown = effective_status(info, status)
    return RunSummary(
        dir=str(run_dir),
        name=str(info.get("name", Path(run_dir).name)),
        id=str(info.get("id", "")),
        trainer=str(info.get("trainer", "")),
        status=shown,
        step=step,
        step_max=(status or {}).get("step_max", info.get("step_max")),
        created_at=info.get("created_at"),
        eta=(status or {}).get("eta_total_formatted") if shown == "running" else None,  # a crashed run has none
    )


def list_runs(root: str | os.PathLike[str] = "runs") -> list[RunSummary]:
    """Every run directly under `root` (or `root` itself if it is a run), newest first."""
    root = Path(root)
    if (root / RUN_FILE).exists():
        return [summarize(root)]
    if not root.is_dir():
        return []
    runs = []
    for entry in os.scandir(root):
        if entry.is_dir() and (Path(entry.path) / RUN_FILE).exists():
            try:
                runs.append(summarize(entry.path))
            except (RunNotFoundError, BadInputError):
                continue  # a run being created or a damaged one: skipped in a listing
    runs.sort(key=lambda r: r.created_at or "", reverse=True)
    return runs


def list_images(run_dir: str | os.PathLike[str]) -> list[Path]:
    """The PNGs `Run.image` wrote: in run.json's `images_dir` (`images` for runs that do not say)."""
    info = _load(Path(run_dir) / RUN_FILE)
    folder = info.get("images_dir") if isinstance(info, dict) else None
    directory = Path(run_dir) / (folder if isinstance(folder, str) and folder else IMAGES_DIR)
    return sorted(directory.glob("*.png")) if directory.is_dir() else []


def metrics_frame(run_dir: str | os.PathLike[str]) -> Any:
    """train.jsonl as a pandas DataFrame (nested keys joined with '.'); needs pandas."""
    import pandas as pd

    return pd.json_normalize(read_metrics(run_dir), sep=".")
