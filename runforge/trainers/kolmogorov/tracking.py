"""wandb logging beside the run layer, as SDA logs: loss_train, loss_valid, lr per epoch, samples at evaluation.

The wandb run gets the runforge run's name and id (`crimson-cloud-4`, `6k7cjnx7`), so the run
directory `{name}_{id}` is wandb's `{run.name}_{run.id}` as in SDA's runs; wandb's own files go
into `{run dir}/wandb/`. Mode `disabled` never imports wandb; `offline` writes files only;
only `online` talks to the network.
"""

from __future__ import annotations

from typing import Any

from ...run import Run
from .config import WANDB_PROJECT


class Tracker:
    def __init__(self, mode: str, run: Run, config: dict[str, Any], resuming: bool = False) -> None:
        self.wandb_run: Any = None
        if mode == "disabled" or not run.is_main:
            return
        import wandb

        self._wandb = wandb
        self.wandb_run = wandb.init(
            project=WANDB_PROJECT, name=run.name, id=run.id, dir=str(run.dir), mode=mode, config=config,
            resume="allow" if resuming else None,
            settings=wandb.Settings(console="off", silent=True, x_disable_stats=True),
        )
        run.event(f"wandb {mode}: project {WANDB_PROJECT}, run {self.wandb_run.name} ({self.wandb_run.id})")

    def log(self, step: int, metrics: dict[str, Any]) -> None:
        if self.wandb_run is not None:
            self.wandb_run.log(metrics, step=step)

    def image(self, step: int, key: str, picture: Any) -> None:
        if self.wandb_run is not None:
            self.wandb_run.log({key: self._wandb.Image(picture)}, step=step)

    def finish(self, failed: bool = False) -> None:
        if self.wandb_run is not None:
            self.wandb_run.finish(exit_code=1 if failed else 0)
            self.wandb_run = None
