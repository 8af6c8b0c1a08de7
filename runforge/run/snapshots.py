"""Finding and reading a run's statistics snapshots (`stats/stats_{step}.json` by default).

The folder and name pattern are options of every trainer (sr writes `Learn/Statistik_{step}.json`,
splat `stats/val_step{step}.json`). A run records them in run.json (`snapshot_dir`,
`snapshot_pattern`) and the readers go where it says; a run that records no folder is read from
the run layer's default `stats/`, and one that records no pattern takes any `*_{step}.json` there.
"""

from __future__ import annotations

import json
import math
import os
import re
from pathlib import Path
from typing import Any

from ..errors import BadInputError, RunNotFoundError
from .files import read_json_object
from .layout import RUN_FILE, SNAPSHOT_DIR, checkpoint_index

_ANY_STEP = re.compile(r"^(?:.*?[_\-])?(\d+)\.json$")


def _pattern_regex(pattern: str) -> re.Pattern[str]:
    parts = re.split(r"\{step(?::[^}]*)?\}", pattern)
    return re.compile("^" + r"(\d+)".join(re.escape(part) for part in parts) + "$")


def _recorded(run_dir: Path) -> tuple[str | None, str | None]:
    try:
        info = json.loads((run_dir / RUN_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None, None
    if not isinstance(info, dict):
        return None, None
    folder, pattern = info.get("snapshot_dir"), info.get("snapshot_pattern")
    return (folder if isinstance(folder, str) else None), (pattern if isinstance(pattern, str) else None)


def list_snapshots(run_dir: str | os.PathLike[str], *, inside_run: bool = False) -> list[tuple[int, Path]]:
    """(step, path) of every snapshot of a run, by step.

    The folder may lie outside the run (sr's `--learn_dir`); `inside_run`
    ignores such a folder, as the dashboard must.
    """
    run_dir = Path(run_dir)
    folder, pattern = _recorded(run_dir)
    regex = _pattern_regex(pattern) if pattern else _ANY_STEP
    directory = run_dir / (folder or SNAPSHOT_DIR)  # an absolute folder replaces run_dir here
    try:
        if inside_run and not directory.resolve().is_relative_to(run_dir.resolve()):
            return []
        entries = list(os.scandir(directory))
    except (FileNotFoundError, NotADirectoryError):
        return []
    found = []
    for entry in entries:
        match = regex.match(entry.name)
        if match and entry.is_file():
            found.append((int(match.group(1)), Path(entry.path)))
    return sorted(found)


def snapshot_folder(run_dir: str | os.PathLike[str]) -> str:
    """The snapshot folder run.json records (relative to the run, or absolute), else the default."""
    return _recorded(Path(run_dir))[0] or SNAPSHOT_DIR


def load_snapshot(path: str | os.PathLike[str]) -> dict[str, Any]:
    return read_json_object(Path(path), "snapshot")


def snapshot_at(run_dir: str | os.PathLike[str], step: int, *, inside_run: bool = False) -> dict[str, Any]:
    """The snapshot a run wrote at `step`; a one-line error naming the steps it has otherwise."""
    snapshots = list_snapshots(run_dir, inside_run=inside_run)
    for found_step, path in snapshots:
        if found_step == step:
            return load_snapshot(path)
    have = ", ".join(str(s) for s, _ in snapshots[-8:]) or "none"
    raise BadInputError(run_dir, f"no statistics snapshot at step {step} (latest steps: {have})")


def latest_snapshot(run_dir: str | os.PathLike[str], *, inside_run: bool = False) -> tuple[int, dict[str, Any]] | None:
    """The newest readable snapshot of a run."""
    for step, path in reversed(list_snapshots(run_dir, inside_run=inside_run)):
        try:
            return step, load_snapshot(path)
        except (BadInputError, RunNotFoundError):
            continue
    return None


def best_metric(snapshot: dict[str, Any] | None, run_dir: str | os.PathLike[str]) -> tuple[str, float] | None:
    """What the runs table shows as "best": `best_quality_ever` of the latest snapshot,
    else the best checkpoint metric the run recorded."""
    if snapshot is not None and is_number(snapshot.get("best_quality_ever")):
        return "best_quality_ever", float(snapshot["best_quality_ever"])
    best: float | None = None
    for index in Path(run_dir).glob(checkpoint_index(0)):
        try:
            entries = json.loads(index.read_text(encoding="utf-8")).get("checkpoints", [])
        except (OSError, ValueError, AttributeError):
            continue
        metrics = [e["metric"] for e in entries if isinstance(e, dict) and is_number(e.get("metric"))]
        if metrics:
            best = min(metrics)
    return None if best is None else ("checkpoint metric", best)


def flatten(record: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested keys joined with '.': {"losses": {"l1": 1}} -> {"losses.l1": 1}."""
    out: dict[str, Any] = {}
    for key, value in record.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten(value, name + "."))
        else:
            out[name] = value
    return out


def is_number(value: Any) -> bool:
    """A finite int or float (not a bool)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
