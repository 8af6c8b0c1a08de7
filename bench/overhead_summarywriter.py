"""Per-logged-step cost of `runforge.tensorboard.SummaryWriter` against torch's `SummaryWriter`.

Both write into a temporary folder, the same steps in one process. `measure()`'s figure is what the
training loop pays per logged step: the wall time of the logging calls, whatever each writer's background
thread takes from the loop meanwhile included. `total_cpu()` also counts the work still left for the
threads at `close()` (process CPU time until everything is on disk); the __main__ block prints both.

    .venv/bin/python bench/overhead_summarywriter.py
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

STEPS = 20_000
SCALARS = ("loss", "loss/l1", "loss/ssim", "lr", "grad_norm")


def _per_step(make: Callable[[str], Any], log: Callable[[Any, int], None], cpu: bool = False) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        writer = make(tmp)
        for step in range(200):  # warm-up: first-call imports and caches
            log(writer, step)
        clock = time.process_time if cpu else time.perf_counter
        start = clock()
        for step in range(200, 200 + STEPS):
            log(writer, step)
        looped = clock()
        writer.close()
        return ((clock() if cpu else looped) - start) / STEPS


def _one(writer: Any, step: int) -> None:
    writer.add_scalar("loss", 1.0 / (step + 1), step)


def _several(writer: Any, step: int) -> None:
    for i, tag in enumerate(SCALARS):
        writer.add_scalar(tag, i + 1.0 / (step + 1), step)


def measure(cpu: bool = False) -> list[tuple[str, float, str, float]]:
    from torch.utils.tensorboard import SummaryWriter as TorchWriter

    from runforge.tensorboard import SummaryWriter

    def ours(tmp: str) -> Any:
        return SummaryWriter(os.path.join(tmp, "runforge"))

    def theirs(tmp: str) -> Any:
        return TorchWriter(os.path.join(tmp, "torch"))

    rows = []
    for what, log in (("SummaryWriter: add_scalar, 1 per step", _one),
                      (f"SummaryWriter: add_scalar, {len(SCALARS)} per step", _several)):
        rows.append((what, _per_step(ours, log, cpu), "torch SummaryWriter (TensorBoard)", _per_step(theirs, log, cpu)))
    return rows


def total_cpu() -> list[tuple[str, float, str, float]]:
    """The same rows as process CPU time per step, the writers' threads and their close() included."""
    return measure(cpu=True)


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    for label, rows in (("training loop", measure()), ("total CPU", total_cpu())):
        print(label)
        for what, ours, peer, theirs in rows:
            print(f"{what:<44} runforge {ours * 1e6:7.2f} us/step   {peer} {theirs * 1e6:7.2f} us/step   "
                  f"{theirs / ours:6.1f}x")
