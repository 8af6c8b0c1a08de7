"""Checkpoints through a caller's save function, so the run layer never imports torch.

    manager.write(step, state, torch.save)    # ckpts/ckpt_{step}_rank{rank}.pt (Run.checkpoint calls this
                                              # on its background writer)

The save function is called as `save_fn(state, fileobj)` on a temporary file
that is renamed into place once complete (torch.save and pickle.dump both take
a file object). The index `ckpts/index_rank{rank}.json` lists what this run
wrote; retention deletes only files listed there, never anything else.

A kill at any instant leaves a state `recover` repairs on resume:
- a step-named file written after the last index write but not listed is an
  orphan, deleted (its step is ahead of what the index promises);
- a fixed-name file (`last.pt`) is replaced in two phases: the index first lists
  the new step with the complete temporary file as `staged`, then the file is
  renamed into place and the index rewritten. A staged file still present is the
  newest checkpoint and is adopted; the index never names a step the file does
  not hold.
- retention lists the files it is about to delete as `retiring` in the index
  before deleting them; a kill in between leaves them to `recover`, which
  deletes what is still there.
A damaged index is a `BadInputError` naming it, never an empty list: resuming
from step 0 would silently discard the run's log.

Retention keeps the last `keep_last` checkpoints, every step that is a multiple
of `keep_every`, and the best by `metric` (lower is better unless `mode="max"`).
`keep_last=None` keeps everything.
"""

from __future__ import annotations

import json
import math
import os
import re
import threading
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, BinaryIO, Callable, Literal

from ..errors import BadInputError
from .files import commit, stage_with, write_json
from .layout import CHECKPOINT_DIR, CHECKPOINT_INDEX_PATTERN, CHECKPOINT_PATTERN, TEMP_SUFFIX

SaveFn = Callable[[Any, BinaryIO], Any]


@dataclass(frozen=True)
class CheckpointInfo:
    step: int
    path: Path
    metric: float | None = None


class CheckpointManager:
    def __init__(
        self,
        run_dir: Path,
        *,
        folder: str = CHECKPOINT_DIR,
        pattern: str = CHECKPOINT_PATTERN,
        rank: int = 0,
        keep_last: int | None = 3,
        keep_every: int | None = None,
        mode: Literal["min", "max"] = "min",
    ) -> None:
        if keep_last is not None and (isinstance(keep_last, bool) or not isinstance(keep_last, int) or keep_last < 0):
            raise ValueError(f"keep_last must be None or an integer >= 0, got {keep_last!r}")
        if keep_every is not None and (isinstance(keep_every, bool) or not isinstance(keep_every, int) or keep_every < 1):
            raise ValueError(f"keep_every must be None or an integer >= 1, got {keep_every!r}")
        if mode not in ("min", "max"):
            raise ValueError(f"mode must be 'min' or 'max', got {mode!r}")
        self.dir = run_dir / folder
        self.pattern = pattern
        self.rank = rank
        self.keep_last = keep_last
        self.keep_every = keep_every
        self.mode = mode
        self.index_path = self.dir / CHECKPOINT_INDEX_PATTERN.format(rank=rank)
        self._lock = threading.Lock()

    def path_for(self, step: int) -> Path:
        return self.dir / self.pattern.format(step=step, rank=self.rank)

    def entries(self) -> list[dict[str, Any]]:
        """The index: checkpoints this run wrote and kept, oldest first (BadInputError if it is damaged)."""
        return self._read_index()[0]

    def _read_index(self) -> tuple[list[dict[str, Any]], list[str]]:
        """(checkpoints, files being retired) of the index; BadInputError if it is damaged."""
        try:
            text = self.index_path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return [], []
        except (OSError, UnicodeDecodeError) as exc:
            raise BadInputError(self.index_path, f"checkpoint index cannot be read ({exc})") from None
        try:
            data = json.loads(text)
        except (ValueError, RecursionError):
            raise BadInputError(self.index_path, "checkpoint index is not valid JSON") from None
        checkpoints = data.get("checkpoints") if isinstance(data, dict) else None
        if not isinstance(checkpoints, list):
            raise BadInputError(self.index_path, 'checkpoint index must be an object with a "checkpoints" list')
        for position, entry in enumerate(checkpoints):
            problem = _entry_problem(entry)
            if problem:
                raise BadInputError(self.index_path, f"checkpoint index entry {position} {problem}")
        retiring = data.get("retiring", [])
        if not isinstance(retiring, list) or any(_name_problem(name) for name in retiring):
            raise BadInputError(self.index_path, '"retiring" must be a list of file names inside the checkpoint folder')
        return checkpoints, retiring

    def _resolve(self, entry: dict[str, Any]) -> Path | None:
        """The file holding this entry's state (a staged one until it is renamed), or None if it is gone."""
        staged = entry.get("staged")
        if staged and (self.dir / staged).is_file():
            return self.dir / staged
        path = self.dir / entry["file"]
        return path if path.is_file() else None

    def latest(self) -> CheckpointInfo | None:
        """The newest checkpoint whose file is complete on disk."""
        for entry in sorted(self.entries(), key=lambda e: e["step"], reverse=True):
            path = self._resolve(entry)
            if path is not None:
                return CheckpointInfo(entry["step"], path, entry.get("metric"))
        return None

    def best(self) -> CheckpointInfo | None:
        scored = [(e, p) for e in self.entries() if e.get("metric") is not None and (p := self._resolve(e))]
        if not scored:
            return None
        pick = min if self.mode == "min" else max
        entry, path = pick(scored, key=lambda pair: pair[0]["metric"])
        return CheckpointInfo(entry["step"], path, entry["metric"])

    def find(self, path: Path) -> CheckpointInfo | None:
        """The index entry of a checkpoint file given by the user (--resume FILE)."""
        path = path.resolve()
        for entry in self.entries():
            if (self.dir / entry["file"]).resolve() == path:
                return CheckpointInfo(entry["step"], self._resolve(entry) or path, entry.get("metric"))
        return None

    def write(self, step: int, state: Any, save_fn: SaveFn, metric: float | None = None) -> Path:
        """Write one checkpoint now (the Run calls this from its background writer)."""
        path = self.path_for(step)
        staged = stage_with(path, lambda f: save_fn(state, f))
        with self._lock:
            name = path.relative_to(self.dir).as_posix()
            # a pattern without {step} (last.pt) rewrites one file: it keeps one entry
            entries = [e for e in self.entries() if e["step"] != step and e["file"] != name]
            entry = {"step": step, "file": name, "metric": _finite(metric)}
            entries.append(entry)
            entries.sort(key=lambda e: e["step"])
            keep = self._keep(entries)
            kept = [e for e in entries if e["step"] in keep]
            if path.exists():
                staged_name = staged.relative_to(self.dir).as_posix()
                self._write_index([dict(e, staged=staged_name) if e is entry else e for e in kept])
            commit(staged, path)
            # The index before the deletions, naming them: a kill between the two leaves files recover deletes,
            # never a listed missing one.
            retiring = [old["file"] for old in entries if old["step"] not in keep]
            self._write_index(kept, retiring)
            self._delete(retiring)
        return path

    def _delete(self, names: list[str]) -> list[str]:
        """Delete these files of the checkpoint folder; returns the ones that were there."""
        deleted = []
        for name in names:
            try:
                (self.dir / name).unlink()
            except (FileNotFoundError, IsADirectoryError):
                continue
            deleted.append(name)
        return deleted

    def recover(self) -> list[str]:
        """Repair what a kill left (see the module docstring); returns what was done, one line per file."""
        done: list[str] = []
        with self._lock:
            entries, retiring = self._read_index()
            listed_files = {e["file"] for e in entries}
            for name in self._delete([name for name in retiring if name not in listed_files]):
                done.append(f"removed retired checkpoint {name}")
            if retiring:
                self._write_index(entries)
            if any("staged" in e for e in entries):
                for entry in entries:
                    staged = entry.pop("staged", None)
                    if staged and (self.dir / staged).is_file():
                        commit(self.dir / staged, self.dir / entry["file"])
                        done.append(f"adopted {staged} as {entry['file']} (step {entry['step']})")
                self._write_index(entries)
            listed = {e["file"] for e in entries}
            own = self._own_file_pattern()
            try:
                names = sorted(os.listdir(self.dir))
                indexed_at = self.index_path.stat().st_mtime if self.index_path.exists() else 0.0
            except FileNotFoundError:
                return done
            for name in names:
                # An orphan was renamed into place after the last index write; a file named like a
                # checkpoint that is older than the index was put there by someone else and is kept.
                unlisted = (own.fullmatch(name) and name not in listed
                            and (self.dir / name).stat().st_mtime >= indexed_at)
                unfinished = name.startswith(".") and name.endswith(TEMP_SUFFIX)
                if unlisted or unfinished:
                    try:
                        (self.dir / name).unlink()
                    except (FileNotFoundError, IsADirectoryError):
                        continue
                    done.append(f"removed {'orphan checkpoint' if unlisted else 'unfinished file'} {name}")
        return done

    def _own_file_pattern(self) -> re.Pattern[str]:
        # Only names this rank's pattern produces: files of other ranks, or a user's, are never touched.
        parts = re.split(r"(\{step\}|\{rank\})", self.pattern)
        mapping = {"{step}": r"\d+", "{rank}": str(self.rank)}
        return re.compile("".join(mapping.get(part, re.escape(part)) for part in parts))

    def _write_index(self, entries: list[dict[str, Any]], retiring: list[str] | None = None) -> None:
        write_json(self.index_path, {"checkpoints": entries, **({"retiring": retiring} if retiring else {})})

    def _keep(self, entries: list[dict[str, Any]]) -> set[int]:
        steps = [e["step"] for e in entries]
        if self.keep_last is None:
            return set(steps)
        keep = set(steps[-self.keep_last :]) if self.keep_last > 0 else set()
        if self.keep_every:
            keep.update(s for s in steps if s % self.keep_every == 0)
        scored = [e for e in entries if e.get("metric") is not None]
        if scored:
            pick = min if self.mode == "min" else max
            keep.add(pick(scored, key=lambda e: e["metric"])["step"])
        return keep


def _finite(metric: float | None) -> float | None:
    # a NaN metric cannot be compared: it is recorded as unknown, never as the best
    if metric is None:
        return None
    value = float(metric)
    return value if math.isfinite(value) else None


def _entry_problem(entry: Any) -> str | None:
    if not isinstance(entry, dict):
        return "is not an object"
    step = entry.get("step")
    if isinstance(step, bool) or not isinstance(step, int) or step < 0:
        return f"has no valid step ({step!r})"
    for key in ("file", "staged"):
        name = entry.get(key)
        if key == "staged" and name is None:
            continue
        problem = _name_problem(name)
        if problem:
            return f"{key} {problem}"
    metric = entry.get("metric")
    if metric is not None and (isinstance(metric, bool) or not isinstance(metric, (int, float)) or not math.isfinite(metric)):
        return f"has a metric that is not a finite number ({metric!r})"
    return None


def _name_problem(name: Any) -> str | None:
    if not isinstance(name, str) or not name:
        return f"is not a file name ({name!r})"
    relative = PurePosixPath(name)
    if relative.is_absolute() or ".." in relative.parts or "\\" in name:
        return f"{name!r} leaves the checkpoint folder"
    return None
