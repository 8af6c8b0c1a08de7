"""PyTorch Lightning: a logger that writes a runforge run, and a callback that obeys `runforge ctl`.

    from runforge.integrations.lightning import RunforgeControl, RunforgeLogger

    logger = RunforgeLogger(root="runs")                 # or out="results/x"
    trainer = Trainer(logger=logger, callbacks=[RunforgeControl()])
    trainer.fit(model)                                   # runs/{adjective}-{noun}-{N}_{id}/

What maps to what (docs/integrations.md has the table):

    self.log(...) / logger.log_metrics     train.jsonl + tb/ (Run.log), at Lightning's step
    save_hyperparameters / log_hyperparams config.json (merged over every call)
    logger.experiment                      RunforgeExperiment: add_image / log_image / add_scalar, else the Run
    ModelCheckpoint (no dirpath)           {run}/checkpoints/ (Lightning's `{log_dir}/checkpoints`), noted in events.log
    finalize("success" | "failed")         run.json finished | interrupted (stop, Ctrl-C, SIGTERM) | failed
    pause / resume                         RunforgeControl holds the loop between batches
    validate                               Lightning's validation loop, at the end of the batch that took it
    save / stop                            trainer.save_checkpoint into the checkpoint folder; stop ends the fit

Only global rank 0 opens the run; every other rank reaches the same directory (given `out`, or the
note rank 0 leaves in `root`), writes nothing, and gets rank 0's control decisions by broadcast.
Imports `lightning`, else `pytorch_lightning`.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
import sys
import warnings
from argparse import Namespace
from pathlib import Path
from typing import Any, Mapping

try:
    from lightning.pytorch.callbacks import Callback
    from lightning.pytorch.loggers.logger import Logger, rank_zero_experiment
    from lightning.pytorch.utilities.rank_zero import rank_zero_only
except ImportError:  # only the older package name is installed
    from pytorch_lightning.callbacks import Callback  # type: ignore[no-redef]
    from pytorch_lightning.loggers.logger import Logger, rank_zero_experiment  # type: ignore[no-redef]
    from pytorch_lightning.utilities.rank_zero import rank_zero_only  # type: ignore[no-redef]

from ..run import Run
from ..run.naming import rendezvous

__all__ = ["RunforgeControl", "RunforgeExperiment", "RunforgeLogger"]

CHECKPOINT_FOLDER = "checkpoints"
"""Where ModelCheckpoint lands by itself under a logger whose log_dir is the run (`{log_dir}/checkpoints`)."""

_RESERVED = ("step", "time")
_UNSAFE = re.compile(r"[^A-Za-z0-9_.\-]")


def _global_rank() -> int:
    return int(getattr(rank_zero_only, "rank", 0) or 0)


class RunforgeExperiment:
    """What `logger.experiment` returns on rank 0: TensorBoard-style calls onto the Run, the Run's own otherwise.

    `add_image(tag, img, global_step, dataformats="CHW")` and `log_image(name, image, step)` write
    `images/step_{step:04d}_{name}.png` (and tb/); `add_scalar` is one train.jsonl line; any other
    attribute is the Run's (`experiment.snapshot(...)`, `experiment.dir`).
    """

    def __init__(self, logger: "RunforgeLogger") -> None:
        self._logger = logger
        self.run = logger.run

    def add_scalar(self, tag: str, scalar_value: Any, global_step: int | None = None, **_: Any) -> None:
        self._logger.log_metrics({tag: scalar_value}, global_step)

    def add_image(self, tag: str, img_tensor: Any, global_step: int | None = None, walltime: Any = None,
                  dataformats: str = "CHW") -> Path | None:
        image = img_tensor
        if dataformats.upper() == "CHW" and len(getattr(image, "shape", ())) == 3:
            # explicit, because the run layer's guess cannot tell a 3x3x3 CHW from an HWC image
            image = image.permute(1, 2, 0) if hasattr(image, "permute") else image.transpose(1, 2, 0)
        return self.log_image(tag, image, global_step)

    def log_image(self, name: str, image: Any, step: int | None = None) -> Path | None:
        if self._logger._finalized:
            self._logger._warn_closed()
            return None
        return self.run.image(self._logger._step(step), _UNSAFE.sub("_", name) or "image", image)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.run, name)


class RunforgeLogger(Logger):
    """A Lightning logger whose output is one runforge run directory.

    Args:
        root: where the `{adjective}-{noun}-{N}_{id}` directory is created (when `out` is not given).
        out: use exactly this directory as the run.
        name: the `{adjective}-{noun}-{N}` part, chosen for you when None.
        config: parameters written to config.json at once; `log_hyperparams` adds to them.
        trainer_name: the `trainer` field of run.json.
        steps: the step count the run aims for; RunforgeControl fills it in from the Trainer.
        **run_options: more `runforge.Run` arguments (`tensorboard`, `images_dir`, `progress`, ...).
            `resume` is refused: a resumed Lightning fit (`ckpt_path=`) is a new run, because the
            run layer's resume cuts train.jsonl back to a checkpoint of its own index.
    """

    def __init__(
        self,
        root: str | os.PathLike[str] = "runs",
        out: str | os.PathLike[str] | None = None,
        name: str | None = None,
        *,
        config: Mapping[str, Any] | None = None,
        trainer_name: str = "lightning",
        steps: int | None = None,
        **run_options: Any,
    ) -> None:
        super().__init__()
        if run_options.get("resume"):
            raise ValueError("RunforgeLogger cannot resume a run: a fit resumed from ckpt_path= is a new run "
                             "(the run layer's resume would cut train.jsonl back to a checkpoint of its own index)")
        run_options.pop("resume", None)
        run_options.setdefault("progress", False)  # Lightning draws its own progress bar
        self._root = root
        self._out = out
        self._run_name = name
        self._config = _plain(dict(config or {}))
        self._trainer_name = trainer_name
        self._steps = steps
        self._run_options = run_options
        self._run: Run | None = None
        self._experiment: RunforgeExperiment | None = None
        self._dir: str | None = None
        self._finalized = False
        self._warned_closed = False
        self._last_step = 0
        self._checkpoints_seen: set[str] = set()

    # ------------------------------------------------------------------ where the run is

    @property
    def run(self) -> Run | None:
        """The runforge Run (opened on first use), on global rank 0; None on every other rank."""
        if _global_rank() != 0:
            return None
        if self._run is None:
            world_size = int(os.environ.get("WORLD_SIZE", 1))
            # rank 0 is passed explicitly: Lightning's ranks set LOCAL_RANK, not the RANK the Run reads
            self._run = Run(self._trainer_name, self._config, root=self._root, out=self._out, name=self._run_name,
                            steps=self._steps, rank=0, world_size=world_size, **self._run_options)
            self._dir = str(self._run.dir)
        return self._run

    @property
    @rank_zero_experiment
    def experiment(self) -> RunforgeExperiment:
        """Rank 0: a `RunforgeExperiment` over the Run; other ranks get Lightning's no-op dummy."""
        if self._experiment is None:
            self._experiment = RunforgeExperiment(self)
        return self._experiment

    @property
    def save_dir(self) -> str | None:
        """The run directory, on every rank (so `trainer.log_dir` and ModelCheckpoint land inside it)."""
        if self._dir is None:
            if _global_rank() == 0:
                self.run
            elif self._out is not None:
                self._dir = os.path.abspath(self._out)
            else:
                # rank 0 announces its directory in root when the world is larger than one process
                self._dir = str(rendezvous(Path(self._root), None))
        return self._dir

    @property
    def log_dir(self) -> str | None:
        return self.save_dir

    @property
    def root_dir(self) -> str | None:
        return self.save_dir

    @property
    def name(self) -> str:
        # ModelCheckpoint writes to {save_dir}/{name}/{version}/checkpoints: empty parts keep it inside the run
        return ""

    @property
    def version(self) -> str:
        return ""

    # ------------------------------------------------------------------ writing

    def _step(self, step: int | None) -> int:
        return self._last_step if step is None else int(step)

    def _warn_closed(self) -> None:
        if not self._warned_closed:
            self._warned_closed = True
            warnings.warn(f"RunforgeLogger: the run {self._dir} was closed by finalize(); what is logged after "
                          "it (trainer.test after trainer.fit) is not written: give that call its own "
                          "RunforgeLogger", stacklevel=3)

    @rank_zero_only
    def log_metrics(self, metrics: Mapping[str, Any], step: int | None = None) -> None:
        if self._finalized:
            self._warn_closed()
            return
        run = self._run if self._run is not None else self.run
        assert run is not None
        step = self._last_step if step is None else int(step)
        self._last_step = step
        record: Mapping[str, Any] = metrics
        for key, value in metrics.items():
            if (type(value) is not float and type(value) is not int) or key in _RESERVED:
                record = _record(metrics)  # rare: tensors, numpy scalars, a metric called "time"
                break
        run.log(step, record)  # type: ignore[arg-type]

    @rank_zero_only
    def log_hyperparams(self, params: Any, *args: Any, **kwargs: Any) -> None:
        if self._finalized:
            self._warn_closed()
            return
        converted = _plain(params)
        if not isinstance(converted, dict):
            converted = {"hparams": converted}
        self._config.update(converted)
        run = self.run
        assert run is not None
        # config.json is written once when the run opens; later parameters rewrite it whole, atomically
        run.config = dict(self._config)
        run.save_json("config.json", self._config)

    @rank_zero_only
    def after_save_checkpoint(self, checkpoint_callback: Any) -> None:
        path = (getattr(checkpoint_callback, "_last_checkpoint_saved", None)
                or getattr(checkpoint_callback, "last_model_path", None)
                or getattr(checkpoint_callback, "best_model_path", None))
        if path:
            self.note_checkpoint(str(path), "ModelCheckpoint")

    def note_checkpoint(self, path: str, by: str) -> None:
        """One events.log line per checkpoint file (rank 0; the same file is noted once)."""
        run = self._run
        if run is None or self._finalized or path in self._checkpoints_seen:
            return
        self._checkpoints_seen.add(path)
        try:
            shown = str(Path(path).resolve().relative_to(Path(run.dir).resolve()))
        except ValueError:
            shown = path
        run.event(f"checkpoint saved: {shown} ({by})")

    @rank_zero_only
    def finalize(self, status: str) -> None:
        """Close the run: `success` is finished (interrupted after a stop command or signal), `failed`
        is interrupted for Ctrl-C, SIGTERM and SystemExit, failed for anything else."""
        run = self._run
        if run is None or self._finalized:
            return
        self._finalized = True
        if status != "failed":
            run.close()
            return
        exc = sys.exc_info()[1]  # Lightning calls finalize("failed") while it handles the exception
        if isinstance(exc, (KeyboardInterrupt, SystemExit)) or type(exc).__name__ == "SIGTERMException":
            run.close("interrupted")
        else:
            run.close("failed", f"{type(exc).__name__}: {exc}" if exc is not None else "the Lightning fit failed")

    def __getstate__(self) -> dict[str, Any]:
        # ddp_spawn pickles the logger into its workers: the open Run (threads, files) stays behind
        state = self.__dict__.copy()
        state["_run"] = state["_experiment"] = None
        return state


class RunforgeControl(Callback):
    """Carries `runforge ctl RUN pause|resume|validate|save|stop` (and the dashboard's buttons) into the Trainer.

    Needs a `RunforgeLogger` among the Trainer's loggers. After every training batch rank 0 polls the
    run (blocking while paused) and broadcasts what to do, so every rank does the same:

        validate   Lightning's validation loop, now (while paused too, in a single process)
        save       trainer.save_checkpoint("{folder}/epoch={e}-step={s}-save.ckpt")
        stop       a "-stop" checkpoint, then trainer.should_stop = True; run.json says interrupted

    The folder is ModelCheckpoint's (`{run}/checkpoints/` unless it was given a dirpath).
    Under DDP a pause holds the other ranks in a collective: a pause longer than the process
    group's timeout (DDPStrategy(timeout=...), 30 minutes by default) ends the job.
    """

    def __init__(self, *, checkpoint_on_stop: bool = True) -> None:
        self.checkpoint_on_stop = checkpoint_on_stop
        self._logger: RunforgeLogger | None = None
        self._folder: str | None = None
        self._validation: Any = None

    def setup(self, trainer: Any, pl_module: Any, stage: str) -> None:
        for logger in trainer.loggers:
            if isinstance(logger, RunforgeLogger):
                self._logger = logger
                return
        raise ValueError("RunforgeControl needs a RunforgeLogger: Trainer(logger=RunforgeLogger(), "
                         "callbacks=[RunforgeControl()])")

    def _run(self) -> Run | None:
        return None if self._logger is None or self._logger._finalized else self._logger.run

    def on_train_start(self, trainer: Any, pl_module: Any) -> None:
        run = self._run()
        folder = None
        if run is not None:
            total = trainer.max_steps if trainer.max_steps and trainer.max_steps > 0 else trainer.estimated_stepping_batches
            if run.step_max is None and isinstance(total, int) and total > 0:
                run.step_max = total
            callback = trainer.checkpoint_callback
            dirpath = getattr(callback, "dirpath", None) if callback is not None else None
            folder = str(dirpath) if dirpath else str(Path(run.dir) / CHECKPOINT_FOLDER)
        self._folder = trainer.strategy.broadcast(folder, src=0) if trainer.world_size > 1 else folder

    def on_train_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
        decision = (False, False, False)
        run = self._run()
        if run is not None:
            total = trainer.num_training_batches
            single = trainer.world_size == 1
            control = run.poll(trainer.global_step, epoch=trainer.current_epoch, epoch_step=batch_idx + 1,
                               epoch_step_total=total if isinstance(total, int) else None,
                               # other ranks would wait in a collective while rank 0 validated alone
                               on_validate=(lambda: self.validate_now(trainer)) if single else None)
            decision = (control.validate, control.save, control.stop)
        if trainer.world_size > 1:
            decision = trainer.strategy.broadcast(decision, src=0)
        validate, save, stop = decision
        if validate:
            self.validate_now(trainer)
        if save or (stop and self.checkpoint_on_stop):
            self.save_now(trainer, "stop" if stop else "save")
        if stop:
            trainer.should_stop = True

    def validate_now(self, trainer: Any) -> None:
        """Run Lightning's validation loop here, between two training batches, as the epoch loop does."""
        if not trainer.enable_validation:
            run = self._run()
            if run is not None:
                run.event("validate requested, but the model has no validation loop", "warning", console=True)
            return
        epoch_loop = trainer.fit_loop.epoch_loop
        connector = trainer._logger_connector
        first_loop_iter = getattr(connector, "_first_loop_iter", None)
        trainer.validating = True
        try:
            epoch_loop.val_loop.run()
        finally:
            trainer.training = True
            if first_loop_iter is not None:
                connector._first_loop_iter = first_loop_iter
        # the epoch loop would validate again at the end of this batch when it is due anyway
        epoch_loop._skip_next_val = True

    def save_now(self, trainer: Any, reason: str) -> str:
        """trainer.save_checkpoint into the checkpoint folder (every rank calls it; rank 0 writes)."""
        folder = self._folder or str(Path(trainer.default_root_dir) / CHECKPOINT_FOLDER)
        path = os.path.join(folder, f"epoch={trainer.current_epoch}-step={trainer.global_step}-{reason}.ckpt")
        trainer.save_checkpoint(path, weights_only=False)  # a full checkpoint: fit(ckpt_path=) resumes from it
        if self._logger is not None and _global_rank() == 0:
            self._logger.note_checkpoint(path, f"{reason} command")
        return path

    def on_validation_start(self, trainer: Any, pl_module: Any) -> None:
        run = self._run()
        if run is not None and self._validation is None:
            self._validation = run.validating()  # status.json: validation_running while it lasts
            self._validation.__enter__()

    def on_validation_end(self, trainer: Any, pl_module: Any) -> None:
        if self._validation is not None:
            validation, self._validation = self._validation, None
            validation.__exit__(None, None, None)


# ---------------------------------------------------------------------- conversions


def _scalar(value: Any) -> Any:
    if isinstance(value, (bool, int, float, str)) or value is None:
        return value
    if callable(getattr(value, "item", None)) and _numel(value) == 1:
        return value.item()
    if callable(getattr(value, "tolist", None)):
        return value.tolist()
    return value


def _numel(value: Any) -> int:
    numel = getattr(value, "numel", None)
    if callable(numel):
        return int(numel())
    size = getattr(value, "size", None)
    return int(size) if isinstance(size, int) else -1


def _record(metrics: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in metrics.items():
        value = _scalar(value)
        out[f"{key}_" if key in _RESERVED else key] = value
    return out


def _plain(value: Any, depth: int = 0) -> Any:
    """Hyperparameters as JSON: Namespace, AttributeDict, dataclasses and mappings become objects (nested),
    tensors of one value numbers, callables and types their names, anything else its str()."""
    if depth > 32:
        return str(value)
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, Namespace):
        value = vars(value)
    elif dataclasses.is_dataclass(value) and not isinstance(value, type):
        value = {field.name: getattr(value, field.name) for field in dataclasses.fields(value)}
    if isinstance(value, Mapping):
        return {str(key): _plain(item, depth + 1) for key, item in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [_plain(item, depth + 1) for item in value]
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if hasattr(value, "item") and _numel(value) == 1:
        return _plain(value.item(), depth + 1)
    if isinstance(value, type) or callable(value):
        return getattr(value, "__qualname__", None) or getattr(value, "__name__", None) or type(value).__name__
    return str(value)
