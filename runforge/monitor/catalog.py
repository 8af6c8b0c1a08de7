"""The runs under a dashboard's roots: keys for URLs, table rows, and the only way to a file.

Every file the dashboard serves is reached through `Catalog.file`: a run is
looked up by its key (never by a path from the request), and the name inside it
must be plain segments that resolve, symlinks followed, to a file under the
run's root.
"""

from __future__ import annotations

import os
import re
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable

from ..errors import BadInputError, RunNotFoundError
from ..run.naming import RUN_FILE
from ..run.read import read_info, read_status, summarize
from ..run.snapshots import best_metric, latest_snapshot

if TYPE_CHECKING:
    from .series import MetricStore  # numpy: only the dashboard needs it, not `runforge runs`

_SEGMENT = re.compile(r"^[A-Za-z0-9_\-][A-Za-z0-9_.\-]*$")


class Refused(Exception):
    """A request for a file outside the roots, or a name that is not a plain relative path."""


@dataclass(frozen=True)
class RunEntry:
    key: str
    dir: Path
    root: Path


def run_row(run_dir: Path, *, inside_run: bool = False) -> dict[str, Any]:
    """One line of the runs table: name, trainer, status, step/max, ETA, best metric, started."""
    summary = summarize(run_dir)
    latest = latest_snapshot(run_dir, inside_run=inside_run)
    best = best_metric(latest[1] if latest else None, run_dir)
    row = summary.to_dict()
    paused = summary.status == "running" and bool((read_status(run_dir) or {}).get("training_paused"))
    row.update(best_name=best[0] if best else None, best=best[1] if best else None,
               last_snapshot_step=latest[0] if latest else None, paused=paused)
    return row


def run_rows(roots: Iterable[str | os.PathLike[str]]) -> list[dict[str, Any]]:
    """Rows of every run under the roots, newest first (what `runforge runs` prints)."""
    rows = []
    for entry in Catalog(roots).entries():
        try:
            rows.append(run_row(entry.dir))
        except (RunNotFoundError, BadInputError):
            continue  # a run being created, or a damaged run.json: not listed
    rows.sort(key=lambda r: r.get("created_at") or "", reverse=True)
    return rows


_ROW_SOURCES = (RUN_FILE, "status.json", "stats", "Learn")
"""A finished run's row is read again only when one of these changed."""


def _stamp(run_dir: Path) -> tuple[int, ...]:
    stamp = []
    for name in _ROW_SOURCES:
        try:
            stamp.append(os.stat(os.path.join(run_dir, name)).st_mtime_ns)
        except OSError:
            stamp.append(0)
    return tuple(stamp)


class Catalog:
    """The runs directly under each root (or a root that is itself a run)."""

    def __init__(self, roots: Iterable[str | os.PathLike[str]]) -> None:
        self.roots: list[Path] = []
        for root in roots:
            path = Path(root)
            if not path.is_dir():
                raise BadInputError(path, "is not a directory of runs")
            self.roots.append(path.resolve())
        self._lock = threading.Lock()
        self._entries: dict[str, RunEntry] = {}
        self._stores: dict[Path, MetricStore] = {}
        self._rows: dict[Path, tuple[tuple[int, ...], dict[str, Any]]] = {}

    def entries(self) -> list[RunEntry]:
        """Scan the roots again; a run's key is its directory name (made unique across roots)."""
        found: dict[str, RunEntry] = {}
        for index, root in enumerate(self.roots):
            for run_dir in self._runs_in(root):
                key = run_dir.name
                if key in found:
                    key = f"{run_dir.name}~{index}"
                found[key] = RunEntry(key, run_dir, root)
        with self._lock:
            self._entries = found
        return list(found.values())

    @staticmethod
    def _runs_in(root: Path) -> list[Path]:
        if (root / RUN_FILE).is_file():
            return [root]
        runs = []
        try:
            scanned = list(os.scandir(root))
        except OSError:
            return []
        for entry in scanned:
            if not entry.is_dir() or not os.path.isfile(os.path.join(entry.path, RUN_FILE)):
                continue
            path = Path(entry.path)
            if entry.is_symlink() and not path.resolve().is_relative_to(root):
                continue  # a link to a run elsewhere: outside what we were asked to serve
            runs.append(path)
        return runs

    def get(self, key: str) -> RunEntry:
        with self._lock:
            entry = self._entries.get(key)
        if entry is None:
            entry = next((e for e in self.entries() if e.key == key), None)
        if entry is None:
            raise KeyError(key)
        return entry

    def rows(self) -> list[dict[str, Any]]:
        rows = [row for row in map(self.row, self.entries()) if row is not None]
        rows.sort(key=lambda r: r.get("created_at") or "", reverse=True)
        return rows

    def row(self, entry: RunEntry) -> dict[str, Any] | None:
        """The run's table row; a finished run's is cached until its files change (a running
        run's status depends on the clock: a lost heartbeat turns it `crashed`)."""
        stamp = _stamp(entry.dir)
        hit = self._rows.get(entry.dir)
        if hit is not None and hit[0] == stamp and hit[1]["status"] != "running":
            row = hit[1]
        else:
            try:
                row = run_row(entry.dir, inside_run=True)
            except (RunNotFoundError, BadInputError):
                return None
            self._rows[entry.dir] = (stamp, row)
        return {**row, "key": entry.key, "root": str(entry.root)}

    def warm(self, limit: int) -> None:
        """Read the metrics of the newest runs ahead of time: the first chart of a big run is then
        served from memory instead of after seconds of JSON parsing."""
        for row in self.rows()[:limit]:
            try:
                self.store(self.get(row["key"]))
            except (KeyError, OSError):
                continue

    def info(self, entry: RunEntry) -> dict[str, Any]:
        return read_info(entry.dir)

    def status(self, entry: RunEntry) -> dict[str, Any] | None:
        return read_status(entry.dir)

    def store(self, entry: RunEntry) -> MetricStore:
        """The run's metric columns, brought up to date with its train.jsonl."""
        from .series import MetricStore

        with self._lock:
            store = self._stores.get(entry.dir)
            if store is None:
                store = self._stores[entry.dir] = MetricStore(entry.dir / "train.jsonl")
        store.refresh()
        return store

    def file(self, entry: RunEntry, relative: str) -> Path:
        """A file of the run named by a relative path; `Refused` for anything that leaves the root."""
        if not relative or "\\" in relative or "\x00" in relative or relative.startswith("/"):
            raise Refused(relative)
        segments = relative.split("/")
        if any(not _SEGMENT.match(s) for s in segments):
            raise Refused(relative)  # '..', '.', '', '%2e%2e' and other encodings never match
        path = entry.dir.joinpath(*segments)
        try:
            resolved = path.resolve(strict=True)
        except (OSError, RuntimeError):
            raise FileNotFoundError(relative) from None
        if not resolved.is_relative_to(entry.dir.resolve()) or not resolved.is_relative_to(entry.root):
            raise Refused(relative)  # a symlink that points out of the run
        if not resolved.is_file():
            raise FileNotFoundError(relative)
        return resolved
