"""Checkpoints through a caller's save function, so the run layer never imports torch.

    manager.save(step, state, torch.save)     # background, atomic: ckpts/ckpt_{step}_rank{rank}.pt

The save function is called as `save_fn(state, fileobj)` on a temporary file
that is renamed into place once complete (torch.save and pickle.dump both take
a file object). The index `ckpts/index_rank{rank}.json` lists what this run
wrote; retention deletes only files listed there, never anything else.

Retention keeps the last `keep_last` checkpoints, every step that is a multiple
of `keep_every`, and the best by `metric` (lower is better unless `mode="max"`).
`keep_last=None` keeps everything.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Callable, Literal

from ._atomic import write_json, write_with

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
        folder: str = "ckpts",
        pattern: str = "ckpt_{step}_rank{rank}.pt",
        rank: int = 0,
        keep_last: int | None = 3,
        keep_every: int | None = None,
        mode: Literal["min", "max"] = "min",
    ) -> None:
        self.dir = run_dir / folder
        self.pattern = pattern
        self.rank = rank
        self.keep_last = keep_last
        self.keep_every = keep_every
        self.mode = mode
        self.index_path = self.dir / f"index_rank{rank}.json"
        self._lock = threading.Lock()

    def path_for(self, step: int) -> Path:
        return self.dir / self.pattern.format(step=step, rank=self.rank)

    def entries(self) -> list[dict[str, Any]]:
        """The index: checkpoints this run wrote and kept, oldest first."""
        try:
            data = json.loads(self.index_path.read_text(encoding="utf-8"))
        except (FileNotFoundError, ValueError):
            return []
        return [e for e in data.get("checkpoints", []) if isinstance(e, dict) and "step" in e and "file" in e]

    def latest(self) -> CheckpointInfo | None:
        """The newest checkpoint whose file is complete on disk."""
        for entry in sorted(self.entries(), key=lambda e: e["step"], reverse=True):
            path = self.dir / entry["file"]
            if path.is_file():
                return CheckpointInfo(entry["step"], path, entry.get("metric"))
        return None

    def best(self) -> CheckpointInfo | None:
        scored = [e for e in self.entries() if e.get("metric") is not None and (self.dir / e["file"]).is_file()]
        if not scored:
            return None
        pick = min if self.mode == "min" else max
        entry = pick(scored, key=lambda e: e["metric"])
        return CheckpointInfo(entry["step"], self.dir / entry["file"], entry["metric"])

    def write(self, step: int, state: Any, save_fn: SaveFn, metric: float | None = None) -> Path:
        """Write one checkpoint now (the Run calls this from its background writer)."""
        path = self.path_for(step)
        write_with(path, lambda f: save_fn(state, f))
        with self._lock:
            name = path.relative_to(self.dir).as_posix()
            # a pattern without {step} (last.pt) rewrites one file: it keeps one entry
            entries = [e for e in self.entries() if e["step"] != step and e["file"] != name]
            entries.append({"step": step, "file": name, "metric": metric})
            entries.sort(key=lambda e: e["step"])
            keep = self._keep(entries)
            # The index first: a kill between the two steps leaves an unlisted file, never a listed missing one.
            write_json(self.index_path, {"checkpoints": [e for e in entries if e["step"] in keep]})
            for entry in entries:
                if entry["step"] not in keep:
                    try:
                        (self.dir / entry["file"]).unlink()
                    except FileNotFoundError:
                        pass
        return path

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

    def find(self, path: Path) -> CheckpointInfo | None:
        """The index entry of a checkpoint file given by the user (--resume FILE)."""
        path = path.resolve()
        for entry in self.entries():
            if (self.dir / entry["file"]).resolve() == path:
                return CheckpointInfo(entry["step"], path, entry.get("metric"))
        return None

