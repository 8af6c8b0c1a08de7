"""A trainer's config is one dataclass; its CLI flags are generated from it.

    @dataclass
    class Config:
        steps: int = option(500, "training steps")
        guidance: Literal["sds", "photometric"] = option("sds", "what pulls the render")
        export: bool = option(True, "export the final map to the registry")

gives `--steps INT`, `--guidance {sds,photometric}`, `--export/--no_export`, with
the help text, default and type in `--help`; `config.json` is `asdict(cfg)`, so
flags, defaults, the saved config and the generated docs cannot drift apart.

Supported field types: int, float, str, bool, pathlib.Path, Literal[...],
Optional[T] (`none` on the command line), and tuple[T, ...] / list[T].
Numbers must be finite; `option(..., gt=0, le=10)` bounds a number (or each
element of a list of numbers), checked for flags, config files and presets alike.
A config file's values must have their JSON type (`"5"` is not an integer).
Unknown flags, unknown config-file keys and values of the wrong type or out of
range are `ConfigError`s: one line, exit 2.

A class attribute `FLAG_ALIASES = {"result_dir": "out"}` (a `ClassVar`, not a field) gives a flag of the
command another name, for users of the trainer's upstream: `--result_dir X` is `--out X`, and giving both
is an error (exit 2). Only flags the parser has get an alias.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import operator
import sys
import types
import typing
from pathlib import Path
from typing import Any, Literal, Sequence, TypeVar

from .errors import ConfigError

T = TypeVar("T")
_MISSING = dataclasses.MISSING


BOUNDS = {"gt": (operator.gt, ">"), "ge": (operator.ge, ">="), "lt": (operator.lt, "<"), "le": (operator.le, "<=")}


def option(default: Any, help: str, *, gt: float | None = None, ge: float | None = None, lt: float | None = None,
           le: float | None = None, **metadata: Any) -> Any:
    """A config field with its help text and optional bounds; lists and dicts get a default_factory."""
    bounds = {name: value for name, value in (("gt", gt), ("ge", ge), ("lt", lt), ("le", le)) if value is not None}
    metadata = {"help": help, **({"bounds": bounds} if bounds else {}), **metadata}
    if isinstance(default, (list, dict, set)):
        return dataclasses.field(default_factory=lambda: type(default)(default), metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


def _unwrap_optional(tp: Any) -> tuple[Any, bool]:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1 and len(typing.get_args(tp)) == 2:
            return args[0], True
    return tp, False


def type_name(tp: Any) -> str:
    inner, optional = _unwrap_optional(tp)
    origin = typing.get_origin(inner)
    if origin is Literal:
        name = "{" + ",".join(str(a) for a in typing.get_args(inner)) + "}"
    elif origin in (tuple, list):
        args = [a for a in typing.get_args(inner) if a is not Ellipsis]
        name = f"{type_name(args[0]) if args else 'str'}..."
    else:
        name = getattr(inner, "__name__", str(inner)).upper()
    return f"{name}|none" if optional else name


def bounds_text(field: dataclasses.Field[Any]) -> str:
    """`>0, <=10` for a bounded field, '' otherwise."""
    return ", ".join(f"{BOUNDS[name][1]}{value:g}" for name, value in field.metadata.get("bounds", {}).items())


def check_bounds(field: dataclasses.Field[Any], value: Any, where: str) -> None:
    bounds = field.metadata.get("bounds")
    if not bounds or value is None:
        return
    for item in value if isinstance(value, (list, tuple)) else (value,):
        for name, limit in bounds.items():
            compare, symbol = BOUNDS[name]
            if not compare(item, limit):
                raise ConfigError(None, f"{where}: must be {symbol} {limit:g}, got {item!r}")


def convert(tp: Any, raw: Any, where: str, *, from_text: bool = True) -> Any:
    """Turn `raw` into a value of type `tp`, or raise ConfigError.

    `from_text`: `raw` is a command-line string (`"5"` may be an int); otherwise a JSON
    value, which must already have the field's type.
    """
    inner, optional = _unwrap_optional(tp)
    if optional and (raw is None or (from_text and isinstance(raw, str) and raw.lower() in ("none", "null"))):
        return None
    if not from_text and isinstance(raw, str) and inner in (int, float, bool):
        raise ConfigError(None, f"{where}: expected {type_name(inner).lower()}, got the string {raw!r}")
    origin = typing.get_origin(inner)
    if origin is Literal:
        choices = typing.get_args(inner)
        for choice in choices:
            if raw == choice or (isinstance(raw, str) and str(choice) == raw):
                return choice
        raise ConfigError(None, f"{where}: {raw!r} is not one of {', '.join(map(str, choices))}")
    if origin in (tuple, list):
        args = [a for a in typing.get_args(inner) if a is not Ellipsis]
        items = raw.split(",") if from_text and isinstance(raw, str) else raw
        if not isinstance(items, (list, tuple)):
            raise ConfigError(None, f"{where}: expected a list, got {raw!r}")
        if origin is tuple and args and Ellipsis not in typing.get_args(inner) and len(items) != len(args):
            raise ConfigError(None, f"{where}: expected {len(args)} values, got {len(items)}")
        element_types = args if origin is tuple and Ellipsis not in typing.get_args(inner) else [args[0] if args else str] * len(items)
        values = [convert(t, v, where, from_text=from_text) for t, v in zip(element_types, items)]
        return tuple(values) if origin is tuple else values
    if inner is bool:
        if isinstance(raw, bool):
            return raw
        if isinstance(raw, str) and raw.lower() in ("1", "true", "yes", "on"):
            return True
        if isinstance(raw, str) and raw.lower() in ("0", "false", "no", "off"):
            return False
        raise ConfigError(None, f"{where}: expected true or false, got {raw!r}")
    if inner is int:
        if isinstance(raw, bool) or (isinstance(raw, float) and not raw.is_integer()):
            raise ConfigError(None, f"{where}: expected an integer, got {raw!r}")
        try:
            return int(raw)
        except (TypeError, ValueError, OverflowError):  # OverflowError: int(float("inf"))
            raise ConfigError(None, f"{where}: expected an integer, got {raw!r}") from None
    if inner is float:
        if isinstance(raw, bool):
            raise ConfigError(None, f"{where}: expected a number, got {raw!r}")
        try:
            value = float(raw)
        except (TypeError, ValueError, OverflowError):
            raise ConfigError(None, f"{where}: expected a number, got {raw!r}") from None
        if not math.isfinite(value):
            raise ConfigError(None, f"{where}: must be a finite number, got {raw!r}")
        return value
    if inner is Path:
        if not isinstance(raw, str):
            raise ConfigError(None, f"{where}: expected a path, got {raw!r}")
        return Path(raw)
    if inner is str:
        if not isinstance(raw, str):
            raise ConfigError(None, f"{where}: expected a string, got {raw!r}")
        return raw
    raise TypeError(f"{where}: config fields of type {inner!r} are not supported")


def fields_of(cls: type) -> list[tuple[dataclasses.Field[Any], Any]]:
    hints = typing.get_type_hints(cls)
    return [(f, hints[f.name]) for f in dataclasses.fields(cls)]


def default_of(field: dataclasses.Field[Any]) -> Any:
    if field.default is not _MISSING:
        return field.default
    if field.default_factory is not _MISSING:
        return field.default_factory()
    return _MISSING


def add_config_arguments(parser: argparse.ArgumentParser, cls: type) -> None:
    """One flag per field; defaults are suppressed so explicit flags can be told apart."""
    group = parser.add_argument_group(f"config ({cls.__module__}.{cls.__name__})")
    for field, tp in fields_of(cls):
        help_text = field.metadata.get("help", "")
        default = default_of(field)
        shown = "required" if default is _MISSING else json.dumps(to_jsonable(default))
        if bounds_text(field):
            shown = f"{shown}; {bounds_text(field)}"
        inner, _ = _unwrap_optional(tp)
        if inner is bool:
            group.add_argument(f"--{field.name}", dest=field.name, action="store_const", const=True,
                               default=argparse.SUPPRESS, help=f"{help_text} (default: {shown})")
            group.add_argument(f"--no_{field.name}", dest=field.name, action="store_const", const=False,
                               default=argparse.SUPPRESS, help=argparse.SUPPRESS)
        else:
            group.add_argument(f"--{field.name}", dest=field.name, metavar=type_name(tp), default=argparse.SUPPRESS,
                               help=f"{help_text} (default: {shown})")
    if isinstance(parser, OneLineParser):
        for alias, target in getattr(cls, "FLAG_ALIASES", {}).items():
            action = parser._option_string_actions.get(f"--{target}")  # argparse has no public lookup
            if action is not None:
                group.add_argument(f"--{alias}", dest=alias, metavar=action.metavar, default=argparse.SUPPRESS,
                                   help=f"the same as --{target}")
                parser.flag_aliases[alias] = (target, action.dest)


def build_from_args(cls: type[T], args: argparse.Namespace, base: T | None = None) -> T:
    """A config from the flags `add_config_arguments` added to a parser (only those given override `base`)."""
    names = {f.name for f in dataclasses.fields(cls)}
    return build(cls, base, {k: v for k, v in vars(args).items() if k in names})


def to_jsonable(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, tuple):
        return [to_jsonable(v) for v in value]
    if isinstance(value, list):
        return [to_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {k: to_jsonable(v) for k, v in value.items()}
    return value


def to_dict(cfg: Any) -> dict[str, Any]:
    """The config.json form: every field in definition order, paths as strings, tuples as lists."""
    return {f.name: to_jsonable(getattr(cfg, f.name)) for f in dataclasses.fields(cfg)}


def build(cls: type[T], base: T | None = None, overrides: dict[str, Any] | None = None, source: str = "--") -> T:
    """A config from `base` (or the defaults) with `overrides` converted and checked."""
    known = {f.name: (f, tp) for f, tp in fields_of(cls)}
    values: dict[str, Any] = {}
    for name, (field, _) in known.items():
        values[name] = getattr(base, name) if base is not None else default_of(field)
    for name, raw in (overrides or {}).items():
        if name not in known:
            close = _closest(name, list(known))
            hint = f" (did you mean {close}?)" if close else ""
            raise ConfigError(None, f"{source}{name}: unknown option{hint}")
        values[name] = convert(known[name][1], raw, f"{source}{name}", from_text=source == "--")
    missing = [name for name, value in values.items() if value is _MISSING]
    if missing:
        raise ConfigError(None, f"missing required option(s): {', '.join('--' + m for m in missing)}")
    for name, (field, _) in known.items():
        check_bounds(field, values[name], f"{source}{name}")
    cfg = cls(**values)
    check = getattr(cfg, "check", None)
    if callable(check):
        check()  # the trainer's own cross-field rules; raises ConfigError
    return cfg


def load_file(cls: type[T], path: str | Path, base: T | None = None) -> T:
    """A config from a JSON file (e.g. a run's config.json); unknown keys are errors."""
    from .run.files import read_json_object

    path = Path(path)
    data = read_json_object(path, "config file", ConfigError)
    try:
        return build(cls, base, data, source="key ")
    except ConfigError as exc:
        raise ConfigError(path, exc.problem) from None


def _closest(name: str, candidates: Sequence[str]) -> str | None:
    import difflib

    match = difflib.get_close_matches(name, candidates, n=1)
    return f"--{match[0]}" if match else None


def markdown_table(cls: type) -> str:
    """The docs table of a config: flag, type, default, help."""
    rows = ["| flag | type | default | meaning |", "|---|---|---|---|"]
    for field, tp in fields_of(cls):
        default = default_of(field)
        shown = "required" if default is _MISSING else json.dumps(to_jsonable(default))
        flag = f"--{field.name}" + (f" / --no_{field.name}" if _unwrap_optional(tp)[0] is bool else "")
        kind = type_name(tp) + (f" ({bounds_text(field)})" if bounds_text(field) else "")
        cells = (f"`{flag}`", kind, f"`{shown}`", field.metadata.get("help", ""))
        rows.append("| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |")
    return "\n".join(rows) + "\n"


class OneLineParser(argparse.ArgumentParser):
    """argparse with one-line errors: `runforge train voxel: error: ... (see --help)`, exit 2; and the config's
    FLAG_ALIASES (`add_config_arguments` registers them) folded into their flag's value after parsing."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.flag_aliases: dict[str, tuple[str, str]] = {}  # alias -> (its flag, the flag's dest)

    def parse_known_args(self, args: Any = None, namespace: Any = None) -> tuple[argparse.Namespace, list[str]]:
        parsed, rest = super().parse_known_args(args, namespace)
        for alias, (target, dest) in self.flag_aliases.items():
            if alias in vars(parsed):
                if getattr(parsed, dest, None) != self.get_default(dest):
                    self.error(f"--{alias} is another name for --{target}: give one of them")
                setattr(parsed, dest, vars(parsed).pop(alias))
                self._check_exclusive(alias, dest, parsed)
        return parsed, rest

    def _check_exclusive(self, alias: str, dest: str, parsed: argparse.Namespace) -> None:
        """argparse checks a mutually exclusive group while parsing, before an alias becomes its flag."""
        for group in self._mutually_exclusive_groups:
            if any(action.dest == dest for action in group._group_actions):
                for action in group._group_actions:
                    if action.dest != dest and getattr(parsed, action.dest, None) != self.get_default(action.dest):
                        self.error(f"argument --{alias}: not allowed with argument {action.option_strings[0]}")

    def error(self, message: str) -> typing.NoReturn:
        sys.stderr.write(f"{self.prog}: error: {message} (see --help)\n")
        raise SystemExit(2)
