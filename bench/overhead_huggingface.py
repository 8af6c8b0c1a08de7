"""What `RunforgeCallback` costs a transformers Trainer per logged step, against `report_to="tensorboard"`.

Two measurements, one process, the same tiny GPT-2 (2 layers, hidden 16, vocab 64, built from its
config) and the same steps for both callbacks:

- `on_log` called directly N times with the Trainer's own kind of logs dict (loss, grad_norm,
  learning_rate, epoch), same args/state/control for both: the cost the training loop sees per
  logged step. runforge's row includes its per-step `on_step_end`, which TensorBoard does not have
  (a time check, and a control poll at most every 0.25 s, as in training).
- a real `Trainer.train()` with `logging_steps=1`, every event the measured callback overrides timed
  in place, on_train_begin and on_train_end (once per training) left out.

Each figure is the best of three, the two sides taking turns.

    .venv/bin/python bench/overhead_huggingface.py
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

LOG_EVENTS = 3000
TRAIN_STEPS = 200
REPEATS = 3
PEER = "TensorBoardCallback"


def _tiny_model():
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    return GPT2LMHeadModel(GPT2Config(vocab_size=64, n_positions=16, n_embd=16, n_layer=2, n_head=2,
                                      bos_token_id=0, eos_token_id=0))


def _tokens(n: int):
    import torch

    ids = torch.randint(0, 64, (n, 8), generator=torch.Generator().manual_seed(1))
    return [{"input_ids": row, "labels": row} for row in ids]


def _args(folder: Path, **overrides):
    from transformers import TrainingArguments

    options = dict(output_dir=str(folder / "out"), report_to=[], use_cpu=True, disable_tqdm=True,
                   save_strategy="no", max_steps=TRAIN_STEPS, logging_steps=1, per_device_train_batch_size=4,
                   dataloader_num_workers=0, seed=0)
    options.update(overrides)
    return TrainingArguments(**options)


def _direct_on_log(folder: Path, make_callback, with_step_end: bool) -> float:
    """Seconds per logged step spent in the callback's on_log (and on_step_end), the Trainer bypassed."""
    from transformers import TrainerControl, TrainerState

    args = _args(folder)
    state = TrainerState(max_steps=LOG_EVENTS, is_world_process_zero=True, is_local_process_zero=True)
    control = TrainerControl()
    callback = make_callback(folder)
    callback.on_train_begin(args, state, control, model=_tiny_model())
    logs = [{"loss": 3.5 - i * 1e-4, "grad_norm": 1.0 + (i % 7) * 0.1, "learning_rate": 5e-5 * (1 - i / LOG_EVENTS),
             "epoch": i / 1000} for i in range(LOG_EVENTS)]
    started = time.perf_counter()
    for step in range(1, LOG_EVENTS + 1):
        state.global_step = step
        if with_step_end:
            callback.on_step_end(args, state, control)
        callback.on_log(args, state, control, logs=logs[step - 1])
    elapsed = time.perf_counter() - started
    callback.on_train_end(args, state, control)
    return elapsed / LOG_EVENTS


def _timed_train(folder: Path, kind: type, callbacks: list, report_to) -> float:
    """Seconds per logged step spent inside the events of the callback of class `kind` during a real train."""
    from transformers import PrinterCallback, Trainer, TrainerCallback

    trainer = Trainer(model=_tiny_model(), args=_args(folder, report_to=report_to), train_dataset=_tokens(256),
                      callbacks=callbacks)
    trainer.remove_callback(PrinterCallback)  # a print per logged step: the same for both, and only noise here
    (callback,) = [cb for cb in trainer.callback_handler.callbacks if isinstance(cb, kind)]
    spent = [0.0]
    for event in ("on_epoch_begin", "on_epoch_end", "on_step_begin", "on_pre_optimizer_step", "on_optimizer_step",
                  "on_substep_end", "on_step_end", "on_log", "on_evaluate", "on_save", "on_prediction_step"):
        if getattr(kind, event) is getattr(TrainerCallback, event):
            continue  # inherited no-op: the Trainer's dispatch, the same for any callback, not this one's cost
        method = getattr(callback, event)

        def timed(*args, _method=method, **kwargs):
            started = time.perf_counter()
            try:
                return _method(*args, **kwargs)
            finally:
                spent[0] += time.perf_counter() - started

        setattr(callback, event, timed)
    trainer.train()
    logged = sum(1 for entry in trainer.state.log_history if "loss" in entry)
    return spent[0] / max(1, logged)


def measure() -> list[tuple[str, float, str, float]]:
    from transformers.integrations import TensorBoardCallback

    from runforge.integrations.huggingface import RunforgeCallback

    def runforge_callback(folder: Path) -> RunforgeCallback:
        return RunforgeCallback(root=folder / "runs")

    def tensorboard_callback(folder: Path) -> TensorBoardCallback:
        os.environ["TENSORBOARD_LOGGING_DIR"] = str(folder / "tb")
        return TensorBoardCallback()

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        previous_cwd = os.getcwd()
        os.chdir(base)  # report_to="tensorboard" writes under output_dir; nothing lands in the repository
        try:
            # best of REPEATS, the two sides taking turns: a shared machine's load only ever adds time
            ours = theirs = float("inf")
            for i in range(REPEATS):
                ours = min(ours, _direct_on_log(base / f"a{i}", runforge_callback, with_step_end=True))
                theirs = min(theirs, _direct_on_log(base / f"b{i}", tensorboard_callback, with_step_end=False))
            rows.append((f"HF on_step_end+on_log, {LOG_EVENTS} logs", ours, f"{PEER}.on_log", theirs))
            os.environ.pop("TENSORBOARD_LOGGING_DIR", None)
            ours = theirs = float("inf")
            for i in range(REPEATS):
                ours = min(ours, _timed_train(base / f"c{i}", RunforgeCallback,
                                              [RunforgeCallback(root=base / "runs")], []))
                theirs = min(theirs, _timed_train(base / f"d{i}", TensorBoardCallback, [], ["tensorboard"]))
            rows.append((f"HF Trainer.train, {TRAIN_STEPS} logged steps", ours, f"{PEER} (report_to)", theirs))
        finally:
            os.chdir(previous_cwd)
    return rows


if __name__ == "__main__":
    for what, ours, peer, theirs in measure():
        print(f"{what:<44} runforge {ours * 1e6:8.1f} us/step   {peer:<28} {theirs * 1e6:8.1f} us/step   "
              f"{theirs / ours:6.1f}x")
