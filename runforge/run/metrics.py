"""train.jsonl: one JSON object per line, `{"step": int, "time": float, ...}`.

Lines are encoded by the background writer with orjson (float formatting is most
of the cost of a metrics line; orjson does it ~2x faster than the json module,
which is the fallback). Lines are written whole with one write per batch; a
process killed mid-write leaves at most an incomplete last line, which the reader
skips. Non-finite numbers are written as null and their keys listed under
"nonfinite" (JSON has no NaN).
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

from ..errors import BadInputError
from .files import json_default, write_with

METRICS_FILE = "train.jsonl"

_dumps: Callable[[Any], bytes]
try:
    import orjson

    def _dumps(obj: Any) -> bytes:
        return orjson.dumps(obj, option=orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS)

    def _nonfinite_possible(line: bytes) -> bool:
        return b"null" in line  # orjson writes NaN/inf as null: look closer only then
except ImportError:  # pragma: no cover - orjson is a dependency; the json module is the fallback
    _encoder = json.JSONEncoder(ensure_ascii=False, allow_nan=True)

    def _dumps(obj: Any) -> bytes:
        return _encoder.encode(obj).encode("utf-8")

    def _nonfinite_possible(line: bytes) -> bool:
        return b"NaN" in line or b"Infinity" in line


def _replace_nonfinite(obj: Any, path: str, found: list[str]) -> Any:
    if isinstance(obj, float) and not math.isfinite(obj):
        found.append(path)
        return None
    if isinstance(obj, dict):
        return {k: _replace_nonfinite(v, f"{path}.{k}" if path else k, found) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_replace_nonfinite(v, f"{path}.{i}", found) for i, v in enumerate(obj)]
    return obj


def _plain(obj: Any) -> Any:
    """Nested dicts/lists of JSON types, converting tensors and numpy values (raises TypeError otherwise)."""
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    if obj is None or isinstance(obj, (str, int, float)):
        return obj
    return _plain(json_default(obj))


def _nonfinite_listed(record: dict[str, Any]) -> tuple[dict[str, Any], bool]:
    found: list[str] = []
    clean = _replace_nonfinite(record, "", found)
    if found:
        clean["nonfinite"] = found
    return clean, bool(found)


def encode_line(record: dict[str, Any]) -> bytes:
    """One train.jsonl line (without the newline)."""
    try:
        line = _dumps(record)
    except TypeError:  # torch scalars and other objects with .item()/.tolist(): convert them first
        record = _plain(record)
        try:
            line = _dumps(record)
        except TypeError:  # orjson stops at 64-bit integers; the json module does not
            return json.dumps(_nonfinite_listed(record)[0], ensure_ascii=False, allow_nan=False).encode("utf-8")
    if _nonfinite_possible(line):
        clean, changed = _nonfinite_listed(record)
        if changed:
            line = _dumps(clean)
    return line


class MetricsFile:
    """Appends encoded lines to train.jsonl."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._file = open(path, "ab")

    def write_lines(self, lines: list[bytes]) -> None:
        self._file.write(b"\n".join(lines) + b"\n")
        self._file.flush()

    def sync(self) -> None:
        """Make the written lines durable (before a checkpoint that depends on them is listed)."""
        os.fsync(self._file.fileno())

    def close(self) -> None:
        self._file.close()


def iter_metrics(path: str | os.PathLike[str]) -> Iterator[dict[str, Any]]:
    """Yield each complete line of a train.jsonl; an incomplete last line is skipped.

    A damaged line anywhere else is a `BadInputError` naming the file and the line:
    the writer only ever appends whole lines, so it means the file was changed by hand.
    """
    for record, _ in _records_with_lines(path):
        yield record


def _unfinished_last_line(path: Path) -> int:
    with open(path, "rb") as f:
        tail = f.read().rsplit(b"\n", 1)[-1]
    if not tail.strip():
        return 0
    try:
        json.loads(tail)
    except (ValueError, RecursionError):
        return 1
    return 0


def _records_with_lines(path: str | os.PathLike[str]) -> Iterator[tuple[dict[str, Any], bytes]]:
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        return
    except OSError as exc:
        raise BadInputError(path, f"cannot be read ({exc.strerror or exc})") from None
    lines = data.split(b"\n")
    for index, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
            if index == len(lines) - 1:  # the line a killed writer did not finish
                return
            raise BadInputError(path, f"line {index + 1} is not valid JSON") from None
        if not isinstance(record, dict):
            raise BadInputError(path, f"line {index + 1} is not a JSON object")
        yield record, line


def read_metrics(run_dir: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Every logged line of a run as a list of dicts (skips an incomplete last line).

    `run_dir` may also be the path of a .jsonl file.
    """
    path = Path(run_dir)
    if path.is_dir():
        path = path / METRICS_FILE
    return list(iter_metrics(path))


@dataclass(frozen=True)
class Truncation:
    """What resuming at a step keeps of train.jsonl (see `plan_truncation`)."""

    path: Path
    kept: list[bytes]
    dropped: int
    last_time: float

    def apply(self) -> None:
        """Rewrite train.jsonl atomically with the kept lines, if any were dropped."""
        if self.dropped:
            write_with(self.path, lambda f: f.write(b"".join(line + b"\n" for line in self.kept)))


def plan_truncation(path: Path, step: int) -> Truncation:
    """Lines with a step after `step` (and an incomplete last line) are to be dropped; reads only.

    `last_time` is the `time` of the last kept line, so a resumed run continues its clock
    from there. A damaged line before the end is a `BadInputError`, found before the run is changed.
    """
    kept: list[bytes] = []
    dropped = 0
    last_time = 0.0
    if path.exists():
        for record, line in _records_with_lines(path):
            if isinstance(record.get("step"), int) and record["step"] > step:
                dropped += 1
                continue
            kept.append(line)
            if isinstance(record.get("time"), (int, float)):
                last_time = float(record["time"])
        dropped += _unfinished_last_line(path)
    return Truncation(path, kept, dropped, last_time)
