"""train.jsonl: one JSON object per line, `{"step": int, "time": float, ...}`.

Lines are encoded in batches by the background writer with a JSON encoder built
once (json.dumps builds a new one per call, which is most of its cost). Lines
are written whole with one write per batch; a process killed mid-write leaves
at most an incomplete last line, which the reader skips. Non-finite numbers are
written as null and their keys listed under "nonfinite" (JSON has no NaN).
"""

from __future__ import annotations

import json
import math
import os
from json.encoder import c_make_encoder, encode_basestring  # type: ignore[attr-defined]
from pathlib import Path
from typing import Any, Iterator

from ._atomic import write_with

METRICS_FILE = "train.jsonl"

if c_make_encoder is not None:
    _encode_strict = c_make_encoder(None, None, encode_basestring, None, ": ", ", ", False, False, False)

    def _encode(obj: dict[str, Any]) -> str:
        return "".join(_encode_strict(obj, 0))
else:  # pragma: no cover - CPython always has the C encoder
    _encoder = json.JSONEncoder(ensure_ascii=False, allow_nan=False)

    def _encode(obj: dict[str, Any]) -> str:
        return _encoder.encode(obj)


def _replace_nonfinite(obj: Any, path: str, found: list[str]) -> Any:
    if isinstance(obj, float) and not math.isfinite(obj):
        found.append(path)
        return None
    if isinstance(obj, dict):
        return {k: _replace_nonfinite(v, f"{path}.{k}" if path else k, found) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_replace_nonfinite(v, f"{path}.{i}", found) for i, v in enumerate(obj)]
    return obj


def encode_line(record: dict[str, Any]) -> str:
    """One train.jsonl line (without the newline)."""
    try:
        return _encode(record)
    except ValueError:  # NaN or infinity somewhere: rare, so handled off the fast path
        found: list[str] = []
        clean = _replace_nonfinite(record, "", found)
        clean["nonfinite"] = found
        return _encode(clean)
    except TypeError:  # numpy/torch scalars: convert through the JSON fallback
        from ._atomic import sanitize

        return encode_line(sanitize(record))


class MetricsFile:
    """Appends encoded lines to train.jsonl."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._file = open(path, "a", encoding="utf-8")

    def write_lines(self, lines: list[str]) -> None:
        self._file.write("\n".join(lines) + "\n")
        self._file.flush()

    def close(self) -> None:
        self._file.close()


def iter_metrics(path: str | os.PathLike[str]) -> Iterator[dict[str, Any]]:
    """Yield each complete line of a train.jsonl; an incomplete last line is skipped."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        return
    lines = data.split(b"\n")
    for index, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            yield json.loads(line)
        except ValueError:
            if index == len(lines) - 1:  # the line a killed writer did not finish
                return
            raise


def read_metrics(run_dir: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Every logged line of a run as a list of dicts (skips an incomplete last line).

    `run_dir` may also be the path of a .jsonl file.
    """
    path = Path(run_dir)
    if path.is_dir():
        path = path / METRICS_FILE
    return list(iter_metrics(path))


def truncate_after(path: Path, step: int) -> tuple[int, float]:
    """Drop lines with a step after `step` (and an incomplete last line), atomically.

    Returns how many lines were dropped and the `time` of the last kept line, so a
    resumed run continues its clock from there.
    """
    if not path.exists():
        return 0, 0.0
    with open(path, "rb") as f:
        raw = f.read().split(b"\n")
    kept: list[bytes] = []
    dropped = 0
    last_time = 0.0
    for line in raw:
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError:
            dropped += 1
            continue
        if isinstance(record, dict) and isinstance(record.get("step"), int) and record["step"] > step:
            dropped += 1
            continue
        kept.append(line)
        if isinstance(record, dict) and isinstance(record.get("time"), (int, float)):
            last_time = float(record["time"])
    if dropped:
        write_with(path, lambda f: f.write(b"".join(line + b"\n" for line in kept)))
    return dropped, last_time
