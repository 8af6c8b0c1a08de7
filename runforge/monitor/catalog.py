"""The runs under a dashboard's roots: keys for URLs, table rows, and the only way to a file.

Every path the dashboard reads, serves or writes to is checked by `confined`: its
real path (symlinks followed) must lie inside the run directory, and that inside
the root it was found under, or the file counts as absent. A run is looked up by
its key (never by a path from the request); `Catalog.file` also wants plain segments.

The run layer's readers (`summarize`, `list_snapshots`, `list_images`,
`best_metric`) open the files they find themselves, so what they return is
checked here before it is used, and a run whose run.json or status.json (what
`summarize` reads) leaves it is not served at all (`servable`: the same check,
made cheap for the thousand runs of a table). A link swapped in between a check
and the read is not caught; the real paths returned are what is then opened.
"""

from __future__ import annotations

import importlib
import os
import re
import shlex
import stat
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable

from ..errors import BadInputError, RunNotFoundError
from ..run.layout import (ANNOTATIONS_FILE, CONFIG_FILE, METRICS_FILE, METRICS_INDEX_FILE, RUN_FILE, STATUS_FILE,
                          SWEEP_FILE, checkpoint_index)
from ..run.read import list_images, read_info, read_status, summarize
from ..run.snapshots import best_metric, list_snapshots, load_snapshot, snapshot_folder
from .row_fields import annotations_of, flat_config, headline, last_metrics

if TYPE_CHECKING:
    from .series import MetricStore  # numpy: only the dashboard needs it, not `runforge runs`

_SEGMENT = re.compile(r"^[A-Za-z0-9_\-][A-Za-z0-9_.\-]*$")
"""The file `best_metric` falls back to."""


class Refused(Exception):
    """A request for a file outside the roots, or a name that is not a plain relative path."""


def confined(run_dir: str | os.PathLike[str], root: str | os.PathLike[str],
             relative: str | os.PathLike[str]) -> Path | None:
    """The real path of `relative` (a path inside the run, or an absolute one), or None when it,
    or the run directory itself, leaves the run or the root once symlinks are followed."""
    real_dir = os.path.realpath(run_dir)
    real = os.path.realpath(os.path.join(real_dir, relative))
    if _within(real, real_dir) and _within(real_dir, os.path.realpath(root)):
        return Path(real)
    return None


def _within(path: str, folder: str) -> bool:
    """For real (absolute, normalised) paths."""
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)


def _is_file(path: Path) -> bool:
    try:
        return stat.S_ISREG(os.stat(path).st_mode)
    except OSError:
        return False


def servable(run_dir: Path, root: Path) -> bool:
    """A run the dashboard may show: inside the root, its run.json a file, and neither run.json
    nor status.json a link out of it (`summarize` reads both itself)."""
    real_dir = os.path.realpath(run_dir)
    return _within(real_dir, os.path.realpath(root)) and _summary_files_inside(real_dir)


def _summary_files_inside(real_dir: str) -> bool:
    # One name in a real directory leaves it only if it is a link: lstat first, realpath only
    # then (the runs table checks a thousand runs every second).
    for name in (RUN_FILE, STATUS_FILE):
        path = os.path.join(real_dir, name)
        if os.path.islink(path) and not _within(os.path.realpath(path), real_dir):
            return False
    return _is_file(Path(real_dir, RUN_FILE))


@dataclass(frozen=True)
class RunEntry:
    key: str
    dir: Path
    root: Path

    def path(self, relative: str | os.PathLike[str]) -> Path | None:
        """`confined` for this run."""
        return confined(self.dir, self.root, relative)

    def relative(self, real: Path) -> str:
        """The name inside the run (in URLs and API answers) of a real path `path`, `snapshots` or `images` gave."""
        return real.relative_to(os.path.realpath(self.dir)).as_posix()

    def snapshots(self) -> list[tuple[int, Path]]:
        """(step, real path) of the snapshots inside the run; a folder or a file that links out is left out."""
        return [(step, real) for step, path in list_snapshots(self.dir, inside_run=True)
                if (real := self.path(path)) is not None]

    def images(self) -> list[Path]:
        """Real paths of the sample images inside the run (run.json's images_dir must be inside too)."""
        return [real for path in list_images(self.dir) if (real := self.path(path)) is not None]

    def metrics_file(self) -> Path | None:
        real = self.path(METRICS_FILE)
        return real if real is not None and _is_file(real) else None

    def metrics_index(self) -> Path | None:
        """train.index, when it is inside the run (a link out of it is no index)."""
        real = self.path(METRICS_INDEX_FILE)
        return real if real is not None and _is_file(real) else None

    def outside_folders(self, info: dict[str, Any]) -> list[str]:
        """What to tell about run.json folders that leave the run (their files are not shown)."""
        return [f"run.json {key} {value!r} leads outside the run: its files are not shown"
                for key in ("images_dir", "snapshot_dir")
                if isinstance(value := info.get(key), str) and value and self.path(value) is None]


def resume_command(trainer: str, run_dir: str) -> str:
    """How to continue a run whose process is gone."""
    from ..trainers import TRAINERS

    if trainer in TRAINERS:
        return f"runforge train {trainer} --resume {shlex.quote(run_dir)}"
    return f"runforge.Run(out={run_dir!r}, resume=True) in your script"


def run_row(entry: RunEntry, *, confine: bool = False) -> dict[str, Any]:
    """One line of the runs table: name, trainer, status, step/max, ETA, best metric, started;
    the flattened config, the last metrics and the headline one, tags and note (`row_fields`).
    `confine`: read only what lies inside the run (the dashboard); the CLI also follows a
    snapshot folder outside it (sr's `--learn_dir`)."""
    summary = summarize(entry.dir)
    snapshots = entry.snapshots() if confine else list_snapshots(entry.dir)
    latest = _latest_snapshot(snapshots)
    best = best_metric(latest[1] if latest else None, entry.dir)
    if confine and best is not None and best[0] != "best_quality_ever" and entry.path(checkpoint_index(0)) is None:
        best = None  # read from a checkpoint index that links out of the run
    row = summary.to_dict()
    paused = summary.status == "running" and bool((read_status(entry.dir) or {}).get("training_paused"))
    row.update(best_name=best[0] if best else None, best=best[1] if best else None,
               last_snapshot_step=latest[0] if latest else None, paused=paused,
               resume=resume_command(summary.trainer, summary.dir) if summary.status == "crashed" else None)
    real_dir = os.path.realpath(entry.dir)

    def inside(name: str) -> Path | None:  # a FIFO would block the reader: regular files only
        path = os.path.join(real_dir, name)
        # one name in a real directory leaves it only if it is a link (as in `servable`)
        if confine and os.path.islink(path) and not _within(os.path.realpath(path), real_dir):
            return None
        return Path(path) if _is_file(Path(path)) else None

    metrics = last_metrics(inside(METRICS_FILE))
    annotations = annotations_of(real_dir if inside(ANNOTATIONS_FILE) is not None else None)
    row.update(config=flat_config(inside(CONFIG_FILE)), metrics=metrics, headline=headline(metrics), **annotations)
    return row


def _latest_snapshot(snapshots: list[tuple[int, Path]]) -> tuple[int, dict[str, Any]] | None:
    for step, path in reversed(snapshots):
        try:
            return step, load_snapshot(path)
        except (BadInputError, RunNotFoundError):
            continue
    return None


def page_status(status: dict[str, Any] | None, row: dict[str, Any] | None) -> dict[str, Any] | None:
    """status.json as the run page shows it: a crashed run's last heartbeat still says it trains,
    with an ETA; it no longer does."""
    if status is None or row is None or row["status"] != "crashed":
        return status
    return {**status, "status": "crashed", "training_active": False, "training_paused": False,
            "validation_running": False, "eta_total_formatted": None, "eta_epoch_formatted": None}


def run_rows(roots: Iterable[str | os.PathLike[str]]) -> list[dict[str, Any]]:
    """Rows of every run under the roots, newest first (what `runforge runs` prints)."""
    rows = []
    for entry in Catalog(roots).entries():
        try:
            rows.append(run_row(entry))
        except (RunNotFoundError, BadInputError):
            continue  # a run being created, or a damaged run.json: not listed
    rows.sort(key=lambda r: r.get("created_at") or "", reverse=True)
    return rows


_ROW_SOURCES = (RUN_FILE, STATUS_FILE, CONFIG_FILE, METRICS_FILE, ANNOTATIONS_FILE)
"""A finished run's row is read again only when one of these, or its snapshot folder, changed."""


def _mtime(path: str) -> int:
    try:
        return os.stat(path).st_mtime_ns
    except OSError:
        return 0


def _stamp(run_dir: Path, snapshot_dir: str) -> tuple[int, ...]:
    return tuple(_mtime(os.path.join(run_dir, name)) for name in (*_ROW_SOURCES, snapshot_dir))


class Catalog:
    """The runs directly under each root (or a root that is itself a run)."""

    def __init__(self, roots: Iterable[str | os.PathLike[str]]) -> None:
        # numpy, which only the dashboard needs: loaded while the server starts, so that the first chart
        # request does not wait ~0.1 s for it
        importlib.import_module(".series", __package__)

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
        self._snapshot_dirs: dict[Path, tuple[int, str]] = {}

    def entries(self) -> list[RunEntry]:
        """Scan the roots again; a run's key is its directory name (made unique across roots)."""
        found: dict[str, RunEntry] = {}
        for index, root in enumerate(self.roots):
            for run_dir in self._runs_in(root):
                # a sweep's point folders (00-lr_0.1) repeat from sweep to sweep: the sweep names them
                key = run_dir.name if root in (run_dir, run_dir.parent) else f"{run_dir.parent.name}.{run_dir.name}"
                if key in found:
                    key = f"{run_dir.name}~{index}"
                found[key] = RunEntry(key, run_dir, root)
        with self._lock:
            self._entries = found
        return list(found.values())

    @staticmethod
    def _runs_in(root: Path, folder: Path | None = None, nested: bool = True) -> list[Path]:
        """The runs in `folder` (default: the root), and in the sweep folders there when `nested`."""
        if folder is None:
            if servable(root, root):
                return [root]
            folder = root
        try:
            scanned = list(os.scandir(folder))
        except OSError:
            return []
        runs = []
        for entry in scanned:
            if not entry.is_dir():
                continue
            # the root is a real path, so only a link can lead out (to a run we were not asked to serve)
            real_dir = os.path.realpath(entry.path) if entry.is_symlink() else entry.path
            if not _within(real_dir, str(root)):
                continue
            if _summary_files_inside(real_dir):
                runs.append(Path(entry.path))
            elif nested and _is_file(Path(real_dir, SWEEP_FILE)):  # a sweep: its points are runs of this root
                runs.extend(Catalog._runs_in(root, Path(entry.path), nested=False))
        return runs

    def get(self, key: str) -> RunEntry:
        """The run with this key; KeyError also for one that has since turned into a link out."""
        with self._lock:
            entry = self._entries.get(key)
        if entry is None:
            entry = next((e for e in self.entries() if e.key == key), None)
        if entry is None or not servable(entry.dir, entry.root):
            raise KeyError(key)
        return entry

    def rows(self) -> list[dict[str, Any]]:
        rows = [row for row in map(self.row, self.entries()) if row is not None]
        rows.sort(key=lambda r: r.get("created_at") or "", reverse=True)
        return rows

    def row(self, entry: RunEntry) -> dict[str, Any] | None:
        """The run's table row; a finished run's is cached until its files change (a running
        run's status depends on the clock: a lost heartbeat turns it `crashed`)."""
        stamp = _stamp(entry.dir, self._snapshot_dir(entry.dir))
        hit = self._rows.get(entry.dir)
        if hit is not None and hit[0] == stamp and hit[1]["status"] != "running":
            row = hit[1]
        else:
            try:
                row = run_row(entry, confine=True)
            except (RunNotFoundError, BadInputError):
                return None
            self._rows[entry.dir] = (stamp, row)
        return {**row, "key": entry.key, "root": str(entry.root)}

    def _snapshot_dir(self, run_dir: Path) -> str:
        # run.json names the folder; it is parsed again only when it changed, as a table of a
        # thousand runs is stamped every second
        info_mtime = _mtime(os.path.join(run_dir, RUN_FILE))
        known = self._snapshot_dirs.get(run_dir)
        if known is None or known[0] != info_mtime:
            known = self._snapshot_dirs[run_dir] = (info_mtime, snapshot_folder(run_dir))
        return known[1]

    def warm(self, limit: int) -> None:
        """Read the metrics of the runs that logged last ahead of time: the first chart of a big run
        without a train.index (one from before it) is then served from memory instead of after
        seconds of JSON parsing. They are found by train.jsonl's mtime, one stat a run: building the
        runs table here would take the GIL from the first requests for a thousand runs."""
        def logged(entry: RunEntry) -> int:
            try:
                return os.stat(entry.dir / METRICS_FILE).st_mtime_ns
            except OSError:
                return -1

        for entry in sorted(self.entries(), key=logged, reverse=True)[:limit]:
            try:
                if servable(entry.dir, entry.root):
                    self.store(entry)
            except OSError:
                continue

    def info(self, entry: RunEntry) -> dict[str, Any]:
        return read_info(entry.dir)

    def status(self, entry: RunEntry) -> dict[str, Any] | None:
        return read_status(entry.dir)

    def store(self, entry: RunEntry) -> MetricStore:
        """The run's metric columns, brought up to date with its train.jsonl (empty when that
        is missing or links out of the run)."""
        from .series import MetricStore

        path = entry.metrics_file()
        index = entry.metrics_index() if path is not None else None
        with self._lock:
            store = self._stores.get(entry.dir)
            if store is None or store.path != path or store.index != index:
                store = self._stores[entry.dir] = MetricStore(path, index)
        store.refresh()
        return store

    def file(self, entry: RunEntry, relative: str) -> Path:
        """A file of the run named by a relative path; `Refused` for anything that leaves the root."""
        if not relative or "\\" in relative or "\x00" in relative or relative.startswith("/"):
            raise Refused(relative)
        segments = relative.split("/")
        if any(not _SEGMENT.match(s) for s in segments):
            raise Refused(relative)  # '..', '.', '', '%2e%2e' and other encodings never match
        resolved = entry.path(relative)
        if resolved is None:
            raise Refused(relative)  # a symlink that points out of the run
        if not _is_file(resolved):
            raise FileNotFoundError(relative)
        return resolved
