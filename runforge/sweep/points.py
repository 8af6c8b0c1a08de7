"""The points of a sweep, from `--grid` items and the trainer's Config.

    lr=1e-3,1e-2          a list: comma-separated values of the flag
    seed=0..3             an integer flag: every integer from 0 to 3
    lr=1e-4:1e-1          a range, only with --random: log-uniform when both ends are positive and
                          span more than 10x, uniform otherwise
    hidden_channels=8,16  a list-valued flag: one value per item; repeat the key for more values

Each value is converted and bounds-checked as the flag would be (`runforge.config.convert`), and
every point is built into the trainer's Config the way `runforge train` builds it (preset, then
--config, then flags), so a bad point is refused before anything is written.
"""

from __future__ import annotations

import math
import random
import re
import typing
from dataclasses import dataclass, field
from itertools import product
from pathlib import Path
from typing import Any

from ..config import _unwrap_optional, build, check_bounds, convert, fields_of, to_dict
from ..errors import ConfigError

MAX_POINTS = 10_000
SIGNIFICANT_DIGITS = 4
"""Sampled floats are rounded to this many digits, so the run folder's name and its config agree."""
NAME_LIMIT = 120
INT_RANGE = re.compile(r"^(-?\d+)\.\.(-?\d+)$")


@dataclass
class Axis:
    """One varied flag: a list of values, or a lo:hi range (`--random` only)."""

    key: str
    type: Any
    values: list[Any] = field(default_factory=list)
    low: float | None = None
    high: float | None = None

    @property
    def is_range(self) -> bool:
        return self.low is not None

    @property
    def is_int(self) -> bool:
        return _unwrap_optional(self.type)[0] is int

    @property
    def log_scale(self) -> bool:
        assert self.low is not None and self.high is not None
        return self.low > 0 and self.high / self.low > 10

    def describe(self) -> dict[str, Any]:
        """sweep.json's account of the axis."""
        if self.is_range:
            return {"range": [self.low, self.high], "scale": "log" if self.log_scale else "linear",
                    "type": "int" if self.is_int else "float"}
        return {"values": [_jsonable(v) for v in self.values]}

    def draw(self, rng: random.Random) -> Any:
        if not self.is_range:
            return rng.choice(self.values)
        assert self.low is not None and self.high is not None
        if self.log_scale:
            value = math.exp(rng.uniform(math.log(self.low), math.log(self.high)))
        else:
            value = rng.uniform(self.low, self.high)
        if self.is_int:
            return min(max(int(round(value)), int(self.low)), int(self.high))
        return min(max(float(f"{value:.{SIGNIFICANT_DIGITS}g}"), self.low), self.high)


@dataclass
class Point:
    index: int
    values: dict[str, Any]
    """The varied flags' typed values."""
    name: str = ""
    config: dict[str, Any] = field(default_factory=dict)
    """The point's whole config, as its config.json will hold it."""

    def flags(self, types: dict[str, Any]) -> list[str]:
        """The command-line flags that set the point's values."""
        return [arg for key, value in self.values.items() for arg in flag_args(key, value, types[key])]

    def label(self) -> str:
        return " ".join(f"{key}={cli_text(value)}" for key, value in self.values.items())


def flag_args(key: str, value: Any, tp: Any) -> list[str]:
    """`--key text`, or `--key` / `--no_key` for a bool flag (those take no value)."""
    if _unwrap_optional(tp)[0] is bool and isinstance(value, bool):
        return [f"--{key}" if value else f"--no_{key}"]
    return [f"--{key}", cli_text(value)]


def cli_text(value: Any) -> str:
    """A typed value as the flag's text, which `convert` reads back to the same value."""
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, (list, tuple)):
        return ",".join(cli_text(v) for v in value)
    return str(value)


def _jsonable(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, tuple):
        return [_jsonable(v) for v in value]
    return value


def parse_grid(items: list[str], config_cls: type, trainer: str) -> list[Axis]:
    """The axes of `--grid k=v ...`, in the order the keys were first given."""
    known = {f.name: (f, tp) for f, tp in fields_of(config_cls)}
    axes: dict[str, Axis] = {}
    for item in items:
        key, sep, text = item.partition("=")
        key = key.strip().lstrip("-")
        if not sep or not key:
            raise ConfigError(None, f"--grid {item}: expected KEY=VALUES (e.g. lr=1e-3,1e-2)")
        if key not in known:
            import difflib

            close = difflib.get_close_matches(key, list(known), n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            raise ConfigError(None, f"--grid {key}: not a flag of {trainer}{hint}")
        fld, tp = known[key]
        where = f"--grid {key}"
        if not text.strip():
            raise ConfigError(None, f"{where}: no values given")
        axis = axes.setdefault(key, Axis(key, tp))
        inner = _unwrap_optional(tp)[0]
        numeric = inner in (int, float)
        if numeric and ":" in text:
            if axis.values or axis.is_range:
                raise ConfigError(None, f"{where}: a range cannot be combined with other values of the key")
            low_text, _, high_text = text.partition(":")
            low = convert(inner, low_text.strip(), where)
            high = convert(inner, high_text.strip(), where)
            if not low < high:
                raise ConfigError(None, f"{where}: range {text} must go from low to high")
            check_bounds(fld, low, where)
            check_bounds(fld, high, where)
            axis.low, axis.high = low, high
            continue
        if axis.is_range:
            raise ConfigError(None, f"{where}: a range cannot be combined with other values of the key")
        is_list = typing.get_origin(inner) in (list, tuple)
        pieces = [text] if is_list else text.split(",")
        for piece in pieces:
            piece = piece.strip()
            ints = INT_RANGE.match(piece) if inner is int else None
            if ints:
                first, last = int(ints.group(1)), int(ints.group(2))
                if last < first or last - first >= MAX_POINTS:
                    raise ConfigError(None, f"{where}: {piece} must count up, at most {MAX_POINTS} values")
                values = list(range(first, last + 1))
            else:
                values = [convert(tp, piece, where)]
            for value in values:
                check_bounds(fld, value, where)
                if value not in axis.values:  # a repeated value would only repeat a run
                    axis.values.append(value)
    return list(axes.values())


def grid_points(axes: list[Axis], random_count: int | None, seed: int) -> list[Point]:
    """The cartesian product of the axes, or `random_count` points drawn from them."""
    ranges = [a.key for a in axes if a.is_range]
    if random_count is None:
        if ranges:
            raise ConfigError(None, f"--grid {ranges[0]}: a range lo:hi needs --random N")
        total = math.prod(len(a.values) for a in axes)
        if total > MAX_POINTS:
            raise ConfigError(None, f"--grid: {total} points, more than {MAX_POINTS}")
        combos = list(product(*(a.values for a in axes)))
    else:
        rng = random.Random(seed)
        if not ranges:
            total = math.prod(len(a.values) for a in axes)
            if random_count > total:
                raise ConfigError(None, f"--random: {random_count} points asked, the grid holds only {total}")
            # distinct points, in the grid's order
            combos = [_nth(axes, n) for n in sorted(rng.sample(range(total), random_count))]
        else:
            combos = [tuple(a.draw(rng) for a in axes) for _ in range(random_count)]
    points = [Point(i, {a.key: v for a, v in zip(axes, combo)}) for i, combo in enumerate(combos)]
    width = max(2, len(str(len(points) - 1)))
    for point in points:
        point.name = point_name(point, width)
    return points


def _nth(axes: list[Axis], n: int) -> tuple[Any, ...]:
    """The n-th point of the product, in `itertools.product` order."""
    picks = []
    for axis in reversed(axes):
        n, i = divmod(n, len(axis.values))
        picks.append(axis.values[i])
    return tuple(reversed(picks))


def point_name(point: Point, width: int) -> str:
    """`03-lr_0.001-steps_500`: the index keeps names unique and sorted, the rest tells the point."""
    parts = [f"{point.index:0{width}d}"]
    for key, value in point.values.items():
        parts.append(f"{key}_{re.sub(r'[^A-Za-z0-9.]+', '_', cli_text(value)).strip('_') or 'none'}")
    return "-".join(parts)[:NAME_LIMIT]


def check_points(points: list[Point], config_cls: type, base: Any, flags: dict[str, Any],
                 types: dict[str, Any], check_inputs: Any) -> None:
    """Build every point's Config as its `runforge train` will (the same flags over the same base) and
    run the trainer's input checks on it; fills `point.config`."""
    for point in points:
        overrides = dict(flags)
        for key, value in point.values.items():
            overrides[key] = value if isinstance(value, bool) else cli_text(value)
        try:
            cfg = build(config_cls, base, overrides)
            if check_inputs is not None:
                check_inputs(cfg)
        except ConfigError as exc:
            raise ConfigError(exc.path, f"{exc.problem} (point {point.name})") from None
        point.config = to_dict(cfg)


def field_types(config_cls: type) -> dict[str, Any]:
    return {f.name: tp for f, tp in fields_of(config_cls)}


