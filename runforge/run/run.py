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

What lands on disk (docs/run-layer.md describes each file; runforge/run/layout.py names them):

    {dir}/run.json        identity and status; rewritten on every status change
    {dir}/config.json     the resolved config, once (config.resume-N.json when a resume changed it)
    {dir}/train.jsonl     one line per `log` call
    {dir}/status.json     live state, at most once a second
    {dir}/system.jsonl    CPU %, memory, GPU memory/utilisation every `system_interval` seconds
    {dir}/events.log      saves, validations, warnings, errors
    {dir}/tb/             TensorBoard events of every scalar and image
    {dir}/control/        commands waiting for the trainer
    {dir}/images/step_{step:04d}_{name}.png      (`images_dir`)
    {dir}/stats/stats_{step}.json               (`snapshot_dir`, `snapshot_pattern`)
    {dir}/ckpts/ckpt_{step}_rank{rank}.pt       (`checkpoint_options`)
"""

from __future__ import annotations

import os
import threading
import time
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any, Callable, Literal, Mapping, Sequence

from ..errors import CheckpointWriteError
from . import system
from .checkpoints import CheckpointInfo, SaveFn
from .console import ProgressDisplay
from .controller import Control, Controller
from .events import utc_now
from .files import dumps_pretty, sanitize, write_bytes, write_json
from .images import to_pil
from .layout import (IMAGES_DIR, METRICS_FILE, METRICS_INDEX_FILE, RUN_FILE, SNAPSHOT_DIR, SNAPSHOT_PATTERN,
                     SYSTEM_FILE, TB_DIR)
from .metrics import MetricsFile, encode_line
from .opening import RESUME_NEEDS_A_RUN, SAFE_NAME, OpenRequest, open_run
from .snapshot_fields import declare as declare_snapshot_groups, fields_of
from .writer import BackgroundWriter

__all__ = ["CheckpointWriteError", "Control", "RESUME_NEEDS_A_RUN", "Run", "Status", "utc_now"]

Status = Literal["running", "finished", "failed", "interrupted"]


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
        images_dir: the folder inside the run where `image` writes (a trainer may name its own, e.g. `samples`).
        snapshot_dir, snapshot_pattern: where `snapshot` writes (`{step}` is replaced); a relative
            folder is inside the run, an absolute one anywhere (the sr trainer's `learn_dir`).
        snapshot_groups: the trainer's snapshot fields by heading, e.g. {"validation": ("psnr", "ssim")};
            recorded in run.json, where the dashboard groups a snapshot by it. None: the run layer's
            generic groups (`snapshot_fields.SNAPSHOT_GROUPS`).
        checkpoint_options: keyword arguments of `CheckpointManager` (folder, pattern, keep_last, ...).
        load_checkpoint: on resume, `load_checkpoint(path)` reads the checkpoint into `run.resume_state`
            before anything in the run is changed; any exception it raises is a `BadInputError` naming
            the file, and the run is left exactly as it was.
        progress: True: a progress bar; "lines": a plain line every 10%; False: no progress output;
            None (default): the bar when stderr is a terminal, the lines otherwise.
        handle_signals: turn SIGINT/SIGTERM into a graceful stop (see `poll`).
        terminal_keys: read v/p/s/q from the terminal (rank 0, on a terminal only); False leaves stdin to
            the script (input(), pdb).
        rank, world_size: default to the RANK and WORLD_SIZE that torchrun sets.
        system_interval: seconds between two samples appended to system.jsonl (rank 0); None or 0: none.
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
        snapshot_dir: str = SNAPSHOT_DIR,
        snapshot_pattern: str = SNAPSHOT_PATTERN,
        snapshot_groups: Mapping[str, Sequence[str]] | None = None,
        checkpoint_options: dict[str, Any] | None = None,
        load_checkpoint: Callable[[Path], Any] | None = None,
        progress: bool | str | None = None,
        handle_signals: bool = True,
        terminal_keys: bool = True,
        rank: int | None = None,
        world_size: int | None = None,
        system_interval: float | None = system.SYSTEM_INTERVAL_S,
    ) -> None:
        if system_interval is not None and not system_interval >= 0:  # NaN too
            raise ValueError(f"system_interval must be seconds >= 0 or None, not {system_interval!r}")
        self.trainer = trainer
        self.config = dict(config or {})
        self.rank = int(os.environ.get("RANK", 0)) if rank is None else rank
        self.world_size = int(os.environ.get("WORLD_SIZE", 1)) if world_size is None else world_size
        self.is_main = self.rank == 0
        self.images_dir = images_dir
        self.snapshot_dir = snapshot_dir
        self.snapshot_pattern = snapshot_pattern
        self.snapshot_groups = declare_snapshot_groups(snapshot_groups)  # a bad declaration fails before the disk
        self._snapshot_fields = fields_of(self.snapshot_groups)
        self.status: Status = "running"
        self.exit_code = 0
        self._closed = False
        self._fatal: BaseException | None = None
        self._failures: dict[str, int] = {}

        opening = open_run(OpenRequest(
            trainer=trainer, config=self.config, root=root, out=out, name=name, resume=resume,
            overwrite=overwrite, rank=self.rank, world_size=self.world_size, step_max=steps,
            images_dir=images_dir, snapshot_dir=snapshot_dir, snapshot_pattern=snapshot_pattern,
            snapshot_groups=self.snapshot_groups, checkpoint_options=checkpoint_options,
            load_checkpoint=load_checkpoint,
        ))
        self.dir = opening.dir
        self.name = opening.name
        self.id = opening.id
        self.checkpoints = opening.checkpoints
        self.start_step = opening.start_step
        self.resume_checkpoint: CheckpointInfo | None = opening.resume_checkpoint
        self.resume_state: Any = opening.resume_state
        self._info = opening.info
        self._events = opening.events
        # train.jsonl's `time` and the TensorBoard wall times go on from where the resumed run left off
        self._t0 = time.perf_counter() - opening.elapsed
        self._wall0 = time.time() - opening.elapsed

        self._metrics: MetricsFile | None = None
        self._tb: Any = None
        self._writer_lock = threading.Lock()
        if self.is_main:
            self._metrics = MetricsFile(self.dir / METRICS_FILE, self.dir / METRICS_INDEX_FILE)
            if tensorboard:
                from .tensorboard import EventFileWriter

                self._tb = EventFileWriter(self.dir / TB_DIR)
                if opening.resumed:
                    self._tb.purge_from(self.start_step + 1)
        sampler = None
        if self.is_main and system_interval:
            sampler = system.SystemSampler(self.dir / SYSTEM_FILE, system_interval,
                                           elapsed=lambda: time.perf_counter() - self._t0)
        self._controller = Controller(
            self.dir, is_main=self.is_main, step_max=steps, start_step=self.start_step, event=self.event,
            progress=ProgressDisplay(f"{self.trainer} {self.name}", progress) if self.is_main else None,
            sampler=sampler,
        )
        self._writer = BackgroundWriter(
            self._flush_records, self._on_write_error, tick=self._write_status if self.is_main else None
        )
        self._controller.start(handle_signals=handle_signals, terminal_keys=terminal_keys)

    @property
    def step_max(self) -> int | None:
        """The step count the run aims for (status.json `step_max`, the ETA); may be set later."""
        return self._controller.step_max

    @step_max.setter
    def step_max(self, steps: int | None) -> None:
        self._controller.step_max = steps

    # ------------------------------------------------------------------ writing

    def log(self, step: int, metrics: dict[str, Any]) -> None:
        """Append `{"step": step, "time": seconds, **metrics}` to train.jsonl (and tb/). Costs ~1 us."""
        if self._fatal is not None:
            self._raise_fatal()
        self._controller.step = step
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
            self._metrics.write_lines(lines, batch)
            if tb is not None:
                tb.write(b"".join(events))
                tb.flush()

    def image(self, step: int, name: str, rgb: Any, *, tag: str | None = None) -> Path | None:
        """Save `{images_dir}/step_{step:04d}_{name}.png` in the background (and into tb/ under `tag`,
        by default `name`; a TensorBoard tag may hold `/`, a file name may not).

        `rgb` is an HxW, HxWx3 or HxWx4 uint8 array (floats are taken as 0..1), a torch
        tensor, or a PIL image. A failed write is a warning, never an error.
        """
        if not self.is_main:
            return None
        if not SAFE_NAME.match(name):
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
                    self._tb.write_image(wall, step, tag or name, png, picture.height, picture.width, channels)

        self._writer.submit(f"image {path.relative_to(self.dir)}", False, write)
        return path

    def tensorboard_records(self, kind: str, build: Callable[[], bytes]) -> None:
        """Append the TensorBoard records `build()` returns to tb/ on the writer thread (histograms, text,
        hparams: whatever `runforge.run.tensorboard` encodes). Nothing happens without tb/ or on rank > 0;
        a failed write is a warning. TensorBoard reads a folder's event files one after the other, so
        everything goes into the run's one event file."""
        tb = self._tb if self.is_main else None
        if tb is None:
            return

        def write() -> None:
            data = build()
            with self._writer_lock:
                tb.write(data)

        self._writer.submit(kind, False, write)

    def snapshot(self, step: int, stats: dict[str, Any]) -> Path | None:
        """Write a statistics snapshot `{snapshot_dir}/{snapshot_pattern}` (pretty JSON, atomic, background).

        Every declared field (`snapshot_groups`) is present (null when unknown), the declared
        fields of the run's live state (`status_fields`) are filled in; keys in `stats` win,
        and keys it has beyond the declared ones follow them.
        A failed write prints `⚠️  Failed to save statistics JSON: ...` and training goes on.
        """
        if not self.is_main:
            return None
        name = Path(self.snapshot_pattern.format(step=step))
        folder = Path(self.snapshot_dir)
        path = folder / name if folder.is_absolute() else self._inside(folder / name)
        data: dict[str, Any] = dict.fromkeys(self._snapshot_fields)
        live = self.status_fields(step)
        data.update((key, live[key]) for key in self._snapshot_fields if key in live)
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
        """Save `state` with `save_fn(state, fileobj)` as `ckpts/ckpt_{step}_rank{rank}.pt` (background, atomic;
        `checkpoint_options` may choose another folder and pattern).

        `state` is written later, on the writer thread, so it must not change after the call: pass a
        copy with every tensor cloned. The run layer has no such helper (it never imports torch); the
        trainers use `cpu_state` from runforge/trainers/common.py. Retention follows `checkpoint_options`.
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
        self._events.write(message, level, console=console)

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
        return self._controller.poll(step, epoch=epoch, epoch_step=epoch_step, epoch_step_total=epoch_step_total,
                                     on_validate=on_validate)

    @property
    def stop_requested(self) -> bool:
        return self._controller.stop_requested

    def validating(self) -> AbstractContextManager[None]:
        """Mark `validation_running` in status.json while the block runs."""
        return self._controller.validating()

    def set_status(self, **fields: Any) -> None:
        """Extra live fields for status.json (e.g. `vram_usage_gb` from a trainer on a GPU)."""
        self._controller.set_status(**fields)

    def status_fields(self, step: int | None = None) -> dict[str, Any]:
        """The live state, as status.json carries it (and a snapshot, the parts its run declares)."""
        return self._controller.status_fields(step)

    def _write_status(self, force: bool = False) -> None:
        self._controller.write_status(self.status, force=force)

    # ------------------------------------------------------------------ ending

    def close(self, status: Status | None = None, error: str | None = None) -> None:
        """Drain the writer, write the final status.json and run.json. Idempotent."""
        if self._closed:
            return
        self._closed = True
        self._controller.close()
        self._writer.close()
        if self._fatal is not None and status != "failed":
            status, error = "failed", f"could not write an essential file: {self._fatal}"
        if status is None:
            status = "interrupted" if self._controller.stop_requested else "finished"
        self.status = status
        if self._metrics is not None:
            self._metrics.close()
        if self._tb is not None:
            self._tb.close()
        if self.is_main:
            step = self._controller.step
            self._write_status(force=True)
            self._info["versions"] = system.versions()
            self._update_info(status=status, finished_at=utc_now(), step=step, error=error,
                              failed_writes=dict(self._failures))
            self.event(f"run {status} at step {step}" + (f": {error}" if error else ""),
                       "error" if status == "failed" else "info")

    def __enter__(self) -> "Run":
        return self

    def __exit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> None:
        if exc is None:
            self.close()
        elif isinstance(exc, KeyboardInterrupt):
            self.close("interrupted")
            self.exit_code = 130
        elif isinstance(exc, SystemExit) and self._controller.stop_signal is not None:
            self.close("interrupted")
            self.exit_code = 128 + self._controller.stop_signal
        else:
            self.close("failed", f"{type(exc).__name__}: {exc}")
            self.exit_code = 1
            return
        if self._fatal is not None:
            self.exit_code = 1
            self._raise_fatal()
        if exc is None and self._controller.stop_signal is not None:
            self.exit_code = 128 + self._controller.stop_signal
            raise SystemExit(self.exit_code)
