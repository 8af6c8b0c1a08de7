"""train.jsonl: one JSON object per line, `{"step": int, "time": float, ...}`.

Lines are encoded by the background writer with orjson (float formatting is most
of the cost of a metrics line; orjson does it ~2x faster than the json module,
which is the fallback). Lines are written whole with one write per batch; a
process killed mid-write leaves at most an incomplete last line, which the readers
skip. A damaged line elsewhere is skipped with a warning by every reader and
refused by a resume (`scan_metrics`, `plan_truncation`). Non-finite numbers are
written as null and their keys listed under "nonfinite" (JSON has no NaN).
"""

from __future__ import annotations

import gc
import json
import math
import os
import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, NamedTuple

from ..errors import BadInputError
from .files import json_default, write_with
from .layout import METRICS_FILE

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


class DamagedLogWarning(UserWarning):
    """A reader skipped lines of a train.jsonl that are not JSON objects; the message names the file and lines."""


NOT_JSON = "not valid JSON"
NOT_AN_OBJECT = "not a JSON object"

Damage = tuple[int, str]
"""A damaged line: its number (counting from 1, blank lines included) and `NOT_JSON` or `NOT_AN_OBJECT`."""

DAMAGE_NAMED = 5
"""A message names this many damaged lines and counts the rest: a log of garbage still gives one line."""

PARSE_CHUNK_BYTES = 1 << 20
"""Lines are parsed a megabyte at a time: one parser call holds the GIL throughout (the dashboard
must keep answering other requests while it reads a big log), and the joined copy stays small."""

try:
    from orjson import loads as _fast_loads  # ~2x faster than the json module on metric lines
except ImportError:  # pragma: no cover - orjson is a dependency; the json module is the fallback
    _fast_loads = json.loads

_LONG_INTEGER = re.compile(rb"[-:,\[\s][0-9]{19}")
"""Where an integer may lie beyond 64 bits (the writer logs those with the json module): orjson
reads one as a float, losing its last digits, so such text is read with the json module. A float's
digits follow a '.' or an 'e' and are not matched; a long run of digits in a string only costs time."""

# `_LONG_INTEGER` over a whole piece is the slowest part of reading a log (~6 ms a megabyte, as long
# as orjson's parse of it). The same question asked with bytes methods, which run at memory speed:
# every digit becomes "0" and every character the pattern accepts before the digits becomes ":", so
# the pattern matches exactly where ":" and 19 zeros appear.
_DIGITS_AND_SEPARATORS = bytes(
    ord("0") if c in b"0123456789" else ord(":") if c in b"-:,[ \t\n\r\f\v" else c for c in range(256))
_LONG_INTEGER_MARK = b":" + b"0" * 19


def _may_hold_long_integer(data: bytes) -> bool:
    """`_LONG_INTEGER.search(data)` is not None, answered faster on a large piece."""
    return _LONG_INTEGER_MARK in data.translate(_DIGITS_AND_SEPARATORS)


class Parsed(NamedTuple):
    records: list[dict[str, Any]]
    damaged: list[Damage]
    lines: int
    """Newline-terminated lines read, blank ones included: where the next piece's numbering starts."""


def decode_line(line: bytes, exact: bool = True) -> tuple[Any, str | None]:
    """(the record, None) for a line holding one JSON object, else (None, the problem).

    `exact` False lets an integer beyond 64 bits be read as the nearest float (for charts, which hold floats).
    """
    try:
        if exact and _LONG_INTEGER.search(line):
            raise ValueError
        record = _fast_loads(line)
    except ValueError:  # orjson refuses NaN/Infinity (a hand-written log), a BOM, lone surrogates
        try:
            record = json.loads(line)
        except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
            return None, NOT_JSON
    if type(record) is not dict:
        return None, NOT_AN_OBJECT
    return record, None


def parse_lines(data: bytes, first_line: int = 1, exact: bool = True) -> Parsed:
    """The JSON objects on the newline-terminated lines of `data`, and the lines that are not one.

    Blank lines are skipped; anything after the last newline is not read. `first_line` is the
    number of the first line of `data` in its file, so that damaged lines are named by their place
    there. `exact`: as for `decode_line`.
    """
    count = data.count(b"\n")
    # One parser call over the piece, as a JSON array, is much faster than one call per line. It
    # counts as the answer only when it gave one object per line, so a damaged line is found line by
    # line below. Only lines made to fool it pass: one ending inside an array that the next line
    # closes, together with another holding "{...}, {...}"; checking each line would cost ~40 %.
    if not (exact and _may_hold_long_integer(data)):
        joined = b"[" + data.rstrip(b"\n").replace(b"\n", b",") + b"]"
        # The collector would walk every dict made so far, again and again, as the parse makes tens
        # of thousands: ~20 % of a read. Nothing made here can be garbage yet, and the parser holds
        # the GIL throughout, so other threads go without a collector for a switch interval at most.
        collecting = gc.isenabled()
        if collecting:
            gc.disable()
        try:
            parsed = _fast_loads(joined)
        except ValueError:  # orjson.JSONDecodeError is a ValueError too
            parsed = None
        finally:
            if collecting:
                gc.enable()
        if type(parsed) is list and len(parsed) == count and set(map(type, parsed)) <= {dict}:
            return Parsed(parsed, [], count)
    records, damaged = [], []
    for number, line in enumerate(data.split(b"\n", count)[:count], first_line):
        if not line.strip():
            continue
        record, problem = decode_line(line, exact)
        if problem is None:
            records.append(record)
        else:
            damaged.append((number, problem))
    return Parsed(records, damaged, count)


def pieces(data: bytes, end: int, size: int = PARSE_CHUNK_BYTES) -> Iterator[bytes]:
    """`data[:end]` (which ends with a newline) in pieces of about `size` bytes that end with one."""
    start = 0
    while start < end:
        stop = data.find(b"\n", min(start + size, end - 1)) + 1
        if stop <= 0 or stop > end:
            stop = end
        yield data[start:stop]
        start = stop


def damage_message(where: str | os.PathLike[str], damaged: list[Damage], total: int | None = None) -> str:
    """One line naming the skipped lines of `where`; `total` counts any not listed in `damaged`."""
    total = len(damaged) if total is None else total
    if total == 1:
        number, problem = damaged[0]
        return f"{os.fspath(where)}: line {number} is {problem}; skipped it"
    named = ", ".join(f"{number} ({problem})" for number, problem in damaged[:DAMAGE_NAMED])
    more = total - min(len(damaged), DAMAGE_NAMED)
    return (f"{os.fspath(where)}: skipped {total} damaged lines: {named}"
            + (f" and {more} more" if more else ""))


def _read_log(path: str | os.PathLike[str]) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except FileNotFoundError:
        return b""
    except OSError as exc:
        raise BadInputError(path, f"cannot be read ({exc.strerror or exc})") from None


def scan_metrics(path: str | os.PathLike[str]) -> tuple[list[dict[str, Any]], list[Damage]]:
    """The records of a train.jsonl file and its damaged lines, which are left out.

    The one rule every reader follows (`read_metrics`, `runforge show|csv|compare|plot`, the
    dashboard's charts): a line that is not a JSON object is skipped and named, because the writer
    only ever appends whole lines, so it was changed by hand or by a failing disk, and the rest of
    the log is still worth reading. The text after the last newline is a line a writer has not
    finished (or was killed writing): taken when it already is a whole object, otherwise skipped
    without a word. Resuming is stricter: see `plan_truncation`.
    """
    data = _read_log(path)
    end = data.rfind(b"\n") + 1
    records: list[dict[str, Any]] = []
    damaged: list[Damage] = []
    number = 1
    for piece in pieces(data, end):
        parsed = parse_lines(piece, number)
        records += parsed.records
        damaged += parsed.damaged
        number += parsed.lines
    if data[end:].strip():
        record, problem = decode_line(data[end:])
        if problem is None:
            records.append(record)
        elif problem == NOT_AN_OBJECT:  # complete, so not a line cut short: damaged like any other
            damaged.append((number, problem))
    return records, damaged


def read_metrics(run_dir: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Every logged line of a run as a list of dicts (the rule is `scan_metrics`'s).

    `run_dir` may also be the path of a .jsonl file. Damaged lines are skipped with a
    `DamagedLogWarning` naming the file and the lines; an unfinished last line is skipped silently.
    """
    path = Path(run_dir)
    if path.is_dir():
        path = path / METRICS_FILE
    records, damaged = scan_metrics(path)
    if damaged:
        warnings.warn(damage_message(path, damaged), DamagedLogWarning, stacklevel=2)
    return records


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
    """Lines with a step after `step` (and an unfinished last line) are to be dropped; reads only.

    `last_time` is the `time` of the last kept line, so a resumed run continues its clock
    from there. Unlike the readers, a damaged line is a `BadInputError`, found before the run is
    changed: applying the plan rewrites the file, and a damaged line can be neither kept (its step
    is unknown) nor dropped without losing what the user may still mend.
    """
    kept: list[bytes] = []
    dropped = 0
    last_time = 0.0
    data = _read_log(path)
    end = data.rfind(b"\n") + 1
    lines = data[:end].split(b"\n")[:-1]
    unfinished = bool(data[end:].strip())
    if unfinished:
        lines.append(data[end:])
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        record, problem = decode_line(line)
        if problem == NOT_JSON and unfinished and number == len(lines):
            dropped += 1  # the line a killed writer did not finish
            continue
        if problem is not None:
            raise BadInputError(path, f"line {number} is {problem}; resuming rewrites this file, "
                                      "so mend or delete that line first")
        if isinstance(record.get("step"), int) and record["step"] > step:
            dropped += 1
            continue
        kept.append(line)
        if isinstance(record.get("time"), (int, float)):
            last_time = float(record["time"])
    return Truncation(path, kept, dropped, last_time)
