"""The file helpers every writer in runforge uses (public: trainers and scripts import them).

Atomic writes: temp file in the same directory, flush, fsync, rename.

A reader (or a process killed at any instant) sees either the old file or the
new one, never half of one.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, BinaryIO, Callable

from ..errors import BadInputError, RunNotFoundError
from .layout import TEMP_SUFFIX


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


_CREATE_FLAGS = os.O_RDWR | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)


def _create_beside(directory: Path, prefix: str, suffix: str) -> tuple[int, str]:
    """tempfile.mkstemp's contract (a new file only this call created, mode 0600) without importing
    tempfile, which pulls in shutil and random: ~5 ms of every `from runforge import Run`."""
    for _ in range(100):
        name = os.path.join(directory, f"{prefix}{os.urandom(6).hex()}{suffix}")
        try:
            return os.open(name, _CREATE_FLAGS, 0o600), name
        except FileExistsError:
            continue
    raise FileExistsError(f"{directory}: no free temporary name after 100 tries")


def stage_with(path: str | os.PathLike[str], write: Callable[[BinaryIO], Any], *, durable: bool = True) -> Path:
    """Call `write(fileobj)` on a temporary file beside `path` and return it, complete but not yet in place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = _create_beside(path.parent, f".{path.name}.", TEMP_SUFFIX)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            if durable:
                os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    return Path(tmp)


def commit(staged: Path, path: str | os.PathLike[str], *, durable: bool = True) -> Path:
    """Rename a staged file over `path` (atomic on one filesystem)."""
    path = Path(path)
    os.replace(staged, path)
    if durable:
        _fsync_dir(path.parent)
    return path


def write_with(path: str | os.PathLike[str], write: Callable[[BinaryIO], Any], *, durable: bool = True) -> Path:
    """Call `write(fileobj)` on a temporary file beside `path`, then rename it over `path`."""
    staged = stage_with(path, write, durable=durable)
    try:
        return commit(staged, path, durable=durable)
    except BaseException:
        try:
            os.unlink(staged)
        except OSError:
            pass
        raise


def write_bytes(path: str | os.PathLike[str], data: bytes, *, durable: bool = True) -> Path:
    return write_with(path, lambda f: f.write(data), durable=durable)


def dumps_pretty(obj: Any) -> str:
    """The JSON style of every runforge artifact: 2-space indent, UTF-8, keys in insertion order."""
    return json.dumps(obj, indent=2, ensure_ascii=False, allow_nan=False, default=json_default) + "\n"


def write_json(path: str | os.PathLike[str], obj: Any, *, durable: bool = True) -> Path:
    return write_bytes(path, dumps_pretty(sanitize(obj)).encode("utf-8"), durable=durable)


def json_default(value: Any) -> Any:
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    item = getattr(value, "item", None)  # numpy / torch scalars, without importing either
    if callable(item):
        try:
            return item()
        except (TypeError, ValueError, RuntimeError):  # torch: a tensor of several elements
            pass
    tolist = getattr(value, "tolist", None)
    if callable(tolist):
        return tolist()
    raise TypeError(f"value of type {type(value).__name__} is not JSON serializable")


def sanitize(obj: Any) -> Any:
    """Replace NaN and infinities by None so that every file is strict JSON."""
    if isinstance(obj, float):
        return obj if obj == obj and obj not in (float("inf"), float("-inf")) else None
    if isinstance(obj, dict):
        return {k: sanitize(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [sanitize(v) for v in obj]
    if obj is None or isinstance(obj, (str, int)):
        return obj
    try:
        return sanitize(json_default(obj))
    except TypeError:
        return obj  # json.dumps names the type in its error


def read_json_object(path: Path, what: str = "file", error: type[BadInputError] | None = None) -> dict[str, Any]:
    """A JSON file that must hold an object; one-line errors naming the file otherwise.

    A missing file raises `RunNotFoundError` and a malformed one `BadInputError`, unless `error`
    names the class for both (e.g. `ConfigError`).
    """
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        if error is None:
            raise RunNotFoundError(f"{path}: no such {what}") from None
        raise error(path, f"no such {what}") from None
    except IsADirectoryError:
        raise (error or BadInputError)(path, f"is a directory, not a {what}") from None
    except OSError as exc:
        raise (error or BadInputError)(path, f"cannot be read ({exc.strerror or exc})") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise (error or BadInputError)(path, f"is not valid JSON ({exc})") from None
    except RecursionError:
        raise (error or BadInputError)(path, "nests too deeply to be a runforge file") from None
    if not isinstance(data, dict):
        raise (error or BadInputError)(path, "must hold a JSON object")
    return data
