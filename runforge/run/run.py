"""`Run`: one training run, one directory.

    with Run(trainer="mytrainer", config={"lr": 1e-3}, steps=1000) as run:
        for step in range(run.start_step + 1, 1001):
            ...
            run.log(step, {"loss": loss})             # train.jsonl + tb/
            ctl = run.poll(step)                      # status.json, pause, control commands, signals
            if ctl.save or step % 100 == 0:
                run.checkpoint(step, state, torch.save)
            if ctl.stop:
                run.checkpoint(step, state, torch.save)
                break

What lands on disk (see run-layout.md):

    {dir}/run.json        identity and status; rewritten on every status change
    {dir}/config.json     the resolved config, once (config.resume-N.json when a resume changed it)
    {dir}/train.jsonl     one line per `log` call
    {dir}/status.json     live state, at most once a second
    {dir}/events.log      saves, validations, warnings, errors
    {dir}/tb/             TensorBoard events of every scalar and image
    {dir}/control/        commands waiting for the trainer
    {dir}/images/step_{step:04d}_{name}.png      (`images_dir`)
    {dir}/stats/stats_{step}.json               (`snapshot_dir`, `snapshot_pattern`)
    {dir}/ckpts/ckpt_{step}_rank{rank}.pt       (`checkpoint_options`)
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import sys
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterator, Literal

from ..errors import BadInputError, RunExistsError, RunforgeError, RunNotFoundError
from . import control, system
from .files import dumps_pretty, sanitize, write_bytes, write_json
from .checkpoints import CheckpointInfo, CheckpointManager, SaveFn
from .console import ProgressDisplay
from .keys import KeyReader
from .metrics import METRICS_FILE, MetricsFile, encode_line, plan_truncation
from .images import to_pil
from .files import read_json_object
from .naming import RUN_FILE, create_run_dir, find_run_dir, make_dir, new_id, rendezvous, wait_for_run
from .snapshot_fields import SNAPSHOT_FIELDS
from .writer import BackgroundWriter

CONFIG_FILE = "config.json"
STATUS_FILE = "status.json"
EVENTS_FILE = "events.log"
TB_DIR = "tb"
IMAGES_DIR = "images"
RESUME_NEEDS_A_RUN = "--resume needs a run directory or checkpoint (or --out DIR)"
_SAFE_NAME = re.compile(r"^[A-Za-z0-9_.\-]+$")

Status = Literal["running", "finished", "failed", "interrupted"]


class CheckpointWriteError(RunforgeError):
    """A checkpoint (or another essential file) could not be written; the run ends failed."""

    exit_code = 1


@dataclass(frozen=True)
class Control:
    """What `Run.poll` asks the trainer to do at this step boundary."""

    validate: bool = False
    save: bool = False
    stop: bool = False


_NOTHING = Control()


def utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")


def _copy_metrics(metrics: dict[str, Any]) -> dict[str, Any]:
    # Records are encoded later on the writer thread: copy the dicts a caller may reuse.
    out = dict(metrics)
    for key, value in out.items():
        if type(value) is dict:
            out[key] = _copy_metrics(value)
    return out


class Run:
    """A run directory and the writers that fill it. Use as a context manager.

    Args:
        trainer: name recorded in run.json (`runforge train NAME` passes its trainer).
        config: the resolved parameters, written to config.json (JSON-serialisable).
        root: where `{name}_{id}` directories are created when `out` is not given.
        out: use exactly this directory as the run.
        name: the `{adjective}-{noun}-{N}` part, chosen for you when None.
        resume: True (continue the run in `out`), or a run directory or checkpoint file.
        overwrite: replace the run already in `out`.
        steps: the step count the run aims for (status.json step_max, ETA).
        tensorboard: mirror scalars and images into tb/.
        images_dir: the folder inside the run where `image` writes (seed 004's `samples/`).
        snapshot_dir, snapshot_pattern: where `snapshot` writes (`{step}` is replaced); a relative
            folder is inside the run, an absolute one anywhere (seed 002's learn directory).
        checkpoint_options: keyword arguments of `CheckpointManager` (folder, pattern, keep_last, ...).
        load_checkpoint: on resume, `load_checkpoint(path)` reads the checkpoint into `run.resume_state`
            before anything in the run is changed; any exception it raises is a `BadInputError` naming
            the file, and the run is left exactly as it was.
        progress: show a progress bar (default: when stderr is a terminal; plain lines otherwise).
        handle_signals: turn SIGINT/SIGTERM into a graceful stop (see `poll`).
        rank, world_size: default to the RANK and WORLD_SIZE that torchrun sets.
    """

    def __init__(
        self,
        trainer: str = "script",
        config: dict[str, Any] | None = None,
        *,
        root: str | os.PathLike[str] = "runs",
        out: str | os.PathLike[str] | None = None,
        name: str | None = None,
        resume: bool | str | os.PathLike[str] = False,
        overwrite: bool = False,
        steps: int | None = None,
        tensorboard: bool = True,
        images_dir: str = IMAGES_DIR,
        snapshot_dir: str = "stats",
        snapshot_pattern: str = "stats_{step}.json",
        checkpoint_options: dict[str, Any] | None = None,
        load_checkpoint: Callable[[Path], Any] | None = None,
        progress: bool | None = None,
        handle_signals: bool = True,
        rank: int | None = None,
        world_size: int | None = None,
    ) -> None:
        self.trainer = trainer
        self.config = dict(config or {})
        self.rank = int(os.environ.get("RANK", 0)) if rank is None else rank
        self.world_size = int(os.environ.get("WORLD_SIZE", 1)) if world_size is None else world_size
        self.is_main = self.rank == 0
        self.step_max = steps
        self.images_dir = images_dir
        self.snapshot_dir = snapshot_dir
        self.snapshot_pattern = snapshot_pattern
        self.status: Status = "running"
        self.exit_code = 0
        self.start_step = 0
        self.resume_checkpoint: CheckpointInfo | None = None
        self.resume_state: Any = None
        self._load_checkpoint = load_checkpoint
        self._closed = False
        self._fatal: BaseException | None = None
        self._failures: dict[str, int] = {}
        self._stop_signal: int | None = None
        self._stop_requested = False
        self._poll_seen = False
        self._events_lock = threading.Lock()
        config_text = dumps_pretty(sanitize(self.config))  # fail on a bad config before touching the disk
        if name is not None and (not _SAFE_NAME.match(name) or name.startswith(".")):
            raise BadInputError(None, f"--name {name!r}: must be a plain name of letters, digits, '_', '.' and '-' "
                                      "(not a path, not starting with '.')")

        run_dir, self.name, self.id, resumed = self._open_dir(root, out, name, resume, overwrite)
        self.dir = Path(os.path.abspath(run_dir))
        self.checkpoints = CheckpointManager(self.dir, rank=self.rank, **(checkpoint_options or {}))
        self._info: dict[str, Any] = {}
        time_offset = 0.0
        if resumed:
            time_offset = self._prepare_resume(resume, config_text)
        elif self.is_main:
            self._write_new(config_text)

        self._t0 = time.perf_counter() - time_offset
        self._wall0 = time.time() - time_offset
        self._step = self.start_step
        self._epoch: int | None = None
        self._epoch_step: int | None = None
        self._epoch_step_total: int | None = None
        self._iteration_duration: float | None = None
        self._last_poll: float | None = None
        self._step_at_last_poll = self.start_step
        self._next_control_check = 0.0
        self._paused = False
        self._validating = False
        self._status_dirty = True
        self._last_status_write = 0.0
        self._extra_status: dict[str, Any] = {}

        self._metrics: MetricsFile | None = None
        self._tb: Any = None
        self._writer_lock = threading.Lock()
        if self.is_main:
            self._metrics = MetricsFile(self.dir / METRICS_FILE)
            if tensorboard:
                from .tensorboard import EventFileWriter

                self._tb = EventFileWriter(self.dir / TB_DIR)
                if resumed:
                    self._tb.purge_from(self.start_step + 1)
        self._writer = BackgroundWriter(
            self._flush_records, self._on_write_error, tick=self._write_status if self.is_main else None
        )
        self._progress = ProgressDisplay(f"{self.trainer} {self.name}", progress) if self.is_main else None
        self._keys = KeyReader(paused=lambda: self._paused)
        if self.is_main:
            self._keys.start()  # v/p/s/q in the trainer's terminal; does nothing unless stdin is a TTY
        self._old_handlers: dict[int, Any] = {}
        if handle_signals and threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGINT, signal.SIGTERM):
                self._old_handlers[signum] = signal.signal(signum, self._on_signal)

    # ------------------------------------------------------------------ creation and resume

    def _open_dir(
        self,
        root: str | os.PathLike[str],
        out: str | os.PathLike[str] | None,
        name: str | None,
        resume: bool | str | os.PathLike[str],
        overwrite: bool,
    ) -> tuple[Path, str, str, bool]:
        if resume not in (False, True, None, ""):
            target = Path(resume)  # type: ignore[arg-type]
            run_dir = target if target.is_dir() else find_run_dir(target)
            if out is not None and Path(out).resolve() != run_dir.resolve():
                raise BadInputError(target, f"belongs to run {run_dir}, not to --out {out}")
            out, resume = run_dir, True
        if not self.is_main:
            run_dir = Path(out) if out is not None else rendezvous(Path(root), None)
            info = wait_for_run(run_dir)
            return run_dir, info.get("name", run_dir.name), info.get("id", ""), bool(resume)
        if out is None:
            if resume:
                raise BadInputError(None, RESUME_NEEDS_A_RUN)
            path, run_name, run_id = create_run_dir(root, name)
            if self.world_size > 1:
                rendezvous(Path(root), path)
            return path, run_name, run_id, False
        out = Path(out)
        run_file = out / RUN_FILE
        if out.exists() and not out.is_dir():
            raise BadInputError(out, "is a file, not a run directory")
        if run_file.exists():
            info = read_json_object(run_file)
            if resume:
                return out, info.get("name", out.name), info.get("id", ""), True
            if not overwrite:
                raise RunExistsError(f"{out}: already holds a run; pass --resume to continue it or --overwrite to replace it")
            shutil.rmtree(out)
        elif resume:
            raise RunNotFoundError(f"{out}: no run to resume here ({RUN_FILE} is missing)")
        elif out.exists() and any(out.iterdir()) and not overwrite:
            raise RunExistsError(f"{out}: exists, is not empty and is not a run; choose another --out or pass --overwrite")
        make_dir(out)
        if self.world_size > 1:
            rendezvous(Path(root), out)
        return out, name or out.name, new_id(), False

    def _write_new(self, config_text: str) -> None:
        self._info = {
            "id": self.id,
            "name": self.name,
            "trainer": self.trainer,
            "status": "running",
            "created_at": utc_now(),
            "finished_at": None,
            "command": list(sys.argv),
            "cwd": os.getcwd(),
            "git_commit": system.git_commit(),
            "host": system.host(),
            "pid": os.getpid(),
            "pid_start": system.process_start_ticks(os.getpid()),
            "versions": system.versions(),
            "world_size": self.world_size,
            "images_dir": self.images_dir,
            "snapshot_dir": self.snapshot_dir,
            "snapshot_pattern": self.snapshot_pattern,
            "step": 0,
            "step_max": self.step_max,
            "error": None,
            "failed_writes": {},
            "resumes": [],
        }
        write_json(self.dir / RUN_FILE, self._info)
        write_bytes(self.dir / CONFIG_FILE, config_text.encode("utf-8"))
        (self.dir / control.CONTROL_DIR).mkdir(exist_ok=True)
        self.event(f"run {self.name}_{self.id} started ({self.trainer}) in {self.dir}")

    def _prepare_resume(self, resume: bool | str | os.PathLike[str], config_text: str) -> float:
        # Everything that can fail is read and checked before the first write: a refused resume
        # leaves the run byte-for-byte as it was.
        given = Path(resume) if isinstance(resume, (str, os.PathLike)) and not Path(resume).is_dir() else None
        if given is not None:
            found = self.checkpoints.find(given)
            if found is None:
                raise BadInputError(given, "is not a checkpoint listed in this run's index")
            self.resume_checkpoint = found
        else:
            self.resume_checkpoint = self.checkpoints.latest()
        self.start_step = self.resume_checkpoint.step if self.resume_checkpoint else 0
        if self.resume_checkpoint is not None and self._load_checkpoint is not None:
            path = self.resume_checkpoint.path
            try:
                self.resume_state = self._load_checkpoint(path)
            except Exception as exc:
                first_line = (str(exc).strip().splitlines() or [""])[0]
                raise BadInputError(path, f"cannot be loaded as a checkpoint ({type(exc).__name__}: {first_line})") from exc
        if self.is_main:
            self._info = read_json_object(self.dir / RUN_FILE)
            truncation = plan_truncation(self.dir / METRICS_FILE, self.start_step)
        repairs = self.checkpoints.recover()
        if self.resume_checkpoint is not None and self.resume_checkpoint.path.name.startswith("."):
            # the staged file it was read from is now in place under its own name
            self.resume_checkpoint = self.checkpoints.find(given) if given else self.checkpoints.latest()
        if not self.is_main:
            return 0.0
        for line in repairs:
            self.event(f"checkpoint recovery: {line}")
        truncation.apply()
        dropped = truncation.dropped
        old_config = (self.dir / CONFIG_FILE).read_text(encoding="utf-8") if (self.dir / CONFIG_FILE).exists() else None
        resumes = self._info.setdefault("resumes", [])
        config_file = None
        if old_config != config_text:
            config_file = f"config.resume-{len(resumes) + 1}.json"
            write_bytes(self.dir / config_file, config_text.encode("utf-8"))
        resumes.append({"at": utc_now(), "step": self.start_step, "dropped_lines": dropped, "config": config_file,
                        "checkpoint": str(self.resume_checkpoint.path) if self.resume_checkpoint else None})
        self._info.update(status="running", finished_at=None, error=None, pid=os.getpid(),
                          pid_start=system.process_start_ticks(os.getpid()), host=system.host(),
                          command=list(sys.argv), step=self.start_step, step_max=self.step_max)
        write_json(self.dir / RUN_FILE, self._info)
        (self.dir / control.CONTROL_DIR).mkdir(exist_ok=True)
        where = f"checkpoint {self.resume_checkpoint.path.name}" if self.resume_checkpoint else "the start (no checkpoint)"
        self.event(f"resumed from {where} at step {self.start_step}; dropped {dropped} later line(s) of {METRICS_FILE}")
        return truncation.last_time

    # ------------------------------------------------------------------ writing

    def log(self, step: int, metrics: dict[str, Any]) -> None:
        """Append `{"step": step, "time": seconds, **metrics}` to train.jsonl (and tb/). Costs ~1 us."""
        if self._fatal is not None:
            self._raise_fatal()
        self._step = step
        if self._metrics is None:
            return
        if "step" in metrics or "time" in metrics:
            raise ValueError("metric names 'step' and 'time' are reserved")
        records = self._writer.records
        records.append((step, time.perf_counter() - self._t0, _copy_metrics(metrics)))
        pending = len(records)
        if pending >= self._writer.soft_records:
            if pending >= self._writer.max_records:
                self._writer.drain_records()  # the writer fell behind: back-pressure instead of unbounded memory
            else:
                self._writer.request_flush()

    def _flush_records(self, batch: list[tuple[int, float, dict[str, Any]]]) -> None:
        lines = [encode_line({"step": step, "time": round(elapsed, 6), **metrics}) for step, elapsed, metrics in batch]
        tb = self._tb
        if tb is not None:
            wall0 = self._wall0
            events = [tb.encode_scalars(wall0 + elapsed, step, metrics) for step, elapsed, metrics in batch]
        with self._writer_lock:
            assert self._metrics is not None
            self._metrics.write_lines(lines)
            if tb is not None:
                tb.write(b"".join(events))
                tb.flush()

    def image(self, step: int, name: str, rgb: Any) -> Path | None:
        """Save `{images_dir}/step_{step:04d}_{name}.png` in the background (and into tb/ under `name`).

        `rgb` is an HxW, HxWx3 or HxWx4 uint8 array (floats are taken as 0..1), a torch
        tensor, or a PIL image. A failed write is a warning, never an error.
        """
        if not self.is_main:
            return None
        if not _SAFE_NAME.match(name):
            raise ValueError(f"image name {name!r} may only hold letters, digits, '_', '.' and '-'")
        picture = to_pil(rgb)
        path = self.dir / self.images_dir / f"step_{step:04d}_{name}.png"
        wall = time.time()

        def write() -> None:
            import io

            buffer = io.BytesIO()
            picture.save(buffer, format="PNG", compress_level=4)
            png = buffer.getvalue()
            write_bytes(path, png, durable=False)
            if self._tb is not None:
                channels = {"L": 1, "RGB": 3, "RGBA": 4}.get(picture.mode, 3)
                with self._writer_lock:
                    self._tb.write_image(wall, step, name, png, picture.height, picture.width, channels)

        self._writer.submit(f"image {path.relative_to(self.dir)}", False, write)
        return path

    def snapshot(self, step: int, stats: dict[str, Any]) -> Path | None:
        """Write a statistics snapshot `{snapshot_dir}/{snapshot_pattern}` (pretty JSON, atomic, background).

        Every field of `SNAPSHOT_FIELDS` is present (null when unknown); the run's own
        progress and status fields are filled in; keys in `stats` win.
        A failed write prints the seed's warning and training goes on.
        """
        if not self.is_main:
            return None
        name = Path(self.snapshot_pattern.format(step=step))
        folder = Path(self.snapshot_dir)
        path = folder / name if folder.is_absolute() else self._inside(folder / name)
        data: dict[str, Any] = dict.fromkeys(SNAPSHOT_FIELDS)
        data.update(self.status_fields(step))
        data.update(stats)
        text = dumps_pretty(sanitize(data)).encode("utf-8")

        def write() -> None:
            self._writer.drain_records()
            write_bytes(path, text)
            self.event(f"📊 Statistics saved: {path.name}", console=True)

        self._writer.submit("snapshot", False, write)
        return path

    def save_json(self, relative_path: str | os.PathLike[str], obj: Any, *, essential: bool = True) -> Path | None:
        """Write any JSON artifact inside the run, atomically, in the background."""
        if not self.is_main:
            return None
        path = self._inside(Path(relative_path))
        text = dumps_pretty(sanitize(obj)).encode("utf-8")  # encoded now: the caller may change obj later
        def write() -> None:
            self._writer.drain_records()
            write_bytes(path, text)

        self._writer.submit(f"json {path.relative_to(self.dir)}", essential, write)
        return path

    def checkpoint(self, step: int, state: Any, save_fn: SaveFn, *, metric: float | None = None, wait: bool = False) -> Path:
        """Save `state` with `save_fn(state, fileobj)` as `ckpts/ckpt_{step}_rank{rank}.pt` (background, atomic).

        `state` must not change after the call (clone tensors first; see
        `runforge.trainers.common.cpu_state`). Retention follows `checkpoint_options`.
        A checkpoint that cannot be written ends the run as failed.
        """
        if self._fatal is not None:
            self._raise_fatal()
        path = self.checkpoints.path_for(step)

        def write() -> None:
            self._log_on_disk()
            self.checkpoints.write(step, state, save_fn, metric)
            self.event(f"checkpoint saved: {path.relative_to(self.dir)}")

        self._writer.submit(f"checkpoint {path.relative_to(self.dir)}", True, write)
        if wait:
            self.wait()
        return path

    def _log_on_disk(self) -> None:
        # Every line logged before this point reaches the disk before the checkpoint is listed, so a
        # resume from it never finds the log behind the checkpoint.
        self._writer.drain_records()
        if self._metrics is not None:
            with self._writer_lock:
                self._metrics.sync()

    def wait(self) -> None:
        """Block until every queued write is done (raises if an essential one failed)."""
        done = threading.Event()
        self._writer.submit("barrier", False, done.set)
        done.wait()
        self._writer.drain_records()  # metric lines too: a caller may copy train.jsonl next (export)
        if self._fatal is not None:
            self._raise_fatal()

    def event(self, message: str, level: str = "info", *, console: bool = False) -> None:
        """One line in events.log (`2026-11-22T02:44:32Z INFO message`); warnings and errors also go to stderr."""
        if not self.is_main:
            return
        line = f"{utc_now()} {level.upper()} {message}\n"
        with self._events_lock:
            with open(self.dir / EVENTS_FILE, "a", encoding="utf-8") as f:
                f.write(line)
        if console or level in ("warning", "error"):
            print(message, file=sys.stderr if level != "info" else sys.stdout, flush=True)

    def _on_write_error(self, kind: str, essential: bool, exc: BaseException) -> None:
        if essential:
            if self._fatal is None:
                self._fatal = exc
            self.event(f"❌ Failed to write {kind}: {exc}", "error")
            return
        category = kind.split(" ")[0]
        self._failures[category] = self._failures.get(category, 0) + 1
        if category == "snapshot":
            self.event(f"⚠️  Failed to save statistics JSON: {exc}", "warning")
        else:
            self.event(f"⚠️  Failed to save {kind}: {exc}", "warning")
        self._update_info(failed_writes=dict(self._failures))

    def _raise_fatal(self) -> None:
        raise CheckpointWriteError(f"{self.dir}: could not write an essential file: {self._fatal}")

    def _inside(self, relative: Path) -> Path:
        # Lexical, not resolved: a folder of the run may be a link to another disk.
        if relative.is_absolute() or ".." in relative.parts:
            raise ValueError(f"{relative}: must be a relative path inside the run directory")
        return self.dir / relative

    def _update_info(self, **changes: Any) -> None:
        if not self.is_main:
            return
        self._info.update(changes)
        write_json(self.dir / RUN_FILE, self._info)

    # ------------------------------------------------------------------ live state and control

    def poll(self, step: int | None = None, *, epoch: int | None = None, epoch_step: int | None = None,
             epoch_step_total: int | None = None, on_validate: Callable[[], Any] | None = None) -> Control:
        """Call once per step: updates status/ETA, applies pause/resume, returns pending commands.

        While paused this call blocks (still answering commands). A `validate` command that arrives
        while paused calls `on_validate()` there and then, so the model is validated at the step it
        is held at; without `on_validate` it is returned once the run resumes. SIGINT/SIGTERM and the
        `stop` command come back as `stop=True`: finish the step, checkpoint, leave the loop.
        """
        if self._fatal is not None:
            self._raise_fatal()
        self._poll_seen = True
        now = time.perf_counter()
        if step is not None:
            if self._last_poll is not None and step > self._step_at_last_poll:
                per_step = (now - self._last_poll) / (step - self._step_at_last_poll)
                old = self._iteration_duration
                self._iteration_duration = per_step if old is None else 0.9 * old + 0.1 * per_step
            self._step = step
        self._last_poll = now
        self._step_at_last_poll = self._step
        if epoch is not None:
            self._epoch = epoch
        if epoch_step is not None:
            self._epoch_step = epoch_step
        if epoch_step_total is not None:
            self._epoch_step_total = epoch_step_total
        if self._progress is not None:
            self._progress.update(self._step, self.step_max, system.format_duration(self._eta()))
        if now < self._next_control_check and not self._stop_requested:
            return _NOTHING
        self._next_control_check = now + 0.1
        requests: set[str] = set()
        self._apply_commands(requests)
        while self._paused and not self._stop_requested:
            time.sleep(0.05)  # paused: hold the step, keep answering commands (the writer keeps the heartbeat)
            self._apply_commands(requests)
            if on_validate is not None and "validate" in requests:
                requests.discard("validate")
                on_validate()
        if self._paused and self._stop_requested:
            self._set_paused(False)
        if self._stop_requested or requests:
            return Control(validate="validate" in requests, save="save" in requests, stop=self._stop_requested)
        return _NOTHING

    def _apply_commands(self, requests: set[str]) -> None:
        for command, stem in self._pending_commands():
            if stem is not None:
                control.write_receipt(self.dir, stem, command, self._step)
            if command == "pause":
                self._set_paused(True)
            elif command == "resume":
                self._set_paused(False)
            elif command == "stop":
                self._request_stop(None)
            else:
                requests.add(command)

    def _pending_commands(self) -> list[tuple[str, str | None]]:
        if not self.is_main:
            return []
        return control.take(self.dir) + [(command, None) for command in self._keys.take()]

    def _set_paused(self, paused: bool) -> None:
        if paused != self._paused:
            self._paused = paused
            self._status_dirty = True
            self.event("training paused" if paused else "training resumed", console=True)
            if not paused:
                self._last_poll = time.perf_counter()  # a pause is not an iteration

    def _request_stop(self, signum: int | None) -> None:
        if not self._stop_requested:
            self._stop_requested = True
            self._stop_signal = signum
            why = f"signal {signal.Signals(signum).name}" if signum else "stop command"
            self.event(f"stopping after this step ({why})", console=True)

    def _on_signal(self, signum: int, frame: Any) -> None:
        if self._stop_requested or not self._poll_seen:
            # A second signal, or a script that never polls: stop now, as Python would.
            self._stop_signal = signum
            if signum == signal.SIGINT:
                raise KeyboardInterrupt
            raise SystemExit(128 + signum)
        self._request_stop(signum)

    @property
    def stop_requested(self) -> bool:
        return self._stop_requested

    @contextmanager
    def validating(self) -> Iterator[None]:
        """Mark `validation_running` in status.json while the block runs."""
        self._validating = True
        self._status_dirty = True
        try:
            yield
        finally:
            self._validating = False
            self._status_dirty = True

    def set_status(self, **fields: Any) -> None:
        """Extra live fields for status.json (e.g. `vram_usage_gb` from a trainer on a GPU)."""
        self._extra_status.update(fields)

    def _eta(self) -> float | None:
        if self.step_max is None or self._iteration_duration is None:
            return None
        return max(0, self.step_max - self._step) * self._iteration_duration

    def status_fields(self, step: int | None = None) -> dict[str, Any]:
        """The live state, as status.json and every snapshot carry it."""
        eta = self._eta()
        rss = system.rss_bytes()
        epoch_eta = None
        if self._epoch_step_total is not None and self._epoch_step is not None and self._iteration_duration is not None:
            epoch_eta = max(0, self._epoch_step_total - self._epoch_step) * self._iteration_duration
        fields: dict[str, Any] = {
            "step_current": self._step if step is None else step,
            "step_max": self.step_max,
            "epoch_num": self._epoch,
            "epoch_step_current": self._epoch_step,
            "epoch_step_total": self._epoch_step_total,
            "iteration_duration": self._iteration_duration,
            "eta_total_seconds": eta,
            "eta_total_formatted": system.format_duration(eta),
            "eta_epoch_formatted": system.format_duration(epoch_eta),
            "memory_rss_bytes": rss,
            "ram_usage_gb": None if rss is None else round(rss / 2**30, 3),
            "training_active": not self._closed and not self._paused,
            "training_paused": self._paused,
            "validation_running": self._validating,
            "last_update_time": time.time(),
        }
        torch = sys.modules.get("torch")  # GPU memory only if the trainer already uses CUDA
        if torch is not None and torch.cuda.is_available() and torch.cuda.is_initialized():
            fields["vram_usage_gb"] = round(torch.cuda.memory_allocated() / 2**30, 3)
        fields.update(self._extra_status)
        return fields

    def _write_status(self) -> None:
        now = time.monotonic()
        if not self._status_dirty and now - self._last_status_write < 1.0:
            return
        self._status_dirty = False
        self._last_status_write = now
        fields = self.status_fields()
        fields["status"] = self.status
        write_bytes(self.dir / STATUS_FILE, dumps_pretty(sanitize(fields)).encode("utf-8"), durable=False)

    # ------------------------------------------------------------------ ending

    def close(self, status: Status | None = None, error: str | None = None) -> None:
        """Drain the writer, write the final status.json and run.json. Idempotent."""
        if self._closed:
            return
        self._closed = True
        for signum, handler in self._old_handlers.items():
            signal.signal(signum, handler)
        self._keys.stop()
        if self._progress is not None:
            self._progress.close()
        self._writer.close()
        if self._fatal is not None and status != "failed":
            status, error = "failed", f"could not write an essential file: {self._fatal}"
        if status is None:
            status = "interrupted" if self._stop_requested else "finished"
        self.status = status
        if self._metrics is not None:
            self._metrics.close()
        if self._tb is not None:
            self._tb.close()
        if self.is_main:
            self._status_dirty = True
            self._write_status()
            self._info["versions"] = system.versions()
            self._update_info(status=status, finished_at=utc_now(), step=self._step, error=error,
                              failed_writes=dict(self._failures))
            self.event(f"run {status} at step {self._step}" + (f": {error}" if error else ""),
                       "error" if status == "failed" else "info")

    def __enter__(self) -> "Run":
        return self

    def __exit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> None:
        if exc is None:
            self.close()
        elif isinstance(exc, KeyboardInterrupt):
            self.close("interrupted")
            self.exit_code = 130
        elif isinstance(exc, SystemExit) and self._stop_signal is not None:
            self.close("interrupted")
            self.exit_code = 128 + self._stop_signal
        else:
            self.close("failed", f"{type(exc).__name__}: {exc}")
            self.exit_code = 1
            return
        if self._fatal is not None:
            self.exit_code = 1
            self._raise_fatal()
        if exc is None and self._stop_signal is not None:
            self.exit_code = 128 + self._stop_signal
            raise SystemExit(self.exit_code)
