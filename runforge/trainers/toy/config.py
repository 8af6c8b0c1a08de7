"""Fit y = a*sin(w*x) + b*x + c by SGD: a seconds-long trainer that writes everything a real one does."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ...config import option


@dataclass
class Config:
    steps: int = option(300, "training steps", ge=1, le=10**9)
    lr: float = option(0.05, "SGD learning rate", gt=0, le=10)
    batch_size: int = option(32, "samples per step", ge=1, le=10**6)
    noise: float = option(0.05, "noise added to the targets", ge=0, le=100)
    seed: int = option(0, "random seed (data and initialisation)", ge=0)
    log_every: int = option(10, "write a train.jsonl line every N steps", ge=1)
    image_every: int = option(50, "save a plot of the fit every N steps (and at step 1 and the last)", ge=1)
    val_every: int = option(100, "validate and write a statistics snapshot every N steps", ge=1)
    ckpt_every: int = option(100, "checkpoint every N steps", ge=1)
    keep_last: int = option(3, "checkpoints kept besides the best", ge=0)
    step_sleep: float = option(0.0, "seconds to sleep per step, to watch a run live", ge=0, le=3600)


PRESETS = {
    "tiny": Config(steps=40, log_every=5, image_every=20, val_every=20, ckpt_every=20),
    "live": Config(steps=3000, step_sleep=0.02, val_every=500, ckpt_every=500),
}


def run_options(cfg: Config) -> dict[str, Any]:
    return {"steps": cfg.steps,
            "checkpoint_options": {"keep_last": cfg.keep_last, "pattern": "ckpt_{step}_rank{rank}.pkl"}}
