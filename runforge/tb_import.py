"""`runforge import-tb LOGDIR [--root runs] [--name NAME]`: old TensorBoard experiments as runforge runs.

Every folder under LOGDIR that holds `events.out.tfevents.*` is one run, except folders below another
such folder: those are torch's `add_scalars` and `add_hparams` sub-writers and belong to the run above.
Folders inside a runforge run (a run.json between LOGDIR and them) are runs already and are left out.

    train.jsonl   one line per step, steps in order, `time` = seconds since the run's first event
    images/       every image event, `step_{step:04d}_{tag}.png`
    config.json   the hyperparameters of the hparams plugin's session start info, if any
    tb/           a copy of the event files (sub-writer folders too)
    run.json      status finished, trainer `tensorboard`, created/finished at the first/last event,
                  `imported_from` the source folder

A source folder imported before (a run in --root whose `imported_from` names it) is skipped, so
importing a LOGDIR again brings in only its new runs. Everything is read and checked before anything
is written: a damaged event file is an error naming it, and nothing is created.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import BadInputError
from .run.files import read_json_object, write_bytes, write_json
from .run.layout import IMAGES_DIR, METRICS_FILE, RUN_FILE, TB_DIR
from .run.opening import SAFE_NAME

EVENT_GLOB = "events.out.tfevents.*"
TRAINER = "tensorboard"
_RESERVED = {"step": "step_", "time": "time_"}


@dataclass
class Source:
    """One run to import: its folder and what its event files hold."""

    folder: Path
    event_files: list[Path] = field(default_factory=list)
    lines: dict[int, dict[str, float]] = field(default_factory=dict)
    step_walls: dict[int, float] = field(default_factory=dict)
    images: list[tuple[int, str, bytes]] = field(default_factory=list)
    hparams: dict[str, Any] = field(default_factory=dict)
    first_wall: float | None = None
    last_wall: float | None = None

    def scalar(self, step: int, key: str, value: float, wall_time: float) -> None:
        self.lines.setdefault(step, {})[key] = value
        self.step_walls[step] = min(self.step_walls.get(step, wall_time), wall_time)
        self.saw(wall_time)

    def saw(self, wall_time: float) -> None:
        self.first_wall = wall_time if self.first_wall is None else min(self.first_wall, wall_time)
        self.last_wall = wall_time if self.last_wall is None else max(self.last_wall, wall_time)


def register(commands: Any, data: Any) -> None:
    parser = commands.add_parser("import-tb", help="bring TensorBoard event files in as runforge runs")
    parser.add_argument("logdir", metavar="LOGDIR", help="a folder of TensorBoard runs (searched recursively)")
    parser.add_argument("--root", default="runs", help="where the runs are created (default: runs)")
    parser.add_argument("--name", help="run name (a prefix when LOGDIR holds several runs; default: the folder's)")
    parser.set_defaults(handler=cmd_import_tb)


def _has_events(folder: Path) -> bool:
    return any(p.is_file() for p in folder.glob(EVENT_GLOB))


def find_sources(logdir: Path) -> list[Source]:
    """The run folders under `logdir`, each with its event files and those of its sub-writer folders."""
    sources: dict[Path, Source] = {}
    for here, dirs, _files in os.walk(logdir):
        dirs.sort()
        folder = Path(here)
        if folder != logdir and (folder / RUN_FILE).exists():
            dirs[:] = []  # a runforge run: its tb/ is not an old experiment
            continue
        if not _has_events(folder):
            continue
        owner = next((p for p in [folder, *folder.parents] if p in sources), folder)
        source = sources.setdefault(owner, Source(owner))
        source.event_files += sorted(p for p in folder.glob(EVENT_GLOB) if p.is_file())
    return list(sources.values())


def _check_records(path: Path) -> None:
    """Every record's checksums; a file cut short at its end (a killed writer) is accepted, as TensorBoard does."""
    from tensorboard.compat.tensorflow_stub import errors
    from tensorboard.compat.tensorflow_stub.pywrap_tensorflow import PyRecordReader_New

    try:
        reader = PyRecordReader_New(str(path))
    except OSError as exc:
        raise BadInputError(path, f"cannot be read ({exc.strerror or exc})") from None
    from tensorboard.compat.proto import event_pb2

    while True:
        try:
            reader.GetNext()
        except errors.OutOfRangeError:
            return
        except errors.DataLossError as exc:
            problem = str(exc.message).replace(str(path), "").strip(" :") or "bad record"
            raise BadInputError(path, f"damaged TensorBoard event file ({problem})") from None
        except OSError as exc:
            raise BadInputError(path, f"cannot be read ({exc.strerror or exc})") from None
        try:
            event_pb2.Event.FromString(reader.record())
        except Exception:
            raise BadInputError(path, "damaged TensorBoard event file (a record is not an Event)") from None


def _scalar_key(source: Source, folder: Path, tag: str, hparams_folder: bool) -> str:
    """The train.jsonl key of a tag: itself in the run's folder; in a sub-writer folder of torch's
    `add_scalars(main, {k: v})` (named `{main}_{k}`, tag `main`) `main/k`, as the drop-in writes it."""
    if folder == source.folder or hparams_folder:
        key = tag
    else:
        sub = folder.relative_to(source.folder).as_posix().replace("/", "_")
        prefix = tag.replace("/", "_") + "_"
        key = f"{tag}/{sub[len(prefix):]}" if sub.startswith(prefix) and len(sub) > len(prefix) else f"{sub}/{tag}"
    return _RESERVED.get(key, key)


def load(source: Source) -> None:
    """Read the event files of `source` with TensorBoard's own reader."""
    import numpy
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import metadata as hparams_metadata
    from tensorboard.util import tensor_util

    for path in source.event_files:
        _check_records(path)
    folders = sorted({p.parent for p in source.event_files})
    for folder in folders:
        accumulator = EventAccumulator(str(folder), size_guidance={"scalars": 0, "images": 0, "tensors": 0,
                                                                   "histograms": 1, "compressedHistograms": 1})
        try:
            accumulator.Reload()
        except Exception as exc:
            raise BadInputError(folder, f"TensorBoard's reader failed: {exc}") from None
        tags = accumulator.Tags()
        try:
            hparams_content = accumulator.PluginTagToContent(hparams_metadata.PLUGIN_NAME)
        except KeyError:  # no hparams in this folder
            hparams_content = {}
        start = hparams_content.get(hparams_metadata.SESSION_START_INFO_TAG)
        if start is not None:
            try:
                info = hparams_metadata.parse_session_start_info_plugin_data(start)
            except Exception as exc:
                raise BadInputError(folder, f"damaged hparams session info: {exc}") from None
            for name, value in info.hparams.items():
                kind = value.WhichOneof("kind")
                source.hparams[name] = None if kind in (None, "null_value") else getattr(value, kind)
        for tag in tags["scalars"]:
            key = _scalar_key(source, folder, tag, start is not None)
            for event in accumulator.Scalars(tag):
                # simple_value is a float32: its shortest text (0.9, not 0.8999999761581421) is what was logged
                source.scalar(event.step, key, float(str(numpy.float32(event.value))), event.wall_time)
        for tag in tags["tensors"]:  # TF2 writers keep scalars as tensors of the scalars plugin
            if accumulator.SummaryMetadata(tag).plugin_data.plugin_name != "scalars":
                continue
            key = _scalar_key(source, folder, tag, start is not None)
            for event in accumulator.Tensors(tag):
                source.scalar(event.step, key, float(tensor_util.make_ndarray(event.tensor_proto)), event.wall_time)
        for tag in tags["images"]:
            for event in accumulator.Images(tag):
                source.images.append((event.step, tag, event.encoded_image_string))
                source.saw(event.wall_time)
        for kind in ("histograms", "tensors"):
            for tag in tags[kind]:
                for event in (accumulator.Histograms if kind == "histograms" else accumulator.Tensors)(tag):
                    source.saw(event.wall_time)


def _png(data: bytes, where: str) -> bytes:
    if data.startswith(b"\x89PNG"):
        return data
    import io

    from PIL import Image

    try:
        picture = Image.open(io.BytesIO(data))
        buffer = io.BytesIO()
        picture.save(buffer, format="PNG")
    except Exception as exc:
        raise BadInputError(where, f"an image event holds no readable image ({exc})") from None
    return buffer.getvalue()


def _name_for(source: Source, logdir: Path, name: str | None, several: bool) -> str:
    relative = source.folder.relative_to(logdir).as_posix()
    own = relative.replace("/", "-") if relative != "." else logdir.resolve().name
    own = "".join(c if c.isalnum() or c in "_.-" else "_" for c in own).lstrip(".") or "tensorboard"
    if name is None:
        return own
    return f"{name}-{own}" if several else name


def _imported(root: Path) -> dict[str, Path]:
    """Source folder -> the run in `root` imported from it."""
    found: dict[str, Path] = {}
    if not root.is_dir():
        return found
    for entry in sorted(root.iterdir()):
        try:
            info = json.loads((entry / RUN_FILE).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if isinstance(info, dict) and isinstance(info.get("imported_from"), str):
            found.setdefault(info["imported_from"], entry)
    return found


def write_run(source: Source, root: Path, name: str) -> Path:
    from .run import Run
    from datetime import datetime, timezone
    from .run.metrics import encode_line

    steps = sorted(source.lines)
    last_step = max([*steps, *(step for step, _, _ in source.images)], default=0)
    first = source.first_wall or 0.0
    lines = [encode_line({"step": step, "time": round(max(0.0, source.step_walls[step] - first), 6),
                          **source.lines[step]}) for step in steps]
    with Run(trainer=TRAINER, config=source.hparams, root=root, name=name, tensorboard=False,
             progress=False, handle_signals=False) as run:
        run._controller._keys.stop()  # an import reads no keys; the terminal stays as it was
        write_bytes(run.dir / METRICS_FILE, b"".join(line + b"\n" for line in lines))
        for step, tag, data in source.images:
            safe = "".join(c if c.isalnum() or c in "_.-" else "_" for c in tag)
            write_bytes(run.dir / IMAGES_DIR / f"step_{step:04d}_{safe}.png", _png(data, str(source.folder)),
                        durable=False)
        for path in source.event_files:
            target = run.dir / TB_DIR / path.relative_to(source.folder)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, target)
        run.poll(last_step)  # status.json and run.json end at the last step (step_max set after: no progress line)
        run.step_max = last_step
    info = read_json_object(run.dir / RUN_FILE, "run file")
    info["imported_from"] = str(source.folder.resolve())
    info["step_max"] = last_step
    if source.first_wall is not None:
        for key, wall in (("created_at", source.first_wall), ("finished_at", source.last_wall)):
            info[key] = datetime.fromtimestamp(wall, timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")
    write_json(run.dir / RUN_FILE, info)
    return run.dir


def cmd_import_tb(args: argparse.Namespace) -> int:
    logdir = Path(args.logdir)
    if not logdir.exists():
        raise BadInputError(logdir, "no such directory")
    if not logdir.is_dir():
        raise BadInputError(logdir, "is not a directory")
    if args.name is not None and (not SAFE_NAME.match(args.name) or args.name.startswith(".")):
        raise BadInputError("--name", f"{args.name!r} must be a plain name (letters, digits, '_', '.', '-')")
    root = Path(args.root)
    if root.exists() and not root.is_dir():
        raise BadInputError("--root", f"{root} is not a directory")
    try:
        import tensorboard  # noqa: F401
    except ImportError:
        raise BadInputError(None, "import-tb reads event files with TensorBoard's reader: pip install tensorboard") from None
    sources = find_sources(logdir)
    if not sources:
        raise BadInputError(logdir, f"holds no TensorBoard event files ({EVENT_GLOB})")
    done = _imported(root)
    todo = []
    for source in sources:
        earlier = done.get(str(source.folder.resolve()))
        if earlier is not None:
            print(f"skipped {source.folder}: imported before as {earlier}")
        else:
            load(source)  # every file is read and checked before the first run is created
            todo.append(source)
    for source in todo:
        run_dir = write_run(source, root, _name_for(source, logdir, args.name, len(sources) > 1))
        print(f"imported {source.folder} -> {run_dir} ({len(source.lines)} steps, {len(source.images)} images)")
    return 0
