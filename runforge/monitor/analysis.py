"""Run analyses as functions: compare runs at a step, CSV export, progress plot.

The CLI (`runforge compare|csv|plot|show`) and the dashboard's compare page call these. The
plateau warning of `runforge show` belongs to the sr trainer (`runforge.trainers.sr.cli`).
"""

from __future__ import annotations

import csv
import io
import math
import os
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

from ..errors import BadInputError
from ..run.metrics import read_metrics
from ..run.read import read_info
from ..run.snapshots import flatten, is_number, list_snapshots, load_snapshot


def ordered_fields(records: Iterable[dict[str, Any]]) -> list[str]:
    """Union of the keys in first-seen order: a snapshot lists its run's declared fields in the
    declared order, so its columns keep that order."""
    seen: dict[str, None] = {}
    for record in records:
        for key in record:
            seen.setdefault(key, None)
    return list(seen)


def _select(fields: list[str], wanted: Sequence[str] | None, where: str) -> list[str]:
    if not wanted:
        return fields
    missing = [w for w in wanted if w not in fields]
    if missing:
        raise BadInputError(where, f"no field {', '.join(repr(m) for m in missing)} (fields: {', '.join(fields[:12])}"
                                   f"{', ...' if len(fields) > 12 else ''})")
    return list(wanted)


def _label(run_dir: Path) -> str:
    try:
        info = read_info(run_dir)
    except Exception:  # noqa: BLE001 - a label must never fail a comparison
        return run_dir.name
    return str(info.get("name") or run_dir.name)


Snapshots = Callable[[Path], list[tuple[int, Path]]]
Metrics = Callable[[Path], list[dict[str, Any]]]


def compare(run_dirs: Sequence[Path], step: int | None = None, fields: Sequence[str] | None = None, *,
            snapshots: Snapshots = list_snapshots, metrics: Metrics = read_metrics) -> dict[str, Any]:
    """Runs side by side: their snapshots at `step` (default: the latest step all have), or, when
    they share no snapshot step, the last logged metrics. With two runs, numeric rows get B - A.
    `snapshots(run_dir)` and `metrics(run_dir)` read a run: the dashboard passes readers that
    keep to the files inside it."""
    listed = [dict(snapshots(d)) for d in run_dirs]
    common = sorted(set.intersection(*(set(found) for found in listed))) if listed else []
    if step is None:
        step = common[-1] if common else None
    if step is not None:
        for run_dir, found in zip(run_dirs, listed):
            if step not in found:
                have = ", ".join(str(s) for s in sorted(found)[-8:]) or "none"
                raise BadInputError(run_dir, f"no statistics snapshot at step {step} (latest steps: {have})")
        records = [flatten(load_snapshot(found[step])) for found in listed]
        source = f"snapshots at step {step}"
    else:
        records = []
        for d in run_dirs:
            merged: dict[str, Any] = {}
            for line in metrics(d):
                merged.update(flatten(line))  # the latest value of every metric, val lines included
            records.append(merged)
        source = "last logged metrics (no snapshot step common to all runs)"
    names = _select(ordered_fields(records), fields, str(run_dirs[0]))
    rows = []
    for name in names:
        values = [r.get(name) for r in records]
        row: dict[str, Any] = {"field": name, "values": values}
        if len(values) == 2 and all(is_number(v) for v in values):
            row["diff"] = values[1] - values[0]
        rows.append(row)
    return {"step": step, "source": source, "runs": [_label(d) for d in run_dirs],
            "dirs": [str(d) for d in run_dirs], "rows": rows, "common_steps": common}


def table_rows(run_dir: Path, source: str) -> list[dict[str, Any]]:
    """The rows `runforge csv` writes: one per step, nested keys joined with '.'."""
    if source == "stats":
        rows = []
        for step, path in list_snapshots(run_dir):
            rows.append({"step": step, **flatten(load_snapshot(path))})
        return rows
    by_step: dict[int, dict[str, Any]] = {}
    for line in read_metrics(run_dir):
        step = line.get("step")
        if isinstance(step, int):
            # train and validation lines of one step become one row
            by_step.setdefault(step, {"step": step}).update(flatten(line))
    return [by_step[s] for s in sorted(by_step)]


def to_csv(rows: list[dict[str, Any]], fields: Sequence[str] | None, where: str) -> str:
    columns = ordered_fields(rows)
    if fields:
        columns = ["step"] + [f for f in _select(columns, fields, where) if f != "step"]
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: _csv_value(row.get(k)) for k in columns})
    return out.getvalue()


def _csv_value(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, (list, tuple)):
        return " ".join(str(v) for v in value)
    return value


def series_for(run_dir: Path, metric: str) -> tuple[list[float], list[float], str] | None:
    """(steps, values, source) of a metric: from train.jsonl, else from the snapshots."""
    xs, ys = [], []
    for line in read_metrics(run_dir):
        value = flatten(line).get(metric)
        if is_number(value) and isinstance(line.get("step"), int):
            xs.append(line["step"])
            ys.append(float(value))
    if xs:
        return xs, ys, "metrics"
    for step, path in list_snapshots(run_dir):
        value = flatten(load_snapshot(path)).get(metric)
        if is_number(value):
            xs.append(step)
            ys.append(float(value))
    return (xs, ys, "stats") if xs else None


def default_plot_metrics(run_dir: Path, limit: int = 8) -> list[str]:
    names: dict[str, None] = {}
    for line in read_metrics(run_dir):
        for key, value in flatten(line).items():
            if key not in ("step", "time") and is_number(value):
                names.setdefault(key, None)
    if not names:
        for _, path in list_snapshots(run_dir):
            for key, value in flatten(load_snapshot(path)).items():
                if key.startswith("quality_") and is_number(value):
                    names.setdefault(key, None)
    return list(names)[:limit]


def plot(run_dirs: Sequence[Path], metrics: Sequence[str] | None, log_y: bool = False) -> bytes:
    """A PNG with one panel per metric and every run overlaid (`runforge plot`, training_progress.png by default)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metrics = list(metrics or default_plot_metrics(run_dirs[0]))
    if not metrics:
        raise BadInputError(run_dirs[0], "has no logged metrics or snapshots to plot")
    found: dict[str, list[tuple[str, list[float], list[float]]]] = {m: [] for m in metrics}
    for run_dir in run_dirs:
        for metric in metrics:
            series = series_for(run_dir, metric)
            if series is not None:
                found[metric].append((_label(run_dir), series[0], series[1]))
    empty = [m for m, lines in found.items() if not lines]
    if empty:
        raise BadInputError(run_dirs[0], f"no metric {', '.join(repr(m) for m in empty)} in train.jsonl or snapshots")
    columns = min(2, len(metrics))
    rows = math.ceil(len(metrics) / columns)
    figure, axes = plt.subplots(rows, columns, figsize=(6 * columns, 4 * rows), squeeze=False)
    for axis, metric in zip(axes.flat, metrics):
        for label, xs, ys in found[metric]:
            axis.plot(xs, ys, linewidth=1.5, label=label)
        axis.set_title(metric)
        axis.set_xlabel("step")
        axis.grid(True, alpha=0.3)
        if log_y and all(y > 0 for _, _, ys in found[metric] for y in ys):
            axis.set_yscale("log")
        if len(run_dirs) > 1:
            axis.legend(fontsize=8)
    for axis in list(axes.flat)[len(metrics):]:
        axis.set_visible(False)
    figure.tight_layout()
    png = io.BytesIO()
    figure.savefig(png, format="png", dpi=100)
    plt.close(figure)
    return png.getvalue()


def resolve_run(path: str | os.PathLike[str]) -> Path:
    """A RUN argument: a run directory (read_info raises a one-line error for anything else)."""
    read_info(path)
    return Path(path)
