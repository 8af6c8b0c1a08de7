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
from typing import Any, BinaryIO, Iterable, Sequence

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
    if 0 <= n < 0x4000:  # every tag and length, and most steps: one or two bytes without the loop
        return _SMALL_VARINTS[n]
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


_SMALL_VARINTS = [bytes((n,)) if n < 0x80 else bytes((n & 0x7F | 0x80, n >> 7)) for n in range(0x4000)]
_frame_heads: dict[int, bytes] = {}


def frame(event: bytes) -> bytes:
    """TFRecord framing: length, crc of length, data, crc of data."""
    size = len(event)
    head = _frame_heads.get(size)
    if head is None:  # scalar events come in a few sizes: the length and its crc are computed once each
        header = _pack_u64(size)
        head = header + _pack_u32(_masked_crc(header))
        if size < 4096:
            _frame_heads[size] = head
    return head + event + _pack_u32(_masked_crc(event))


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


# ---------------------------------------------------------------- histograms, text, hparams
#
# The rest of SummaryWriter's vocabulary, for `runforge.tensorboard` and import-tb. Each function
# returns one Summary.Value message; `summary_event` frames several into one Event.
#
#   Value            { string tag = 1; HistogramProto histo = 5; TensorProto tensor = 8; SummaryMetadata metadata = 9; }
#   HistogramProto   { double min = 1, max = 2, num = 3, sum = 4, sum_squares = 5;
#                      repeated double bucket_limit = 6 [packed]; repeated double bucket = 7 [packed]; }
#   SummaryMetadata  { PluginData plugin_data = 1; }     PluginData { string plugin_name = 1; bytes content = 2; }
#   TensorProto      { DataType dtype = 1; TensorShapeProto tensor_shape = 2; repeated bytes string_val = 8; }
#   HParamsPluginData { int32 version = 1; oneof { Experiment experiment = 2; SessionStartInfo session_start_info = 3;
#                       SessionEndInfo session_end_info = 4; } }
#   Experiment       { repeated HParamInfo hparam_infos = 4; repeated MetricInfo metric_infos = 5; }
#   HParamInfo       { string name = 1; DataType type = 4; ListValue domain_discrete = 5; }
#   MetricInfo       { MetricName name = 1; }             MetricName { string tag = 2; }
#   SessionStartInfo { map<string, google.protobuf.Value> hparams = 1; double start_time_secs = 5; }
#   SessionEndInfo   { Status status = 1; double end_time_secs = 2; }
#   google.protobuf.Value { double number_value = 2; string string_value = 3; bool bool_value = 4; }

HPARAMS_EXPERIMENT_TAG = "_hparams_/experiment"
HPARAMS_SESSION_START_TAG = "_hparams_/session_start_info"
HPARAMS_SESSION_END_TAG = "_hparams_/session_end_info"
_HPARAM_TYPES = {"string": 1, "bool": 2, "number": 3}  # hparams' DataType enum
# The hparams plugin's own summaries carry an empty float tensor; readers that go by data class need one.
_NULL_TENSOR = b"\x08\x01\x12\x02\x12\x00"


def _double_field(number: int, value: float) -> bytes:
    return _varint(number << 3 | 1) + _pack_double(value)


def _plugin_metadata(plugin: str, content: bytes) -> bytes:
    return _field_bytes(9, _field_bytes(1, _field_bytes(1, plugin.encode("utf-8")) + _field_bytes(2, content)))


def summary_event(wall_time: float, step: int, values: Iterable[bytes]) -> bytes:
    """One framed Event whose Summary holds the given Summary.Value messages."""
    summary = b"".join(_field_bytes(1, value) for value in values)
    return frame(_event(wall_time, step, _field_bytes(5, summary)))


def histogram_value(tag: str, minimum: float, maximum: float, count: float, total: float, total_squares: float,
                    bucket_limits: Sequence[float], bucket_counts: Sequence[float]) -> bytes:
    """A Summary.Value holding a histogram; `bucket_limits[i]` is the right edge of `bucket_counts[i]`."""
    histo = (_double_field(1, minimum) + _double_field(2, maximum) + _double_field(3, count)
             + _double_field(4, total) + _double_field(5, total_squares)
             + _field_bytes(6, struct.pack(f"<{len(bucket_limits)}d", *bucket_limits))
             + _field_bytes(7, struct.pack(f"<{len(bucket_counts)}d", *bucket_counts)))
    return _field_bytes(1, tag.encode("utf-8")) + _field_bytes(5, histo)


def text_value(tag: str, text: str) -> bytes:
    """A Summary.Value for TensorBoard's text plugin: a string tensor of shape [1]."""
    tensor = b"\x08\x07" + _field_bytes(2, _field_bytes(2, b"\x08\x01")) + _field_bytes(8, text.encode("utf-8"))
    return _field_bytes(1, tag.encode("utf-8")) + _plugin_metadata("text", b"") + _field_bytes(8, tensor)


def _proto_value(value: Any) -> tuple[str, bytes]:
    """(hparams type, google.protobuf.Value) of a hyperparameter; anything not a number, bool or string
    is shown as its text."""
    if isinstance(value, bool):
        return "bool", b"\x20" + (b"\x01" if value else b"\x00")
    if isinstance(value, (int, float)):
        return "number", _double_field(2, float(value))
    return "string", _field_bytes(3, str(value).encode("utf-8"))


def _hparams_value(tag: str, field: int, message: bytes) -> bytes:
    return _field_bytes(1, tag.encode("utf-8")) + _plugin_metadata("hparams", _field_bytes(field, message)) \
        + _field_bytes(8, _NULL_TENSOR)


def hparams_values(hparams: dict[str, Any], metric_tags: Iterable[str], start_time: float, end_time: float,
                   domains: dict[str, Sequence[Any]] | None = None) -> list[bytes]:
    """The experiment, session-start and session-end Summary.Values of TensorBoard's HPARAMS tab:
    the run is one session whose hyperparameters are `hparams` and whose metrics are the scalar
    tags `metric_tags` of the same run. None values are left out, as torch does."""
    infos = b""
    start = b""
    for name, value in hparams.items():
        if value is None:
            continue
        kind, encoded = _proto_value(value)
        info = _field_bytes(1, name.encode("utf-8")) + b"\x20" + _varint(_HPARAM_TYPES[kind])
        if domains and name in domains:
            info += _field_bytes(5, b"".join(_field_bytes(1, _proto_value(v)[1]) for v in domains[name]))
        infos += _field_bytes(4, info)
        start += _field_bytes(1, _field_bytes(1, name.encode("utf-8")) + _field_bytes(2, encoded))
    metrics = b"".join(_field_bytes(5, _field_bytes(1, _field_bytes(2, tag.encode("utf-8")))) for tag in metric_tags)
    return [
        _hparams_value(HPARAMS_EXPERIMENT_TAG, 2, infos + metrics),
        _hparams_value(HPARAMS_SESSION_START_TAG, 3, start + _double_field(5, start_time)),
        _hparams_value(HPARAMS_SESSION_END_TAG, 4, b"\x08\x01" + _double_field(2, end_time)),  # STATUS_SUCCESS
    ]
