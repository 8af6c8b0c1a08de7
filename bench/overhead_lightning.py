"""Per-logged-step cost of RunforgeLogger against Lightning's TensorBoardLogger and CSVLogger.

Same tiny model, same steps, one process, CPU. Three views of the same cost:

    log_metrics        the calls Lightning makes per logged step (log_metrics + save, 4 scalars), N times
                       in a loop; opening and finalize are once per run and not counted (a runforge close
                       fsyncs its files: ~0.2 s once)
    inside a fit       time spent in the logger's log_metrics + save during a real fit, per logged step
    to disk            the same loop in CPU seconds of every thread of the process, until the logger has
                       flushed it (Run.wait, SummaryWriter.flush, CSVLogger.save): background writers count

A whole fit with each logger minus a fit without one was tried and left out: on a shared machine
its noise (tens to hundreds of us per step, either sign) is larger than the runforge figure.

    .venv/bin/python bench/overhead_lightning.py      # prints the rows; bench/integrations_overhead.py applies the bar
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any, Callable

CALLS = 5000
FIT_STEPS = 400
ROUNDS = 3


def _loggers(root: Path) -> dict[str, Callable[[str], Any]]:
    from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger

    from runforge.integrations.lightning import RunforgeLogger

    return {
        "runforge": lambda tag: RunforgeLogger(root=root / tag),
        "TensorBoardLogger": lambda tag: TensorBoardLogger(root / tag),
        "CSVLogger": lambda tag: CSVLogger(root / tag),
    }


def _flush(logger: Any) -> None:
    run = getattr(logger, "run", None)
    if run is not None:
        run.wait()
    elif hasattr(logger.experiment, "flush"):
        logger.experiment.flush()
    else:
        logger.save()


def _direct(make: Callable[[str], Any], tag: str) -> tuple[float, float]:
    """(wall seconds in the caller, CPU seconds of all threads until flushed) per logged step."""
    logger = make(tag)
    logger.experiment  # opening the run / the event file is not a per-step cost
    _flush(logger)
    cpu, wall = time.process_time(), time.perf_counter()
    for step in range(CALLS):
        logger.log_metrics({"loss": 1.0 / (step + 1), "lr": 1e-3, "grad_norm": 0.5 + step * 1e-4, "epoch": 0}, step)
        logger.save()
    wall = time.perf_counter() - wall
    _flush(logger)
    cpu = time.process_time() - cpu
    logger.finalize("success")
    return wall / CALLS, cpu / CALLS


def _fit(logger: Any) -> float:
    """Wall seconds inside the logger per logged step of one short fit."""
    import lightning.pytorch as pl
    import torch

    class Tiny(pl.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.layer = torch.nn.Linear(8, 1)

        def training_step(self, batch: Any, batch_idx: int) -> Any:
            loss = torch.nn.functional.mse_loss(self.layer(batch[0]), batch[1])
            self.log("loss", loss)
            self.log("lr", 1e-3)
            self.log("grad_norm", loss.detach() * 0.5)
            return loss

        def configure_optimizers(self) -> Any:
            return torch.optim.SGD(self.parameters(), lr=1e-3)

    inside = [0.0]
    for method in ("log_metrics", "save"):
        original = getattr(logger, method)

        def timed(*args: Any, _original: Any = original, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return _original(*args, **kwargs)
            finally:
                inside[0] += time.perf_counter() - start

        setattr(logger, method, timed)
    generator = torch.Generator().manual_seed(0)
    data = torch.utils.data.TensorDataset(torch.randn(FIT_STEPS * 4, 8, generator=generator),
                                          torch.randn(FIT_STEPS * 4, 1, generator=generator))
    trainer = pl.Trainer(max_steps=FIT_STEPS, logger=logger, accelerator="cpu", enable_progress_bar=False,
                         enable_model_summary=False, enable_checkpointing=False, log_every_n_steps=1)
    trainer.fit(Tiny(), torch.utils.data.DataLoader(data, batch_size=4))
    return inside[0] / FIT_STEPS


def measure() -> list[tuple[str, float, str, float]]:
    import logging

    import lightning.pytorch  # noqa: F401  (it sets its own log level on import; quieten it after)
    import torch

    torch.set_num_threads(1)
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    with warnings.catch_warnings(), tempfile.TemporaryDirectory() as tmp:
        warnings.simplefilter("ignore")
        root = Path(tmp)
        makers = _loggers(root)
        direct = {name: _direct(make, f"direct-{name}") for name, make in makers.items()}

        inside: dict[str, list[float]] = {name: [] for name in makers}
        for round_ in range(ROUNDS):
            for name, make in makers.items():
                inside[name].append(_fit(make(f"fit-{name}-{round_}")))
    ins = {name: statistics.median(values) for name, values in inside.items()}
    rows = []
    for peer in ("TensorBoardLogger", "CSVLogger"):
        rows.append(("Lightning log_metrics+save, 4 scalars", direct["runforge"][0], peer, direct[peer][0]))
        rows.append(("Lightning log_metrics+save, all-thread CPU", direct["runforge"][1], peer, direct[peer][1]))
        rows.append(("Lightning fit: time inside the logger", ins["runforge"], peer, ins[peer]))
    return rows


def main() -> int:
    print(f"{'what':<44} {'runforge us/step':>17} {'peer':<20} {'peer us/step':>13} {'ratio':>7}")
    for what, ours, peer, theirs in measure():
        ratio = theirs / ours if ours > 0 else float("inf")
        print(f"{what:<44} {ours * 1e6:>17.1f} {peer:<20} {theirs * 1e6:>13.1f} {ratio:>6.1f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
