"""Export a run's final artifact into a registry: `{registry}/{prefix}_{source}_{X}/`.

X is 1 + the largest X already taken for that prefix and source. The folder is
assembled under a hidden staging name and renamed into place; a rename onto a
folder another exporter already filled fails, so racing exports take X, X+1,
... and every folder is complete when it appears. `{registry}/registry.json`
(a list of entries) is updated under an exclusive file lock and written
atomically, so no entry is lost when exports race.
"""

from __future__ import annotations

import errno
import json
import os
import re
from pathlib import Path
from typing import Any, Mapping

from ..errors import BadInputError
from .events import utc_now
from .files import write_json
from .layout import CONFIG_FILE, METADATA_FILE, METRICS_FILE, REGISTRY_FILE, RUN_FILE

# runforge.run binds `export` eagerly (see its __init__), so what an export alone needs (shutil,
# tempfile, fcntl, the metrics reader and orjson) is imported inside the functions that use it.


def _taken(registry: Path, prefix: str, source: str) -> int:
    pattern = re.compile(rf"^{re.escape(prefix)}_{re.escape(source)}_(\d+)$")
    numbers = [int(m.group(1)) for m in map(pattern.match, os.listdir(registry)) if m]
    return max(numbers, default=0)


def _read_json_or(path: Path, default: Any) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (FileNotFoundError, ValueError):
        return default


def export(
    run_dir: str | os.PathLike[str],
    registry: str | os.PathLike[str],
    prefix: str,
    source: str | int,
    files: Mapping[str, str | os.PathLike[str]] | None = None,
    metadata: Mapping[str, Any] | None = None,
) -> Path:
    """Copy a run's artifact into `{registry}/{prefix}_{source}_{X}/` and register it.

    Args:
        run_dir: the run being exported.
        registry: the registry folder (`runforge export` for voxel uses `maps`).
        prefix, source: name parts (`trained_map`, 1 -> `trained_map_1_X`).
        files: destination name inside the export -> source file (e.g. {"map.json": run/final_map.json}).
            train.jsonl is always copied.
        metadata: extra fields for training_metadata.json (prompt, data, ...).

    Returns:
        The export folder.
    """
    run_dir = Path(run_dir)
    registry = Path(registry)
    source = str(source)
    if not re.fullmatch(r"[A-Za-z0-9_.\-]+", source) or not re.fullmatch(r"[A-Za-z0-9_.\-]+", prefix):
        raise BadInputError(None, f"export name parts must be plain names, got prefix={prefix!r} source={source!r}")
    sources = {str(dest): Path(src) for dest, src in (files or {}).items()}
    if (run_dir / METRICS_FILE).exists():
        sources.setdefault(METRICS_FILE, run_dir / METRICS_FILE)
    for dest, src in sources.items():
        if not src.is_file():
            raise BadInputError(src, "is missing; nothing was exported")
        if Path(dest).is_absolute() or ".." in Path(dest).parts:
            raise BadInputError(None, f"export destination {dest!r} must be a relative path inside the export")
    import shutil
    import tempfile

    from .metrics import read_metrics

    run_info = _read_json_or(run_dir / RUN_FILE, {})
    metrics = read_metrics(run_dir)
    registry.mkdir(parents=True, exist_ok=True)
    _load_registry(registry)  # a damaged index stops the export before anything is written

    staging = Path(tempfile.mkdtemp(prefix=f".export-{prefix}_{source}-", dir=registry))
    try:
        for dest, src in sources.items():
            target = staging / dest
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, target)
        number = _taken(registry, prefix, source) + 1
        while True:
            final = registry / f"{prefix}_{source}_{number}"
            meta = {
                "export": final.name,
                "run_id": run_info.get("id"),
                "run_name": run_info.get("name"),
                "run_path": str(run_dir.resolve()),
                "trainer": run_info.get("trainer"),
                "source": source,
                "steps": metrics[-1].get("step") if metrics else run_info.get("step"),
                "final_metrics": metrics[-1] if metrics else None,
                "created_at": utc_now(),
                "run_created_at": run_info.get("created_at"),
                "config": _read_json_or(run_dir / CONFIG_FILE, None),
                "files": sorted(sources),
                **dict(metadata or {}),
            }
            write_json(staging / METADATA_FILE, meta)
            os.chmod(staging, 0o755)
            try:
                os.rename(staging, final)
                break
            except OSError as exc:
                if exc.errno not in (errno.EEXIST, errno.ENOTEMPTY):
                    raise
                number = max(number + 1, _taken(registry, prefix, source) + 1)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    _register(registry, {key: meta[key] for key in ("export", "run_id", "run_path", "trainer", "source", "steps", "created_at")})
    return final


def _register(registry: Path, entry: dict[str, Any]) -> None:
    import fcntl

    lock_path = registry / ".registry.lock"
    with open(lock_path, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            entries = _load_registry(registry)
            entries.append(entry)
            write_json(registry / REGISTRY_FILE, entries)
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _load_registry(registry: Path) -> list[Any]:
    path = registry / REGISTRY_FILE
    try:
        entries = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return []
    except ValueError as exc:
        raise BadInputError(path, f"is not valid JSON ({exc}); fix or remove it") from None
    if not isinstance(entries, list):
        raise BadInputError(path, "must hold a JSON list of exports; fix or remove it")
    return entries
