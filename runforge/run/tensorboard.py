"""TensorBoard event files written without TensorBoard.

The record format is TFRecord framing around `tensorflow.Event` protocol
buffers. Encoding the few messages we need by hand costs a few microseconds per
step, where `SummaryWriter.add_scalar` costs ~50 us per scalar: that is how the
mirror stays on by default. All scalars of one `run.log` call go into one Event
(one Summary with several values), as `tf.summary.merge_all` does.

    Event   { double wall_time = 1; int64 step = 2; string file_version = 3; Summary summary = 5;
              SessionLog session_log = 7; }
    Summary { repeated Value value = 1; }
    Value   { string tag = 1; float simple_value = 2; Image image = 4; }
    Image   { int32 height = 1; int32 width = 2; int32 colorspace = 3; bytes encoded_image_string = 4; }
    SessionLog { SessionStatus status = 1; }   # START = 1 makes readers purge events at or after `step`
"""

from __future__ import annotations

import math
import os
import socket
import struct
import time
from pathlib import Path
from typing import Any, BinaryIO, Iterable

from crc32c import crc32c as _crc32c

_pack_double = struct.Struct("<d").pack
_pack_float = struct.Struct("<f").pack
_pack_u64 = struct.Struct("<Q").pack
_pack_u32 = struct.Struct("<I").pack


def _pack_scalar(value: float) -> bytes:
    try:
        return _pack_float(value)
    except (OverflowError, struct.error):  # beyond float32: TensorBoard shows it as infinite
        return _pack_float(math.copysign(math.inf, value))


def _varint(n: int) -> bytes:
    if n < 0:
        n += 1 << 64
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _field_bytes(number: int, payload: bytes) -> bytes:
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def _mask(crc: int) -> int:
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def _masked_crc(data: bytes) -> int:
    return _mask(_crc32c(data))


def frame(event: bytes) -> bytes:
    """TFRecord framing: length, crc of length, data, crc of data."""
    header = _pack_u64(len(event))
    return header + _pack_u32(_masked_crc(header)) + event + _pack_u32(_masked_crc(event))


def _event(wall_time: float, step: int, body: bytes) -> bytes:
    return b"\x09" + _pack_double(wall_time) + b"\x10" + _varint(step) + body


def flatten_scalars(metrics: dict[str, Any], prefix: str = "") -> Iterable[tuple[str, float]]:
    """Yield (tag, value) for every number in a nested metrics dict; tags joined with '/'."""
    for key, value in metrics.items():
        kind = type(value)
        if kind is float or kind is int:
            yield prefix + key, value
        elif kind is dict:
            yield from flatten_scalars(value, prefix + key + "/")
        elif kind is not bool and kind is not str and hasattr(value, "__float__"):
            try:
                yield prefix + key, float(value)
            except (TypeError, ValueError):
                pass


class EventFileWriter:
    """Appends events to `tb/events.out.tfevents.<time>.<host>.<pid>.0` (the name TensorBoard globs for)."""

    def __init__(self, logdir: str | os.PathLike[str]) -> None:
        self.logdir = Path(logdir)
        self.logdir.mkdir(parents=True, exist_ok=True)
        # Readers load files in name order: a resumed run's file must sort after the earlier ones.
        stamp = int(time.time())
        for existing in self.logdir.glob("events.out.tfevents.*"):
            parts = existing.name.split(".")
            if len(parts) > 3 and parts[3].isdigit():
                stamp = max(stamp, int(parts[3]) + 1)
        name = f"events.out.tfevents.{stamp:010d}.{socket.gethostname()}.{os.getpid()}.0"
        self.path = self.logdir / name
        self._file: BinaryIO = open(self.path, "ab")
        self._value_heads: dict[str, bytes] = {}
        self._file.write(frame(_event(time.time(), 0, _field_bytes(3, b"brain.Event:2"))))

    def _value_head(self, tag: str) -> bytes:
        """Everything of a Summary.Value field but the 4 float bytes: fixed for a given tag."""
        head = self._value_heads.get(tag)
        if head is None:
            body = _field_bytes(1, tag.encode("utf-8")) + b"\x15"
            head = self._value_heads[tag] = b"\x0a" + _varint(len(body) + 4) + body
        return head

    def encode_scalars(self, wall_time: float, step: int, metrics: dict[str, Any]) -> bytes:
        """One framed Event holding every number in `metrics` (b"" when there is none)."""
        heads = self._value_heads
        parts: list[bytes] = []
        for key, value in metrics.items():
            kind = type(value)
            if kind is float or kind is int:  # the common case, kept free of generators
                parts.append(heads.get(key) or self._value_head(key))
                parts.append(_pack_scalar(value))
            elif kind is not bool and kind is not str:
                for tag, number in flatten_scalars({key: value}):
                    parts.append(self._value_head(tag))
                    parts.append(_pack_scalar(number))
        if not parts:
            return b""
        summary = b"".join(parts)
        return frame(b"\x09" + _pack_double(wall_time) + b"\x10" + _varint(step) + b"\x2a" + _varint(len(summary))
                     + summary)

    def write_image(self, wall_time: float, step: int, tag: str, png: bytes, height: int, width: int,
                    channels: int) -> None:
        """Append an image event. The PNG is the last field of every enclosing message, so the
        record is written as header + PNG without copying the PNG (it can be hundreds of KB)."""
        image_head = (b"\x08" + _varint(height) + b"\x10" + _varint(width) + b"\x18" + _varint(channels)
                      + b"\x22" + _varint(len(png)))
        image_len = len(image_head) + len(png)
        value_head = _field_bytes(1, tag.encode("utf-8")) + b"\x22" + _varint(image_len)
        value_len = len(value_head) + image_len
        summary_head = b"\x0a" + _varint(value_len)
        summary_len = len(summary_head) + value_len
        head = (_event(wall_time, step, b"\x2a" + _varint(summary_len)) + summary_head + value_head + image_head)
        header = _pack_u64(len(head) + len(png))
        self._file.write(header + _pack_u32(_masked_crc(header)) + head)
        self._file.write(png)
        self._file.write(_pack_u32(_mask(_crc32c(png, _crc32c(head)))))

    def purge_from(self, step: int) -> None:
        """Tell readers to drop events at or after `step` (a resumed run rewrites them)."""
        self._file.write(frame(_event(time.time(), step, _field_bytes(7, b"\x08\x01"))))

    def write(self, records: bytes) -> None:
        if records:
            self._file.write(records)

    def flush(self) -> None:
        self._file.flush()

    def close(self) -> None:
        self._file.close()
