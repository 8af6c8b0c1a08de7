"""runforge for transformers' `Trainer`: one callback writes the run and answers `runforge ctl`.

    from runforge.integrations.huggingface import RunforgeCallback

    trainer = Trainer(model=model, args=args, train_dataset=train, eval_dataset=val,
                      callbacks=[RunforgeCallback()])        # runs/{adjective}-{noun}-{N}_{id}/
    trainer.train()

Importing this module also registers `report_to="runforge"` (see `register_report_to`). What maps
to what is in docs/integrations.md ("Hugging Face Trainer").
"""

from __future__ import annotations

import atexit
import math
import os
import time
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

from ..run import Run

__all__ = ["RunforgeCallback", "register_report_to", "split_logs"]

REPORT_TO = "runforge"
"""The `TrainingArguments(report_to=...)` name this module registers."""

POLL_INTERVAL_S = 0.25
"""`Run.poll` at most this often. A poll that lists the control folder costs about as much as a logged step
of TensorBoard; a quarter of a second is still prompt for a person's command, and bounds the cost by time,
whatever the step rate (the ETA averages over polls, not steps)."""

_VAL_PREFIX = "eval_"
_TRAIN_PREFIX = "train_"


def split_logs(logs: dict[str, Any]) -> dict[str, Any]:
    """The Trainer's flat `logs` as a train.jsonl record: `eval_x` -> `val.x`, `train_x` (the end-of-training
    summary) -> `train.x`, everything else unchanged (`loss`, `learning_rate`, `grad_norm`, `epoch`)."""
    record: dict[str, Any] = {}
    val: dict[str, Any] | None = None
    train: dict[str, Any] | None = None
    for key, value in logs.items():
        if key.startswith(_VAL_PREFIX):
            if val is None:
                val = record["val"] = {}
            val[key[5:]] = value
        elif key.startswith(_TRAIN_PREFIX):
            if train is None:
                train = record["train"] = {}
            train[key[6:]] = value
        elif key == "step" or key == "time":
            # reserved by train.jsonl for its own step and clock
            record[f"trainer_{key}"] = value
        else:
            record[key] = value
    return record


def _eval_strategy(args: Any) -> str:
    # transformers < 4.41 called it evaluation_strategy
    strategy = getattr(args, "eval_strategy", None) or getattr(args, "evaluation_strategy", "no")
    return str(getattr(strategy, "value", strategy))


class RunforgeCallback(TrainerCallback):
    """Writes an ordinary runforge run from transformers' `Trainer` and turns `runforge ctl` commands into
    `TrainerControl` flags.

    Args:
        root: where the run directory `{adjective}-{noun}-{N}_{id}` is created (the folder `runforge runs`,
            `runforge serve` list); each `train()` call is one run.
        out: use exactly this directory instead (refused if it already holds a run, unless `overwrite`).
        name: the `{adjective}-{noun}-{N}` part of the directory name.
        config: extra entries for config.json, beside `training_args` and `model`.
        trainer: the trainer name run.json records.
        tensorboard: also write the metrics to the run's `tb/`.
        progress: True adds runforge's progress bar to the Trainer's; False (default) adds no progress output.
        handle_signals: a first Ctrl-C / SIGTERM stops the Trainer at the next step with a checkpoint;
            a second one stops at once.
    """

    def __init__(
        self,
        *,
        root: str | os.PathLike[str] = "runs",
        out: str | os.PathLike[str] | None = None,
        name: str | None = None,
        config: dict[str, Any] | None = None,
        trainer: str = "huggingface",
        overwrite: bool = False,
        tensorboard: bool = True,
        progress: bool = False,
        handle_signals: bool = True,
    ) -> None:
        self.root = root
        self.out = out
        self.name = name
        self.extra_config = dict(config or {})
        self.trainer = trainer
        self.overwrite = overwrite
        self.tensorboard = tensorboard
        self.progress = progress
        self.handle_signals = handle_signals
        self.run: Run | None = None
        """The open run on the main process, from `on_train_begin` to `on_train_end`; None elsewhere."""
        self.run_dir: Path | None = None
        """The directory of the last run this callback opened (it stays set after the run is closed)."""
        self._can_evaluate = False
        self._validating: Any = None
        self._share_flags: Any = None
        self._atexit_registered = False
        self._next_poll = 0.0

    # ------------------------------------------------------------------ opening and closing

    def on_train_begin(self, args: Any, state: Any, control: Any, model: Any = None, **kwargs: Any) -> None:
        self._can_evaluate = _eval_strategy(args) != "no"
        self._share_flags = _flag_sharer(args)
        self._next_poll = 0.0
        if not state.is_world_process_zero:
            return
        if self.run is not None:
            # the previous train() of this callback raised before its on_train_end
            self._close_abandoned()
        config: dict[str, Any] = {"training_args": args.to_dict()}
        model_config = getattr(model, "config", None)
        config["model"] = {
            "class": type(model).__name__ if model is not None else None,
            "config": model_config.to_dict() if hasattr(model_config, "to_dict") else None,
        }
        if getattr(state, "is_hyper_param_search", False):
            config["trial"] = {"name": state.trial_name, "params": state.trial_params}
        config.update(self.extra_config)
        self.run = Run(
            trainer=self.trainer, config=config, root=self.root, out=self.out, name=self.name,
            overwrite=self.overwrite, steps=state.max_steps or None, tensorboard=self.tensorboard,
            progress=self.progress, handle_signals=self.handle_signals, rank=0, world_size=args.world_size,
        )
        self.run_dir = self.run.dir
        if state.global_step:
            self.run.event(f"the Trainer resumed from a checkpoint at step {state.global_step}")
        if not self._atexit_registered:
            atexit.register(self._close_abandoned)
            self._atexit_registered = True

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        run, self.run = self.run, None
        if run is None:
            return
        self._end_validation(run)
        run.close()  # `interrupted` after a stop command or a signal, else `finished`

    def _close_abandoned(self) -> None:
        run, self.run = self.run, None
        if run is None:
            return
        if run.stop_requested:  # a second Ctrl-C after the first asked for a graceful stop
            run.close("interrupted")
        else:
            run.close("failed", "training ended without the Trainer's on_train_end (an exception in train()?)")

    # ------------------------------------------------------------------ metrics

    def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None, **kwargs: Any) -> None:
        run = self.run
        if run is None or not logs:
            return
        run.log(state.global_step, split_logs(logs))

    def on_prediction_step(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        run = self.run
        if run is not None and self._validating is None:
            self._validating = run.validating()  # status.json: validation_running until on_evaluate
            self._validating.__enter__()

    def on_evaluate(self, args: Any, state: Any, control: Any, metrics: dict[str, Any] | None = None,
                    **kwargs: Any) -> None:
        self._can_evaluate = True  # the Trainer has an eval_dataset: a `validate` command can be honoured
        run = self.run
        if run is None:
            return
        self._end_validation(run)
        stats = dict(metrics or {})
        if state.epoch is not None:
            stats.setdefault("epoch", state.epoch)
        run.snapshot(state.global_step, stats)

    def on_predict(self, args: Any, state: Any, control: Any, metrics: Any = None, **kwargs: Any) -> None:
        if self.run is not None:
            self._end_validation(self.run)

    def _end_validation(self, run: Run) -> None:
        validating, self._validating = self._validating, None
        if validating is not None:
            validating.__exit__(None, None, None)

    def on_save(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        run = self.run
        if run is None:
            return
        from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

        folder = Path(args.output_dir, f"{PREFIX_CHECKPOINT_DIR}-{state.global_step}").absolute()
        if folder.is_dir():
            run.event(f"checkpoint saved: {folder}")
        else:  # a Trainer subclass that saves elsewhere (hyperparameter search: output_dir/run-{trial})
            run.event(f"checkpoint saved at step {state.global_step} (by the Trainer, not in {folder})")

    # ------------------------------------------------------------------ control

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        run = self.run
        validate = save = stop = False
        if run is not None:
            now = time.perf_counter()
            if now >= self._next_poll or run.stop_requested:
                self._next_poll = now + POLL_INTERVAL_S
                epoch = state.epoch
                # blocks while paused
                ctl = run.poll(state.global_step, epoch=max(1, math.ceil(epoch)) if epoch else None)
                validate, save, stop = ctl.validate, ctl.save, ctl.stop
        if self._share_flags is not None:
            validate, save, stop = self._share_flags(validate, save, stop)
        if not (validate or save or stop):
            return
        if validate:
            if self._can_evaluate or kwargs.get("eval_dataloader") is not None:
                control.should_evaluate = True
            elif run is not None:
                # the Trainer would raise "evaluation requires an eval_dataset" and end training
                run.event("validate ignored: the Trainer has eval_strategy='no' and has not evaluated yet, "
                          "so it may have no eval_dataset", "warning")
        if save or stop:
            control.should_save = True
        if stop:
            control.should_log = True  # the loss since the last logged step reaches train.jsonl
            control.should_training_stop = True


def _flag_sharer(args: Any) -> Any:
    """A function handing rank 0's (validate, save, stop) to every process, or None in a single process.

    Only rank 0 reads the control folder, but every process must set the same `TrainerControl` flags or
    the collectives of evaluation, saving and stopping would wait on each other forever. A pause needs no
    message: rank 0 blocks in `poll` and the others wait at their next collective (up to the process
    group's timeout, `TrainingArguments.ddp_timeout`).
    """
    if getattr(args, "world_size", 1) <= 1:
        return None
    import torch
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return None
    device = args.device if dist.get_backend() == "nccl" else "cpu"

    def share(validate: bool, save: bool, stop: bool) -> tuple[bool, bool, bool]:
        flags = torch.tensor([validate, save, stop], dtype=torch.uint8, device=device)
        dist.broadcast(flags, src=0)
        a, b, c = flags.tolist()
        return bool(a), bool(b), bool(c)

    return share


def register_report_to() -> bool:
    """Make `TrainingArguments(report_to="runforge")` add a `RunforgeCallback()` (with its defaults).

    transformers has no public way to register a reporting integration; the Trainer looks names up
    in `transformers.integrations.integration_utils.INTEGRATION_TO_CALLBACK`, a module-level table.
    Adding one key there changes nothing else, so it is done on import; when a transformers version
    moves the table this returns False and `callbacks=[RunforgeCallback()]` (the supported way)
    still works. An entry someone else put under "runforge" is left alone.
    """
    try:
        from transformers.integrations import integration_utils
    except ImportError:
        return False
    table = getattr(integration_utils, "INTEGRATION_TO_CALLBACK", None)
    if not isinstance(table, dict):
        return False
    table.setdefault(REPORT_TO, RunforgeCallback)
    return table[REPORT_TO] is RunforgeCallback


register_report_to()
