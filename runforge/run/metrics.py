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
import struct
import sys
import warnings
import zlib
from array import array
from itertools import chain
from operator import itemgetter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, NamedTuple

from ..errors import BadInputError
from .files import json_default, write_with
from .layout import METRICS_FILE, METRICS_INDEX_FILE

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
    """Appends encoded lines to train.jsonl, and their numeric columns to train.index after them."""

    def __init__(self, path: Path, index: Path | None = None) -> None:
        self.path = path
        self._file = open(path, "ab")
        self._index: MetricsIndex | None = None
        if index is not None:
            try:
                self._index = MetricsIndex(index, path, os.fstat(self._file.fileno()).st_size)
            except (OSError, ValueError, TypeError, OverflowError):
                self._index = None  # derived data: the dashboard then parses train.jsonl, as for an old run

    def write_lines(self, lines: list[bytes], logged: list[tuple[int, Any, dict[str, Any]]] | None = None) -> None:
        """Append `lines`; `logged` are the (step, time, metrics) they encode, for the index."""
        data = b"\n".join(lines) + b"\n"
        self._file.write(data)
        self._file.flush()  # the lines reach the file before the index names them: an index is never ahead
        index = self._index
        if index is not None:
            try:
                index.append(data, lines, logged)
            except (OSError, ValueError, TypeError, OverflowError):
                index.close()
                self._index = None

    def sync(self) -> None:
        """Make the written lines durable (before a checkpoint that depends on them is listed)."""
        os.fsync(self._file.fileno())

    def close(self) -> None:
        self._file.close()
        if self._index is not None:
            self._index.close()


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
    intact: int = 0
    """The bytes at the start of train.jsonl that the rewrite leaves as they are."""

    def apply(self) -> None:
        """Rewrite train.jsonl atomically with the kept lines, if any were dropped."""
        if self.dropped:
            # train.index first: a kill between the two must not leave it describing bytes the rewrite changed
            cut_index(self.path.with_name(METRICS_INDEX_FILE), self.intact)
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
    intact = 0
    changed = False
    for number, line in enumerate(lines, 1):
        if not line.strip():
            changed = True
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
            changed = True
            continue
        kept.append(line)
        if not changed:
            intact += len(line) + 1
        if isinstance(record.get("time"), (int, float)):
            last_time = float(record["time"])
    return Truncation(path, kept, dropped, last_time, intact)


# ------------------------------------------------------------------------------------------------
# train.index: the numeric columns of train.jsonl, so that a chart of a long run needs no JSON parse.
#
# A head, "RFXI" | u64 device | u64 inode | u32 crc32 of the two (the train.jsonl its blocks were
# checked against), then blocks, each describing a stretch of train.jsonl that follows the one
# before it (the first starts at byte 0):
#
#     "RFX2" | u32 header length | u32 payload length | u32 crc32 of header + payload | header | payload
#
# The header is a JSON object: `start`/`end` (the stretch's bytes in train.jsonl), `crc` (their
# crc32), `lines` (their newlines), `records` and `last_step` (lines with an integer step, the last of
# those steps), `order` (the byte order of the payload), `check` ([length, crc32] of the stretch's last
# line, newline included) and `columns` ([name, count], ...); the payload holds, per column, `count`
# steps then `count` values as float64; the column `time` (`TIME_COLUMN`) holds the lines' `time`, for charts
# over training time. It is derived data: the writer appends a block only after the
# lines it describes are in train.jsonl, and a reader trusts a block only if it continues the one
# before, ends within train.jsonl and that file still holds the stretch (`scan_index`). So a kill at
# any moment, a rewrite by a resume, a copy of the run or a damaged index leave blocks that are
# checked or ignored, never wrong columns; whatever the blocks do not cover is parsed as before.

NOT_CHARTED = ("step", "time", "nonfinite")
"""Keys of a train.jsonl line that are not metrics."""
TIME_COLUMN = "time"
"""The column of `Columns` that holds the lines' `time` (no metric has this name: it is not charted)."""

INDEX_FILE_MAGIC = b"RFXI"
_FILE_HEAD = struct.Struct("<4sQQI")  # magic, device and inode of train.jsonl, crc32 of the two
INDEX_MAGIC = b"RFX2"  # RFX1 blocks had no time column: they are ignored, and a resumed writer rewrites them
_BLOCK_HEAD = struct.Struct("<4sIII")
INDEX_BLOCK_RECORDS = 4096
INDEX_BLOCK_BYTES = 256 << 10
"""A block is sealed at this many lines or payload bytes. Until then the writer rewrites the last
block in place with each batch, so a run that logs a line every few seconds still has few blocks."""

_HUGE = 2 ** 1024
"""Steps beyond float64 are not charted (the columns hold float64)."""
_NUMBER = frozenset((float, int))  # exact types: a bool is not charted, a numpy scalar reads back otherwise


class Columns:
    """The numeric columns of some train.jsonl lines as the dashboard charts them: name -> (steps, values),
    nested names joined by '.', null (a non-finite value) as NaN, and each line's `time` as `TIME_COLUMN`.
    A line whose step is not an integer is left out; strings, booleans and lists are not charted."""

    __slots__ = ("columns", "records", "last_step")

    def __init__(self) -> None:
        self.columns: dict[str, tuple[array, array]] = {}
        self.records = 0
        self.last_step: int | None = None

    def _column(self, name: str) -> tuple[array, array]:
        column = self.columns.get(name)
        if column is None:
            column = self.columns[name] = (array("d"), array("d"))
        return column

    def _add(self, name: str, step: int, value: float) -> None:
        column = self.columns.get(name)
        if column is None:
            column = self.columns[name] = (array("d"), array("d"))
        try:
            column[1].append(value)
        except OverflowError:  # an integer beyond float64: no point to draw, like a non-finite value
            column[1].append(math.nan)
        column[0].append(step)

    def add_records(self, records: list[dict[str, Any]]) -> None:
        """Parsed train.jsonl lines."""
        add = self._add
        for record in records:
            step = record.get("step")
            if type(step) is not int or not -_HUGE < step < _HUGE:
                continue
            self.records += 1
            self.last_step = step
            elapsed = record.get(TIME_COLUMN)
            if type(elapsed) is float or type(elapsed) is int:
                add(TIME_COLUMN, step, elapsed)
            for key, value in record.items():
                kind = type(value)
                if kind is float or kind is int:
                    if key not in NOT_CHARTED:
                        add(key, step, value)
                elif kind is dict:
                    self._add_nested(key + ".", value, step)
                elif value is None and key not in NOT_CHARTED:
                    add(key, step, math.nan)

    def _add_nested(self, prefix: str, values: dict[str, Any], step: int) -> None:
        for key, value in values.items():
            kind = type(value)
            if kind is float or kind is int:
                self._add(prefix + key, step, value)
            elif kind is dict:
                self._add_nested(f"{prefix}{key}.", value, step)
            elif value is None:
                self._add(prefix + key, step, math.nan)

    def add_logged(self, batch: list[tuple[int, Any, dict[str, Any]]]) -> bool:
        """`run.log` calls (step, time, metrics) not yet encoded: what `add_records` would make of their
        lines (whose `time` `Run` rounds to the microsecond), without parsing them. False, and nothing
        added, when a value is of a type whose reading back only the parser can tell (a numpy scalar, a
        tensor, a key that is not a string, ...)."""
        if not batch:
            return True
        steps = [entry[0] for entry in batch]
        if set(map(type, steps)) != {int}:
            return False
        try:
            x = array("d", steps)
        except OverflowError:
            return False
        times = [entry[1] for entry in batch]
        if not set(map(type, times)) <= _NUMBER:
            return False
        metrics = [entry[2] for entry in batch]
        keys = tuple(metrics[0])
        # Most runs log the same flat keys each step: a column at a time, at C speed. Equal sizes and
        # every key found mean equal key sets.
        rows: Any = None
        if keys and "nonfinite" not in keys and set(map(len, metrics)) == {len(keys)}:
            try:
                rows = list(map(itemgetter(*keys), metrics))
            except KeyError:
                rows = None
        if rows is not None and all(type(key) is str for key in keys):
            width = len(keys)
            row_major = list(chain.from_iterable(rows)) if width > 1 else rows
            values: array | None = None
            if set(map(type, row_major)) <= _NUMBER:
                try:
                    values = array("d", row_major)
                except OverflowError:
                    values = None
            if values is not None:
                total = sum(values)
                if total - total != 0:  # a NaN or an infinity somewhere: the line holds null there
                    values = array("d", [v if v - v == 0 else math.nan for v in values])
                for at, key in enumerate(keys):
                    column = self._column(key)
                    column[0].extend(x)
                    column[1].extend(values[at::width])
                self._add_times(x, times)
                self.records += len(batch)
                self.last_step = steps[-1]
                return True
        flat: list[tuple[str, int, float]] = []
        for step, _, values in batch:
            if "nonfinite" in values or not _flatten(values, "", step, flat):
                return False
        add = self._add
        for name, step, value in flat:
            add(name, step, value)
        self._add_times(x, times)
        self.records += len(batch)
        self.last_step = steps[-1]
        return True

    def _add_times(self, steps: array, times: list[float]) -> None:
        column = self._column(TIME_COLUMN)
        column[0].extend(steps)
        column[1].extend(array("d", [round(t, 6) for t in times]))


def _flatten(values: dict[Any, Any], prefix: str, step: int, out: list[tuple[str, int, float]]) -> bool:
    for key, value in values.items():
        if type(key) is not str:
            return False
        kind = type(value)
        if kind is float:
            out.append((prefix + key, step, value if value - value == 0 else math.nan))
        elif kind is int:
            try:
                out.append((prefix + key, step, float(value)))
            except OverflowError:
                out.append((prefix + key, step, math.nan))
        elif kind is dict:
            if not _flatten(value, f"{prefix}{key}.", step, out):
                return False
        elif value is None:
            out.append((prefix + key, step, math.nan))
        elif kind not in (str, bool, list, tuple):
            return False
    return True


def encode_block(start: int, end: int, lines: int, columns: Columns, last_line: bytes, crc: int) -> bytes:
    """One train.index block for the stretch [start, end) of train.jsonl, whose bytes have the crc32 `crc`
    and whose last line (newline included) is `last_line`."""
    names = list(columns.columns)
    header = _dumps({"start": start, "end": end, "lines": lines, "records": columns.records,
                     "last_step": columns.last_step, "order": sys.byteorder, "crc": crc,
                     "check": [len(last_line), zlib.crc32(last_line)],
                     "columns": [[name, len(columns.columns[name][0])] for name in names]})
    payload = b"".join(part.tobytes() for name in names for part in columns.columns[name])
    return _BLOCK_HEAD.pack(INDEX_MAGIC, len(header), len(payload), zlib.crc32(payload, zlib.crc32(header))) + header + payload


def index_head(log_fd: int) -> bytes:
    """The start of train.index: which file (device, inode) its blocks were checked against."""
    stat = os.fstat(log_fd)
    identity = struct.pack("<QQ", stat.st_dev, stat.st_ino)
    return _FILE_HEAD.pack(INDEX_FILE_MAGIC, stat.st_dev, stat.st_ino, zlib.crc32(identity))


class IndexBlock(NamedTuple):
    header: dict[str, Any]
    payload: int
    """Where the payload starts in the index data."""
    stop: int
    """Where the block ends in the index data."""


def _blocks(data: Any) -> Iterator[IndexBlock]:
    """The whole, undamaged blocks of index data (after its head), up to the first that is not."""
    view = memoryview(data)
    pos = _FILE_HEAD.size
    while pos + _BLOCK_HEAD.size <= len(data):
        magic, header_size, payload_size, crc = _BLOCK_HEAD.unpack_from(data, pos)
        body = pos + _BLOCK_HEAD.size
        payload = body + header_size
        stop = payload + payload_size
        if magic != INDEX_MAGIC or stop > len(data):
            return
        if zlib.crc32(view[payload:stop], zlib.crc32(view[body:payload])) != crc:
            return
        try:
            header = _fast_loads(bytes(view[body:payload]))
        except ValueError:
            return
        if type(header) is not dict:
            return
        yield IndexBlock(header, payload, stop)
        pos = stop


def _agrees(block: IndexBlock, start: int, log_fd: int, log_size: int, whole: bool) -> bool:
    """Whether `block` continues at `start` and train.jsonl (`log_size` bytes) still holds the stretch it
    describes: its last line, or with `whole` every byte of it."""
    header = block.header
    try:
        end, crc, (check_size, check_crc) = header["end"], header["crc"], header["check"]
        counts = [count for name, count in header["columns"] if type(name) is str]
        if not (header["start"] == start < end <= log_size and header["order"] == sys.byteorder
                and all(type(v) is int for v in (end, crc, check_size, check_crc, header["lines"], header["records"],
                                                  *counts))
                and len(counts) == len(header["columns"]) and min(counts, default=0) >= 0
                and 16 * sum(counts) == block.stop - block.payload and 0 < check_size <= end - start):
            return False
        if whole:
            return zlib.crc32(os.pread(log_fd, end - start, start)) == crc
        last = os.pread(log_fd, check_size, end - check_size)
    except (KeyError, TypeError, ValueError, OSError):
        return False
    return last.endswith(b"\n") and zlib.crc32(last) == check_crc


def scan_index(data: Any, log_fd: int, log_size: int) -> list[IndexBlock]:
    """The blocks of index data that describe train.jsonl (open as `log_fd`, `log_size` bytes long) from
    its start, up to the first that does not: a damaged block, one past the end of the log or one
    whose stretch the log no longer holds (rewritten by a resume, replaced, edited) ends the scan.

    While train.jsonl is the file the index was written beside (its device and inode, in the index's
    head) it only ever grew by whole lines, so a block's last line standing where it says is proof
    enough; any other file (a copy of the run, a log rewritten by a resume or by hand) has every
    block's bytes checked against their crc32, which costs a read of the log (~50 ms for 60 MB).
    """
    if len(data) < _FILE_HEAD.size:
        return []
    magic, dev, ino, crc = _FILE_HEAD.unpack_from(data, 0)
    if magic != INDEX_FILE_MAGIC or zlib.crc32(struct.pack("<QQ", dev, ino)) != crc:
        return []
    stat = os.fstat(log_fd)
    whole = (dev, ino) != (stat.st_dev, stat.st_ino)
    found = []
    covered = 0
    for block in _blocks(data):
        if not _agrees(block, covered, log_fd, log_size, whole):
            break
        found.append(block)
        covered = block.header["end"]
    return found


def _last_line(data: bytes) -> bytes:
    """The last line of `data` (which ends with a newline), newline included."""
    return data[data.rfind(b"\n", 0, len(data) - 1) + 1:]


class MetricsIndex:
    """Keeps train.index in step with train.jsonl: called by `MetricsFile` after each batch of lines.

    Opening it drops the blocks that no longer agree with train.jsonl, names the log it was checked
    against in its head, and describes the lines it does not cover yet (a kill between a batch and its
    block, a run from before the index), so that the blocks written from then on continue the ones
    before. Errors are the caller's to catch: the index is then abandoned for this session, and the
    readers parse what it does not cover.
    """

    def __init__(self, path: Path, log_path: Path, log_size: int) -> None:
        self.path = path
        self._fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            data = _read_fd(self._fd)
            with open(log_path, "rb") as log:
                blocks = scan_index(data, log.fileno(), log_size)
                self._pos = blocks[-1].stop if blocks else _FILE_HEAD.size
                self._end = blocks[-1].header["end"] if blocks else 0
                os.ftruncate(self._fd, self._pos)
                os.pwrite(self._fd, index_head(log.fileno()), 0)
                self._open: tuple[Columns, int, int, int] | None = None  # columns, start, lines, crc of the block rewritten in place
                if self._end < log_size:
                    log.seek(self._end)
                    self._describe(log.read(log_size - self._end))
        except BaseException:
            os.close(self._fd)
            raise

    def _describe(self, data: bytes) -> None:
        if not data.endswith(b"\n"):
            raise ValueError("train.jsonl ends with an unfinished line")
        number = 1
        for piece in pieces(data, len(data)):
            parsed = parse_lines(piece, number, exact=False)
            if parsed.damaged:
                raise ValueError("train.jsonl holds damaged lines")  # their warning is the readers' to give
            number += parsed.lines
            columns = Columns()
            columns.add_records(parsed.records)
            self._write(encode_block(self._end, self._end + len(piece), parsed.lines, columns, _last_line(piece),
                                     zlib.crc32(piece)), True)
            self._end += len(piece)

    def _write(self, block: bytes, seal: bool) -> None:
        os.pwrite(self._fd, block, self._pos)
        if seal:
            self._pos += len(block)
            self._open = None

    def append(self, data: bytes, lines: list[bytes], logged: list[tuple[int, Any, dict[str, Any]]] | None) -> None:
        """Describe `lines`, just appended to train.jsonl as `data`; `logged` are the calls they encode."""
        if self._open is None:
            self._open = (Columns(), self._end, 0, 0)
        columns, start, count, crc = self._open
        if logged is None or not columns.add_logged(logged):
            parsed = parse_lines(data, exact=False)
            if parsed.damaged:
                raise ValueError("a line the writer encoded does not parse")
            columns.add_records(parsed.records)
        count += len(lines)
        crc = zlib.crc32(data, crc)
        self._end += len(data)
        self._open = (columns, start, count, crc)
        block = encode_block(start, self._end, count, columns, lines[-1] + b"\n", crc)
        # a block is rewritten whole with each batch: one that starts big is sealed at once
        self._write(block, count >= INDEX_BLOCK_RECORDS // 2 or len(block) >= INDEX_BLOCK_BYTES)

    def close(self) -> None:
        try:
            os.close(self._fd)
        except OSError:
            pass


def _read_fd(fd: int) -> bytes:
    chunks = []
    while chunk := os.read(fd, 1 << 24):
        chunks.append(chunk)
    return b"".join(chunks)


def cut_index(path: Path, keep: int) -> None:
    """Drop the blocks of train.index that describe train.jsonl beyond its first `keep` bytes, before a
    rewrite changes those bytes; whatever is left stays true of the file before and after it."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return
    except OSError:
        data = b""
    stop = 0
    for block in _blocks(data):
        end = block.header.get("end")
        if type(end) is not int or end > keep:
            break
        stop = block.stop
    try:
        os.truncate(path, stop)
    except OSError:
        try:
            path.unlink()
        except OSError:
            pass  # the readers still check each block against train.jsonl
