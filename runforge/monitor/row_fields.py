"""What a runs-table row tells beyond run.json and status.json: the run's config, flattened, its
last logged metrics, the one metric that matters (`headline`), and the user's tags and note.

The metrics come from the end of train.jsonl only, read backwards, so a row of a run with a
million lines costs what one of ten lines does; a value logged only long before the end (more
than `TAIL_BUDGET` bytes) is not in the row. The dashboard's charts read the whole log.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ..errors import BadInputError, RunNotFoundError
from ..run.annotations import read_annotations
from ..run.files import read_json_object
from ..run.metrics import decode_line, parse_lines
from ..run.snapshots import flatten, is_number

HEADLINE_METRICS = ("val.psnr", "val_psnr", "eval.psnr", "psnr", "loss_valid", "val.loss", "val_loss", "eval.loss",
                    "eval_loss", "loss", "loss_train", "train_loss", "losses.total")
"""The metric a row shows, the first of these a run logged: validation before training, PSNR before
loss (splat, voxel, sr: val.psnr; kolmogorov: loss_valid; toy: val.loss); else its first metric by name."""
VALIDATION_METRICS = HEADLINE_METRICS[:9]
UNITS = {"psnr": "dB"}
"""By the last part of a metric's name."""

TAIL_CHUNK = 64 << 10
TAIL_BUDGET = 1 << 20
"""Bytes read back from the end of train.jsonl: a chunk, then more while no validation metric is found."""

NOT_METRICS = ("step", "time")
MAX_CONFIG_LIST = 16
"""A config list longer than this (a camera path, a file list) is no table column."""


def flat_config(path: Path | None) -> dict[str, Any]:
    """The config.json at `path` with nested keys joined by '.', the values a table cell can show;
    {} when it is missing, damaged or refused (`path` None)."""
    try:
        config = read_json_object(path, "config file") if path is not None else {}
    except (BadInputError, RunNotFoundError):
        return {}
    return {key: value for key, value in flatten(config).items()
            if not isinstance(value, list) or len(value) <= MAX_CONFIG_LIST}


def last_metrics(path: Path | None) -> dict[str, float]:
    """The last finite value of each metric in the train.jsonl at `path` (nested names joined by
    '.'), newest line first; {} when there is none. Damaged and unfinished lines are skipped."""
    if path is None:
        return {}
    found: dict[str, float] = {}
    shapes: set[tuple[tuple[str, type], ...]] = set()
    try:
        with open(path, "rb") as f:
            end = pos = f.seek(0, os.SEEK_END)
            head = b""  # the start of a line cut by the chunk read after it
            while pos > 0 and end - pos < TAIL_BUDGET and not any(name in found for name in VALIDATION_METRICS):
                start = max(0, pos - TAIL_CHUNK)
                f.seek(start)
                data = f.read(pos - start) + head
                cut = data.find(b"\n") + 1 if start > 0 else 0
                head, data = data[:cut], data[cut:]
                if pos == end:  # the last line may be one a writer has not finished
                    last = data.rfind(b"\n") + 1
                    record, problem = decode_line(data[last:], exact=False) if data[last:].strip() else (None, "")
                    data = data[:last]
                    if problem is None:
                        _take(record, found, shapes)
                for record in reversed(parse_lines(data, exact=False).records):
                    _take(record, found, shapes)
                pos = start
    except OSError:
        return {}
    return found


def _take(record: dict[str, Any], found: dict[str, float], shapes: set[tuple[tuple[str, type], ...]]) -> None:
    # A line with the keys (and kinds of value) of a newer one adds no name: skipped unflattened, as
    # flattening every line is most of the time a table of a thousand runs takes.
    shape = tuple((key, type(value)) for key, value in record.items() if key not in NOT_METRICS)
    if shape in shapes:
        return
    shapes.add(shape)
    for name, value in flatten(record).items():
        if name not in found and name not in NOT_METRICS and is_number(value):
            found[name] = float(value)


def headline(metrics: dict[str, float]) -> dict[str, Any] | None:
    """{"name", "value", "unit"} of the metric the runs table shows; None for a run that logged none."""
    name = next((n for n in HEADLINE_METRICS if n in metrics), min(metrics, default=None))
    if name is None:
        return None
    return {"name": name, "value": metrics[name], "unit": UNITS.get(name.rsplit(".", 1)[-1].removeprefix("val_"))}


def annotations_of(run_dir: str | os.PathLike[str] | None) -> dict[str, Any]:
    """The run's tags and note; none when its annotations.json is missing, damaged or refused (`run_dir` None)."""
    try:
        return read_annotations(run_dir) if run_dir is not None else {"tags": [], "note": ""}
    except BadInputError:
        return {"tags": [], "note": ""}
