"""Fit y = a*sin(w*x) + b*x + c by SGD: a seconds-long trainer that writes everything a real one does."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ...config import option


@dataclass
class Config:
    steps: int = option(300, "training steps")
    lr: float = option(0.05, "SGD learning rate")
    batch_size: int = option(32, "samples per step")
    noise: float = option(0.05, "noise added to the targets")
    seed: int = option(0, "random seed (data and initialisation)")
    log_every: int = option(10, "write a train.jsonl line every N steps")
    image_every: int = option(50, "save a plot of the fit every N steps (and at step 1 and the last)")
    val_every: int = option(100, "validate and write a statistics snapshot every N steps")
    ckpt_every: int = option(100, "checkpoint every N steps")
    keep_last: int = option(3, "checkpoints kept besides the best")
    step_sleep: float = option(0.0, "seconds to sleep per step, to watch a run live")

    def check(self) -> None:
        from ...errors import ConfigError

        for name in ("steps", "batch_size", "log_every", "image_every", "val_every", "ckpt_every"):
            if getattr(self, name) < 1:
                raise ConfigError(None, f"--{name}: must be at least 1, got {getattr(self, name)}")


PRESETS = {
    "tiny": Config(steps=40, log_every=5, image_every=20, val_every=20, ckpt_every=20),
    "live": Config(steps=3000, step_sleep=0.02, val_every=500, ckpt_every=500),
}


def run_options(cfg: Config) -> dict[str, Any]:
    return {"steps": cfg.steps,
            "checkpoint_options": {"keep_last": cfg.keep_last, "pattern": "ckpt_{step}_rank{rank}.pkl"}}
